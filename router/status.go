package router

import (
	"slices"
	"time"

	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/router/policy"
)

// BackendStatus is one backend as the router sees it, for operators.
type BackendStatus struct {
	Addr, MetricsURL string
	State            State
	// Models is each model's readiness at the last check.
	Models []ModelStatus
	// LastCheck is when health was last checked; LastError is why the
	// backend is not ready, or why it was ejected.
	LastCheck time.Time
	LastError string
	// InFlight and InFlightCost are what this gateway has in flight there.
	InFlight     int64
	InFlightCost float64
	// ConsecutiveFailures counts failed batches in a row; EjectedUntil is
	// the end of the current ejection's backoff (zero when not ejected).
	ConsecutiveFailures int64
	EjectedUntil        time.Time
	// ConsecutiveCheckFailures and ConsecutiveCheckPasses count the health checks
	// in a row that failed and passed (Config.UnhealthyThreshold and
	// Config.HealthyThreshold); a failed check is not counted when the
	// backend answered batches since the check before.
	ConsecutiveCheckFailures, ConsecutiveCheckPasses int
	// Panic reports that batches go to this backend although its checks
	// fail, because no backend passes them for one of its models (panic
	// routing).
	Panic bool
	// Picks, Failures and Ejections are counts since the backend joined.
	Picks, Failures, Ejections uint64
	// LatencyPerCost is the mean over models of the learned latency per
	// cost unit (0: not yet measured; each model's is in Models);
	// LastEstimate the gpu_aware policy's estimated completion time of the
	// last batch sent there.
	LatencyPerCost time.Duration
	LastEstimate   time.Duration
	// GPU is the backend's telemetry, meaningful when GPUFresh.
	GPU      gpu.Stats
	GPUFresh bool
}

// ModelStatus is one model's readiness on a backend, and this gateway's
// figures for it there.
type ModelStatus struct {
	Name  string
	Ready bool
	// InFlight and InFlightCost are the model's batches this gateway has
	// in flight there.
	InFlight     int64
	InFlightCost float64
	// LatencyPerCost is the model's learned latency per cost unit there
	// (0: not yet measured).
	LatencyPerCost time.Duration
}

// Backends returns the status of every backend in the pool, draining ones
// included, by address.
func (r *Router) Backends() []BackendStatus {
	s := r.snap.Load()
	out := make([]BackendStatus, 0, len(s.backends))
	for _, b := range s.backends {
		st := BackendStatus{
			Addr: b.Addr(), MetricsURL: b.endpoint.MetricsURL,
			InFlight: b.InFlight(), InFlightCost: b.InFlightCost(),
			ConsecutiveFailures: b.consecutiveFailures.Load(),
			Picks:               b.picks.Load(), Failures: b.failures.Load(), Ejections: b.ejections.Load(),
			LastEstimate: time.Duration(b.lastEstimate.Load()),
		}
		st.GPU, st.GPUFresh = b.GPU()
		r.mu.Lock()
		h := b.health
		r.mu.Unlock()
		st.State, st.LastCheck, st.LastError, st.EjectedUntil = h.state(), h.lastCheck, h.lastError, h.ejectedUntil
		st.ConsecutiveCheckFailures, st.ConsecutiveCheckPasses = h.probeFails, h.probePasses
		for _, k := range kinds {
			st.Panic = st.Panic || slices.Contains(s.panic[k], policy.Candidate(b))
		}
		var sum time.Duration
		var measured int
		for _, k := range kinds {
			l := b.Load(k)
			ms := ModelStatus{
				Name: r.cfg.Models.ModelName(k), Ready: h.models[k],
				InFlight: l.InFlight, InFlightCost: l.InFlightCost,
				LatencyPerCost: time.Duration(l.SecondsPerCost * float64(time.Second)),
			}
			if ms.LatencyPerCost > 0 {
				sum += ms.LatencyPerCost
				measured++
			}
			st.Models = append(st.Models, ms)
		}
		if measured > 0 {
			st.LatencyPerCost = sum / time.Duration(measured)
		}
		out = append(out, st)
	}
	return out
}

// PoolStatus is the pool as a whole, for operators.
type PoolStatus struct {
	// Policy is the balancing policy's name.
	Policy string
	// Backends are every backend, by address.
	Backends []BackendStatus
}

// Pool returns the pool's status.
func (r *Router) Pool() PoolStatus {
	return PoolStatus{Policy: r.PolicyName(), Backends: r.Backends()}
}
