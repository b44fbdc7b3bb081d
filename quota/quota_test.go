package quota_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/quota"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// tp is a principal of tenant, through its API key "cpk_" + tenant.
func tp(tenant string) auth.Principal {
	return auth.Principal{Tenant: tenant, Subject: "cpk_" + tenant}
}

func newQuotas(t *testing.T, cfg quota.Config, deps quota.Deps) *quota.Quotas {
	t.Helper()
	q, err := quota.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// overloaded checks err is Overloaded with the reason and, when delay > 0,
// that RetryInfo delay.
func overloaded(t *testing.T, err error, reason string, delay time.Duration) {
	t.Helper()
	if !errors.Is(err, errclass.Overloaded) {
		t.Fatalf("%v, want Overloaded", err)
	}
	var r *errclass.Reason
	if !errors.As(err, &r) || r.Reason != reason {
		t.Errorf("reason %v, want %s", r, reason)
	}
	var retry *errclass.Retry
	switch {
	case delay == 0 && errors.As(err, &retry):
		t.Errorf("retry delay %v, want none", retry.Delay)
	case delay > 0 && (!errors.As(err, &retry) || retry.Delay != delay):
		t.Errorf("retry %v, want %v", retry, delay)
	}
}

func TestCallRate(t *testing.T) {
	clk := newClock()
	q := newQuotas(t, quota.Config{Default: quota.Limits{CallsPerSecond: 10, CallBurst: 2}}, quota.Deps{Now: clk.now})
	for range 2 {
		release, err := q.Admit(tp("a"))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	_, err := q.Admit(tp("a"))
	overloaded(t, err, "RATE_LIMITED", 100*time.Millisecond)
	if !strings.Contains(err.Error(), `tenant "a" is over its rate of 10 calls/s`) {
		t.Errorf("message %q", err)
	}
	// Another tenant is not affected.
	if _, err := q.Admit(tp("b")); err != nil {
		t.Fatal(err)
	}
	// A refused call took no token: after the delay, one call passes.
	clk.advance(100 * time.Millisecond)
	if _, err := q.Admit(tp("a")); err != nil {
		t.Fatalf("after the retry delay: %v", err)
	}
	_, err = q.Admit(tp("a"))
	overloaded(t, err, "RATE_LIMITED", 100*time.Millisecond)
}

func TestConcurrencyCap(t *testing.T) {
	q := newQuotas(t, quota.Config{Default: quota.Limits{MaxConcurrent: 2}, BusyRetryDelay: 50 * time.Millisecond}, quota.Deps{})
	r1, err := q.Admit(tp("a"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := q.Admit(tp("a"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = q.Admit(tp("a"))
	overloaded(t, err, "CONCURRENCY_LIMITED", 50*time.Millisecond)
	r1()
	r1() // a second release must not free another slot
	r3, err := q.Admit(tp("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Admit(tp("a")); err == nil {
		t.Fatal("double release freed two slots")
	}
	r2()
	r3()
}

func TestPages(t *testing.T) {
	clk := newClock()
	q := newQuotas(t, quota.Config{Default: quota.Limits{PagesPerSecond: 10}}, quota.Deps{Now: clk.now})
	if err := q.Pages(tp("a"), quota.DefaultMinPageBurst); err != nil {
		t.Fatalf("a call of the default burst: %v", err)
	}
	err := q.Pages(tp("a"), 5)
	overloaded(t, err, "RATE_LIMITED", 500*time.Millisecond)
	clk.advance(500 * time.Millisecond)
	if err := q.Pages(tp("a"), 5); err != nil {
		t.Fatal(err)
	}
	err = q.Pages(tp("a"), quota.DefaultMinPageBurst+1)
	var fe *errclass.FieldError
	if !errors.Is(err, errclass.Invalid) || !errors.As(err, &fe) || fe.Violations[0].Field != "pages" {
		t.Fatalf("a call larger than the burst: %v, want Invalid on field pages", err)
	}
	if err := q.Pages(tp("a"), 0); err != nil {
		t.Fatal(err)
	}
}

func TestOverridesAndMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	cfg := quota.Config{
		Default: quota.Limits{CallsPerSecond: 1},
		Tenants: map[string]quota.Limits{"big": {MaxConcurrent: 1}}, // replaces the default: no rate limit
	}
	q := newQuotas(t, cfg, quota.Deps{Registerer: reg, Now: newClock().now})
	for range 5 {
		release, err := q.Admit(tp("big"))
		if err != nil {
			t.Fatalf("override without a rate: %v", err)
		}
		if _, err := q.Admit(tp("big")); err == nil {
			t.Fatal("override's concurrency cap not applied")
		}
		release()
	}
	for _, tenant := range []string{"x", "y", "z"} {
		if _, err := q.Admit(tp(tenant)); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Admit(tp(tenant)); err == nil {
			t.Fatal("default rate not applied")
		}
	}
	want := `
# HELP colpali_quota_rejections_total Calls refused by a tenant quota, by tenant (tenants and keys with an override by name, the rest as "other") and limit: calls_per_second, pages_per_second, concurrency, storage_documents, storage_pages.
# TYPE colpali_quota_rejections_total counter
colpali_quota_rejections_total{limit="calls_per_second",tenant="other"} 3
colpali_quota_rejections_total{limit="concurrency",tenant="big"} 5
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "colpali_quota_rejections_total"); err != nil {
		t.Error(err)
	}
}

func TestEviction(t *testing.T) {
	clk := newClock()
	q := newQuotas(t, quota.Config{Default: quota.Limits{CallsPerSecond: 1, MaxConcurrent: 5}, MaxTenants: 10}, quota.Deps{Now: clk.now})
	busy, err := q.Admit(tp("busy"))
	if err != nil {
		t.Fatal(err)
	}
	defer busy()
	for i := range 9 {
		release, err := q.Admit(tp(fmt.Sprintf("t%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	// Every bucket is drained; a new tenant forces the least recently
	// seen idle ones out, never the one with a call in progress.
	clk.advance(10 * time.Millisecond)
	if _, err := q.Admit(tp("new")); err != nil {
		t.Fatal(err)
	}
	if n := q.Tracked(); n > 10 {
		t.Fatalf("%d tenants tracked, bound 10", n)
	}
	if _, err := q.Admit(tp("busy")); err == nil {
		t.Error("the busy tenant was forgotten: its drained bucket came back full")
	}
	// Once buckets have refilled, forgetting them loses nothing, and they go first.
	clk.advance(2 * time.Second)
	for i := range 20 {
		release, err := q.Admit(tp(fmt.Sprintf("u%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	if n := q.Tracked(); n > 10 {
		t.Fatalf("%d tenants tracked, bound 10", n)
	}
	// Tenants with calls in progress are never forgotten, even past the
	// bound (their number is bounded by the server's own limits).
	var releases []func()
	for i := range 12 {
		release, err := q.Admit(tp(fmt.Sprintf("v%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	if n := q.Tracked(); n < 13 {
		t.Errorf("%d tenants tracked with 13 calls in progress", n)
	}
	for _, r := range releases {
		r()
	}
}

type fakeCounter struct {
	calls      atomic.Int64
	docs, page int64
	err        error
}

func (f *fakeCounter) CountTenant(context.Context, string) (int64, int64, error) {
	f.calls.Add(1)
	return f.docs, f.page, f.err
}

func TestCheckStorage(t *testing.T) {
	ctx := testutil.Context(t)
	c := &fakeCounter{docs: 9, page: 90}
	q := newQuotas(t, quota.Config{
		Default: quota.Limits{MaxDocuments: 10, MaxPages: 100},
		Tenants: map[string]quota.Limits{"free": {}},
	}, quota.Deps{Counter: c})
	if err := q.CheckStorage(ctx, "a", 1, 10); err != nil {
		t.Fatalf("at the quota exactly: %v", err)
	}
	err := q.CheckStorage(ctx, "a", 2, 1)
	overloaded(t, err, "STORAGE_QUOTA", 0)
	if !strings.Contains(err.Error(), "quota of 10") {
		t.Errorf("message %q", err)
	}
	overloaded(t, q.CheckStorage(ctx, "a", 1, 11), "STORAGE_QUOTA", 0)
	before := c.calls.Load()
	if err := q.CheckStorage(ctx, "free", 1000, 1000); err != nil || c.calls.Load() != before {
		t.Errorf("tenant without storage limits: %v, counted %d times", err, c.calls.Load()-before)
	}
	c.err = errclass.Errorf(errclass.Unavailable, "database down")
	if err := q.CheckStorage(ctx, "a", 1, 1); !errors.Is(err, errclass.Unavailable) {
		t.Errorf("count failure: %v", err)
	}
	if _, err := quota.New(quota.Config{Default: quota.Limits{MaxPages: 1}}, quota.Deps{}); err == nil {
		t.Error("storage limits without a Counter accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := quota.New(quota.Config{
		Default:    quota.Limits{CallsPerSecond: -1, CallBurst: 3},
		Tenants:    map[string]quota.Limits{"bad name": {PageBurst: 5}, "ok": {MaxConcurrent: -2}},
		MaxTenants: -1,
	}, quota.Deps{})
	for _, want := range []string{"default CallsPerSecond", `tenant "bad name"`, "tenant bad name PageBurst", "tenant ok MaxConcurrent", "MaxTenants"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

// Many goroutines admitting and releasing at once: the race detector
// checks the locking, and the cap is never exceeded.
func TestConcurrentAdmission(t *testing.T) {
	q := newQuotas(t, quota.Config{Default: quota.Limits{MaxConcurrent: 3}, MaxTenants: 4}, quota.Deps{})
	var inflight, peak atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				tenant := fmt.Sprintf("t%d", (g+i)%6)
				release, err := q.Admit(tp(tenant))
				if err != nil {
					continue
				}
				if tenant == "t0" {
					n := inflight.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					inflight.Add(-1)
				}
				release()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 3 {
		t.Errorf("peak %d calls of t0 at once, cap 3", p)
	}
}
