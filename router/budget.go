package router

import (
	"sync"
	"sync/atomic"
	"time"
)

// The retry budget counts over a sliding window of budgetSlots slots of
// budgetSlot each: long enough to smooth bursts, short enough that an
// outage's retries are bounded by the load of the last few seconds.
const (
	budgetSlots = 10
	budgetSlot  = time.Second
)

// A slot packs its slot number (Unix seconds) above countBits and its count
// below into one word, so that counting a batch is one compare-and-swap.
const (
	countBits = 24
	countMask = 1<<countBits - 1
)

// retryBudget allows a retry while the retries of the last 10 s stay under
// ratio x the batches of the same window plus minPerSecond x 10 s. During an
// outage every batch to the dead backend fails, and retrying all of them
// would add their whole load to the others; the budget caps the extra load
// at the ratio. Counting a batch, on every Embed, is lock-free; deciding a
// retry, only after a failure, takes a mutex so that concurrent retries do
// not overshoot the limit together.
type retryBudget struct {
	ratio, minPerSecond float64
	now                 func() time.Time

	requests [budgetSlots]atomic.Uint64

	mu      sync.Mutex
	retries [budgetSlots]atomic.Uint64 // written under mu
}

func newRetryBudget(ratio, minPerSecond float64, now func() time.Time) *retryBudget {
	return &retryBudget{ratio: ratio, minPerSecond: minPerSecond, now: now}
}

func (b *retryBudget) slot() uint64 { return uint64(b.now().UnixNano() / int64(budgetSlot)) }

// add counts one in slots for slot number n, resetting the slot when it
// last counted an older slot number.
func add(slots *[budgetSlots]atomic.Uint64, n uint64) {
	s := &slots[n%budgetSlots]
	for {
		old := s.Load()
		next := n<<countBits | 1
		switch seen := old >> countBits; {
		case seen == n:
			if old&countMask == countMask {
				return // saturated; 16M a second is beyond any gateway
			}
			next = old + 1
		case seen > n:
			return // the clock stepped back; drop the count
		}
		if s.CompareAndSwap(old, next) {
			return
		}
	}
}

// sum is the count of the slots within the window ending at slot number n.
func sum(slots *[budgetSlots]atomic.Uint64, n uint64) float64 {
	var total uint64
	for i := range slots {
		v := slots[i].Load()
		if seen := v >> countBits; seen <= n && n-seen < budgetSlots {
			total += v & countMask
		}
	}
	return float64(total)
}

// request counts one batch.
func (b *retryBudget) request() { add(&b.requests, b.slot()) }

// allowRetry reports whether one more retry fits the budget, and if so
// counts it.
func (b *retryBudget) allowRetry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.slot()
	limit := b.ratio*sum(&b.requests, n) + b.minPerSecond*budgetSlots*budgetSlot.Seconds()
	if sum(&b.retries, n)+1 > limit {
		return false
	}
	add(&b.retries, n)
	return true
}
