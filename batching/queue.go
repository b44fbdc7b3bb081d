package batching

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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

// queueParams are what newQueue needs.
type queueParams struct {
	kind model.Kind
	name string
	mode Mode
	cfg  ModelConfig
	down Downstream
	// backends is how many backends take this model's batches now (>= 1).
	backends func() int
	clock    Clock
	logger   *slog.Logger
	metrics  *modelMetrics
	tracer   trace.Tracer
}

// queue is one model's queue and its dispatcher goroutine.
type queue struct {
	queueParams
	policy policy // nil in ModeNone

	// base is the parent of every batch's context; canceled by a Close
	// whose context ended, to abandon the batches in flight.
	base       context.Context
	cancelBase context.CancelFunc
	wake       chan struct{} // capacity 1: "something changed, look again"
	loopDone   chan struct{}
	batches    sync.WaitGroup

	mu       sync.Mutex
	levels   []*list.List // queued requests per priority level, FIFO
	delayed  *list.List   // requests past their timeout under TimeoutDelay
	queued   int          // requests in levels and delayed
	timeouts timeoutHeap  // queued requests that have a timeout
	inFlight int          // batches sent and not answered
	closing  bool
	// lastDone is when the last batch came back; see serviceTime.
	lastDone time.Time
}

func newQueue(p queueParams) *queue {
	q := &queue{queueParams: p, wake: make(chan struct{}, 1), loopDone: make(chan struct{}), delayed: list.New()}
	q.base, q.cancelBase = context.WithCancel(context.Background())
	for range p.cfg.PriorityLevels {
		q.levels = append(q.levels, list.New())
	}
	switch p.mode {
	case ModeStatic:
		q.policy = newStaticPolicy(p.cfg)
	case ModeAdaptive:
		q.policy = newAdaptivePolicy(p.cfg)
	}
	if q.policy == nil {
		close(q.loopDone)
		p.metrics.batchLimit.Set(float64(p.cfg.MaxBatchSize))
		return q
	}
	p.metrics.batchLimit.Set(float64(q.policy.limit()))
	go q.loop()
	return q
}

// signal asks the dispatcher to look at the queue again.
func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) embed(ctx context.Context, items [][]byte) ([]model.Embedding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	level := PriorityFrom(ctx)
	if level == 0 {
		level = q.cfg.DefaultPriority
	}
	if level < 0 || level > q.cfg.PriorityLevels {
		return nil, fmt.Errorf("%w: %d; model %s has levels 1 to %d", ErrPriority, level, q.name, q.cfg.PriorityLevels)
	}
	if len(items) == 0 {
		return []model.Embedding{}, nil
	}
	if q.policy == nil {
		return q.passThrough(ctx, items)
	}
	r := q.newRequest(ctx, items, level)
	if err := q.enqueue(r); err != nil {
		return nil, err
	}
	select {
	case <-r.done:
		return r.out, r.err
	case <-ctx.Done():
		return q.leave(r, ctx.Err())
	}
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

// passThrough is ModeNone: the call goes downstream at once, on its own,
// split only where it exceeds a batch's size or cost budget (the pieces go
// concurrently).
func (q *queue) passThrough(ctx context.Context, items [][]byte) ([]model.Embedding, error) {
	q.mu.Lock()
	closing := q.closing
	q.mu.Unlock()
	if closing {
		q.metrics.reject(reasonClosed)
		return nil, fmt.Errorf("%w: model %s", ErrClosed, q.name)
	}
	var chunks []piece // req unused: start and end index items
	cost := 0
	for i, item := range items {
		c := q.cfg.itemCost(q.kind, item)
		if n := len(chunks); n == 0 || chunks[n-1].end-chunks[n-1].start == q.cfg.MaxBatchSize || cost+c > q.cfg.MaxBatchCost {
			chunks = append(chunks, piece{start: i, end: i})
			cost = 0
		}
		chunks[len(chunks)-1].end++
		cost += c
	}
	out := make([]model.Embedding, len(items))
	errs := make([]error, len(chunks))
	var wg sync.WaitGroup
	for i, ch := range chunks {
		wg.Go(func() {
			part := items[ch.start:ch.end]
			cost := 0
			for _, item := range part {
				cost += q.cfg.itemCost(q.kind, item)
			}
			q.metrics.batchSize.Observe(float64(len(part)))
			q.metrics.batchCost.Observe(float64(cost))
			q.metrics.inFlight.Inc()
			start := q.clock.Now()
			embs, err := q.down.Embed(ctx, q.kind, part)
			q.metrics.backendDuration.Observe(q.clock.Now().Sub(start).Seconds())
			q.metrics.inFlight.Dec()
			if err == nil && len(embs) != len(part) {
				err = fmt.Errorf("%w: %d for %d items", ErrBadDownstream, len(embs), len(part))
			}
			if err == nil {
				copy(out[ch.start:ch.end], embs)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			switch {
			case errors.Is(ctx.Err(), context.DeadlineExceeded):
				q.metrics.reject(reasonDeadline)
			case ctx.Err() != nil:
				q.metrics.reject(reasonCanceled)
			default:
				q.metrics.reject(reasonBackendError)
			}
			return nil, err
		}
	}
	return out, nil
}

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

// loop is the dispatcher: it sends batches while slots are free and the
// policy says so, and sleeps until something changes or a delay or a
// queue timeout is due.
func (q *queue) loop() {
	defer close(q.loopDone)
	timer := q.clock.NewTimer()
	defer timer.Stop()
	for {
		wait, exit := q.dispatch()
		if exit {
			return
		}
		if wait > 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-q.wake:
		case <-timer.C():
		}
	}
}

// dispatch expires timed-out requests, sends the batches the policy wants,
// and returns how long to sleep at most (0: until woken), or exit once the
// queue is closing and empty with nothing in flight.
func (q *queue) dispatch() (wait time.Duration, exit bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clock.Now()
	q.expire(now)
	slots := q.cfg.MaxInFlightBatches * q.backends()
	for q.inFlight < slots && q.queued > 0 {
		v := q.view(now)
		if v.items == 0 {
			break // every queued caller had left
		}
		send, w := q.policy.decide(v)
		if send <= 0 {
			wait = w
			break
		}
		// take may find more callers gone (their contexts ended since
		// view) and come back empty: then there is nothing to send.
		if b := q.take(send, now); len(b.items) > 0 {
			q.send(b)
		}
	}
	if q.closing && q.queued == 0 && q.inFlight == 0 {
		return 0, true
	}
	if len(q.timeouts) > 0 {
		until := max(q.timeouts[0].timeoutAt.Sub(now), time.Nanosecond)
		if wait <= 0 || until < wait {
			wait = until
		}
	}
	return wait, false
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

// lists are the queued requests in the order batches take them: priority
// levels first to last, then the delayed.
func (q *queue) lists() []*list.List {
	return append(q.levels[:len(q.levels):len(q.levels)], q.delayed)
}

// view sizes the batch that would leave now. Each list is in arrival
// order (the delayed one in timeout order, which is the same), so the
// oldest request is at the front of one of them. A request whose caller
// has left is finished on the way (see left) and not counted, as take
// would skip it. Called with mu held.
func (q *queue) view(now time.Time) view {
	v := view{now: now, oldest: now, draining: q.closing, inFlight: q.inFlight}
	limit := q.policy.limit()
	cost := 0
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
				if r.enqueued.Before(v.oldest) {
					v.oldest = r.enqueued
				}
			}
			if v.full {
				break
			}
			e = next
			for i := r.next; i < len(r.items); i++ {
				if v.items == limit || (v.items > 0 && cost+r.costs[i] > q.cfg.MaxBatchCost) {
					v.full = true
					break
				}
				v.items++
				cost += r.costs[i]
			}
		}
	}
	if v.items >= limit {
		v.full = true
	}
	return v
}

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

	// ctx is the parent of the downstream call's context (set by send);
	// cancel cancels it with errAbandoned once waiting drops to 0.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// waiting counts the members not finished yet; lastLeft is the error
	// the last of them was finished with, once none waits.
	waiting  int
	lastLeft error
}

// take removes up to n items from the front of the queue, within the cost
// budget, in priority then arrival order; a request that does not fit
// whole is split, and its rest stays at the front. A request whose caller
// has left is finished and skipped (see left). Called with mu held.
func (q *queue) take(n int, now time.Time) *batch {
	b := &batch{}
	for _, l := range q.lists() {
		for e := l.Front(); e != nil; {
			r := e.Value.(*request)
			next := e.Next()
			if q.left(r) {
				e = next
				continue
			}
			start := r.next
			for r.next < len(r.items) && len(b.items) < n {
				c := r.costs[r.next]
				if len(b.items) > 0 && b.cost+c > q.cfg.MaxBatchCost {
					break
				}
				b.items = append(b.items, r.items[r.next])
				b.cost += c
				r.next++
			}
			if r.next > start {
				if len(b.pieces) == 0 || r.enqueued.Before(b.oldest) {
					b.oldest = r.enqueued
				}
				b.pieces = append(b.pieces, piece{req: r, start: start, end: r.next})
				r.batches = append(r.batches, b)
				b.waiting++
			}
			if r.next < len(r.items) {
				return b // the batch is full
			}
			q.metrics.queueDuration.Observe(now.Sub(r.enqueued).Seconds())
			q.unqueue(r)
			e = next
		}
	}
	return b
}

// send starts b downstream. Called with mu held.
func (q *queue) send(b *batch) {
	b.ctx, b.cancel = context.WithCancelCause(q.base)
	q.inFlight++
	q.metrics.inFlight.Set(float64(q.inFlight))
	q.metrics.batchSize.Observe(float64(len(b.items)))
	q.metrics.batchCost.Observe(float64(b.cost))
	q.batches.Add(1)
	go q.run(b)
}

// run sends b downstream and hands each member its rows or the error.
func (q *queue) run(b *batch) {
	defer q.batches.Done()
	ctx, cancel, span := q.batchContext(b)
	start := q.clock.Now()
	embs, err := q.down.Embed(ctx, q.kind, b.items)
	latency := q.clock.Now().Sub(start)
	if errors.Is(context.Cause(b.ctx), errAbandoned) {
		span.SetAttributes(attribute.Bool("colpali.batch.abandoned", true))
	}
	cancel()
	b.cancel(nil)
	if err == nil && len(embs) != len(b.items) {
		err = fmt.Errorf("%w: %d for %d items", ErrBadDownstream, len(embs), len(b.items))
	}
	if err != nil && q.base.Err() != nil {
		err = fmt.Errorf("%w: model %s: batch abandoned on close: %w", ErrClosed, q.name, err)
	}
	if err != nil {
		span.RecordError(err)
	}
	span.End()
	q.metrics.backendDuration.Observe(latency.Seconds())

	q.mu.Lock()
	q.inFlight--
	q.metrics.inFlight.Set(float64(q.inFlight))
	// Abandoned: every member was finished (and counted) before the
	// answer came, so the batch counts as canceled, not failed.
	abandoned := b.waiting == 0
	off := 0
	for _, p := range b.pieces {
		r, n := p.req, p.end-p.start
		r.batches = slices.DeleteFunc(r.batches, func(other *batch) bool { return other == b })
		switch {
		case r.finished: // the caller left; its rows are dropped
		case err != nil:
			q.metrics.reject(reasonBackendError)
			q.finish(r, err)
		default:
			copy(r.out[p.start:p.end], embs[off:off+n])
			if r.next == len(r.items) && len(r.batches) == 0 {
				q.finish(r, nil)
			}
		}
		off += n
	}
	done := q.clock.Now()
	// A failed batch says nothing of the backend's speed, except one that
	// ran out of time: that one was slow. So was an abandoned one whose
	// last member left because its deadline passed; one whose members
	// canceled says nothing.
	ranOutOfTime := errors.Is(err, context.DeadlineExceeded)
	if abandoned {
		ranOutOfTime = errors.Is(b.lastLeft, context.DeadlineExceeded)
	}
	if err == nil || ranOutOfTime {
		q.policy.completed(len(b.items), serviceTime(start, done, q.lastDone), done.Sub(b.oldest), q.queuedItems())
		q.metrics.batchLimit.Set(float64(q.policy.limit()))
	}
	q.lastDone = done
	q.mu.Unlock()
	switch {
	case abandoned:
		q.logger.Debug("batch abandoned: every member left", "items", len(b.items), "requests", len(b.pieces), "error", err)
	case err != nil:
		q.logger.Debug("batch failed", "items", len(b.items), "requests", len(b.pieces), "error", err)
	}
	q.signal()
}

// serviceTime estimates how long the backend worked on a batch sent at
// start and answered at done, when the previous batch came back at
// lastDone. With batches pipelined, a batch waits in the backend's queue
// behind the previous one; its latency counts that wait, but the backend
// worked on it only since the previous one finished. So the service time
// is the shorter of its latency and the time since the previous answer.
func serviceTime(start, done, lastDone time.Time) time.Duration {
	if lastDone.After(start) {
		return done.Sub(lastDone)
	}
	return done.Sub(start)
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

// batchContext is the context of b's downstream call: a child of b.ctx,
// so not canceled when a member leaves while another still waits (only
// once none waits, or by Close), with the latest deadline among its
// members (none if one has none), so that the backend's timeout covers
// the longest-waiting member. Its span is a child of the first member's
// span and links every other member's, so that each caller's trace shows
// the batch it rode in.
func (q *queue) batchContext(b *batch) (context.Context, context.CancelFunc, trace.Span) {
	var latest time.Time
	bounded := true
	links := make([]trace.Link, 0, len(b.pieces))
	for i, p := range b.pieces {
		d, ok := p.req.ctx.Deadline()
		if !ok {
			bounded = false
		} else if d.After(latest) {
			latest = d
		}
		if i > 0 {
			if sc := trace.SpanContextFromContext(p.req.ctx); sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc})
			}
		}
	}
	parent := b.ctx
	if len(b.pieces) > 0 {
		parent = trace.ContextWithSpanContext(parent, trace.SpanContextFromContext(b.pieces[0].req.ctx))
	}
	ctx, span := q.tracer.Start(parent, "colpali.batcher/batch",
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("colpali.model", q.name),
			attribute.Int("colpali.batch.items", len(b.items)),
			attribute.Int("colpali.batch.requests", len(b.pieces)),
			attribute.Int("colpali.batch.cost", b.cost),
		))
	if !bounded {
		ctx, cancel := context.WithCancel(ctx)
		return ctx, cancel, span
	}
	ctx, cancel := context.WithDeadline(ctx, latest)
	return ctx, cancel, span
}

// close stops accepting, flushes the queue and waits for the batches in
// flight, or, once ctx ends, fails what is queued and cancels the rest.
func (q *queue) close(ctx context.Context) error {
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	q.signal()
	var err error
	select {
	case <-q.loopDone:
	case <-ctx.Done():
		err = fmt.Errorf("batching: model %s: flush abandoned: %w", q.name, ctx.Err())
		q.mu.Lock()
		for _, l := range q.lists() {
			for e := l.Front(); e != nil; {
				next := e.Next()
				q.metrics.reject(reasonClosed)
				q.finish(e.Value.(*request), fmt.Errorf("%w: model %s: closed before the request was sent", ErrClosed, q.name))
				e = next
			}
		}
		q.mu.Unlock()
		q.cancelBase()
		q.signal()
		<-q.loopDone
	}
	q.batches.Wait()
	q.cancelBase()
	return err
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
