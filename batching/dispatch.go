package batching

// The dispatch loop: when to send a batch (the policy decides on a view of
// the queue, form.go), and a batch's trip downstream and back.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

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
	embs, err := q.down.Embed(ctx, q.kind, b.items, b.priority)
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
