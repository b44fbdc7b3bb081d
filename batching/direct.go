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
	var chunks []piece // req unused: start and end index items
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
	out := make([]model.Embedding, len(items))
	errs := make([]error, len(chunks))
	var wg sync.WaitGroup
	for i, ch := range chunks {
		run := func() {
			part := items[ch.start:ch.end]
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
			if err == nil {
				copy(out[ch.start:ch.end], embs)
			}
			errs[i] = err
		}
		// One chunk (the usual call) runs in the caller's goroutine: a
		// goroutine of its own would only add a park and a wake-up.
		if len(chunks) == 1 {
			run()
			break
		}
		wg.Go(run)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			switch {
			case errors.Is(ctx.Err(), context.DeadlineExceeded):
				d.metrics.reject(reasonDeadline)
			case ctx.Err() != nil:
				d.metrics.reject(reasonCanceled)
			default:
				d.metrics.reject(reasonBackendError)
			}
			return nil, err
		}
	}
	return out, nil
}

// close refuses later calls. Calls already made finish in their callers'
// goroutines, with their callers' contexts: there is nothing to flush.
func (d *direct) close(context.Context) error {
	d.closing.Store(true)
	return nil
}
