// Package policy is the contract between the router and its balancing
// policies: what a policy sees of a backend (Candidate), what it is asked
// to place (Batch), and what it answers (Pick). Each policy lives in its own
// package under this one and names itself with a const Name.
package policy

import (
	"time"

	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/model"
)

// Candidate is a backend ready for the batch's model, as a policy sees it.
// Every method is a lock-free read (atomics or an immutable field), so a
// pick never waits on another goroutine.
type Candidate interface {
	// Addr is the backend's gRPC address.
	Addr() string
	// InFlight is the number of batches, of every model, this gateway has
	// sent there and not yet seen answered.
	InFlight() int64
	// Load is what this gateway has in flight there for one model, and
	// what it has learned of that model's latency there. Figures are per
	// (backend, model) because the two models differ in cost by orders of
	// magnitude and a backend's prior can be wrong for one and right for
	// the other.
	Load(k model.Kind) Load
	// GPU is the backend's telemetry when a fresh figure exists.
	GPU() (gpu.Stats, bool)
}

// Load is one model's figures on one backend.
type Load struct {
	// InFlight is the number of the model's batches this gateway has sent
	// there and not yet seen answered.
	InFlight int64
	// InFlightCost is the summed cost, in cost units, of those batches.
	InFlightCost float64
	// SecondsPerCost is the model's learned latency per cost unit there,
	// or 0 while nothing has been measured.
	SecondsPerCost float64
	// MeasuredAt is when SecondsPerCost last learned from an answer (zero:
	// never).
	MeasuredAt time.Time
}

// Kinds lists the models' kinds, for a policy that looks at every model's
// load on a backend.
var Kinds = [...]model.Kind{model.Query, model.Image}

// Batch is what is being placed.
type Batch struct {
	// Kind is the model the batch is for.
	Kind model.Kind
	// Model is that model's name on the backends, the model label of
	// Triton's per-model metrics (gpu.Stats.Models).
	Model string
	// Items is the number of items in it.
	Items int
	// Cost is its size in the router's cost units (a fixed part per batch
	// plus a part per item, per model), which the backends' measured
	// latency per cost unit turns into time.
	Cost float64
}

// Policy chooses one backend for a batch.
type Policy interface {
	// Name is the policy's configuration name.
	Name() string
	// Pick returns the index in cands of the chosen backend, and the
	// completion time it estimated for the batch there (0 when the policy
	// does not estimate). cands is never empty and must not be modified.
	// Pick is called concurrently and must not block.
	Pick(cands []Candidate, b Batch) (int, time.Duration)
}
