package tritonsim

import (
	"slices"
	"sync"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

// batch is one execution: requests of one model merged, run as one on a
// device. Its cost is the cost of its total size.
type batch struct {
	kind       model.Kind
	owner      *batcher
	reqs       []*pending
	size       int       // items
	seq        uint64    // the model's batch number, from 0: seeds its jitter
	dispatched time.Time // left the queue
}

// batcher is one model's scheduler: Triton's dynamic batcher in front of the
// model's instances. Its goroutine (run) forms a batch whenever an instance
// is free and the queue holds one worth sending, and hands it to the
// instance's device. With dynamic batching off, every request is a batch of
// its own; queue policy and priorities still apply.
type batcher struct {
	kind     model.Kind
	cfg      Batching
	maxBatch int
	dynamic  bool
	clock    Clock
	pending  adder                         // queued requests: nv_inference_pending_request_count
	dispatch func(bt *batch, instance int) // hands a batch to the instance's device; never blocks

	kick chan struct{} // wakes run: a request arrived or left, an instance came free

	mu    sync.Mutex
	queue *queues
	idle  []int // free instances, by index
	seq   uint64
}

func newBatcher(kind model.Kind, cfg Batching, maxBatch, instances int, dynamic bool, clock Clock, pending adder, dispatch func(*batch, int)) *batcher {
	b := &batcher{
		kind: kind, cfg: cfg, maxBatch: maxBatch, dynamic: dynamic, clock: clock, pending: pending, dispatch: dispatch,
		kick:  make(chan struct{}, 1),
		queue: newQueues(cfg),
	}
	for i := range instances {
		b.idle = append(b.idle, i)
	}
	return b
}

func (b *batcher) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// enqueue queues p, or fails at once with errQueueFull.
func (b *batcher) enqueue(p *pending) error {
	b.mu.Lock()
	err := b.queue.push(p)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	b.pending.Add(1)
	// Schedule now, on the caller's goroutine, so that a request that can
	// run at once leaves the queue before the next one arrives (and does
	// not count against max_queue_size); run then re-arms its timer.
	b.schedule()
	b.wake()
	return nil
}

// cancel takes p out of the queue if it is still there (true), as when its
// caller gives up; a request already in a batch runs with it.
func (b *batcher) cancel(p *pending) bool {
	b.mu.Lock()
	removed := b.queue.remove(p)
	b.mu.Unlock()
	if removed {
		b.pending.Add(-1)
		b.wake() // the head may have changed, and with it the delay
	}
	return removed
}

// release returns instance to the pool once its batch has finished.
func (b *batcher) release(instance int) {
	b.mu.Lock()
	b.idle = append(b.idle, instance)
	b.mu.Unlock()
	b.schedule()
	b.wake()
}

// state returns the number of queued requests and of idle instances.
func (b *batcher) state() (queued, idle int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queue.count, len(b.idle)
}

// run schedules until stop closes, then fails every queued request with
// errStopped.
func (b *batcher) run(stop <-chan struct{}) {
	var timer Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		wakeAt := b.schedule()
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		var fire <-chan time.Time
		if !wakeAt.IsZero() {
			timer = b.clock.NewTimer(max(wakeAt.Sub(b.clock.Now()), 0))
			fire = timer.C()
		}
		select {
		case <-b.kick:
		case <-fire:
		case <-stop:
			b.mu.Lock()
			var all []*pending
			b.queue.each(func(p *pending) bool { all = append(all, p); return true })
			for _, p := range all {
				b.queue.remove(p)
			}
			b.mu.Unlock()
			b.pending.Add(-float64(len(all)))
			for _, p := range all {
				p.done <- outcome{err: errStopped}
			}
			return
		}
	}
}

// schedule applies timeouts, dispatches every batch that is ready to a free
// instance, and returns when it must look again (zero: only when woken).
func (b *batcher) schedule() time.Time {
	b.mu.Lock()
	now := b.clock.Now()
	rejected, _ := b.queue.expire(now)
	var wakeAt time.Time
	for len(b.idle) > 0 {
		bt, at := b.next(now)
		if bt == nil {
			wakeAt = at
			break
		}
		instance := b.idle[len(b.idle)-1]
		b.idle = b.idle[:len(b.idle)-1]
		b.dispatch(bt, instance)
	}
	// The next deadline among those still queued (nothing more expires at
	// the same instant).
	_, deadline := b.queue.expire(now)
	wakeAt = earliest(wakeAt, deadline)
	b.mu.Unlock()
	b.pending.Add(-float64(len(rejected)))
	for _, p := range rejected {
		p.done <- outcome{err: errQueueTimeout}
	}
	return wakeAt
}

// next takes the next batch off the queue if one should run now; if one
// should run later, it returns when. The rule is the one Triton documents:
// requests join in scheduling order while they fit max_batch_size; a batch
// that reaches a preferred size runs at once, cut at the largest preferred
// size reached; otherwise it runs when it cannot grow (full, or the next
// request does not fit) or when its oldest request has waited
// max_queue_delay, and until then it waits for more requests.
func (b *batcher) next(now time.Time) (*batch, time.Time) {
	var picked []*pending
	total, bestCut, bestSize := 0, 0, 0
	overflow := false
	var oldest time.Time
	b.queue.each(func(p *pending) bool {
		if total+p.size() > b.maxBatch {
			overflow = true
			return false
		}
		picked = append(picked, p)
		total += p.size()
		if oldest.IsZero() || p.enqueued.Before(oldest) {
			oldest = p.enqueued
		}
		if slices.Contains(b.cfg.PreferredBatchSizes, total) {
			bestCut, bestSize = len(picked), total
		}
		return b.dynamic && total < b.maxBatch
	})
	if len(picked) == 0 {
		return nil, time.Time{}
	}
	if b.dynamic {
		due := oldest.Add(b.cfg.MaxQueueDelay)
		switch {
		case bestCut > 0:
			picked, total = picked[:bestCut], bestSize
		case overflow || total >= b.maxBatch || !now.Before(due):
		default:
			return nil, due
		}
	}
	for _, p := range picked {
		b.queue.remove(p)
	}
	b.pending.Add(-float64(len(picked)))
	bt := &batch{kind: b.kind, owner: b, reqs: picked, size: total, seq: b.seq, dispatched: now}
	b.seq++
	return bt, time.Time{}
}

// earliest is the earlier of two times, where zero means "never".
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
