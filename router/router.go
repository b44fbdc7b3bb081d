package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/clock"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router/policy"
	"github.com/morphik-org/colpali-gateway/router/policy/gpuaware"
	"github.com/morphik-org/colpali-gateway/router/policy/leastoutstanding"
	"github.com/morphik-org/colpali-gateway/router/policy/roundrobin"
	"github.com/morphik-org/colpali-gateway/triton"
)

// Errors of the router; use errors.Is. Both are Unavailable: another
// replica, or a later try, may find a ready backend.
var (
	// ErrNoBackend: no backend is ready for the batch's model.
	ErrNoBackend = errclass.WithReason(errclass.Wrap(errclass.Unavailable, errors.New("no ready backend")), "NO_READY_BACKEND", nil)
	// ErrNotReady: some model has no ready backend (Ready).
	ErrNotReady = errclass.Wrap(errclass.Unavailable, errors.New("not ready"))
)

// Router places batches on a pool of Triton backends. See the package
// documentation.
type Router struct {
	cfg     Config
	deps    Deps
	logger  *slog.Logger
	clock   clock.Clock
	policy  policy.Policy
	budget  *retryBudget
	metrics *metrics

	snap atomic.Pointer[snapshot]

	mu      sync.Mutex
	members map[string]*backend // by address, draining ones included; guarded by mu
	dns     []Endpoint          // last DNS answer; guarded by mu
	runCtx  context.Context     // set by Run; guarded by mu
	wg      sync.WaitGroup
}

// snapshot is the immutable view the pick path reads: rebuilt, under
// Router.mu, on every change of membership or health.
type snapshot struct {
	backends []*backend                     // every member, by address
	routable [len(kinds)][]policy.Candidate // ready for each model
	// panic holds, for a model with no routable backend, the backends
	// out only because their checks went unanswered (panic routing; see
	// health.panicRoutable); nil for a model with a routable backend.
	panic [len(kinds)][]policy.Candidate
}

// New validates cfg (after defaults) and builds a router over cfg.Static.
// Nothing is checked or resolved until Run.
func New(cfg Config, deps Deps) (*Router, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Dial == nil {
		tc := cfg.Triton
		tc.Models = cfg.Models
		deps.Dial = func(addr string) (Backend, error) {
			tc.Addr = addr
			return triton.New(tc)
		}
	}
	if deps.Resolver == nil {
		deps.Resolver = net.DefaultResolver
	}
	if deps.Clock == nil {
		deps.Clock = clock.System{}
	}
	var pol policy.Policy
	switch cfg.Policy {
	case roundrobin.Name:
		pol = roundrobin.New()
	case leastoutstanding.Name:
		pol = leastoutstanding.New()
	default:
		p, err := gpuaware.New(cfg.GPUAware)
		if err != nil {
			return nil, err
		}
		pol = p
	}
	r := &Router{
		cfg: cfg, deps: deps, logger: deps.Logger.With("component", "router"), clock: deps.Clock, policy: pol,
		budget:  newRetryBudget(cfg.RetryBudgetRatio, cfg.RetryMinPerSecond, deps.Clock.Now),
		members: map[string]*backend{},
	}
	r.metrics = newMetrics(r)
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(r.metrics); err != nil {
			return nil, fmt.Errorf("router metrics: %w", err)
		}
	}
	r.mu.Lock()
	r.syncMembersLocked()
	r.mu.Unlock()
	return r, nil
}

// PolicyName is the balancing policy in use.
func (r *Router) PolicyName() string { return r.policy.Name() }

// ModelName is the Triton model that embeds kind.
func (r *Router) ModelName(kind model.Kind) string { return r.cfg.Models.ModelName(kind) }

// Ready reports nil while every model has at least one ready backend (not
// necessarily the same one), or an error wrapping ErrNotReady that names
// the models without one and the state of every backend. It reads the state
// the health checks maintain and never calls a backend. A gateway that can
// embed queries but not pages reports not ready, like a single Triton with
// strict readiness: its operator should know, and a load balancer that
// honours readiness sends the traffic to a replica that can serve it all.
func (r *Router) Ready(context.Context) error {
	s := r.snap.Load()
	var missing []string
	for _, k := range kinds {
		if len(s.routable[k]) == 0 {
			missing = append(missing, r.ModelName(k))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: no ready backend for %s%s: %s", ErrNotReady, strings.Join(missing, ", "), r.describePanic(s), r.describe(s))
}

// Routable is the number of backends kind's batches go to now: those
// ready for its model, or in panic routing those not known dead. The
// batcher keeps that many backends busy.
func (r *Router) Routable(kind model.Kind) int {
	c, _ := r.snap.Load().candidates(kind)
	return len(c)
}

// describe names every backend of s with its state and last error, for
// error messages.
func (r *Router) describe(s *snapshot) string {
	if len(s.backends) == 0 {
		return "the pool is empty"
	}
	var why []string
	for _, b := range s.backends {
		r.mu.Lock()
		st, lastErr := b.health.state(), b.health.lastError
		r.mu.Unlock()
		w := b.endpoint.Addr + " " + st.String()
		if lastErr != "" {
			w += " (" + lastErr + ")"
		}
		why = append(why, w)
	}
	return strings.Join(why, "; ")
}

// Run checks the backends' health, resolves Config.DNS and drains leaving
// backends until ctx ends; it then closes every connection (calls still in
// flight fail) and returns nil. Embed answers ErrNoBackend until a first
// health check has passed. Run once.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.runCtx != nil {
		r.mu.Unlock()
		return errors.New("router: Run called twice")
	}
	r.runCtx = ctx
	for _, b := range r.members {
		r.startHealthLocked(ctx, b)
	}
	r.mu.Unlock()
	if r.cfg.DNS != "" {
		r.wg.Go(func() { r.discover(ctx) })
	}
	<-ctx.Done()
	r.wg.Wait()
	r.mu.Lock()
	for addr, b := range r.members {
		if err := b.close(); err != nil {
			r.logger.Debug("closing backend", "backend", addr, "err", err)
		}
		delete(r.members, addr)
	}
	r.rebuildLocked()
	r.mu.Unlock()
	return nil
}

// Embed embeds items, one batch, with kind's model, on the backend the
// policy picks. The time left before ctx's deadline also travels as
// Triton's "timeout" request parameter, so that Triton's queue drops the
// request once its caller has given up, and a positive priority (1 is the
// highest) as its "priority" parameter. A batch that fails UNAVAILABLE
// (the backend is down) or overloaded (its queue is full) is retried once
// on another ready backend while the deadline has time left and the retry
// budget allows; see the package documentation.
func (r *Router) Embed(ctx context.Context, kind model.Kind, items [][]byte, priority int) ([]model.Embedding, error) {
	batch := policy.Batch{Kind: kind, Model: r.ModelName(kind), Items: len(items), Cost: r.cost(kind, len(items))}
	opt := triton.EmbedOptions{Priority: priority}
	r.budget.request()
	b, ah, err := r.pick(batch, nil)
	if err != nil {
		return nil, err
	}
	out, err := r.attempt(ctx, b, ah, batch, items, opt)
	if err == nil || !retryable(err) || ctx.Err() != nil {
		return out, err
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= 0 {
		return nil, err
	}
	alt, altAhead, pickErr := r.pick(batch, b)
	if pickErr != nil {
		return nil, err // no other backend: the original error says more
	}
	reason := retryUnavailable
	if errors.Is(err, triton.ErrOverloaded) {
		reason = retryOverloaded
	}
	if !r.budget.allowRetry() {
		alt.end(batch.Kind, batch.Cost) // counted in flight by pick, never sent
		r.metrics.budgetExhausted.Inc() // a metric, not a log line: an outage would flood the log
		r.logger.Debug("retry budget exhausted; not retrying", "backend", b.Addr(), "reason", reason, "err", err)
		return nil, err
	}
	r.metrics.retries.WithLabelValues(reason).Inc()
	r.logger.Debug("retrying on another backend", "from", b.Addr(), "to", alt.Addr(), "reason", reason)
	return r.attempt(ctx, alt, altAhead, batch, items, opt)
}

// Reasons for a retry, as metric labels.
const (
	retryUnavailable = "unavailable"
	retryOverloaded  = "overloaded"
)

// retryable reports whether a failed batch may go to another backend:
// the backend was unreachable or not serving (nothing was computed), or its
// queue was full. Never to the same backend: a full queue is back-pressure.
func retryable(err error) bool {
	return errors.Is(err, triton.ErrUnavailable) || errors.Is(err, triton.ErrOverloaded)
}

func (r *Router) cost(kind model.Kind, n int) float64 {
	if kind == model.Image {
		return r.cfg.ImageCost.of(n)
	}
	return r.cfg.QueryCost.of(n)
}

// pick chooses a routable backend for batch other than exclude and counts
// the batch in flight there, returning the cost in flight ahead of it; the
// caller ends the count (attempt does).
//
// Counting happens here, before the choice is final, because a drain
// publishes a snapshot without the leaving backend and only then reads its
// batches in flight. After counting, pick reads the current snapshot: if the
// backend has left it, the batch is counted out and picked again from that
// snapshot. Atomics are sequentially consistent, so either the drain reads
// this batch's count and waits for it, or this read sees the snapshot
// without the backend: no batch is sent on a connection its drain closed.
// Another turn happens only when a snapshot was published during this pick,
// which happens at the pace of health checks and DNS answers.
func (r *Router) pick(batch policy.Batch, exclude *backend) (*backend, ahead, error) {
	snap := r.snap.Load()
	for {
		cands, panicking := snap.candidates(batch.Kind)
		if exclude != nil {
			if i := slices.Index(cands, policy.Candidate(exclude)); i >= 0 {
				cands = slices.Delete(slices.Clone(cands), i, i+1)
			}
		}
		if len(cands) == 0 {
			return nil, ahead{}, fmt.Errorf("%w for model %s: %s", ErrNoBackend, r.ModelName(batch.Kind), r.describe(snap))
		}
		i, est := r.policy.Pick(cands, batch)
		b := cands[i].(*backend)
		ah := b.begin(batch.Kind, batch.Cost)
		if now := r.snap.Load(); now != snap {
			if c, _ := now.candidates(batch.Kind); !slices.Contains(c, policy.Candidate(b)) {
				b.end(batch.Kind, batch.Cost)
				snap = now
				continue
			}
		}
		if panicking {
			r.metrics.panicRouted[batch.Kind].Inc()
		}
		b.picks.Add(1)
		if est > 0 {
			b.lastEstimate.Store(int64(est))
		}
		return b, ah, nil
	}
}

// attempt sends the batch, counted in flight on b by pick with ahead in
// flight before it, and accounts for the outcome. An answer that breaks
// the model contract (model.ErrBadResponse) is the model's configuration,
// not the backend's health: it neither counts as a failure nor resets them.
func (r *Router) attempt(ctx context.Context, b *backend, ah ahead, batch policy.Batch, items [][]byte, opt triton.EmbedOptions) ([]model.Embedding, error) {
	if deadline, ok := ctx.Deadline(); ok {
		// Real time: the deadline is the caller's. At least 1µs, because
		// no timeout parameter at all would mean no limit.
		opt.Timeout = max(time.Until(deadline), time.Microsecond)
	}
	start := time.Now()
	out, err := b.client.Embed(ctx, batch.Kind, items, opt)
	latency := time.Since(start)
	b.end(batch.Kind, batch.Cost)
	if errors.Is(err, model.ErrBadResponse) {
		return nil, err
	}
	if err != nil {
		r.failed(ctx, b, batch.Kind, err)
		return nil, err
	}
	b.consecutiveFailures.Store(0)
	b.answered.Add(1)
	b.learn(batch.Kind, latency, ah, batch.Cost)
	return out, nil
}

// failed accounts for a failed call. The backend is at fault when it was
// unreachable (UNAVAILABLE) or failed the call itself; it is not when its
// queue was full (back-pressure), when the request's own timeout passed in
// its queue, when it rejected bad input, or when the caller gave up.
func (r *Router) failed(ctx context.Context, b *backend, kind model.Kind, err error) {
	unavailable := errors.Is(err, triton.ErrUnavailable)
	if ctx.Err() != nil || !(unavailable || errors.Is(err, triton.ErrFailed)) {
		return
	}
	b.failures.Add(1)
	b.penalize(kind)
	n := b.consecutiveFailures.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if unavailable && !b.health.down && !b.health.draining {
		// A dead server fails every call until the next health check: take
		// it out now and check at once, which readmits it if it is fine.
		b.health.down = true
		b.health.lastError = err.Error()
		r.logger.Warn("backend call failed unavailable; out until a health check passes", "backend", b.Addr(), "err", err)
		r.rebuildLocked()
		b.checkNow()
	}
	if n >= int64(r.cfg.EjectAfter) {
		r.ejectLocked(b, err)
	}
}

// rebuildLocked publishes a new snapshot of the members, and logs when a
// model enters or leaves panic routing: at the pace of health changes,
// not of batches. Caller holds mu.
func (r *Router) rebuildLocked() {
	s := &snapshot{}
	for _, b := range r.members {
		s.backends = append(s.backends, b)
	}
	slices.SortFunc(s.backends, func(a, b *backend) int { return strings.Compare(a.Addr(), b.Addr()) })
	for _, b := range s.backends {
		for _, k := range kinds {
			if b.health.routable(k) {
				s.routable[k] = append(s.routable[k], b)
			}
		}
	}
	s.addPanic()
	r.logPanicChange(r.snap.Swap(s), s)
}
