package admission

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/morphik-org/colpali-gateway/internal/clock"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Class is a kind of call with a limit of its own. The set is fixed, so
// that it can label metrics.
type Class string

// The classes.
const (
	Query  Class = "query"  // query embeddings
	Image  Class = "image"  // page image embeddings
	Search Class = "search" // document search (a query embedding, then the store)
	Ingest Class = "ingest" // document ingestion (page image embeddings, then the store)
)

// Classes lists every Class.
var Classes = []Class{Query, Image, Search, Ingest}

// The reasons of a refusal, sent as the ErrorInfo reason.
const (
	ReasonConcurrency = "CONCURRENCY_LIMIT"
	ReasonMemory      = "MEMORY_BUDGET"
)

// Outcome is how an admitted call ended, as the limit reads it.
type Outcome int

const (
	// Success: the call was served; its latency is a sample.
	Success Outcome = iota
	// Dropped: the call timed out or was refused downstream as overloaded;
	// its latency is a sample and its window backs off.
	Dropped
	// Ignored: the call failed for reasons of its own (bad input,
	// canceled by the client, not found); no sample.
	Ignored
)

// Request is what Admit needs to know of a call.
type Request struct {
	Class Class
	// Level is the call's priority level, 1 (served first) to Levels;
	// with Levels at most 1 the call has the whole limit.
	Level, Levels int
	// Bytes is the memory the call will hold at its peak, estimated by the
	// caller (request bytes, decoded images, search candidates).
	Bytes int64
	// Weight divides the call's latency before it is sampled: the pages of
	// an ingestion, whose latency grows with them. Default 1.
	Weight int
}

// Deps are the controller's collaborators.
type Deps struct {
	// Clock times the calls. Default clock.System.
	Clock clock.Clock
	// Registerer receives the metrics. Default: none registered.
	Registerer prometheus.Registerer
}

// Controller admits or refuses calls; see the package doc.
type Controller struct {
	cfg     Config
	clock   clock.Clock
	classes map[Class]*limiter
	used    atomic.Int64 // bytes reserved by admitted calls
	shed    *prometheus.CounterVec
}

// New validates cfg (after defaults) and builds a Controller.
func New(cfg Config, deps Deps) (*Controller, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Clock == nil {
		deps.Clock = clock.System{}
	}
	c := &Controller{cfg: cfg, clock: deps.Clock, classes: map[Class]*limiter{}}
	for _, cl := range Classes {
		target, initial := cfg.LatencyTarget, cfg.InitialLimit
		if cl == Image || cl == Ingest {
			target, initial = cfg.ImageLatencyTarget, cfg.ImageInitialLimit
		}
		c.classes[cl] = newLimiter(cfg, target, initial, deps.Clock.Now())
	}
	c.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "colpali_admission_shed_total",
		Help: "Calls refused at the gateway's entry, by class and reason (concurrency_limit, memory_budget).",
	}, []string{"class", "reason"})
	for _, cl := range Classes {
		for _, r := range []string{ReasonConcurrency, ReasonMemory} {
			c.shed.WithLabelValues(string(cl), metricReason(r))
		}
	}
	if deps.Registerer != nil {
		if err := c.register(deps.Registerer); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func metricReason(r string) string {
	if r == ReasonMemory {
		return "memory_budget"
	}
	return "concurrency_limit"
}

func (c *Controller) register(reg prometheus.Registerer) error {
	cols := []prometheus.Collector{
		c.shed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "colpali_admission_memory_budget_bytes", Help: "Memory the gateway keeps itself under (the Go runtime's soft memory limit unless GOMEMLIMIT is lower)."},
			func() float64 { return float64(c.cfg.MemoryBudget) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "colpali_admission_call_memory_bytes", Help: "Bytes of the memory budget that admitted calls may reserve together."},
			func() float64 { return float64(c.cfg.CallMemory()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "colpali_admission_memory_in_use_bytes", Help: "Bytes reserved by the calls in flight (estimates)."},
			func() float64 { return float64(c.used.Load()) }),
	}
	for _, cl := range Classes {
		l := c.classes[cl]
		labels := prometheus.Labels{"class": string(cl)}
		cols = append(cols,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "colpali_admission_limit", Help: "Current adaptive concurrency limit, by class.", ConstLabels: labels},
				func() float64 { n, _ := l.snapshot(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "colpali_admission_in_flight", Help: "Admitted calls in flight, by class.", ConstLabels: labels},
				func() float64 { _, n := l.snapshot(); return float64(n) }),
		)
	}
	var errs []error
	for _, col := range cols {
		errs = append(errs, reg.Register(col))
	}
	return errors.Join(errs...)
}

// Config is the configuration in force, defaults applied.
func (c *Controller) Config() Config { return c.cfg }

// Limit is class's current limit and its calls in flight.
func (c *Controller) Limit(class Class) (limit, inFlight int) {
	return c.classes[class].snapshot()
}

// MemoryInUse is the bytes reserved by the calls in flight.
func (c *Controller) MemoryInUse() int64 { return c.used.Load() }

// Admit takes a slot of r's class and r.Bytes of the memory budget, or
// refuses the call with an error of class errclass.Overloaded carrying a
// reason (CONCURRENCY_LIMIT or MEMORY_BUDGET) and, when a retry can
// succeed, a RetryInfo delay. An unknown class is a programming error and
// is refused as errclass.Internal.
func (c *Controller) Admit(r Request) (*Permit, error) {
	l, ok := c.classes[r.Class]
	if !ok {
		return nil, errclass.Errorf(errclass.Internal, "admission: unknown class %q", r.Class)
	}
	now, weight := c.clock.Now(), max(r.Weight, 1)
	ok, inFlight, allowed := l.tryAcquire(now, r.Level, r.Levels, weight)
	if !ok {
		limit, _ := l.snapshot()
		return nil, c.concurrencyError(r.Class, l, inFlight, allowed, r.Level, limit)
	}
	if err := c.reserve(r.Class, r.Bytes, l); err != nil {
		l.unacquire(now, weight)
		return nil, err
	}
	return &Permit{c: c, l: l, bytes: r.Bytes, weight: weight, start: now}, nil
}

// Check refuses a call of class at once, as Admit would, when the class
// is at its limit for the call's priority level (of levels, as in
// Request), and returns nil otherwise, reserving nothing: a cheap early
// test for a front end (the REST side) that would otherwise decode a call
// only to see it refused. A front end that cannot tell the level passes 1,
// the most urgent. The call must still go through Admit.
func (c *Controller) Check(class Class, level, levels int) error {
	l, ok := c.classes[class]
	if !ok {
		return errclass.Errorf(errclass.Internal, "admission: unknown class %q", class)
	}
	l.mu.Lock()
	inFlight, allowed, limit := l.inFlight, l.allowedLocked(level, levels), int(l.limit)
	l.mu.Unlock()
	if inFlight < allowed {
		return nil
	}
	return c.concurrencyError(class, l, inFlight, allowed, level, limit)
}

func (c *Controller) concurrencyError(class Class, l *limiter, inFlight, allowed, level, limit int) error {
	c.shed.WithLabelValues(string(class), "concurrency_limit").Inc()
	err := errclass.Errorf(errclass.Overloaded, "the %s concurrency limit is reached: %d calls in flight, %d allowed at priority %d (limit %d)",
		class, inFlight, allowed, max(level, 1), limit)
	return errclass.RetryAfter(errclass.WithReason(err, ReasonConcurrency, map[string]string{
		"class": string(class), "limit": strconv.Itoa(limit),
	}), l.retryDelay())
}

// reserve takes n bytes of the budget, or says why not.
func (c *Controller) reserve(class Class, n int64, l *limiter) error {
	if n <= 0 {
		return nil
	}
	budget := c.cfg.CallMemory()
	meta := map[string]string{"class": string(class), "budget_bytes": strconv.FormatInt(budget, 10)}
	if n > budget {
		c.shed.WithLabelValues(string(class), "memory_budget").Inc()
		// No retry can succeed: the call alone exceeds the budget.
		return errclass.WithReason(errclass.Errorf(errclass.Overloaded,
			"the call needs about %d bytes, more than the calls' whole memory budget of %d bytes (%.0f%% of -memory-budget)", n, budget, c.cfg.CallMemoryShare*100), ReasonMemory, meta)
	}
	for {
		used := c.used.Load()
		if used+n > budget {
			c.shed.WithLabelValues(string(class), "memory_budget").Inc()
			err := errclass.Errorf(errclass.Overloaded, "the calls' memory budget of %d bytes (%.0f%% of -memory-budget) is in use: %d bytes reserved, the call needs about %d more",
				budget, c.cfg.CallMemoryShare*100, used, n)
			return errclass.RetryAfter(errclass.WithReason(err, ReasonMemory, meta), l.retryDelay())
		}
		if c.used.CompareAndSwap(used, used+n) {
			return nil
		}
	}
}

// Permit is an admitted call's slot and bytes; Done gives them back.
type Permit struct {
	c      *Controller
	l      *limiter
	bytes  int64
	weight int
	start  time.Time
	once   sync.Once
}

// Done ends the call with its outcome. Calls after the first do nothing.
func (p *Permit) Done(o Outcome) {
	p.once.Do(func() {
		if p.bytes > 0 {
			p.c.used.Add(-p.bytes)
		}
		now := p.c.clock.Now()
		p.l.release(now, now.Sub(p.start)/time.Duration(p.weight), p.weight, o)
	})
}
