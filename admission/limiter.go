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
	// inFlightWeight is the sum of 1/weight over the calls in flight (their
	// count when none is weighted); guarded by mu.
	inFlightWeight float64
	// The current window, guarded by mu: when it began (when the last one
	// closed), its latencies in seconds, how many samples it took in all, how
	// many were dropped downstream, and the most calls in flight during it.
	windowStart time.Time
	samples     []float64
	taken       int
	dropped     int
	peak        int
	// The window's time in flight, guarded by mu: area is the integral of
	// inFlightWeight over the window so far (in call-seconds), up to
	// areaAt; departed counts the calls that left in it, whatever their
	// outcome. area/departed is the mean time in flight of the window's
	// calls by Little's law, the calls still in flight included.
	area     float64
	areaAt   time.Time
	departed int
	// recent is the last window's quantile latency (0: none yet), the
	// basis of the retry delay; guarded by mu.
	recent time.Duration
	// The last cut, guarded by mu: when (zero: none pending), from which
	// limit, on which latency (seconds); and until when cuts are held
	// after a futile one.
	cutAt         time.Time
	cutFrom, cutQ float64
	holdUntil     time.Time
	// afterCut are the latencies (seconds) of calls admitted after the
	// pending cut, which alone show its effect; guarded by mu.
	afterCut []float64
}

const (
	// maxJudgedCut: cuts to more than this share of the limit are too
	// small to judge.
	maxJudgedCut = 0.8
	// futileShare: a cut that took off less than this share of the
	// latency it should have did not help.
	futileShare = 0.5
	// holdWindows is how long, in windows, cuts are held after a futile
	// one; the limit may grow meanwhile, so that the next cut is tried
	// from higher (goodput is what a futile cut costs).
	holdWindows = 20
)

func newLimiter(cfg Config, target time.Duration, initial int, now time.Time) *limiter {
	return &limiter{cfg: cfg, target: target, limit: float64(initial), windowStart: now, areaAt: now, samples: make([]float64, 0, maxWindowSamples)}
}

// tryAcquire takes a slot at now for a call of priority level (1 first)
// of levels and weight (at least 1), or reports the limit that applied to
// it.
func (l *limiter) tryAcquire(now time.Time, level, levels, weight int) (ok bool, inFlight, allowed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	allowed = l.allowedLocked(level, levels)
	if l.inFlight >= allowed {
		return false, l.inFlight, allowed
	}
	l.accrueLocked(now)
	l.inFlight++
	l.inFlightWeight += 1 / float64(weight)
	l.peak = max(l.peak, l.inFlight)
	return true, l.inFlight, allowed
}

// unacquire gives back a slot taken at now by tryAcquire for a call that
// was then refused (over the memory budget): no departure, no sample.
func (l *limiter) unacquire(now time.Time, weight int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accrueLocked(now)
	l.inFlight--
	l.inFlightWeight -= 1 / float64(weight)
}

// accrueLocked adds the calls in flight since areaAt to the window's
// area.
func (l *limiter) accrueLocked(now time.Time) {
	if now.After(l.areaAt) {
		l.area += l.inFlightWeight * now.Sub(l.areaAt).Seconds()
		l.areaAt = now
	}
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

// release gives back the slot of a call of weight and records its
// latency (already divided by the weight).
func (l *limiter) release(now time.Time, latency time.Duration, weight int, o Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accrueLocked(now)
	l.inFlight--
	l.inFlightWeight -= 1 / float64(weight)
	l.departed++
	if o == Ignored {
		return
	}
	sample := latency.Seconds()
	if !l.cutAt.IsZero() && !now.Add(-latency).Before(l.cutAt) && len(l.afterCut) < maxWindowSamples {
		l.afterCut = append(l.afterCut, sample)
	}
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
	q := quantile(l.samples, l.cfg.Quantile)
	// The completed calls' quantile misses the calls still in flight,
	// which matters when calls take longer than a window: after a start,
	// or a backend that slowed down, the first calls to complete are the
	// fast ones, while those admitted behind them queue for many windows
	// before they show. The mean time in flight of all the window's
	// calls counts them as they wait.
	inFlightMean := l.area / float64(max(l.departed, 1))
	served := float64(l.taken-l.dropped) / now.Sub(l.windowStart).Seconds()
	next := l.decideLocked(now, q, inFlightMean, served)
	if l.dropped > 0 {
		next = min(next, l.limit*l.cfg.Backoff)
	}
	l.limit = min(max(next, float64(l.cfg.MinLimit)), float64(l.cfg.MaxLimit))
	l.recent = time.Duration(q * float64(time.Second))

	l.windowStart = now
	l.samples = l.samples[:0]
	l.taken, l.dropped, l.departed, l.area = 0, 0, 0, 0
	l.peak = l.inFlight // the calls still in flight are the next window's too
}

// decideLocked is the limit after a window of quantile latency q, mean
// time in flight inFlightMean (both in seconds) and served calls a second,
// before the back-off for drops and the bounds.
func (l *limiter) decideLocked(now time.Time, q, inFlightMean, served float64) float64 {
	target := l.target.Seconds()
	if !l.cutAt.IsZero() {
		// A cut shows only in calls admitted after it: hold until
		// enough of them have completed, rather than cut again on calls
		// admitted before.
		enough := len(l.afterCut) >= l.cfg.MinSamples ||
			len(l.afterCut) > 0 && now.Sub(l.cutAt) >= l.cfg.MaxWindow+time.Duration(l.cutQ*float64(time.Second))
		if !enough {
			return l.limit
		}
		qa := quantile(l.afterCut, l.cfg.Quantile)
		cutFrom, cutQ := l.cutFrom, l.cutQ
		l.cutAt, l.afterCut = time.Time{}, l.afterCut[:0]
		// Queueing latency falls with the limit: a cut to a share r of
		// the limit should take about 1-r off the latency. A cut that
		// took off less than half that, from a latency still above the
		// target, was futile. Small cuts (r above 0.8) are not judged:
		// their effect is within the noise.
		r := l.limit / cutFrom
		if r <= maxJudgedCut && qa > target && (cutQ-qa)/cutQ < futileShare*(1-r) {
			// The cut did not lower the latency: it is not queueing
			// that the limit controls (the gateway's own CPU saturated
			// by parsing calls, admitted or refused alike; a backend
			// slow at any concurrency). Cutting on would only starve
			// the batcher, and goodput with it, down to MinLimit: undo
			// the cut and hold.
			l.holdUntil = now.Add(holdWindows * l.cfg.Window)
			return max(l.limit, cutFrom)
		}
	}
	holding := now.Before(l.holdUntil)
	// Three bands of q: above the target, cut; under GrowBelow × target,
	// grow; between, hold. Were the limit to grow up to the target
	// itself, it would oscillate across it, every other window's calls
	// over the target; the band lets it settle with q under the target,
	// the windows' noise within the band.
	switch {
	case max(q, inFlightMean) > target && !holding:
		l.cutAt, l.cutFrom, l.cutQ = now, l.limit, max(q, inFlightMean)
		next := l.limit * target / q
		if inFlightMean > target {
			// The calls waited longer than the target on average (see
			// updateLocked). By Little's law the class keeps served ×
			// latency calls in flight: cut to what keeps the latency in
			// the band, served × GrowBelow × target.
			next = min(next, served*l.cfg.GrowBelow*target)
		}
		return max(min(next, l.limit), l.limit/2)
	case float64(l.peak) >= l.limit/2 && (max(q, inFlightMean) <= l.cfg.GrowBelow*target || holding):
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
		return (1-s)*l.limit + s*(l.limit+headroom)
	}
	return l.limit
}

// quantile is the q quantile of samples, which it sorts; 0 if empty.
func quantile(samples []float64, q float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	idx := min(len(samples)-1, int(math.Ceil(q*float64(len(samples))))-1)
	return samples[max(idx, 0)]
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
