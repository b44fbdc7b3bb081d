package batching

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/morphik-org/colpali-gateway/model"
)

// direct is the lane of one model in ModeNone: no queue and no
// dispatcher; each call goes downstream at once, on its own, in the
// caller's goroutine, split only where it exceeds a batch's size or cost
// budget (the pieces go concurrently). It keeps the batcher's metrics so
// that the modes compare.
type direct struct {
	laneParams
	closing atomic.Bool
}

var _ lane = (*direct)(nil)

func newDirect(p laneParams) *direct {
	p.metrics.batchLimit.Set(float64(p.cfg.MaxBatchSize))
	return &direct{laneParams: p}
}

func (d *direct) embed(ctx context.Context, items [][]byte, level int) ([]model.Embedding, error) {
	if d.closing.Load() {
		d.metrics.reject(reasonClosed)
		return nil, fmt.Errorf("%w: model %s", ErrClosed, d.name)
	}
	var one [1]piece // the usual call is one chunk: no slice to allocate
	chunks := one[:0]
	cost := 0
	for i, item := range items {
		c := d.cfg.itemCost(d.kind, item)
		if n := len(chunks); n == 0 || chunks[n-1].end-chunks[n-1].start == d.cfg.MaxBatchSize || cost+c > d.cfg.MaxBatchCost {
			chunks = append(chunks, piece{start: i, end: i})
			cost = 0
		}
		chunks[len(chunks)-1].end++
		cost += c
	}
	// One chunk (the usual call) is sent from the caller's goroutine, and
	// its answer is the call's: a goroutine of its own would only add a
	// park and a wake-up, and the pieces' slices and closures allocations.
	if len(chunks) == 1 {
		embs, err := d.send(ctx, items, level)
		if err != nil {
			d.rejected(ctx)
			return nil, err
		}
		return embs, nil
	}
	out := make([]model.Embedding, len(items))
	errs := make([]error, len(chunks))
	var wg sync.WaitGroup
	for i, ch := range chunks {
		wg.Go(func() {
			embs, err := d.send(ctx, items[ch.start:ch.end], level)
			if err == nil {
				copy(out[ch.start:ch.end], embs)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			d.rejected(ctx)
			return nil, err
		}
	}
	return out, nil
}

// send embeds one piece downstream, with the batch metrics.
func (d *direct) send(ctx context.Context, part [][]byte, level int) ([]model.Embedding, error) {
	cost := 0
	for _, item := range part {
		cost += d.cfg.itemCost(d.kind, item)
	}
	d.metrics.batchSize.Observe(float64(len(part)))
	d.metrics.batchCost.Observe(float64(cost))
	d.metrics.inFlight.Inc()
	start := d.clock.Now()
	embs, err := d.down.Embed(ctx, d.kind, part, level)
	d.metrics.backendDuration.Observe(d.clock.Now().Sub(start).Seconds())
	d.metrics.inFlight.Dec()
	if err == nil && len(embs) != len(part) {
		err = fmt.Errorf("%w: %d for %d items", ErrBadDownstream, len(embs), len(part))
	}
	return embs, err
}

// rejected counts a failed call under its reason.
func (d *direct) rejected(ctx context.Context) {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		d.metrics.reject(reasonDeadline)
	case ctx.Err() != nil:
		d.metrics.reject(reasonCanceled)
	default:
		d.metrics.reject(reasonBackendError)
	}
}

// close refuses later calls. Calls already made finish in their callers'
// goroutines, with their callers' contexts: there is nothing to flush.
func (d *direct) close(context.Context) error {
	d.closing.Store(true)
	return nil
}
