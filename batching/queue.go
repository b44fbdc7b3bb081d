package batching

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/morphik-org/colpali-gateway/model"
)

// laneParams are what a lane needs: newQueue all of them, newDirect the
// model, its settings, the downstream, the clock and the metrics.
type laneParams struct {
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

// queue is the lane of one model in ModeStatic and ModeAdaptive: its
// queued requests (request.go), its dispatcher goroutine (dispatch.go) and
// the batches it forms (form.go).
type queue struct {
	laneParams
	policy policy

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
	// planned is plan's scratch space, kept to spare an allocation on
	// every look at the queue.
	planned []piece
}

var _ lane = (*queue)(nil)

// newQueue starts the queue of p.mode (static or adaptive) and its
// dispatcher.
func newQueue(p laneParams) *queue {
	q := &queue{laneParams: p, wake: make(chan struct{}, 1), loopDone: make(chan struct{}), delayed: list.New()}
	q.base, q.cancelBase = context.WithCancel(context.Background())
	for range p.cfg.PriorityLevels {
		q.levels = append(q.levels, list.New())
	}
	if p.mode == ModeStatic {
		q.policy = newStaticPolicy(p.cfg)
	} else {
		q.policy = newAdaptivePolicy(p.cfg)
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

// embed queues the call and waits for its rows, or for its caller to
// leave.
func (q *queue) embed(ctx context.Context, items [][]byte, level int) ([]model.Embedding, error) {
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
