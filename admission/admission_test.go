package admission

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/morphik-org/colpali-gateway/internal/clock/clocktest"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

func newTest(t *testing.T, cfg Config) (*Controller, *clocktest.Fake) {
	t.Helper()
	if cfg.MemoryBudget == 0 {
		cfg.MemoryBudget = 1 << 30
	}
	clk := clocktest.New(time.Unix(1_000_000, 0))
	c, err := New(cfg, Deps{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// admitN admits n calls of class at level 1 of 1, failing the test if
// one is refused.
func admitN(t *testing.T, c *Controller, class Class, n int) []*Permit {
	t.Helper()
	var ps []*Permit
	for i := range n {
		p, err := c.Admit(Request{Class: class})
		if err != nil {
			t.Fatalf("call %d of %d refused: %v", i+1, n, err)
		}
		ps = append(ps, p)
	}
	return ps
}

// window completes permits after latency each, enough of them and long
// enough for one window to close.
func window(t *testing.T, c *Controller, clk *clocktest.Fake, class Class, latency time.Duration, o Outcome) {
	t.Helper()
	cfg := c.Config()
	ps := admitN(t, c, class, cfg.MinSamples)
	clk.Advance(max(latency, cfg.Window))
	for _, p := range ps {
		p.Done(o)
	}
}

func TestLimitRefusesBeyondItAtOnceWithRetryInfo(t *testing.T) {
	c, _ := newTest(t, Config{InitialLimit: 8, ImageInitialLimit: 8})
	ps := admitN(t, c, Query, 8)
	_, err := c.Admit(Request{Class: Query})
	if !errors.Is(err, errclass.Overloaded) {
		t.Fatalf("call over the limit: %v, want class Overloaded", err)
	}
	var reason *errclass.Reason
	if !errors.As(err, &reason) || reason.Reason != ReasonConcurrency || reason.Metadata["class"] != "query" {
		t.Errorf("reason = %+v, want %s for class query", reason, ReasonConcurrency)
	}
	var retry *errclass.Retry
	if !errors.As(err, &retry) || retry.Delay != DefaultLatencyTarget {
		t.Errorf("retry = %+v, want the latency target before any window", retry)
	}
	if !strings.Contains(err.Error(), "query concurrency limit") {
		t.Errorf("message %q does not name the class's limit", err)
	}
	// Other classes have their own limits.
	admitN(t, c, Image, 8)
	ps[0].Done(Success)
	admitN(t, c, Query, 1)
}

func TestLimitGrowsWhileFastAndBusy(t *testing.T) {
	c, clk := newTest(t, Config{InitialLimit: 16, MinSamples: 16})
	prev, _ := c.Limit(Query)
	for range 10 {
		window(t, c, clk, Query, 10*time.Millisecond, Success)
		got, _ := c.Limit(Query)
		if got < prev {
			t.Fatalf("limit fell from %d to %d on fast calls", prev, got)
		}
		prev = got
	}
	if prev <= 16 {
		t.Errorf("limit %d after 10 fast, busy windows; want above the initial 16", prev)
	}
}

func TestLimitClimbsFastFarUnderTheTarget(t *testing.T) {
	c, clk := newTest(t, Config{InitialLimit: 16, MinSamples: 16, LatencyTarget: time.Second})
	for range 10 {
		// Fill the limit, complete 16 calls fast, release the rest.
		limit, _ := c.Limit(Query)
		ps := admitN(t, c, Query, limit)
		clk.Advance(c.Config().Window)
		for _, p := range ps {
			p.Done(Success)
		}
	}
	// Each window: L × 1.15 (L/2 of headroom, smoothed 0.3).
	if got, _ := c.Limit(Query); got < 50 {
		t.Errorf("limit %d after 10 windows far under the target from 16; want above 50 (x1.15 a window)", got)
	}
}

// TestLimitHoldsJustUnderTheTarget: between GrowBelow × target and the
// target the limit neither grows nor is cut, so that it settles there
// rather than growing past the target and being cut back in turn.
func TestLimitHoldsJustUnderTheTarget(t *testing.T) {
	c, clk := newTest(t, Config{InitialLimit: 16, MinSamples: 16, LatencyTarget: time.Second, GrowBelow: 0.8})
	for range 5 {
		window(t, c, clk, Query, 900*time.Millisecond, Success)
	}
	if got, _ := c.Limit(Query); got != 16 {
		t.Errorf("limit %d after busy windows at 0.9x the target; want 16 held", got)
	}
	window(t, c, clk, Query, 700*time.Millisecond, Success)
	if got, _ := c.Limit(Query); got <= 16 {
		t.Errorf("limit %d after a busy window at 0.7x the target; want above 16", got)
	}
}

func TestLimitDoesNotGrowWhenUnused(t *testing.T) {
	c, clk := newTest(t, Config{InitialLimit: 64, MinSamples: 4})
	for range 10 {
		// 4 calls in flight of a limit of 64: the limit was not the
		// bound, so fast answers say nothing about more.
		window(t, c, clk, Query, 10*time.Millisecond, Success)
	}
	if got, _ := c.Limit(Query); got != 64 {
		t.Errorf("limit %d after windows that used a 16th of it; want 64 kept", got)
	}
}

func TestLimitShrinksWhenSlowAndOnDrops(t *testing.T) {
	c, clk := newTest(t, Config{ImageInitialLimit: 100, MinSamples: DefaultMinLimit, ImageLatencyTarget: time.Second, MaxWindow: time.Minute})
	window(t, c, clk, Image, 4*time.Second, Success)
	// gradient 1/4 clamped at 1/2, at once: 100 → 50.
	if got, _ := c.Limit(Image); got != 50 {
		t.Errorf("limit after a window at 4x the target = %d, want 50", got)
	}
	// Drops within the target still back off: 50 → 45.
	window(t, c, clk, Image, 100*time.Millisecond, Dropped)
	if got, _ := c.Limit(Image); got != 45 {
		t.Errorf("limit after a window of drops = %d, want 45", got)
	}
}

// TestFutileCutIsUndone: a latency that stays above the target whatever
// the limit is not queueing the limit controls; the limit must not be cut
// down to MinLimit for it.
func TestFutileCutIsUndone(t *testing.T) {
	c, clk := newTest(t, Config{InitialLimit: 64, MinSamples: DefaultMinLimit, LatencyTarget: 500 * time.Millisecond, MaxWindow: time.Minute})
	window(t, c, clk, Query, 2*time.Second, Success)
	if got, _ := c.Limit(Query); got != 32 {
		t.Fatalf("limit after a window at 4x the target = %d, want 32", got)
	}
	// Calls admitted after the cut are still at 2s: the cut did not help
	// and is undone.
	window(t, c, clk, Query, 2*time.Second, Success)
	if got, _ := c.Limit(Query); got != 64 {
		t.Fatalf("limit after a futile cut = %d, want 64 restored", got)
	}
	for range 10 {
		window(t, c, clk, Query, 2*time.Second, Success)
	}
	if got, _ := c.Limit(Query); got < 32 {
		t.Errorf("limit after a minute of a latency no limit lowers = %d; want it kept near 64, not cut to the floor", got)
	}
}

func TestSlowClassAdaptsWithFewCalls(t *testing.T) {
	c, clk := newTest(t, Config{ImageInitialLimit: 32, ImageLatencyTarget: time.Second})
	// Two calls of 8s each, far fewer than MinSamples: the window closes
	// after MaxWindow all the same.
	ps := admitN(t, c, Image, 2)
	clk.Advance(8 * time.Second)
	for _, p := range ps {
		p.Done(Success)
	}
	if got, _ := c.Limit(Image); got != 16 {
		t.Errorf("limit after two slow calls over MaxWindow = %d, want 16", got)
	}
}

// TestLimitCutsOnCallsStillInFlight: a window whose only completed call
// was fast, while ten more have been in flight as long: the calls spent
// 11 call-seconds in flight per call that left, over the target, so the
// limit is cut though no completed call was slow.
func TestLimitCutsOnCallsStillInFlight(t *testing.T) {
	c, clk := newTest(t, Config{ImageInitialLimit: 32, ImageLatencyTarget: 5 * time.Second})
	ps := admitN(t, c, Image, 11)
	clk.Advance(2 * time.Second)
	ps[0].Done(Success)
	// Little's law: 0.5 calls served a second keep 0.5 × 0.7 × 5s calls
	// in flight; the cut is held to half the limit at once.
	if got, in := c.Limit(Image); got != 16 || in != 10 {
		t.Errorf("limit, in flight = %d, %d after a fast call beside ten waiting; want 16, 10", got, in)
	}
}

func TestIgnoredCallsAreNoSample(t *testing.T) {
	c, clk := newTest(t, Config{InitialLimit: 32})
	for range 5 {
		window(t, c, clk, Query, 10*time.Second, Ignored)
	}
	if got, in := c.Limit(Query); got != 32 || in != 0 {
		t.Errorf("limit, in flight = %d, %d after ignored calls; want 32, 0", got, in)
	}
}

// queueingServer is a simulated backend of a fixed capacity, driven on
// the fake clock: it serves capacity × base calls at once, each in base
// (Little's law), and queues the rest. A call's latency is base plus the
// calls ahead of it in the queue over the capacity, that queueing part
// spread ±25 % call to call, so that a window's p99 is above its p90 as a
// real server's is.
type queueingServer struct {
	capacity float64 // calls per second
	base     time.Duration
}

// loadResult is what an open-loop run measured over its second half.
type loadResult struct {
	goodput            float64 // completed calls per second
	p90, p99           time.Duration
	minLimit, maxLimit int
	refused            int
	// all are the latencies of every admitted call of the run, first
	// half included, in the order they were admitted.
	all []time.Duration
}

// run offers the class Poisson arrivals at load × capacity for duration,
// in steps of 5ms, and measures the admitted calls of the second half.
func (s queueingServer) run(t *testing.T, c *Controller, clk *clocktest.Fake, class Class, load float64, duration time.Duration) loadResult {
	t.Helper()
	const step = 5 * time.Millisecond
	type call struct {
		p   *Permit
		end time.Time
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		inFlight  []call
		latencies []time.Duration
		served    int
		res       = loadResult{minLimit: math.MaxInt}
	)
	start := clk.Now()
	next := start
	for clk.Now().Sub(start) < duration {
		clk.Advance(step)
		now := clk.Now()
		measured := now.Sub(start) > duration/2
		inFlight = slices.DeleteFunc(inFlight, func(cl call) bool {
			if cl.end.After(now) {
				return false
			}
			cl.p.Done(Success)
			if measured {
				served++
			}
			return true
		})
		for ; !next.After(now); next = next.Add(time.Duration(rng.ExpFloat64() / (load * s.capacity) * float64(time.Second))) {
			p, err := c.Admit(Request{Class: class})
			if err != nil {
				if measured {
					res.refused++
				}
				continue
			}
			ahead := max(0, float64(len(inFlight))-s.capacity*s.base.Seconds())
			queue := ahead / s.capacity * (0.75 + 0.5*rng.Float64())
			latency := s.base + time.Duration(queue*float64(time.Second))
			inFlight = append(inFlight, call{p: p, end: now.Add(latency)})
			res.all = append(res.all, latency)
			if measured {
				latencies = append(latencies, latency)
			}
		}
		if measured {
			limit, _ := c.Limit(class)
			res.minLimit, res.maxLimit = min(res.minLimit, limit), max(res.maxLimit, limit)
		}
	}
	for _, cl := range inFlight {
		cl.p.Done(Ignored)
	}
	slices.Sort(latencies)
	res.goodput = float64(served) / (duration / 2).Seconds()
	res.p90 = latencies[len(latencies)*90/100]
	res.p99 = latencies[len(latencies)*99/100]
	return res
}

// TestSettlesAtCapacityWithinTarget drives the limit with a simulated
// queueing server at 1.5x, 3x and 10x its capacity, open-loop: the p99
// of the admitted calls must keep within the target (the limit settling
// under it, not oscillating across it), goodput near capacity.
func TestSettlesAtCapacityWithinTarget(t *testing.T) {
	const target = 500 * time.Millisecond
	s := queueingServer{capacity: 200, base: 20 * time.Millisecond}
	for _, load := range []float64{1.5, 3, 10} {
		t.Run(fmt.Sprintf("%vx", load), func(t *testing.T) {
			c, clk := newTest(t, Config{LatencyTarget: target})
			r := s.run(t, c, clk, Query, load, 60*time.Second)
			t.Logf("second half: goodput %.0f/s of capacity %.0f, p90 %v, p99 %v (target %v), limit %d to %d, refused %d",
				r.goodput, s.capacity, r.p90, r.p99, target, r.minLimit, r.maxLimit, r.refused)
			if r.goodput < 0.9*s.capacity {
				t.Errorf("goodput %.0f/s; want at least 90%% of capacity %.0f/s", r.goodput, s.capacity)
			}
			if r.p99 > target {
				t.Errorf("admitted p99 %v; want within the target %v", r.p99, target)
			}
			if float64(r.maxLimit) > 1.1*float64(r.minLimit) {
				t.Errorf("limit %d to %d; want it settled (within 10%%)", r.minLimit, r.maxLimit)
			}
			if r.refused == 0 {
				t.Error("nothing refused beyond capacity")
			}
		})
	}
}

// TestImageClassSettlesWithFewCalls: 16-page image calls, a few a second
// and seconds each: windows close on MaxWindow with a handful of calls,
// whose p99 is their slowest; the limit must still settle within the
// image target, at capacity.
func TestImageClassSettlesWithFewCalls(t *testing.T) {
	const target = 5 * time.Second
	s := queueingServer{capacity: 4, base: time.Second}
	c, clk := newTest(t, Config{ImageLatencyTarget: target})
	r := s.run(t, c, clk, Image, 3, 10*time.Minute)
	t.Logf("second half: goodput %.1f/s of capacity %.0f, p90 %v, p99 %v (target %v), limit %d to %d, refused %d",
		r.goodput, s.capacity, r.p90, r.p99, target, r.minLimit, r.maxLimit, r.refused)
	if r.goodput < 0.9*s.capacity {
		t.Errorf("goodput %.1f/s; want at least 90%% of capacity %.0f/s", r.goodput, s.capacity)
	}
	if r.p99 > target {
		t.Errorf("admitted p99 %v; want within the target %v", r.p99, target)
	}
}

// TestImageClassColdStart: image calls at 3x the capacity of one GPU (one
// 16-page call a second) from the first second after start. Calls come
// back only after seconds, so a limit set too high shows only once calls
// admitted over it have queued that long: no admitted call may take more
// than twice the target (benchmarks/overload.sh gives its calls a 10s
// deadline, twice the image target), and goodput must hold. (The admitted p99 is
// not asserted here: at one call a second, each call in flight adds a
// fifth of the target, so the band where the limit holds is one call wide
// and every probe one call above it shows in a minute's p99;
// TestImageClassSettlesWithFewCalls holds it at four calls a second.)
func TestImageClassColdStart(t *testing.T) {
	const target = 5 * time.Second
	s := queueingServer{capacity: 1, base: time.Second}
	c, clk := newTest(t, Config{ImageLatencyTarget: target})
	r := s.run(t, c, clk, Image, 3, 2*time.Minute)
	late, worst := 0, time.Duration(0)
	for _, l := range r.all {
		worst = max(worst, l)
		if l > 2*target {
			late++
		}
	}
	t.Logf("%d calls admitted, worst %v, %d past twice the target; second half: goodput %.2f/s, p99 %v, limit %d to %d",
		len(r.all), worst, late, r.goodput, r.p99, r.minLimit, r.maxLimit)
	if late > 0 {
		t.Errorf("%d of %d admitted calls took more than twice the target %v (worst %v); want none", late, len(r.all), target, worst)
	}
	if r.goodput < 0.9*s.capacity {
		t.Errorf("goodput %.2f/s; want at least 90%% of capacity %.0f/s", r.goodput, s.capacity)
	}
}

func TestLowerPrioritiesAreShedFirst(t *testing.T) {
	c, _ := newTest(t, Config{InitialLimit: 20, PriorityReserve: 0.5})
	// Level 3 of 3 may use half the limit (10), level 2 three quarters
	// (15), level 1 all of it.
	for i := range 10 {
		if _, err := c.Admit(Request{Class: Query, Level: 3, Levels: 3}); err != nil {
			t.Fatalf("level 3 call %d refused: %v", i+1, err)
		}
	}
	if _, err := c.Admit(Request{Class: Query, Level: 3, Levels: 3}); !errors.Is(err, errclass.Overloaded) {
		t.Fatalf("11th level 3 call: %v, want refused", err)
	}
	for range 5 {
		if _, err := c.Admit(Request{Class: Query, Level: 2, Levels: 3}); err != nil {
			t.Fatalf("level 2 call refused: %v", err)
		}
	}
	if _, err := c.Admit(Request{Class: Query, Level: 2, Levels: 3}); !errors.Is(err, errclass.Overloaded) {
		t.Fatalf("16th call at level 2: %v, want refused", err)
	}
	for range 5 {
		if _, err := c.Admit(Request{Class: Query, Level: 1, Levels: 3}); err != nil {
			t.Fatalf("level 1 call refused: %v", err)
		}
	}
	if _, err := c.Admit(Request{Class: Query, Level: 1, Levels: 3}); !errors.Is(err, errclass.Overloaded) {
		t.Fatalf("21st call at level 1: %v, want refused", err)
	}
}

func TestMemoryBudget(t *testing.T) {
	// Calls may reserve 1000 bytes: half of the budget.
	c, _ := newTest(t, Config{MemoryBudget: 2000, CallMemoryShare: 0.5})
	a, err := c.Admit(Request{Class: Image, Bytes: 600})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Admit(Request{Class: Search, Bytes: 500})
	var reason *errclass.Reason
	var retry *errclass.Retry
	if !errors.Is(err, errclass.Overloaded) || !errors.As(err, &reason) || reason.Reason != ReasonMemory || !errors.As(err, &retry) {
		t.Fatalf("call over the budget: %v; want Overloaded, %s, with a retry delay", err, ReasonMemory)
	}
	if !strings.Contains(err.Error(), "memory budget of 1000 bytes (50% of -memory-budget)") {
		t.Errorf("message %q does not name the budget", err)
	}
	// A refusal for memory gives back its concurrency slot.
	if _, in := c.Limit(Search); in != 0 {
		t.Errorf("search in flight = %d after a refusal; want 0", in)
	}
	// A call larger than the whole budget can never fit: no retry delay.
	_, err = c.Admit(Request{Class: Image, Bytes: 1001})
	if !errors.As(err, &reason) || reason.Reason != ReasonMemory || errors.As(err, &retry) {
		t.Errorf("call over the whole budget: %v; want %s without a retry delay", err, ReasonMemory)
	}
	a.Done(Success)
	a.Done(Success) // a second Done gives nothing back twice
	if got := c.MemoryInUse(); got != 0 {
		t.Fatalf("memory in use %d after Done; want 0", got)
	}
	b, err := c.Admit(Request{Class: Search, Bytes: 1000})
	if err != nil {
		t.Fatalf("call of the whole budget, alone: %v", err)
	}
	b.Done(Ignored)
	if got, in := c.MemoryInUse(), 0; got != 0 {
		t.Errorf("memory in use %d, in flight %d at the end; want 0", got, in)
	}
}

func TestRetryDelayFollowsRecentLatency(t *testing.T) {
	c, clk := newTest(t, Config{InitialLimit: 16, MinSamples: 16, LatencyTarget: time.Second})
	window(t, c, clk, Query, 300*time.Millisecond, Success)
	for { // fill whatever the limit now is
		_, err := c.Admit(Request{Class: Query})
		var retry *errclass.Retry
		if errors.As(err, &retry) {
			if retry.Delay != 300*time.Millisecond {
				t.Errorf("retry delay %v; want the last window's Quantile latency, 300ms", retry.Delay)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnknownClassIsInternal(t *testing.T) {
	c, _ := newTest(t, Config{})
	if _, err := c.Admit(Request{Class: "video"}); !errors.Is(err, errclass.Internal) {
		t.Errorf("unknown class: %v, want Internal", err)
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	err := Config{
		LatencyTarget: -1, InitialLimit: 1, ImageInitialLimit: 9, MinLimit: 8, MaxLimit: 4, Window: time.Second, MinSamples: 1,
		Quantile: 1.5, GrowBelow: 1.2, Smoothing: 0.5, Backoff: 1, PriorityReserve: 0.5, MemoryBudget: 1, CallMemoryShare: 1,
		MinRetryDelay: time.Second, MaxRetryDelay: time.Millisecond,
	}.Validate()
	for _, field := range []string{"LatencyTarget", "MinLimit", "InitialLimit", "ImageInitialLimit", "Quantile", "GrowBelow", "Backoff", "CallMemoryShare", "MinRetryDelay"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate: %v; want %s named", err, field)
		}
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := New(Config{InitialLimit: 4, MemoryBudget: 100}, Deps{Registerer: reg, Clock: clocktest.New(time.Unix(0, 0))})
	if err != nil {
		t.Fatal(err)
	}
	admitN(t, c, Image, 4)
	_, _ = c.Admit(Request{Class: Image})
	_, _ = c.Admit(Request{Class: Query, Bytes: 76})
	for name, want := range map[string]float64{
		"colpali_admission_limit":               4 * 4,
		"colpali_admission_in_flight":           4,
		"colpali_admission_shed_total":          2,
		"colpali_admission_memory_budget_bytes": 100,
		"colpali_admission_call_memory_bytes":   75,
	} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := math.NaN()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			got = 0
			for _, m := range mf.GetMetric() {
				got += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		if got != want {
			t.Errorf("%s summed over labels = %v, want %v", name, got, want)
		}
	}
	if got := testutil.ToFloat64(c.shed.WithLabelValues("image", "concurrency_limit")); got != 1 {
		t.Errorf("image concurrency sheds = %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.shed.WithLabelValues("query", "memory_budget")); got != 1 {
		t.Errorf("query memory sheds = %v, want 1", got)
	}
}

func TestDefaultMemoryBudget(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	saved, savedLimit := [3]string{cgroupV2File, cgroupV1File, meminfoFile}, goMemLimit
	t.Cleanup(func() { cgroupV2File, cgroupV1File, meminfoFile, goMemLimit = saved[0], saved[1], saved[2], savedLimit })
	goMemLimit = func() int64 { return math.MaxInt64 }
	missing := filepath.Join(dir, "missing")

	cgroupV2File, cgroupV1File, meminfoFile = write("v2", "2147483648\n"), missing, missing
	if got, src := DefaultMemoryBudget(); got != 2147483648*9/10 || !strings.Contains(src, "v2") {
		t.Errorf("cgroup v2 limit 2 GiB: budget %d (%s), want 90%% of it", got, src)
	}
	cgroupV2File, cgroupV1File = write("v2max", "max\n"), write("v1", "1073741824\n")
	if got, _ := DefaultMemoryBudget(); got != 1073741824*9/10 {
		t.Errorf("cgroup v2 max, v1 1 GiB: budget %d, want 90%% of 1 GiB", got)
	}
	goMemLimit = func() int64 { return 1 << 29 }
	if got, src := DefaultMemoryBudget(); got != 1<<29 || !strings.Contains(src, "GOMEMLIMIT") {
		t.Errorf("GOMEMLIMIT 512 MiB under a 1 GiB container: budget %d (%s), want GOMEMLIMIT", got, src)
	}
	goMemLimit = func() int64 { return 2 << 30 }
	if got, _ := DefaultMemoryBudget(); got != 1073741824*9/10 {
		t.Errorf("GOMEMLIMIT 2 GiB over a 1 GiB container: budget %d, want 90%% of the container's", got)
	}
	goMemLimit = func() int64 { return math.MaxInt64 }
	cgroupV1File = write("v1none", "9223372036854771712\n")
	meminfoFile = write("meminfo", "MemTotal:        1048576 kB\nMemFree: 1 kB\n")
	if got, _ := DefaultMemoryBudget(); got != 1<<29 {
		t.Errorf("no limit, 1 GiB of memory: budget %d, want 512 MiB", got)
	}
	meminfoFile = write("meminfo-big", "MemTotal:        67108864 kB\n")
	if got, _ := DefaultMemoryBudget(); got != maxUnlimitedBudget {
		t.Errorf("no limit, 64 GiB of memory: budget %d, want the cap %d", got, maxUnlimitedBudget)
	}
	goMemLimit = func() int64 { return 1 << 30 }
	if got, src := DefaultMemoryBudget(); got != 1<<30 || !strings.Contains(src, "GOMEMLIMIT") {
		t.Errorf("GOMEMLIMIT 1 GiB on a large machine: budget %d (%s), want GOMEMLIMIT", got, src)
	}
	goMemLimit = func() int64 { return math.MaxInt64 }
	meminfoFile = missing
	if got, _ := DefaultMemoryBudget(); got != fallbackBudget {
		t.Errorf("nothing known: budget %d, want %d", got, fallbackBudget)
	}
}

func TestCallMemory(t *testing.T) {
	for _, tc := range []struct {
		budget int64
		share  float64
		want   int64
	}{
		{budget: 1 << 29, share: 0, want: 3 << 27}, // the default share, 3/4
		{budget: 1000, share: 0.5, want: 500},
		{budget: 1001, share: 0.5, want: 500}, // rounded down
	} {
		if got := (Config{MemoryBudget: tc.budget, CallMemoryShare: tc.share}).WithDefaults().CallMemory(); got != tc.want {
			t.Errorf("budget %d, share %v: call memory %d, want %d", tc.budget, tc.share, got, tc.want)
		}
	}
}

func TestApplyMemoryLimit(t *testing.T) {
	savedGet, savedSet := goMemLimit, setMemoryLimit
	t.Cleanup(func() { goMemLimit, setMemoryLimit = savedGet, savedSet })
	for _, tc := range []struct {
		name        string
		goMemLimit  int64 // as the program started
		budget      int64
		want        int64
		wantLowered bool
	}{
		{name: "no GOMEMLIMIT", goMemLimit: math.MaxInt64, budget: 1000, want: 900, wantLowered: true},
		{name: "GOMEMLIMIT above the budget", goMemLimit: 1 << 30, budget: 1 << 29, want: 483183820, wantLowered: true}, // 90% of 512 MiB,
		{name: "GOMEMLIMIT below the budget: kept", goMemLimit: 1 << 28, budget: 1 << 29, want: 1 << 28},
		{name: "no budget", goMemLimit: 1 << 30, budget: 0, want: 1 << 30},
	} {
		set := int64(-2)
		goMemLimit = func() int64 { return tc.goMemLimit }
		setMemoryLimit = func(v int64) int64 { set = v; return 0 }
		limit, lowered := ApplyMemoryLimit(tc.budget)
		if limit != tc.want || lowered != tc.wantLowered || set != tc.want {
			t.Errorf("%s: ApplyMemoryLimit(%d) = %d, %v and set %d; want %d, %v", tc.name, tc.budget, limit, lowered, set, tc.want, tc.wantLowered)
		}
	}
}
