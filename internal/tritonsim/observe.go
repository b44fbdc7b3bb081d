package tritonsim

import (
	"sync"
	"time"
)

// maxObservations bounds Observed, so that a long load test does not grow
// the simulator's memory without limit.
const maxObservations = 1024

// Observation is what the simulator saw of one ModelInfer call on arrival,
// before any validation, so tests can check what the gateway sent: batch
// sizes, deadline propagation, request parameters.
type Observation struct {
	// Model is the requested model name, as sent.
	Model string
	// BatchSize is the first dimension of the first input's shape, 0 if
	// there was none.
	BatchSize int
	// DeadlineLeft is the time left before the call's gRPC deadline when it
	// arrived; 0 if the call had no deadline.
	DeadlineLeft time.Duration
	// TimeoutParam is the "timeout" request parameter in microseconds, 0 if
	// absent.
	TimeoutParam int64
	// Priority is the "priority" request parameter, 0 if absent.
	Priority int64
	// Traceparent is the call's W3C trace context header (gRPC metadata
	// "traceparent"), as sent; empty if absent. Triton reads it to join its
	// own spans to the caller's trace; tests read it to check that the
	// gateway's trace reaches the backend.
	Traceparent string
}

// observations keeps the last maxObservations in arrival order, in a ring.
type observations struct {
	mu   sync.Mutex
	ring []Observation
	next int // index of the oldest once the ring is full
}

func (o *observations) add(ob Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.ring) < maxObservations {
		o.ring = append(o.ring, ob)
		return
	}
	o.ring[o.next] = ob
	o.next = (o.next + 1) % maxObservations
}

func (o *observations) list() []Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Observation, 0, len(o.ring))
	out = append(out, o.ring[o.next:]...)
	return append(out, o.ring[:o.next]...)
}
