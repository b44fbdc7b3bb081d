// Package gpuaware is the GPU-aware balancing policy: each batch goes to
// the ready backend where it is estimated to complete first.
//
// # The estimate
//
// Every figure is per (backend, model): the query and page models differ in
// cost by orders of magnitude, and a backend's speed can differ between
// them. For a batch of model k and cost c (in the router's cost units) on
// backend b:
//
//	est(b) = spc_k(b) * (inflight_k(b) + c) + sum over the other models j of spc_j(b) * inflight_j(b) + foreign_wait_k(b)
//
// spc_k(b) is k's latency per cost unit on b, learned by the router from
// b's own answers (an EWMA of latency / the cost ahead of the batch, in k's
// units, plus its own), so a GPU three times slower shows up as a spc
// three times larger without anyone configuring speeds (a batch that
// failed through the backend's fault counts as a sample of twice the
// estimate, so a backend that fails often looks slow even when it fails
// fast); a figure not yet measured borrows the mean of the measured ones of
// the same model, and so does one older than Config.Remeasure: a backend
// judged slow gets few batches, so without this it would never be
// measured again after it recovered; treated as average, it gets a batch
// as soon as the others are busier, and is re-measured.
// inflight_k(b) is the cost of k's batches this gateway has in flight
// there, counted with atomics as batches leave and return, so it is exact
// and current. The other models' batches in flight count too, each at its
// own model's latency per cost unit: both models share the GPU (Triton runs
// them on the same device unless the instance groups say otherwise), so a
// page batch of 400 ms there delays the queries behind it; where they do
// not share it, the learned spc_k absorbs the difference, since it is
// learned against the same sum. foreign_wait_k(b) is the queueing this gateway did not
// cause, from b's telemetry when it is fresh: Triton's mean queue time per
// request of model k, scaled by the share of k's pending requests there
// that are not ours; when no queue figure is reported for k, the GPU's
// utilisation u stands in for it as an M/M/1 wait spc*c*u/(1-u) (u capped
// at 0.9), counted only while this gateway has nothing in flight there
// (otherwise the utilisation is our own load, already counted). A backend
// whose GPU has less free memory than Config.MinFreeMemoryFraction of its
// total is avoided while any other candidate has enough: a batch there
// risks an out-of-memory failure.
//
// # Full scan, not power of two choices
//
// Pick scans every candidate. Power of two choices exists for large pools
// and for state that is stale by the time it is used, where sampling two
// avoids every picker herding onto the one apparently idle backend. Here
// the pool is small (a handful to a few dozen Triton servers, so a scan is
// a few dozen atomic loads, well under a microsecond), and the dominant
// term, this gateway's own in-flight cost, is updated at the moment of each
// pick, so the next pick already sees it: a scan does not herd. Sampling
// two would instead, with three backends of which one is slow, often
// compare the slow one against a busy fast one and waste the third. The
// only stale input is telemetry shared by every gateway replica; it is a
// correction term, not the ranking, so herding across replicas stays small.
// Ties (an idle pool) are broken by a rotating scan start.
package gpuaware

import (
	"cmp"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/router/policy"
)

// Name is the policy's configuration name.
const Name = "gpu_aware"

// Defaults of Config.
const (
	// DefaultSecondsPerCost is the latency per cost unit assumed before any
	// backend has been measured: the router's default cost units are
	// milliseconds of a reference GPU.
	DefaultSecondsPerCost = 0.001
	// DefaultRemeasure is the age of a latency figure after which it is
	// not trusted.
	DefaultRemeasure = 5 * time.Second
	// DefaultMinFreeMemoryFraction is the free GPU memory, as a fraction of
	// the total, below which a backend is avoided.
	DefaultMinFreeMemoryFraction = 0.05
	// maxUtilization caps u in the utilisation-based wait, so that a GPU
	// reported fully busy gets a large but finite penalty.
	maxUtilization = 0.9
)

// Config tunes the policy. A zero field takes its default.
type Config struct {
	// SecondsPerCost is the prior latency per cost unit of a backend not
	// yet measured while no backend has been. Default 0.001.
	SecondsPerCost float64
	// MinFreeMemoryFraction is the free GPU memory fraction below which a
	// backend is avoided. Default 0.05.
	MinFreeMemoryFraction float64
	// Remeasure is the age beyond which a backend's measured latency per
	// cost unit is replaced by the mean of the others'. Default 5s.
	Remeasure time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.SecondsPerCost = cmp.Or(c.SecondsPerCost, DefaultSecondsPerCost)
	c.MinFreeMemoryFraction = cmp.Or(c.MinFreeMemoryFraction, DefaultMinFreeMemoryFraction)
	c.Remeasure = cmp.Or(c.Remeasure, DefaultRemeasure)
	return c
}

// Validate names every bad field of a defaulted Config.
func (c Config) Validate() error {
	var errs []error
	if !(c.SecondsPerCost > 0) {
		errs = append(errs, fmt.Errorf("gpu_aware: seconds per cost %v must be positive", c.SecondsPerCost))
	}
	if !(c.MinFreeMemoryFraction >= 0 && c.MinFreeMemoryFraction < 1) {
		errs = append(errs, fmt.Errorf("gpu_aware: min free memory fraction %v must be in [0, 1)", c.MinFreeMemoryFraction))
	}
	if c.Remeasure <= 0 {
		errs = append(errs, fmt.Errorf("gpu_aware: remeasure %v must be positive", c.Remeasure))
	}
	return errors.Join(errs...)
}

// Policy picks the candidate with the least estimated completion time.
type Policy struct {
	cfg   Config
	start atomic.Uint64
}

var _ policy.Policy = (*Policy)(nil)

// New returns the policy for cfg (defaulted), or cfg's error.
func New(cfg Config) (*Policy, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Policy{cfg: cfg}, nil
}

// Name is Name.
func (p *Policy) Name() string { return Name }

// Pick returns the candidate with the least estimate, preferring those with
// enough free GPU memory.
func (p *Policy) Pick(cands []policy.Candidate, b policy.Batch) (int, time.Duration) {
	now := time.Now()
	prior := p.priors(cands)
	n := len(cands)
	start := int(p.start.Add(1) % uint64(n)) // #nosec G115 -- the remainder of a division by n is below n, an int
	best, bestEst, bestLow := -1, 0.0, true
	for i := range n {
		j := (start + i) % n
		est, low := p.estimate(cands[j], b, prior, now)
		// Enough memory beats a lower estimate; among equals, the estimate.
		if best < 0 || (bestLow && !low) || (low == bestLow && est < bestEst) {
			best, bestEst, bestLow = j, est, low
		}
	}
	return best, time.Duration(bestEst * float64(time.Second))
}

// Estimate is the completion time the policy expects for b on c, with prior
// as the latency per cost unit of every model c has no fresh figure for.
func (p *Policy) Estimate(c policy.Candidate, b policy.Batch, prior float64) time.Duration {
	var priors [len(policy.Kinds)]float64
	for i := range priors {
		priors[i] = prior
	}
	est, _ := p.estimate(c, b, priors, time.Now())
	return time.Duration(est * float64(time.Second))
}

// priors is each model's mean measured latency per cost unit over cands,
// or the configured prior for a model none has measured: an unmeasured
// backend is assumed average, so it is tried (and measured) as soon as it
// is the least loaded.
func (p *Policy) priors(cands []policy.Candidate) [len(policy.Kinds)]float64 {
	var out [len(policy.Kinds)]float64
	for i, k := range policy.Kinds {
		sum, n := 0.0, 0
		for _, c := range cands {
			if l := c.Load(k); l.SecondsPerCost > 0 {
				sum += l.SecondsPerCost
				n++
			}
		}
		out[i] = p.cfg.SecondsPerCost
		if n > 0 {
			out[i] = sum / float64(n)
		}
	}
	return out
}

func (p *Policy) fresh(l policy.Load, now time.Time) bool {
	return l.SecondsPerCost > 0 && now.Sub(l.MeasuredAt) <= p.cfg.Remeasure
}

// estimate returns the estimated completion time in seconds and whether the
// backend is short of GPU memory.
func (p *Policy) estimate(c policy.Candidate, b policy.Batch, prior [len(policy.Kinds)]float64, now time.Time) (float64, bool) {
	var est, spc float64
	var own policy.Load
	for i, k := range policy.Kinds {
		l := c.Load(k)
		s := prior[i]
		if p.fresh(l, now) {
			s = l.SecondsPerCost
		}
		if k == b.Kind {
			own, spc = l, s
			est += s * (l.InFlightCost + b.Cost)
		} else {
			est += s * l.InFlightCost
		}
	}
	st, ok := c.GPU()
	if !ok {
		return est, false
	}
	m, _ := st.Model(b.Model)
	switch {
	case m.QueueTimePerRequest > 0 && m.Pending > 0:
		foreign := min(max(1-float64(own.InFlight)/m.Pending, 0), 1)
		est += foreign * m.QueueTimePerRequest.Seconds()
	case m.QueueTimePerRequest == 0 && c.InFlight() == 0 && st.Utilization > 0:
		u := min(st.Utilization, maxUtilization)
		est += spc * b.Cost * u / (1 - u)
	}
	low := st.MemoryTotal > 0 && float64(st.MemoryFree()) < p.cfg.MinFreeMemoryFraction*float64(st.MemoryTotal)
	return est, low
}
