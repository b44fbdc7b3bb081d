package admission

import (
	"math"
	"slices"
	"sync"
	"time"
)

// maxWindowSamples bounds the latencies one window keeps for its quantile;
// past it, new samples overwrite old ones in turn, so that a busy window
// still reflects its end.
const maxWindowSamples = 512

// limiter is one class's adaptive concurrency limit (see the package doc
// for the algorithm).
type limiter struct {
	cfg    Config
	target time.Duration

	mu       sync.Mutex
	limit    float64 // guarded by mu
	inFlight int     // guarded by mu
	// The current window, guarded by mu: when it began (when the last one
	// closed), its latencies in seconds, how many samples it took in all, how
	// many were dropped downstream, and the most calls in flight during it.
	windowStart time.Time
	samples     []float64
	taken       int
	dropped     int
	peak        int
	// recent is the last window's quantile latency (0: none yet), the
	// basis of the retry delay; guarded by mu.
	recent time.Duration
}

func newLimiter(cfg Config, target time.Duration, now time.Time) *limiter {
	return &limiter{cfg: cfg, target: target, limit: float64(cfg.InitialLimit), windowStart: now, samples: make([]float64, 0, maxWindowSamples)}
}

// tryAcquire takes a slot for a call of priority level (1 first) of
// levels, or reports the limit that applied to it.
func (l *limiter) tryAcquire(level, levels int) (ok bool, inFlight, allowed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	allowed = l.allowedLocked(level, levels)
	if l.inFlight >= allowed {
		return false, l.inFlight, allowed
	}
	l.inFlight++
	l.peak = max(l.peak, l.inFlight)
	return true, l.inFlight, allowed
}

// allowedLocked is how many calls of the class may be in flight when one
// of level (of levels) arrives: the whole limit for level 1, down to
// (1 - PriorityReserve) of it for the last level; never below 1.
func (l *limiter) allowedLocked(level, levels int) int {
	share := 1.0
	if levels > 1 {
		level = min(max(level, 1), levels)
		share = 1 - l.cfg.PriorityReserve*float64(level-1)/float64(levels-1)
	}
	return max(1, int(math.Floor(l.limit*share)))
}

// release gives the slot back and records the call's latency.
func (l *limiter) release(now time.Time, latency time.Duration, o Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	if o == Ignored {
		return
	}
	sample := latency.Seconds()
	if len(l.samples) < maxWindowSamples {
		l.samples = append(l.samples, sample)
	} else {
		l.samples[l.taken%maxWindowSamples] = sample
	}
	l.taken++
	if o == Dropped {
		l.dropped++
	}
	if elapsed := now.Sub(l.windowStart); l.taken >= l.cfg.MinSamples && elapsed >= l.cfg.Window || elapsed >= l.cfg.MaxWindow {
		l.updateLocked(now)
	}
}

// updateLocked moves the limit once on the window that just ended and
// starts the next at now.
func (l *limiter) updateLocked(now time.Time) {
	slices.Sort(l.samples)
	idx := min(len(l.samples)-1, int(math.Ceil(l.cfg.Quantile*float64(len(l.samples))))-1)
	q := l.samples[max(idx, 0)]
	target := l.target.Seconds()
	next := l.limit
	switch {
	case q > target:
		next = l.limit * max(0.5, target/q)
	case float64(l.peak) >= l.limit/2:
		// Growth is smoothed, a cut is not: too many calls in flight
		// cost every admitted call its latency, too few only some
		// goodput for a window.
		// Far under the target, grow by half the limit (a slow start),
		// so that a limit set low at start or after an overload does not
		// take minutes to climb back.
		headroom := math.Sqrt(l.limit)
		if q <= target/2 {
			headroom = max(headroom, l.limit/2)
		}
		s := l.cfg.Smoothing
		next = (1-s)*l.limit + s*(l.limit+headroom)
	}
	if l.dropped > 0 {
		next = min(next, l.limit*l.cfg.Backoff)
	}
	l.limit = min(max(next, float64(l.cfg.MinLimit)), float64(l.cfg.MaxLimit))
	l.recent = time.Duration(q * float64(time.Second))

	l.windowStart = now
	l.samples = l.samples[:0]
	l.taken, l.dropped = 0, 0
	l.peak = l.inFlight // the calls still in flight are the next window's too
}

// snapshot is the limit (rounded down) and the calls in flight.
func (l *limiter) snapshot() (limit, inFlight int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.limit), l.inFlight
}

// retryDelay is the delay suggested to a refused call: about one call's
// latency, when a slot is likely to free up.
func (l *limiter) retryDelay() time.Duration {
	l.mu.Lock()
	d := l.recent
	l.mu.Unlock()
	if d == 0 {
		d = l.target
	}
	return min(max(d, l.cfg.MinRetryDelay), l.cfg.MaxRetryDelay)
}
