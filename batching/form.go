package batching

// Batch forming: one walker of the queue (plan) sizes the batch the
// policy decides on (view) and the batch that leaves (take), so the two
// cannot disagree about which items a batch holds.

import (
	"container/list"
	"context"
	"errors"
	"time"
)

// errAbandoned is the cause of a batch's context canceled because none of
// its members waits for its answer any more.
var errAbandoned = errors.New("batching: every member of the batch has left")

// batch is what one downstream call carries. Its mutable fields are
// guarded by the queue's mu.
type batch struct {
	pieces []piece
	items  [][]byte
	cost   int
	oldest time.Time // arrival of its longest-waiting member
	// priority is the 1-based level of its most urgent member, which
	// Downstream.Embed receives.
	priority int

	// ctx is the parent of the downstream call's context (set by send);
	// cancel cancels it with errAbandoned once waiting drops to 0.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// waiting counts the members not finished yet; lastLeft is the error
	// the last of them was finished with, once none waits.
	waiting  int
	lastLeft error
}

// plan is the batch the queue would send now, worked out without moving
// anything: the pieces it would carry, in order.
type plan struct {
	pieces []piece // aliases q.planned: valid until the next plan
	items  int
	cost   int
	// full is true when the batch stopped growing at its size or at the
	// cost budget, not because the queue ran out.
	full bool
	// oldest is when the longest-waiting queued request arrived (now if
	// none waits), member or not.
	oldest time.Time
}

// lists are the queued requests in the order batches take them: priority
// levels first to last, then the delayed.
func (q *queue) lists() []*list.List {
	return append(q.levels[:len(q.levels):len(q.levels)], q.delayed)
}

// plan walks the queue in the order batches take items (lists, each in
// arrival order; the delayed one in timeout order, which is the same) and
// plans a batch of up to n items within the cost budget; a request that
// does not fit whole is split, and only its first items are planned. The
// oldest request is at the front of one of the lists, so past the full
// batch the walk only looks at each list's front. A request whose caller
// has left is finished on the way (see left) and not planned: that is the
// walk's only effect. Called with mu held.
func (q *queue) plan(n int, now time.Time) plan {
	p := plan{pieces: q.planned[:0], oldest: now}
	for _, l := range q.lists() {
		front := true
		for e := l.Front(); e != nil; {
			r := e.Value.(*request)
			next := e.Next()
			if q.left(r) {
				e = next
				continue
			}
			if front {
				front = false
				if r.enqueued.Before(p.oldest) {
					p.oldest = r.enqueued
				}
			}
			if p.full {
				break
			}
			e = next
			end := r.next
			for end < len(r.items) && p.items < n {
				c := r.costs[end]
				if p.items > 0 && p.cost+c > q.cfg.MaxBatchCost {
					break
				}
				p.items++
				p.cost += c
				end++
			}
			if end > r.next {
				p.pieces = append(p.pieces, piece{req: r, start: r.next, end: end})
			}
			if end < len(r.items) {
				p.full = true
			}
		}
	}
	if p.items >= n {
		p.full = true
	}
	q.planned = p.pieces
	return p
}

// view is the plan of the largest batch the policy allows, as the policy
// sees it. Called with mu held.
func (q *queue) view(now time.Time) view {
	p := q.plan(q.policy.limit(), now)
	clear(p.pieces)
	return view{now: now, items: p.items, full: p.full, oldest: p.oldest, draining: q.closing, inFlight: q.inFlight}
}

// take plans a batch of up to n items and carries the plan out: the
// planned items leave the queue, in priority then arrival order, a
// request taken whole leaves the queue, and the rest of a split one stays
// at the front. The batch is empty if every queued caller had left.
// Called with mu held.
func (q *queue) take(n int, now time.Time) *batch {
	p := q.plan(n, now)
	b := &batch{pieces: make([]piece, 0, len(p.pieces)), items: make([][]byte, 0, p.items), cost: p.cost}
	for _, pc := range p.pieces {
		r := pc.req
		if len(b.pieces) == 0 || r.enqueued.Before(b.oldest) {
			b.oldest = r.enqueued
		}
		if len(b.pieces) == 0 || r.level+1 < b.priority {
			b.priority = r.level + 1
		}
		b.items = append(b.items, r.items[pc.start:pc.end]...)
		b.pieces = append(b.pieces, pc)
		r.next = pc.end
		r.batches = append(r.batches, b)
		b.waiting++
		if r.next == len(r.items) {
			q.metrics.queueDuration.Observe(now.Sub(r.enqueued).Seconds())
			q.unqueue(r)
		}
	}
	clear(p.pieces)
	return b
}

// queuedItems counts the items waiting. Called with mu held.
func (q *queue) queuedItems() int {
	n := 0
	for _, l := range q.lists() {
		for e := l.Front(); e != nil; e = e.Next() {
			r := e.Value.(*request)
			n += len(r.items) - r.next
		}
	}
	return n
}
