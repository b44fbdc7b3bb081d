// Package tritonsim is a simulator of NVIDIA Triton Inference Server serving
// the two ColPali models. It is not Triton and runs no model: it exists
// because the development machines have neither a GPU nor a Triton binary,
// and the gateway still needs something that behaves like Triton in local
// runs, tests and load tests.
//
// # Overview
//
// A Server speaks Triton's real gRPC protocol (service
// inference.GRPCInferenceService: ServerLive, ServerReady, ModelReady,
// ServerMetadata, ModelMetadata, ModelInfer, ModelStatistics), so the gateway
// talks to it exactly as it talks to Triton. It serves the query model and
// the image model named by a model.Config, each with one BYTES input and the
// outputs "embeddings" [batch, tokens, dim] and "num_tokens" [batch, 1].
//
// It is realistic where the gateway's behaviour depends on it, and nowhere
// else:
//
//   - Cost: a batch of n items occupies one simulated GPU instance for
//     (Base + n*PerItem)/Speed plus the ExtraLatency fault; images cost far
//     more than queries. Each model has Instances instances, each running one
//     batch at a time, behind a FIFO queue, so queueing, batching and
//     back-pressure effects are real. There is no server-side dynamic
//     batching: one ModelInfer call is one batch, because the gateway forms
//     the batches.
//   - Embeddings: deterministic from the input bytes (see Embed and
//     QueryTokens): the same input gives the same unit-length vectors in
//     every run and process, so tests can compare results exactly.
//   - Errors: Triton's codes and, where callers match on them, Triton's texts:
//     NotFound "Request for unknown model: 'x' is not found", Unavailable
//     "Exceeds maximum queue size", Unavailable "Request timeout expired"
//     (the request's "timeout" parameter, in microseconds, bounds its time in
//     the queue, as Triton's queue policy does), InvalidArgument for bad
//     tensors.
//   - Metrics: GET /metrics on the metrics address serves Triton's metric
//     names and labels (nv_inference_*, nv_gpu_*) for one simulated GPU.
//   - Faults: extra latency, an error rate, models that are not ready, set
//     at start (Config.Faults), by SetFaults, or over HTTP at
//     /simulator/faults; and a crash after N calls (Config.StopAfter).
//
// It says what it is: ServerMetadata names it "colpali-gateway-tritonsim (a
// Triton simulator, not Triton)" and its log lines say "tritonsim".
//
// # Concurrency Model
//
// Start runs three goroutines: the gRPC server, the HTTP server and a GPU
// utilisation ticker. gRPC handler goroutines belong to grpc-go. A ModelInfer
// handler validates its request, waits in its model's FIFO queue until an
// instance is free (the queue hands an instance directly to its oldest
// waiter, so order is kept without a dispatcher goroutine), then "executes"
// on its own goroutine: it computes the embeddings and waits on a timer for
// the rest of the batch's simulated duration. A caller that gives up while
// queued leaves the queue at once and never executes; a caller that gives up
// while its batch executes does not shorten it (a GPU does not stop a batch
// halfway), so the instance stays busy for the full duration.
//
// Stop closes one channel that every queue wait and every execution also
// selects on, then stops the gRPC server (which waits for its handlers) and
// the HTTP server, and waits for its own goroutines, so no goroutine outlives
// Stop. GracefulStop lets in-flight calls finish first.
//
// # Request Lifecycle and Ownership
//
// A ModelInfer call is observed (Observed) on arrival, then validated, then
// queued, then executed; it is counted exactly once in the statistics and
// metrics, as a success or as a failure, by the handler that owns it. An
// instance is owned by exactly one call between acquire and release; a call
// that is handed an instance just as it gives up passes it on to the next
// waiter.
package tritonsim
