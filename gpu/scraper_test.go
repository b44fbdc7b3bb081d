package gpu

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// fakeTriton serves a metrics page that a test can change.
type fakeTriton struct {
	*httptest.Server
	page     atomic.Pointer[string]
	status   atomic.Int32
	requests atomic.Int64
	// onRequest, when set, runs before the page is written.
	onRequest func(r *http.Request)
}

func newFakeTriton(t *testing.T, page string) *fakeTriton {
	f := &fakeTriton{}
	f.page.Store(&page)
	f.status.Store(http.StatusOK)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if f.onRequest != nil {
			f.onRequest(r)
		}
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.WriteHeader(int(f.status.Load()))
		w.Write([]byte(*f.page.Load()))
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeTriton) metricsURL() string { return f.URL + "/metrics" }
func (f *fakeTriton) setPage(p string)   { f.page.Store(&p) }

// runScraper runs s until the test ends and checks that Run returns nil.
func runScraper(t *testing.T, s *Scraper) {
	t.Helper()
	ctx, cancel := context.WithCancel(testutil.Context(t))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func statusOf(s *Scraper, backend string) TargetStatus {
	for _, st := range s.Status() {
		if st.Backend == backend {
			return st
		}
	}
	return TargetStatus{}
}

// Every scrape advances a fake clock by one second and the page's counters
// by fixed amounts, so the rates are exact although the scrapes run on
// real time.
func TestScraperRates(t *testing.T) {
	clock := &fakeClock{}
	var n atomic.Int64
	page := func(k float64) string {
		return tritonPage([]tritonModel{{name: "colpali_query", success: 10 * k, inferences: 40 * k, executions: 10 * k,
			queueUs: 2000 * k, computeInferUs: 50000 * k, requestUs: 60000 * k, pending: 2}},
			[]tritonGPU{{uuid: "GPU-x", util: 0.4, memUsed: 1e9, memTotal: 8e9}})
	}
	f := newFakeTriton(t, page(0))
	f.onRequest = func(*http.Request) {
		clock.Advance(time.Second)
		f.setPage(page(float64(n.Add(1))))
	}
	s := NewScraper(ScraperConfig{Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Stale: time.Hour}, testutil.Logger(t))
	s.now = clock.Now
	s.SetTargets(map[string]string{"triton-0:8001": f.metricsURL()})
	runScraper(t, s)

	eventually(t, "rates", func() bool {
		st, ok := s.Stats("triton-0:8001")
		return ok && st.Reported.Has(FieldRates)
	})
	st, _ := s.Stats("triton-0:8001")
	if st.Reported != FieldAll || st.Pending != 2 || st.RequestsPerSecond != 10 || st.InferencesPerSecond != 40 ||
		st.ExecutionsPerSecond != 10 || st.QueueTimePerRequest != 200*time.Microsecond ||
		st.ComputePerExec != 5*time.Millisecond || st.RequestTimePerRequest != 6*time.Millisecond ||
		st.Utilization != 0.4 || st.MemoryUsed != 1e9 || st.MemoryTotal != 8e9 || st.GPUs != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if all := s.All(); len(all) != 1 || all["triton-0:8001"].At.Before(st.At) {
		t.Errorf("All = %v, want the target's latest Stats", all)
	}
	if _, ok := s.Stats("unknown:8001"); ok {
		t.Error("Stats of an unknown backend is ok")
	}
}

func TestScraperStale(t *testing.T) {
	clock := &fakeClock{}
	f := newFakeTriton(t, tritonPage([]tritonModel{{name: "m", pending: 1}}, nil))
	s := NewScraper(ScraperConfig{Interval: time.Hour, Timeout: time.Second, Stale: 3 * time.Hour}, testutil.Logger(t))
	s.now = clock.Now
	s.SetTargets(map[string]string{"b:1": f.metricsURL()})
	runScraper(t, s)
	eventually(t, "first scrape", func() bool { _, ok := s.Stats("b:1"); return ok })
	clock.Advance(3 * time.Hour)
	if _, ok := s.Stats("b:1"); !ok {
		t.Error("not ok at exactly Stale")
	}
	clock.Advance(time.Nanosecond)
	if st, ok := s.Stats("b:1"); ok {
		t.Errorf("ok past Stale: %+v", st)
	}
	if len(s.All()) != 0 {
		t.Error("All reports a stale target")
	}
	if st := statusOf(s, "b:1"); st.Fresh || st.Stats.Pending != 1 {
		t.Errorf("Status = %+v, want the stale figures, not fresh", st)
	}
}

func TestScraperErrorsRecordedAndRecovered(t *testing.T) {
	good := tritonPage([]tritonModel{{name: "m", pending: 3}}, nil)
	for _, tc := range []struct {
		name    string
		breakIt func(f *fakeTriton)
		want    func(error) bool
	}{
		{"malformed", func(f *fakeTriton) { f.setPage("nv_inference_count{model=\"m\" 12\n") },
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "line 1") }},
		{"error status", func(f *fakeTriton) { f.status.Store(http.StatusServiceUnavailable) },
			func(err error) bool { return errors.Is(err, ErrBadStatus) && strings.Contains(err.Error(), "503") }},
		{"not Triton", func(f *fakeTriton) { f.setPage("# TYPE go_goroutines gauge\ngo_goroutines 12\n") },
			func(err error) bool { return errors.Is(err, ErrNoTritonMetrics) }},
		{"too large", func(f *fakeTriton) { f.setPage(good + strings.Repeat("# padding\n", 200)) },
			func(err error) bool { return errors.Is(err, ErrTooLarge) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTriton(t, good)
			tc.breakIt(f)
			logger, logs := captureLogger(t)
			s := NewScraper(ScraperConfig{Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, MaxBytes: int64(len(good)) + 100}, logger)
			s.SetTargets(map[string]string{"b:1": f.metricsURL()})
			runScraper(t, s)
			// On a loaded machine a scrape may also time out now and then:
			// wait for the error under test.
			eventually(t, "three failures, the last the one under test", func() bool {
				st := statusOf(s, "b:1")
				return st.Failures >= 3 && tc.want(st.LastError)
			})
			if st := statusOf(s, "b:1"); st.LastErrorAt.IsZero() {
				t.Error("LastErrorAt not set")
			}
			if _, ok := s.Stats("b:1"); ok {
				t.Error("Stats ok although no scrape succeeded")
			}
			if n := len(logs.records(t, "Triton metrics scrape failed")); n != 1 {
				t.Errorf("%d warnings for repeated failures, want 1", n)
			}

			f.status.Store(http.StatusOK)
			f.setPage(good)
			eventually(t, "recovery", func() bool { _, ok := s.Stats("b:1"); return ok })
			if st := statusOf(s, "b:1"); st.LastError != nil || st.Failures != 0 || st.Stats.Pending != 3 {
				t.Errorf("after recovery: %+v", st)
			}
			if len(logs.records(t, "Triton metrics scrape recovered")) == 0 {
				t.Error("recovery not logged")
			}
		})
	}
}

// A target that never answers costs its own scrape Timeout, not the
// others' figures: rounds go on every Interval.
func TestScraperSlowTargetBoundedByTimeout(t *testing.T) {
	release := make(chan struct{})
	slow := newFakeTriton(t, tritonPage([]tritonModel{{name: "m"}}, nil))
	slow.onRequest = func(r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
	t.Cleanup(func() { close(release) }) // runs before slow.Close
	fast := newFakeTriton(t, tritonPage([]tritonModel{{name: "m", pending: 1}}, nil))

	s := NewScraper(ScraperConfig{Interval: 80 * time.Millisecond, Timeout: 40 * time.Millisecond}, testutil.Logger(t))
	s.SetTargets(map[string]string{"slow:1": slow.metricsURL(), "fast:1": fast.metricsURL()})
	start := time.Now()
	runScraper(t, s)
	eventually(t, "five scrapes of the fast target", func() bool { return fast.requests.Load() >= 5 })
	// Five rounds take four Intervals; were the slow target not cut off
	// they would take minutes. The bound is loose: the machine is shared.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("five rounds took %v", d)
	}
	if _, ok := s.Stats("fast:1"); !ok {
		t.Error("fast target has no Stats")
	}
	st := statusOf(s, "slow:1")
	if !errors.Is(st.LastError, context.DeadlineExceeded) {
		t.Errorf("slow target's error = %v, want a deadline", st.LastError)
	}
	if _, ok := s.Stats("slow:1"); ok {
		t.Error("slow target has Stats")
	}
}

func TestScraperTargetsChange(t *testing.T) {
	a := newFakeTriton(t, tritonPage([]tritonModel{{name: "m", pending: 1}}, nil))
	b := newFakeTriton(t, tritonPage([]tritonModel{{name: "m", pending: 2}}, nil))
	c := newFakeTriton(t, tritonPage([]tritonModel{{name: "m", pending: 3}}, nil))
	// An Interval of an hour: every scrape after the first round is one
	// that SetTargets asked for.
	s := NewScraper(ScraperConfig{Interval: time.Hour}, testutil.Logger(t))
	s.SetTargets(map[string]string{"a:1": a.metricsURL(), "b:1": b.metricsURL()})
	runScraper(t, s)
	pending := func(backend string) float64 {
		st, ok := s.Stats(backend)
		if !ok {
			return -1
		}
		return st.Pending
	}
	eventually(t, "a and b scraped", func() bool { return pending("a:1") == 1 && pending("b:1") == 2 })

	// b leaves, c joins, a moves to c's server.
	s.SetTargets(map[string]string{"a:1": c.metricsURL(), "c:1": c.metricsURL()})
	if _, ok := s.Stats("b:1"); ok {
		t.Error("b still reported after it left")
	}
	if st, ok := s.Stats("a:1"); ok {
		t.Errorf("a reported with its old server's figures after its URL changed: %+v", st)
	}
	eventually(t, "a and c scraped without waiting for the interval", func() bool {
		return pending("a:1") == 3 && pending("c:1") == 3
	})
	if n := b.requests.Load(); n != 1 {
		t.Errorf("b scraped %d times, want 1", n)
	}
	if n := a.requests.Load(); n != 1 {
		t.Errorf("a's old server scraped %d times, want 1", n)
	}
	if got := len(s.Status()); got != 2 {
		t.Errorf("Status has %d targets, want 2", got)
	}
	s.SetTargets(nil)
	if len(s.All()) != 0 || len(s.Status()) != 0 {
		t.Error("targets remain after SetTargets(nil)")
	}
}

func TestScraperRunTwiceAndStop(t *testing.T) {
	s := NewScraper(ScraperConfig{}, testutil.Logger(t))
	ctx, cancel := context.WithCancel(testutil.Context(t))
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "running", s.running.Load)
	if err := s.Run(ctx); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
	}
	cancel()
	wg.Wait()
}

func TestScraperConfigValidate(t *testing.T) {
	if err := (ScraperConfig{}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	d := ScraperConfig{}.WithDefaults()
	if d.Interval != 2*time.Second || d.Timeout != time.Second || d.Stale != 6*time.Second || d.MaxBytes != 16<<20 {
		t.Errorf("defaults = %+v", d)
	}
	for _, tc := range []struct {
		cfg   ScraperConfig
		field string
	}{
		{ScraperConfig{Interval: -time.Second}, "Interval"},
		{ScraperConfig{Timeout: -time.Second}, "Timeout"},
		{ScraperConfig{Interval: time.Second, Timeout: 2 * time.Second}, "Timeout"},
		{ScraperConfig{Interval: time.Second, Stale: time.Millisecond}, "Stale"},
		{ScraperConfig{MaxBytes: -1}, "MaxBytes"},
	} {
		err := tc.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field+" ") {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
		if err := NewScraper(tc.cfg, nil).Run(t.Context()); err == nil {
			t.Errorf("Run with %+v: no error", tc.cfg)
		}
	}
}
