// Package gpu supplies the GPU and queue state of Triton backends that the
// router decides with. Sources stand behind one interface, Source, keyed by
// the backend's gRPC address as the router knows it.
//
// # Sources
//
// Scraper reads each Triton server's Prometheus endpoint (by default
// http://host:8002/metrics) with the Prometheus project's own text-format
// parser. It reports:
//
//   - the queue: nv_inference_pending_request_count, summed over models;
//   - rates and means over the interval between the last two scrapes, from
//     Triton's cumulative counters summed over models and versions:
//     nv_inference_queue_duration_us, nv_inference_compute_infer_duration_us
//     and nv_inference_request_duration_us per successful request
//     (nv_inference_request_success), nv_inference_count and
//     nv_inference_exec_count per second (their ratio is the mean batch
//     size). A series that went down was reset (Triton restarted, a model
//     reloaded) and counts from zero, so no figure is ever negative;
//   - the GPUs Triton sees: nv_gpu_utilization (mean over GPUs),
//     nv_gpu_memory_used_bytes and nv_gpu_memory_total_bytes (summed), per
//     gpu_uuid.
//
// NVML reads utilisation (nvmlDeviceGetUtilizationRates) and memory
// (nvmlDeviceGetMemoryInfo) of the GPUs on the gateway's own node through
// go-nvml, for the backends that its config places there. go-nvml opens
// libnvidia-ml.so.1 with dlopen when Run starts: on a node without it (the
// development machines) Run logs "NVML not available; GPU telemetry from
// NVML disabled" once and NVML reports nothing. go-nvml needs cgo; a build
// without cgo compiles and behaves as a node without the library.
//
// # Merge rule
//
// Stats.Reported says which groups of fields (FieldQueue, FieldRates,
// FieldGPU) a source filled in. Merge(a, b, ...) takes each group from the
// first source, in argument order, that has fresh Stats for the backend and
// reports that group; the merged At is the oldest contributing observation.
// Merge(nvml, scraper) therefore takes NVML's GPU figures where the node
// has them and Triton's everywhere else, and the queue and rates always
// from Triton.
//
// # Freshness
//
// Each source answers ok false for figures older than its Stale (default
// three intervals): a backend whose endpoint stopped answering loses its
// figures instead of keeping a calm picture of the past. Rates need two
// scrapes of the same server, so the first scrape of a target reports the
// queue and GPUs only; a target whose URL changes starts over.
//
// # Concurrency Model
//
// Each source has one Run goroutine (the caller's) that owns its mutable
// state; the Scraper scrapes all targets of a round concurrently, each
// bounded by Timeout, and waits for them before publishing, so new
// figures appear at most Timeout after a round starts. Results are
// published as an immutable snapshot behind an atomic pointer, so Stats,
// All and Status never block on I/O or on Run. When ctx ends Run waits for
// the scrapes it started and returns; nothing outlives it.
package gpu
