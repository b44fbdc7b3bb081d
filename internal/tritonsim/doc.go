// Package tritonsim is a simulator of NVIDIA Triton Inference Server serving
// the two ColPali models. It is not Triton and runs no model: it exists
// because the development machines have neither a GPU nor a Triton binary,
// and the gateway still needs something that behaves like Triton in local
// runs, tests and load tests. Every performance figure of the project rests
// on it, so it is built not to flatter the gateway.
//
// # Overview
//
// A Server speaks Triton's real gRPC protocol (service
// inference.GRPCInferenceService: ServerLive, ServerReady, ModelReady,
// ServerMetadata, ModelMetadata, ModelInfer, ModelStatistics), so the gateway
// talks to it exactly as it talks to Triton. It serves the query model and
// the image model named by a model.Config, each with one BYTES input and the
// outputs "embeddings" [batch, tokens, dim] (FP16 or FP32) and "num_tokens"
// [batch, 1].
//
// It is realistic where the gateway's behaviour depends on it, and nowhere
// else:
//
//   - Triton's dynamic batcher, per model (batcher.go, queue.go), from the
//     settings of deployments/triton/model_repository/*/config.pbtxt
//     (RepositoryBatching; config_test.go reads the files): requests queue
//     by priority level, join a batch in order while they fit
//     max_batch_size, and the batch runs at once when it reaches a
//     preferred size (cut at the largest one reached) and otherwise when
//     it cannot grow or its oldest request has waited
//     max_queue_delay_microseconds. The queue policy is Triton's: timeout
//     action REJECT or DELAY, a default timeout that a request's "timeout"
//     parameter may only shorten (when allowed), and max_queue_size per
//     level. A batch of several requests is one execution costing its
//     total size; each request gets its own response. It can be switched
//     off (Config.DisableDynamicBatching): each request is then a batch of
//     its own.
//   - Cost (cost.go): a batch's duration comes from a cost curve (batch size
//     to duration, interpolated) of a GPU profile, divided by Speed, times
//     a mean-preserving lognormal jitter, plus a rare stall, the draws
//     seeded per model and batch number. The profiles are anchored to
//     published ColPali figures or labelled as assumptions; the default is
//     not the router's prior, and "bench-2x" is built to disagree with it
//     in scale and shape.
//   - GPUs (device.go): by default one simulated GPU carries every instance
//     of both models (LayoutShared), running one batch at a time in arrival
//     order, so a page batch delays the query batches behind it, as on a
//     real GPU; LayoutSeparate gives each instance its own GPU.
//   - Inputs: raw_input_contents and typed contents (bytes_contents, as
//     generic KServe v2 clients send), with Triton's texts for datatype,
//     shape, batch-size and element-count mismatches.
//   - Embeddings: deterministic from the input bytes (see Embed and
//     QueryTokens): the same input gives the same unit-length vectors in
//     every run and process, so tests can compare results exactly.
//   - Errors: Triton's codes and, where callers match on them, Triton's texts:
//     NotFound "Request for unknown model: 'x' is not found", Unavailable
//     "Exceeds maximum queue size", Unavailable "Request timeout expired".
//   - Metrics: GET /metrics serves Triton's metric names with model and
//     version labels (nv_inference_pending_request_count,
//     nv_inference_queue_duration_us, nv_inference_exec_count, ...) and
//     per-GPU gauges (nv_gpu_utilization, memory, power) with gpu_uuid,
//     plus the simulator's own tritonsim_gpu_busy_seconds_total, the exact
//     busy time a benchmark needs. Triton's latency summaries
//     (nv_inference_queue_summary_us, ...) are there on demand
//     (Config.SummaryLatencies), off by default as in Triton.
//   - Faults: extra latency, an error rate, models that are not ready, set
//     at start (Config.Faults), by SetFaults, or over HTTP at
//     /simulator/faults; and a crash after N calls (Config.StopAfter).
//
// It says what it is: ServerMetadata names it "colpali-gateway-tritonsim (a
// Triton simulator, not Triton)" and its log lines say "tritonsim".
//
// # Concurrency Model
//
// Start runs the gRPC server, the HTTP server, a GPU utilisation ticker, one
// batcher goroutine per model and one goroutine per simulated GPU. gRPC
// handler goroutines belong to grpc-go.
//
// A ModelInfer handler validates its request, queues it in its model's
// batcher, computes the embeddings (real CPU work, overlapping the simulated
// wait) and waits for its outcome. The batcher's state is guarded by its
// lock; scheduling (forming and dispatching batches, applying timeouts)
// runs under that lock on whichever goroutine changed the state (an
// arrival, a finished batch) and on the batcher's goroutine, which only
// sleeps until the next delay or timeout. A dispatched batch occupies one
// of the model's instances and joins its GPU's FIFO; the GPU's goroutine
// runs one batch at a time on a timer and then answers the batch's
// requests and frees the instance.
//
// All simulated time (delays, timeouts, batch durations, the queue and
// compute durations reported) is read from Config.Clock, so tests drive the
// simulator with a fake clock. Callers' gRPC deadlines stay on real time.
//
// Stop closes one channel that every batcher, every GPU and every waiting
// handler selects on, then stops the gRPC server (which waits for its
// handlers) and the HTTP server, and waits for its own goroutines, so no
// goroutine outlives Stop. GracefulStop lets in-flight calls finish first.
//
// # Request Lifecycle and Ownership
//
// A ModelInfer call is observed (Observed) on arrival, then validated, then
// queued, then executed in a batch; it is counted exactly once in the
// statistics and metrics, as a success or as a failure, by the handler that
// owns it. While queued, a request belongs to its batcher; once in a batch,
// to the GPU running the batch; its outcome is sent exactly once, by its
// owner at the time. A caller that gives up while queued leaves the queue
// at once and never executes; a caller that gives up while its batch runs
// does not shorten it (a GPU does not stop a batch halfway), so the
// instance and the GPU stay busy for the full duration. An instance is
// owned by exactly one batch between dispatch and the batch's end.
package tritonsim
