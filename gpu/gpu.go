package gpu

import (
	"strings"
	"time"
)

// Stats is one backend's telemetry as last observed. Rates and means come
// from the difference between the last two scrapes. Reported says which
// groups of fields the source filled in; a field outside them is zero and
// means "not reported", not "zero".
type Stats struct {
	// At is when the figures were observed. After Merge it is the oldest
	// observation that contributed, so an age check on it is conservative.
	At time.Time
	// Source names where the figures came from: SourceTritonMetrics,
	// SourceNVML, or several joined by "+" after Merge.
	Source string
	// Reported is the set of field groups the source filled in.
	Reported Fields

	// Pending is the requests queued in Triton and not yet executing
	// (nv_inference_pending_request_count, summed over models). FieldQueue.
	Pending float64

	// Models is each model's own Triton figures (FieldQueue and
	// FieldRates), keyed by Triton's model label, or nil when the source
	// does not tell models apart (NVML). The sums above mix models whose
	// queues and costs differ by orders of magnitude (a query waits
	// milliseconds, a page batch hundreds), so a per-model decision reads
	// these. Shared between callers: read it, do not modify it.
	Models map[string]ModelStats

	// The rest of the Triton figures are FieldRates: they need two scrapes
	// of the same server, and cover the interval between them.

	// QueueTimePerRequest is the mean time a successful request waited in
	// Triton's queue over the last interval.
	QueueTimePerRequest time.Duration
	// ComputePerExec is the mean compute time of the batch a request ran
	// in, over the last interval. Triton adds a batch's compute time once
	// for every request in it, so this is the batch compute time weighted
	// by requests; it equals the mean per execution when a request is a
	// batch, as when the gateway forms the batches.
	ComputePerExec time.Duration
	// RequestTimePerRequest is the mean end-to-end time of a successful
	// request inside Triton (queue, compute and the rest).
	RequestTimePerRequest time.Duration
	// InferencesPerSecond and ExecutionsPerSecond are items and batches per
	// second over the last interval; their ratio is the mean batch size.
	InferencesPerSecond, ExecutionsPerSecond float64
	// RequestsPerSecond and FailuresPerSecond are successful and failed
	// requests per second over the last interval.
	RequestsPerSecond, FailuresPerSecond float64

	// The GPU figures are FieldGPU.

	// Utilization is the mean GPU utilisation over the backend's GPUs whose
	// utilisation could be read, 0 to 1.
	Utilization float64
	// MemoryUsed and MemoryTotal are summed over the backend's GPUs, in bytes.
	MemoryUsed, MemoryTotal uint64
	// GPUs is the number of GPUs reported.
	GPUs int
	// Devices is the per-GPU detail, ordered by index (NVML) or UUID
	// (Triton). It is shared between callers: read it, do not modify it.
	Devices []Device
}

// ModelStats is one model's Triton figures; the fields mean what Stats'
// fields of the same names mean, for that model only.
type ModelStats struct {
	// Reported is FieldQueue (Pending), FieldRates (the rest) or both.
	Reported Fields
	// Pending is the model's requests queued and not yet executing.
	Pending float64
	// QueueTimePerRequest, ComputePerExec and RequestTimePerRequest are
	// means per successful request of the model over the last interval.
	QueueTimePerRequest, ComputePerExec, RequestTimePerRequest time.Duration
	// The model's rates over the last interval.
	RequestsPerSecond, FailuresPerSecond, InferencesPerSecond, ExecutionsPerSecond float64
}

// Model is name's figures, when the source reported any for it.
func (s Stats) Model(name string) (ModelStats, bool) {
	m, ok := s.Models[name]
	return m, ok
}

// Device is one GPU's figures.
type Device struct {
	// UUID is the GPU's UUID ("GPU-..."), as NVML and Triton's gpu_uuid
	// label name it; empty when unknown.
	UUID string
	// Index is NVML's device index, or -1 when the source does not know it
	// (Triton's metrics name GPUs by UUID only).
	Index int
	// Name is the product name (NVML only), e.g. "NVIDIA H100 80GB HBM3".
	Name string
	// Utilization is 0 to 1, or negative when it could not be read.
	Utilization float64
	// MemoryUsed and MemoryTotal are in bytes.
	MemoryUsed, MemoryTotal uint64
}

// Source names of Stats.Source.
const (
	SourceTritonMetrics = "triton-metrics"
	SourceNVML          = "nvml"
)

// Fields is a set of groups of Stats fields, the unit in which sources
// report and Merge chooses.
type Fields uint8

const (
	// FieldQueue is Pending.
	FieldQueue Fields = 1 << iota
	// FieldRates is QueueTimePerRequest, ComputePerExec,
	// RequestTimePerRequest and the per-second rates.
	FieldRates
	// FieldGPU is Utilization, MemoryUsed, MemoryTotal, GPUs and Devices.
	FieldGPU

	// FieldAll is every group.
	FieldAll = FieldQueue | FieldRates | FieldGPU
)

// Has reports whether f includes every group of g.
func (f Fields) Has(g Fields) bool { return f&g == g }

// String lists the groups, e.g. "queue|gpu".
func (f Fields) String() string {
	var parts []string
	for _, g := range []struct {
		f    Fields
		name string
	}{{FieldQueue, "queue"}, {FieldRates, "rates"}, {FieldGPU, "gpu"}} {
		if f.Has(g.f) {
			parts = append(parts, g.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// MemoryFree is MemoryTotal less MemoryUsed, or 0 when unknown.
func (s Stats) MemoryFree() uint64 {
	if s.MemoryUsed >= s.MemoryTotal {
		return 0
	}
	return s.MemoryTotal - s.MemoryUsed
}

// MeanBatchSize is InferencesPerSecond / ExecutionsPerSecond, or 0 when no
// batch ran in the last interval.
func (s Stats) MeanBatchSize() float64 {
	if s.ExecutionsPerSecond <= 0 {
		return 0
	}
	return s.InferencesPerSecond / s.ExecutionsPerSecond
}

// Source reports the latest Stats of a backend, keyed by the backend's
// gRPC address as the router knows it; ok is false when there is nothing
// recent for it. Implementations never block on I/O.
type Source interface {
	Stats(backend string) (s Stats, ok bool)
}
