package batching

import (
	"math"
	"slices"
	"time"
)

// view is what a policy sees when a backend slot is free and requests
// wait: the batch that could be sent now, and how long its oldest member
// has waited.
type view struct {
	now time.Time
	// items is how many items the batch would hold if sent now, at most
	// the policy's limit and within the cost budget.
	items int
	// full is true when the batch stopped growing at the policy's limit or
	// at the cost budget, not because the queue ran out: waiting cannot
	// make it bigger.
	full bool
	// oldest is when the longest-waiting queued request arrived.
	oldest time.Time
	// draining is true once the batcher is closing: send everything now.
	draining bool
	// inFlight is the number of batches sent and not yet answered.
	inFlight int
}

// policy decides when a batch leaves and how large it may be. Every
// method runs under the queue's lock, so a policy needs no locking.
type policy interface {
	// limit is the most items the next batch may hold.
	limit() int
	// decide returns how many items to send now (0 to wait) and, when
	// waiting, how long at most before deciding again.
	decide(v view) (send int, wait time.Duration)
	// arrived records a request of n items arriving at now.
	arrived(now time.Time, n int)
	// completed records a batch of n items that kept the backend busy for
	// service and answered its oldest member latency after that member
	// arrived, with backlog items still queued when it came back.
	completed(n int, service, latency time.Duration, backlog int)
}

// staticPolicy is Triton's dynamic batcher: when an instance (here a slot)
// is free, send the largest preferred batch size the queue can fill; with
// none, send once the batch is full or once the oldest request has waited
// MaxQueueDelay.
type staticPolicy struct {
	cfg       ModelConfig
	preferred []int // ascending
}

func newStaticPolicy(cfg ModelConfig) *staticPolicy {
	p := slices.Clone(cfg.PreferredBatchSizes)
	slices.Sort(p)
	return &staticPolicy{cfg: cfg, preferred: slices.Compact(p)}
}

func (s *staticPolicy) limit() int                                       { return s.cfg.MaxBatchSize }
func (s *staticPolicy) arrived(time.Time, int)                           {}
func (s *staticPolicy) completed(int, time.Duration, time.Duration, int) {}

func (s *staticPolicy) decide(v view) (int, time.Duration) {
	if v.full || v.draining {
		return v.items, 0
	}
	// The largest preferred size the queue fills now goes without waiting.
	for i := len(s.preferred) - 1; i >= 0; i-- {
		if s.preferred[i] <= v.items {
			return s.preferred[i], 0
		}
	}
	waited := v.now.Sub(v.oldest)
	if waited >= s.cfg.MaxQueueDelay {
		return v.items, 0
	}
	return 0, s.cfg.MaxQueueDelay - waited
}

// adaptivePolicy grows batches as far as the latency target allows and
// waits for a fuller batch only when the backend is busy enough for the
// wait to pay; see the package doc for the derivation.
type adaptivePolicy struct {
	cfg ModelConfig
	// capSize is the AIMD-controlled batch size limit, 1..MaxBatchSize.
	capSize int
	// latency is the fitted backend service time per batch size.
	latency latencyModel
	// rate is the item arrival rate, per second, decayed over rateWindow.
	rate        float64
	lastArrival time.Time
}

const (
	// rateWindow is the time constant of the arrival rate estimate: long
	// enough to smooth single arrivals, short enough to follow a burst.
	rateWindow = 200 * time.Millisecond
	// decreaseFactor is the multiplicative decrease of the batch size
	// limit when a batch misses the latency target (Clipper backs off 10%).
	decreaseFactor = 0.9
	// busyUtilisation is the backend utilisation, at the batch size on
	// hand, from which waiting for a fuller batch is worth it: at 1 the
	// backend could no longer keep up if every batch were this small.
	busyUtilisation = 1.0
)

func newAdaptivePolicy(cfg ModelConfig) *adaptivePolicy {
	return &adaptivePolicy{cfg: cfg, capSize: cfg.MaxBatchSize}
}

func (a *adaptivePolicy) limit() int { return a.capSize }

func (a *adaptivePolicy) arrived(now time.Time, n int) {
	if !a.lastArrival.IsZero() {
		dt := max(now.Sub(a.lastArrival), 0)
		a.rate *= math.Exp(-float64(dt) / float64(rateWindow))
	}
	a.rate += float64(n) / rateWindow.Seconds()
	a.lastArrival = now
}

// currentRate is the arrival rate decayed to now.
func (a *adaptivePolicy) currentRate(now time.Time) float64 {
	if a.lastArrival.IsZero() {
		return 0
	}
	dt := max(now.Sub(a.lastArrival), 0)
	return a.rate * math.Exp(-float64(dt)/float64(rateWindow))
}

func (a *adaptivePolicy) completed(n int, service, latency time.Duration, backlog int) {
	a.latency.observe(n, service)
	step := max(1, a.cfg.MaxBatchSize/16)
	wait := latency - service // the oldest member's time in queues
	switch {
	case latency <= a.cfg.LatencyTarget:
		if n >= a.capSize {
			a.capSize = min(a.cfg.MaxBatchSize, a.capSize+step)
		}
	case service >= wait:
		// Over target, mostly because of the batch itself: smaller
		// batches answer sooner.
		a.capSize = max(1, min(a.capSize, int(float64(n)*decreaseFactor)))
	case backlog >= a.capSize:
		// Over target, mostly because of the queue, and a full batch
		// waits: the backend is the bottleneck, and larger batches drain
		// the queue faster.
		a.capSize = min(a.cfg.MaxBatchSize, a.capSize+step)
	}
}

func (a *adaptivePolicy) decide(v view) (int, time.Duration) {
	if v.full || v.draining || v.items == 0 {
		return v.items, 0
	}
	lambda := a.currentRate(v.now)
	l := a.latency.predict(v.items)
	if lambda <= 0 || l <= 0 {
		return v.items, 0 // nothing known yet: do not hold requests back
	}
	// Utilisation the backend would need if every batch were this size.
	// Low, with nothing in flight, the backend is idle and sending now
	// costs nobody anything; with a batch in flight, this one would wait
	// behind it anyway, so it may as well grow meanwhile.
	if rho := lambda * l.Seconds() / float64(v.items); rho < busyUtilisation && v.inFlight == 0 {
		return v.items, 0
	}
	waited := v.now.Sub(v.oldest)
	fill := time.Duration(float64(a.capSize-v.items) / lambda * float64(time.Second))
	wait := min(fill, a.cfg.MaxQueueDelay-waited)
	// The batch expected by the end of the wait must still answer the
	// oldest request within the target; wait less if it would not.
	expected := min(a.capSize, v.items+int(lambda*wait.Seconds()))
	wait = min(wait, a.cfg.LatencyTarget-waited-a.latency.predict(expected))
	if wait <= 0 {
		return v.items, 0
	}
	return 0, wait
}

// latencyModel fits latency(n) = base + perItem*n to recent batches by
// exponentially weighted least squares, so that it follows a backend whose
// speed changes.
type latencyModel struct {
	w, sn, snn, sl, snl float64
}

// latencyMemory is the weight of the newest observation (about the last
// 20 batches count).
const latencyMemory = 0.05

func (m *latencyModel) observe(n int, latency time.Duration) {
	keep := 1 - latencyMemory
	x, y := float64(n), latency.Seconds()
	m.w = m.w*keep + 1
	m.sn = m.sn*keep + x
	m.snn = m.snn*keep + x*x
	m.sl = m.sl*keep + y
	m.snl = m.snl*keep + x*y
}

// predict returns the expected latency of a batch of n, 0 when nothing
// has been observed.
func (m *latencyModel) predict(n int) time.Duration {
	if m.w == 0 {
		return 0
	}
	meanN, meanL := m.sn/m.w, m.sl/m.w
	slope := 0.0
	if v := m.snn/m.w - meanN*meanN; v > 1e-9 {
		slope = max((m.snl/m.w-meanN*meanL)/v, 0)
	}
	base := max(meanL-slope*meanN, 0)
	return time.Duration((base + slope*float64(n)) * float64(time.Second))
}
