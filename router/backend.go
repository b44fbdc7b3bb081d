package router

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router/policy"
	"github.com/morphik-org/colpali-gateway/triton"
)

// Backend is what the router needs of one Triton server's connection;
// *triton.Client implements it.
type Backend interface {
	Addr() string
	// Embed embeds items, one batch, with kind's model; its errors carry
	// triton's classes, and model.ErrBadResponse for an answer that breaks
	// the model contract.
	Embed(ctx context.Context, kind model.Kind, items [][]byte, opt triton.EmbedOptions) ([]model.Embedding, error)
	ServerLive(ctx context.Context) (bool, error)
	ServerReady(ctx context.Context) (bool, error)
	ModelReady(ctx context.Context, model, version string) (bool, error)
	Close() error
}

// State is a backend's state as the router sees it.
type State int

// States of a backend.
const (
	// StateUnknown: not checked yet.
	StateUnknown State = iota
	// StateReady: live, at least one model ready, routable.
	StateReady
	// StateNotReady: refused the connection or not live, failed
	// Config.UnhealthyThreshold checks in a row (and not yet passed
	// Config.HealthyThreshold), no model ready, or marked down by a failed
	// call until its next health check passes.
	StateNotReady
	// StateEjected: too many consecutive failures; out until its backoff
	// has passed and a health check passes.
	StateEjected
	// StateDraining: left the pool; finishes its batches in flight.
	StateDraining
)

func (s State) String() string {
	switch s {
	case StateReady:
		return "ready"
	case StateNotReady:
		return "not_ready"
	case StateEjected:
		return "ejected"
	case StateDraining:
		return "draining"
	}
	return "unknown"
}

// states lists every State, for metrics.
var states = []State{StateUnknown, StateReady, StateNotReady, StateEjected, StateDraining}

// kinds lists the models' kinds, which index per-model arrays.
var kinds = [...]model.Kind{model.Query, model.Image}

// costScale turns cost units into the integers counted with atomics.
const costScale = 1e6

// ewmaWeight is the weight of a new latency sample in a backend's latency
// per cost unit: the estimate follows a change of speed within ~10 batches
// and smooths the noise of single ones.
const ewmaWeight = 0.2

// backend is one member of the pool. The fields read while picking are
// atomics; health is guarded by Router.mu.
type backend struct {
	endpoint Endpoint
	client   Backend
	prober   Backend // health checks' own connection: see Deps.Dial
	gpu      gpu.Source
	maxAge   time.Duration

	inFlight            atomic.Int64 // batches of every model
	load                [len(kinds)]modelLoad
	lastEstimate        atomic.Int64 // nanoseconds
	consecutiveFailures atomic.Int64
	picks               atomic.Uint64
	failures            atomic.Uint64
	ejections           atomic.Uint64
	answered            atomic.Uint64 // batches answered: passive health

	wake chan struct{} // a health check now; buffered 1
	stop chan struct{} // closed when the backend leaves the pool

	health health // guarded by Router.mu
}

// modelLoad is one model's score figures on a backend: what is in flight,
// and the latency per cost unit learned from its answers.
type modelLoad struct {
	inFlight       atomic.Int64
	inFlightCost   atomic.Int64 // cost units x costScale
	secondsPerCost atomic.Uint64
	measuredAt     atomic.Int64 // Unix nanoseconds
}

// health is a backend's health as last checked, and its ejection.
type health struct {
	checked      bool
	live         bool
	healthy      bool // the checks' verdict, with UnhealthyThreshold and HealthyThreshold
	wasHealthy   bool // has been healthy since it joined: HealthyThreshold applies
	dead         bool // the last answered check refused the connection or said not live
	probeFails   int  // checks in a row that failed (a discounted one resets it)
	probePasses  int  // checks in a row that passed
	answeredSeen uint64
	serverReady  bool
	models       [len(kinds)]bool
	lastReady    [len(kinds)]bool // models ready at the last passing check
	down         bool             // a call failed UNAVAILABLE since the last passing check
	lastError    string
	lastCheck    time.Time
	ejectedUntil time.Time // zero when not ejected
	ejectLevel   int       // ejections in a row
	admittedAt   time.Time // last readmission
	draining     bool
	drains       int // times the backend started draining: tells a drain it is still current
}

func (h *health) state() State {
	switch {
	case h.draining:
		return StateDraining
	case !h.ejectedUntil.IsZero():
		return StateEjected
	case !h.checked:
		return StateUnknown
	case !h.healthy || h.down || !h.anyModel():
		return StateNotReady
	}
	return StateReady
}

// panicRoutable reports whether batches of kind may go to the backend when
// no backend is routable for kind (panic routing): it is out only because
// its checks failed without an answer, and kind's model was ready when it
// last answered. A backend known dead (refused, not live, a call failed
// UNAVAILABLE), ejected for failing batches, draining or never checked is
// not.
func (h *health) panicRoutable(k model.Kind) bool {
	return h.state() == StateNotReady && !h.healthy && h.wasHealthy && !h.dead && !h.down && h.models[k]
}

func (h *health) anyModel() bool {
	for _, ok := range h.models {
		if ok {
			return true
		}
	}
	return false
}

// routable reports whether batches of kind may go to the backend.
func (h *health) routable(k model.Kind) bool { return h.state() == StateReady && h.models[k] }

func newBackend(e Endpoint, client, prober Backend, src gpu.Source, maxAge time.Duration) *backend {
	return &backend{
		endpoint: e, client: client, prober: prober, gpu: src, maxAge: maxAge,
		wake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
}

var _ policy.Candidate = (*backend)(nil)

func (b *backend) Addr() string    { return b.endpoint.Addr }
func (b *backend) InFlight() int64 { return b.inFlight.Load() }

// Load is kind's figures on the backend.
func (b *backend) Load(k model.Kind) policy.Load {
	l := &b.load[k]
	out := policy.Load{
		InFlight:       l.inFlight.Load(),
		InFlightCost:   float64(l.inFlightCost.Load()) / costScale,
		SecondsPerCost: math.Float64frombits(l.secondsPerCost.Load()),
	}
	if ns := l.measuredAt.Load(); ns != 0 {
		out.MeasuredAt = time.Unix(0, ns)
	}
	return out
}

// InFlightCost is the cost in flight summed over models.
func (b *backend) InFlightCost() float64 {
	var sum int64
	for k := range b.load {
		sum += b.load[k].inFlightCost.Load()
	}
	return float64(sum) / costScale
}

// GPU is the backend's telemetry when the source has a figure younger than
// Config.TelemetryMaxAge.
func (b *backend) GPU() (gpu.Stats, bool) {
	if b.gpu == nil {
		return gpu.Stats{}, false
	}
	st, ok := b.gpu.Stats(b.endpoint.Addr)
	if !ok || time.Since(st.At) > b.maxAge {
		return gpu.Stats{}, false
	}
	return st, true
}

// ahead is the cost in flight ahead of a batch, per model.
type ahead [len(kinds)]float64

// begin counts a batch of kind and cost as in flight and returns the cost
// of every model that was in flight ahead of it.
func (b *backend) begin(kind model.Kind, cost float64) ahead {
	b.inFlight.Add(1)
	var out ahead
	for k := range b.load {
		out[k] = float64(b.load[k].inFlightCost.Load()) / costScale
	}
	l := &b.load[kind]
	l.inFlight.Add(1)
	units := int64(cost * costScale)
	out[kind] = float64(l.inFlightCost.Add(units)-units) / costScale
	return out
}

// end counts the batch out.
func (b *backend) end(kind model.Kind, cost float64) {
	b.inFlight.Add(-1)
	l := &b.load[kind]
	l.inFlight.Add(-1)
	l.inFlightCost.Add(-int64(cost * costScale))
}

// learn folds a successful batch's latency into kind's latency per cost
// unit. The batch waited behind the cost ahead of it, of its own model and
// (on a shared GPU) of the others, so the sample is latency / (the cost
// ahead, in kind's units, plus its own); the other models' cost is turned
// into kind's units by the ratio of their latencies per cost unit (1 while
// either is unmeasured: cost units are meant to be comparable across
// models). The gpu_aware estimate multiplies by the same sum, so it is
// consistent whatever the backend's concurrency and layout.
func (b *backend) learn(kind model.Kind, latency time.Duration, ah ahead, cost float64) {
	l := &b.load[kind]
	for {
		old := l.secondsPerCost.Load()
		prev := math.Float64frombits(old)
		units := ah[kind] + cost
		for k := range ah {
			if model.Kind(k) == kind || ah[k] == 0 {
				continue
			}
			ratio := 1.0
			if other := math.Float64frombits(b.load[k].secondsPerCost.Load()); other > 0 && prev > 0 {
				ratio = other / prev
			}
			units += ah[k] * ratio
		}
		sample := latency.Seconds() / units
		next := sample
		if prev > 0 {
			next = prev + ewmaWeight*(sample-prev)
		}
		if l.secondsPerCost.CompareAndSwap(old, math.Float64bits(next)) {
			l.measuredAt.Store(time.Now().UnixNano())
			return
		}
	}
}

// failurePenalty is the latency sample, as a multiple of the current
// estimate, that a batch failed through the backend's fault counts as.
const failurePenalty = 2

// penalize folds a failed batch of kind into its latency per cost unit as
// a sample of failurePenalty times the estimate: a failure costs its
// caller a retry or an error, so a backend failing often looks slow to the
// gpu_aware policy and gets less traffic, even when its failures are fast
// (a backend that fails fast is the one that fools latency-based routing),
// while a rare failure barely moves it. Unmeasured figures are left
// unmeasured.
func (b *backend) penalize(kind model.Kind) {
	l := &b.load[kind]
	for {
		old := l.secondsPerCost.Load()
		prev := math.Float64frombits(old)
		if prev <= 0 {
			return
		}
		next := prev + ewmaWeight*(failurePenalty*prev-prev)
		if l.secondsPerCost.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// close closes both connections.
func (b *backend) close() error {
	return errors.Join(b.client.Close(), b.prober.Close())
}

// checkNow asks the health loop for a check, without waiting.
func (b *backend) checkNow() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}
