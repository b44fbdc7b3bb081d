package batching

// Requests: how a call enters a queue, how its caller leaves it, and how
// it is finished, exactly once.

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

// request is one Embed call in a queue. Every field but the immutable ones
// (ctx, items, costs, level, enqueued, done) is guarded by the queue's mu.
type request struct {
	ctx      context.Context
	items    [][]byte
	costs    []int
	level    int // 0-based priority index
	enqueued time.Time
	done     chan struct{} // closed by finish, once

	// timeoutAt is when its queue timeout passes; every request has one
	// (QueueTimeout is positive). Under TimeoutDelay it leaves the timeout
	// heap once passed.
	timeoutAt time.Time
	next      int      // first item not yet sent
	batches   []*batch // the batches in flight carrying its pieces
	out       []model.Embedding
	err       error
	finished  bool
	elem      *list.Element // position in its list while queued, else nil
	list      *list.List
	heapIndex int // position in the timeout heap, -1 when not there
}

// piece is the part items[start:end] of a request carried by one batch.
type piece struct {
	req        *request
	start, end int
}

// newRequest is a call of items at priority level (1-based), not yet
// queued.
func (q *queue) newRequest(ctx context.Context, items [][]byte, level int) *request {
	r := &request{
		ctx:       ctx,
		items:     items,
		costs:     make([]int, len(items)),
		level:     level - 1,
		done:      make(chan struct{}),
		out:       make([]model.Embedding, len(items)),
		heapIndex: -1,
	}
	for i, item := range items {
		r.costs[i] = q.cfg.itemCost(q.kind, item)
	}
	return r
}

// enqueue puts r at the back of its priority level and wakes the
// dispatcher, or refuses it when the queue is closing or full.
func (q *queue) enqueue(r *request) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		q.metrics.reject(reasonClosed)
		return fmt.Errorf("%w: model %s", ErrClosed, q.name)
	}
	if q.queued >= q.cfg.MaxQueueSize {
		q.metrics.reject(reasonQueueFull)
		return fmt.Errorf("%w: model %s already holds %d requests (max-queue-size)", ErrQueueFull, q.name, q.queued)
	}
	now := q.clock.Now()
	r.enqueued = now
	r.timeoutAt = queueTimeout(q.cfg, r.ctx, now)
	r.list = q.levels[r.level]
	r.elem = r.list.PushBack(r)
	heap.Push(&q.timeouts, r)
	q.queued++
	q.metrics.queueLength.Set(float64(q.queued))
	q.policy.arrived(now, len(r.items))
	q.signal()
	return nil
}

// queueTimeout is when the queue timeout passes for a request that
// arrives at now with ctx under cfg: its own deadline if cfg allows the
// override and it has one, else QueueTimeout (always positive) after now.
// Every request has one.
func queueTimeout(cfg ModelConfig, ctx context.Context, now time.Time) time.Time {
	if cfg.AllowTimeoutOverride {
		if d, ok := ctx.Deadline(); ok {
			return d
		}
	}
	return now.Add(cfg.QueueTimeout)
}

// leave is a caller giving up (its ctx ended): it gets its error at once,
// its queued items are dropped, rows of its batches in flight will be
// thrown away, and a batch of it that no other member waits for is
// canceled (see finish). If the request was finished meanwhile (by the
// dispatcher that saw its context end first, say), its result stands.
func (q *queue) leave(r *request, err error) ([]model.Embedding, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r.finished {
		return r.out, r.err
	}
	q.rejectLeft(err)
	q.finish(r, err)
	q.signal()
	return nil, err
}

// rejectLeft counts a caller that left because its context ended with err.
func (q *queue) rejectLeft(err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		q.metrics.reject(reasonDeadline)
	} else {
		q.metrics.reject(reasonCanceled)
	}
}

// left reports whether r's caller has left: its context has ended, though
// the caller may not have taken the mutex in leave yet. Such a request is
// finished here, as leave would, so that none of its items is sent.
// Called with mu held.
func (q *queue) left(r *request) bool {
	err := r.ctx.Err()
	if err == nil {
		return false
	}
	q.rejectLeft(err)
	q.finish(r, err)
	return true
}

// finish ends r with err (nil: success), exactly once; r leaves the queue
// if it is still there. Finished early, while batches carrying its pieces
// are in flight, r no longer waits for them: each counts it off, and one
// that no member waits for any more is canceled. Called with mu held.
func (q *queue) finish(r *request, err error) {
	if r.finished {
		return
	}
	r.finished = true
	if err != nil {
		r.out, r.err = nil, err
	}
	for _, b := range r.batches {
		b.waiting--
		if b.waiting == 0 {
			b.lastLeft = err
			b.cancel(fmt.Errorf("%w: model %s", errAbandoned, q.name))
		}
	}
	r.batches = nil
	q.unqueue(r)
	close(r.done)
}

// unqueue removes r from its list and the timeout heap. Called with mu held.
func (q *queue) unqueue(r *request) {
	if r.elem != nil {
		r.list.Remove(r.elem)
		r.elem, r.list = nil, nil
		q.queued--
		q.metrics.queueLength.Set(float64(q.queued))
	}
	if r.heapIndex >= 0 {
		heap.Remove(&q.timeouts, r.heapIndex)
	}
}

// expire applies the queue policy's timeout action to every request whose
// queue timeout has passed. Called with mu held.
func (q *queue) expire(now time.Time) {
	for len(q.timeouts) > 0 && !q.timeouts[0].timeoutAt.After(now) {
		r := q.timeouts[0]
		if q.cfg.TimeoutAction == TimeoutDelay {
			heap.Remove(&q.timeouts, 0)
			r.list.Remove(r.elem)
			r.list, r.elem = q.delayed, q.delayed.PushBack(r)
			continue
		}
		q.metrics.reject(reasonQueueTimeout)
		q.finish(r, fmt.Errorf("%w: model %s, waited %v (queue-timeout)", ErrQueueTimeout, q.name, now.Sub(r.enqueued).Round(time.Millisecond)))
	}
}

// timeoutHeap orders queued requests by queue timeout, earliest first.
type timeoutHeap []*request

func (h timeoutHeap) Len() int           { return len(h) }
func (h timeoutHeap) Less(i, j int) bool { return h[i].timeoutAt.Before(h[j].timeoutAt) }
func (h timeoutHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex, h[j].heapIndex = i, j
}
func (h *timeoutHeap) Push(x any) {
	r := x.(*request)
	r.heapIndex = len(*h)
	*h = append(*h, r)
}
func (h *timeoutHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	r.heapIndex = -1
	return r
}
