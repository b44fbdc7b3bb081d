// Package gpu supplies the GPU and queue state of Triton backends that the
// router decides with. Two sources stand behind one interface: a scraper of
// each Triton server's Prometheus /metrics endpoint, and NVML (go-nvml) for
// the GPUs on the gateway's own node.
package gpu

import "time"

// Stats is one backend's telemetry as last observed. Rates and means come
// from the difference between the last two scrapes; a zero field means the
// source did not report it.
type Stats struct {
	// At is when the figures were observed.
	At time.Time
	// Pending is the requests queued in Triton and not yet executing
	// (nv_inference_pending_request_count, summed over models).
	Pending float64
	// QueueTimePerRequest is the mean time a request waited in Triton's
	// queue over the last interval.
	QueueTimePerRequest time.Duration
	// ComputePerExec is the mean compute time of one executed batch over
	// the last interval.
	ComputePerExec time.Duration
	// InferencesPerSecond and ExecutionsPerSecond are items and batches per
	// second over the last interval; their ratio is the mean batch size.
	InferencesPerSecond, ExecutionsPerSecond float64
	// Utilization is the mean GPU utilisation, 0 to 1.
	Utilization float64
	// MemoryUsed and MemoryTotal are summed over the backend's GPUs, in bytes.
	MemoryUsed, MemoryTotal uint64
	// GPUs is the number of GPUs reported.
	GPUs int
}

// MemoryFree is MemoryTotal less MemoryUsed, or 0 when unknown.
func (s Stats) MemoryFree() uint64 {
	if s.MemoryUsed >= s.MemoryTotal {
		return 0
	}
	return s.MemoryTotal - s.MemoryUsed
}

// Source reports the latest Stats of a backend, keyed by the backend's
// gRPC address as the router knows it; ok is false when there is nothing
// recent for it.
type Source interface {
	Stats(backend string) (s Stats, ok bool)
}
