package tritonsim

import (
	"container/list"
	"errors"
	"time"
)

// Scheduling errors; use errors.Is. inferError maps them to Triton's codes
// and texts, which clients match on.
var (
	// errQueueFull: the request's priority level is at its max_queue_size.
	// Overload, not a dead server.
	errQueueFull = errors.New("queue full")
	// errQueueTimeout: the request's queue timeout passed while it was
	// queued, under the REJECT action.
	errQueueTimeout = errors.New("queue timeout")
	// errStopped: the simulator is stopping.
	errStopped = errors.New("the simulator is stopping")
)

// adder is the part of a Prometheus gauge the batcher uses to publish its
// queue length.
type adder interface{ Add(float64) }

// pending is one ModelInfer request from the moment it is queued until it
// has its outcome. While queued it belongs to its batcher (under the
// batcher's lock); once in a batch, to the device running the batch.
// Exactly one outcome is sent on done, by its owner at the time.
type pending struct {
	items    [][]byte
	level    int       // priority level, from 1
	enqueued time.Time // on the simulator's clock
	deadline time.Time // queue timeout; zero: none
	delay    bool      // timeout action DELAY rather than REJECT
	done     chan outcome

	// Guarded by the batcher's lock.
	queue   *list.List // the list holding it; nil once it has left the queue
	elem    *list.Element
	expired bool // timed out under DELAY: scheduled after its level's others
}

func newPending(items [][]byte, level int, now, deadline time.Time, delay bool) *pending {
	return &pending{items: items, level: level, enqueued: now, deadline: deadline, delay: delay, done: make(chan outcome, 1)}
}

func (p *pending) size() int { return len(p.items) }

// outcome is how a pending request ended.
type outcome struct {
	err error
	// The rest is set on success, on the simulator's clock.
	dispatched time.Time // its batch left the queue for an instance
	started    time.Time // the device began the batch
	finished   time.Time // the device finished it
	batchSize  int       // items in the whole batch
}

// levelQueue is one priority level's queue: requests in arrival order, and
// behind them those that timed out under the DELAY action.
type levelQueue struct {
	policy  QueuePolicy
	live    list.List
	delayed list.List
}

func (q *levelQueue) len() int { return q.live.Len() + q.delayed.Len() }

// queues are a model's priority levels, level 1 (the highest) first. Not
// safe for concurrent use: the batcher's lock guards it.
type queues struct {
	levels []*levelQueue
	count  int
}

func newQueues(b Batching) *queues {
	q := &queues{}
	for level := 1; level <= b.levels(); level++ {
		q.levels = append(q.levels, &levelQueue{policy: b.policy(level)})
	}
	return q
}

// push queues p at the back of its level, or fails with errQueueFull.
func (q *queues) push(p *pending) error {
	lq := q.levels[p.level-1]
	if lq.policy.MaxQueueSize > 0 && lq.len() >= lq.policy.MaxQueueSize {
		return errQueueFull
	}
	p.queue = &lq.live
	p.elem = lq.live.PushBack(p)
	q.count++
	return nil
}

// remove takes p out of the queue; false if it had already left.
func (q *queues) remove(p *pending) bool {
	if p.queue == nil {
		return false
	}
	p.queue.Remove(p.elem)
	p.queue, p.elem = nil, nil
	q.count--
	return true
}

// each calls f on the queued requests in scheduling order (level by level;
// in each, arrival order, then the delayed ones) until f returns false.
func (q *queues) each(f func(*pending) bool) {
	for _, lq := range q.levels {
		for _, l := range []*list.List{&lq.live, &lq.delayed} {
			for e := l.Front(); e != nil; e = e.Next() {
				if !f(e.Value.(*pending)) {
					return
				}
			}
		}
	}
}

// expire applies the timeout action to every request whose deadline has
// passed at now: a REJECT one leaves the queue and is returned; a DELAY one
// moves behind the rest of its level. It also returns the earliest deadline
// still ahead (zero: none).
func (q *queues) expire(now time.Time) (rejected []*pending, next time.Time) {
	for _, lq := range q.levels {
		for e := lq.live.Front(); e != nil; {
			p := e.Value.(*pending)
			e = e.Next()
			switch {
			case p.deadline.IsZero():
			case now.Before(p.deadline):
				if next.IsZero() || p.deadline.Before(next) {
					next = p.deadline
				}
			case p.delay:
				lq.live.Remove(p.elem)
				p.queue, p.elem, p.expired = &lq.delayed, lq.delayed.PushBack(p), true
			default:
				q.remove(p)
				rejected = append(rejected, p)
			}
		}
	}
	return rejected, next
}
