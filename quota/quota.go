package quota

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Counter tells how much a tenant has stored; the document store
// implements it (committed documents and their pages).
type Counter interface {
	CountTenant(ctx context.Context, tenant string) (docs, pages int64, err error)
}

// Deps are the collaborators of Quotas.
type Deps struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Counter counts stored documents; required when any storage limit
	// is set.
	Counter Counter
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Quotas enforces a Config. Its methods are safe for concurrent use.
type Quotas struct {
	cfg     Config
	now     func() time.Time
	counter Counter
	metrics *metrics

	mu      sync.Mutex
	tenants map[string]*tenantState
}

type tenantState struct {
	limits   Limits
	calls    *rate.Limiter // nil: unlimited
	pages    *rate.Limiter // nil: unlimited
	inflight int
	lastSeen time.Time
}

// New returns Quotas enforcing cfg.
func New(cfg Config, deps Deps) (*Quotas, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.anyStorage() && deps.Counter == nil {
		return nil, fmt.Errorf("quota: storage limits set but no Counter to count with")
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	return &Quotas{
		cfg:     cfg,
		now:     now,
		counter: deps.Counter,
		metrics: m,
		tenants: map[string]*tenantState{},
	}, nil
}

// who is whose buckets a call draws on: its tenant's, or its key's when
// the key has an override.
type who struct {
	p      auth.Principal
	key    bool   // the key's own buckets
	bucket string // key of Quotas.tenants; "key:" + subject for a key (tenants have no ':')
	label  string // tenant label of the metric
	limits Limits
}

func (q *Quotas) whose(p auth.Principal) who {
	if l, ok := q.cfg.Keys[p.Subject]; ok && p.Subject != "" {
		return who{p: p, key: true, bucket: "key:" + p.Subject, label: p.Subject, limits: l}
	}
	l, named := q.cfg.limitsFor(p.Tenant)
	w := who{p: p, bucket: p.Tenant, label: OtherTenants, limits: l}
	if named {
		w.label = p.Tenant
	}
	return w
}

// desc names w in messages: tenant "a", or key cpk_x of tenant "a".
func (w who) desc() string {
	if w.key {
		return fmt.Sprintf("key %s of tenant %q", w.p.Subject, w.p.Tenant)
	}
	return fmt.Sprintf("tenant %q", w.p.Tenant)
}

// state returns w's state, created if new; q.mu is held.
func (q *Quotas) state(w who, now time.Time) *tenantState {
	if s, ok := q.tenants[w.bucket]; ok {
		s.lastSeen = now
		return s
	}
	if len(q.tenants) >= q.cfg.MaxTenants {
		q.evict(now)
	}
	l := w.limits
	s := &tenantState{limits: l, lastSeen: now}
	if l.CallsPerSecond > 0 {
		s.calls = rate.NewLimiter(rate.Limit(l.CallsPerSecond), l.CallBurst)
	}
	if l.PagesPerSecond > 0 {
		s.pages = rate.NewLimiter(rate.Limit(l.PagesPerSecond), l.PageBurst)
	}
	q.tenants[w.bucket] = s
	return s
}

// evict makes room: first every idle tenant whose buckets are full again
// (forgetting it changes nothing), then, if that is not a tenth of the
// bound, the least recently seen idle ones (which can only hand them a
// fresh bucket). Tenants with calls in progress stay. q.mu is held.
func (q *Quotas) evict(now time.Time) {
	full := func(l *rate.Limiter) bool { return l == nil || l.TokensAt(now) >= float64(l.Burst()) }
	var idle []string
	for name, s := range q.tenants {
		if s.inflight > 0 {
			continue
		}
		if full(s.calls) && full(s.pages) {
			delete(q.tenants, name)
			continue
		}
		idle = append(idle, name)
	}
	target := q.cfg.MaxTenants - max(1, q.cfg.MaxTenants/10)
	if len(q.tenants) <= target {
		return
	}
	slices.SortFunc(idle, func(a, b string) int { return q.tenants[a].lastSeen.Compare(q.tenants[b].lastSeen) })
	for _, name := range idle {
		if len(q.tenants) <= target {
			break
		}
		delete(q.tenants, name)
	}
}

// Admit counts one call of p against its call rate and concurrency cap
// (its key's, when Config.Keys has an override for it, else its
// tenant's). On success the caller must call release (once; later calls
// do nothing) when the call ends. Over a limit, the error is in class
// Overloaded with a RetryInfo delay and an ErrorInfo reason (RATE_LIMITED
// or CONCURRENCY_LIMITED) naming the limit.
func (q *Quotas) Admit(p auth.Principal) (release func(), err error) {
	now := q.now()
	w := q.whose(p)
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.state(w, now)
	if s.limits.MaxConcurrent > 0 && s.inflight >= s.limits.MaxConcurrent {
		q.metrics.reject(w.label, "concurrency")
		return nil, errclass.RetryAfter(errclass.WithReason(
			errclass.Errorf(errclass.Overloaded, "%s has %d calls in progress, its limit", w.desc(), s.limits.MaxConcurrent),
			"CONCURRENCY_LIMITED", map[string]string{"limit": "max_concurrent", "value": strconv.Itoa(s.limits.MaxConcurrent)}),
			q.cfg.BusyRetryDelay)
	}
	if err := take(s.calls, now, 1); err != nil {
		q.metrics.reject(w.label, "calls_per_second")
		return nil, q.rateError(w.desc(), "calls", "calls_per_second", s.limits.CallsPerSecond, err)
	}
	s.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			s.inflight--
			s.lastSeen = q.now()
		})
	}, nil
}

// Pages counts n pages of p against its page rate (its key's or its
// tenant's, as Admit). n larger than the page burst can never pass and is
// Invalid; over the rate is Overloaded with a RetryInfo delay.
func (q *Quotas) Pages(p auth.Principal, n int) error {
	if n <= 0 {
		return nil
	}
	now := q.now()
	w := q.whose(p)
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.state(w, now)
	if s.pages != nil && n > s.pages.Burst() {
		q.metrics.reject(w.label, "pages_per_second")
		return errclass.Wrap(errclass.Invalid, errclass.Field("pages",
			"%d pages in one call; %s may send at most %d at once (its page burst)", n, w.desc(), s.pages.Burst()))
	}
	if err := take(s.pages, now, n); err != nil {
		q.metrics.reject(w.label, "pages_per_second")
		return q.rateError(w.desc(), "pages", "pages_per_second", s.limits.PagesPerSecond, err)
	}
	return nil
}

// waitError is how long a refused take would have had to wait.
type waitError time.Duration

func (w waitError) Error() string { return "wait " + time.Duration(w).String() }

// take takes n tokens from l now, or none and says how long until they
// would be there.
func take(l *rate.Limiter, now time.Time, n int) error {
	if l == nil {
		return nil
	}
	r := l.ReserveN(now, n)
	if !r.OK() {
		return waitError(time.Hour) // n > burst; Pages checks it first
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // give the tokens back: the call is refused, not queued
		return waitError(d)
	}
	return nil
}

func (q *Quotas) rateError(desc, what, limit string, perSecond float64, err error) error {
	d := time.Duration(err.(waitError))
	// Round up to the millisecond, so that a client retrying on time finds
	// the tokens there.
	d = (d + time.Millisecond - 1).Truncate(time.Millisecond)
	return errclass.RetryAfter(errclass.WithReason(
		errclass.Errorf(errclass.Overloaded, "%s is over its rate of %g %s/s; retry in %v", desc, perSecond, what, d),
		"RATE_LIMITED", map[string]string{"limit": limit, "value": strconv.FormatFloat(perSecond, 'g', -1, 64)}), d)
}

// Tracked is how many tenants' (and keys') states are held.
func (q *Quotas) Tracked() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tenants)
}
