package batching

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
)

// Downstream embeds one batch; *router.Router implements it. A batch holds
// at most ModelConfig.MaxBatchSize items. Its priority is the level of its
// most urgent member (1 is served first; always 1 to the model's
// PriorityLevels): a batch mixes levels only when a less urgent request
// fills what the more urgent ones left.
type Downstream interface {
	Embed(ctx context.Context, kind model.Kind, items [][]byte, priority int) ([]model.Embedding, error)
	// ModelName is the model that embeds kind; it labels the metrics.
	ModelName(kind model.Kind) string
}

// Error classes of the batcher; the errors returned wrap them with
// specifics, so use errors.Is. Each is a member of an errclass class, which
// the gateway's edge maps to a code.
var (
	// ErrQueueFull: the model's queue held MaxQueueSize requests.
	ErrQueueFull = errclass.WithReason(errclass.RetryAfter(
		errclass.Wrap(errclass.Overloaded, errors.New("batching: queue full")), queueFullRetryDelay),
		"QUEUE_FULL", nil)
	// ErrQueueTimeout: the request waited past its queue timeout.
	ErrQueueTimeout = errclass.Wrap(errclass.TimedOut, errors.New("batching: timed out in the queue"))
	// ErrClosed: the batcher is closing or closed; Unavailable, as another
	// replica can serve the call.
	ErrClosed = errclass.Wrap(errclass.Unavailable, errors.New("batching: batcher closed"))
	// ErrPriority: the request asked for a priority level the model does
	// not have.
	ErrPriority = errclass.Wrap(errclass.Invalid, errors.New("batching: priority level out of range"))
	// ErrBadDownstream: the downstream answered a batch with the wrong
	// number of embeddings.
	ErrBadDownstream = errclass.Wrap(errclass.Internal, errors.New("batching: downstream answered the wrong number of embeddings"))
)

// queueFullRetryDelay is the retry delay suggested to clients when a queue
// is full: about one batch's time on a GPU.
const queueFullRetryDelay = 100 * time.Millisecond

var ()

// Deps are a Batcher's collaborators.
type Deps struct {
	// Downstream embeds each batch. Required.
	Downstream Downstream
	// Logger receives the batcher's log lines. Default: discarded.
	Logger *slog.Logger
	// Clock times queue delays and timeouts. Default SystemClock.
	Clock Clock
	// Registry receives the colpali_batcher_* metrics. Default: none.
	Registry prometheus.Registerer
	// Backends reports how many backends can take a model's batches now;
	// each model's in-flight limit is ModelConfig.MaxInFlightBatches times
	// that (at least once), so the batcher keeps every ready backend busy
	// and no more. Default: one backend. *router.Router's Routable fits.
	Backends func(model.Kind) int
}

// Batcher queues the embedding calls of each model and sends them
// downstream in batches; it implements gateway.Embedder. Start it with New,
// stop it with Close.
type Batcher struct {
	cfg    Config
	down   Downstream
	names  [2]string // model names, by model.Kind
	queues [2]lane   // by model.Kind
	closed sync.Once
}

// lane is one model's way downstream: a batching queue (queue.go), or in
// ModeNone a direct call per request (direct.go). Batcher.Embed has
// checked the call before a lane sees it: items is not empty and level is
// a valid 1-based priority level, the default applied.
type lane interface {
	embed(ctx context.Context, items [][]byte, level int) ([]model.Embedding, error)
	// close stops accepting calls, finishes what was accepted (or gives up
	// once ctx ends) and returns when the lane's goroutines have ended.
	close(ctx context.Context) error
}

// New validates cfg (after defaults) and starts one queue per model.
func New(cfg Config, deps Deps) (*Batcher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Downstream == nil {
		return nil, errors.New("batching: Deps.Downstream is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = SystemClock{}
	}
	if deps.Backends == nil {
		deps.Backends = func(model.Kind) int { return 1 }
	}
	m, err := newMetrics(deps.Registry)
	if err != nil {
		return nil, err
	}
	b := &Batcher{cfg: cfg, down: deps.Downstream}
	for _, kind := range []model.Kind{model.Query, model.Image} {
		name := deps.Downstream.ModelName(kind)
		p := laneParams{
			kind:     kind,
			name:     name,
			mode:     cfg.Mode,
			cfg:      cfg.model(kind),
			down:     deps.Downstream,
			backends: func() int { return max(1, deps.Backends(kind)) },
			clock:    deps.Clock,
			logger:   deps.Logger.With("model", name),
			metrics:  m.forModel(name),
			tracer:   otel.Tracer("github.com/morphik-org/colpali-gateway/batching"),
		}
		b.names[kind] = name
		if cfg.Mode == ModeNone {
			b.queues[kind] = newDirect(p)
		} else {
			b.queues[kind] = newQueue(p)
		}
	}
	return b, nil
}

// Config is the batcher's configuration, with defaults applied.
func (b *Batcher) Config() Config { return b.cfg }

// ModelName is the downstream's model for kind.
func (b *Batcher) ModelName(kind model.Kind) string { return b.down.ModelName(kind) }

// PriorityLevels is the number of priority levels of kind's queue; valid
// levels are 1 (served first) to PriorityLevels.
func (b *Batcher) PriorityLevels(kind model.Kind) int { return b.cfg.model(kind).PriorityLevels }

// DefaultPriority is the level of kind's requests that ask for none.
func (b *Batcher) DefaultPriority(kind model.Kind) int { return b.cfg.model(kind).DefaultPriority }

// Embed queues items for kind's model and returns their embeddings, in
// order, once the batches that carry them have been answered. It returns
// early with ctx's error when ctx ends, with ErrQueueFull at once when the
// queue is full, and with ErrQueueTimeout when the request waited too long;
// a batch's downstream error is returned as it is to every request in it.
// priority is the request's level: 1 is served first; 0 means the model's
// DefaultPriority; one above the model's PriorityLevels fails with
// ErrPriority.
func (b *Batcher) Embed(ctx context.Context, kind model.Kind, items [][]byte, priority int) ([]model.Embedding, error) {
	if kind != model.Query && kind != model.Image {
		return nil, fmt.Errorf("batching: unknown model kind %d", kind)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := b.cfg.model(kind)
	level := cmp.Or(priority, cfg.DefaultPriority)
	if level < 0 || level > cfg.PriorityLevels {
		return nil, fmt.Errorf("%w: %d; model %s has levels 1 to %d", ErrPriority, level, b.names[kind], cfg.PriorityLevels)
	}
	if len(items) == 0 {
		return []model.Embedding{}, nil
	}
	return b.queues[kind].embed(ctx, items, level)
}

// Close stops accepting calls (they fail with ErrClosed) and flushes: every
// queued request is sent at once, without waiting for fuller batches, and
// answered as usual. If ctx ends first, what is still queued fails with
// ErrClosed and the batches in flight are canceled. Close returns when
// every goroutine of the batcher has ended; it is safe to call more than
// once.
func (b *Batcher) Close(ctx context.Context) error {
	var err error
	b.closed.Do(func() {
		var wg sync.WaitGroup
		errs := make([]error, len(b.queues))
		for i, q := range b.queues {
			wg.Go(func() { errs[i] = q.close(ctx) })
		}
		wg.Wait()
		err = errors.Join(errs...)
	})
	return err
}
