package router

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"sync"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/internal/clock/clocktest"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
)

// fastCost keeps simulated batches short so that tests stay quick.
var fastCost = tritonsim.Cost{Base: 2 * time.Millisecond, PerItem: 100 * time.Microsecond}

// startSim starts a simulator on loopback, stopped in t.Cleanup. Costs
// default to fastCost.
func startSim(t *testing.T, cfg tritonsim.Config) *tritonsim.Server {
	t.Helper()
	cfg.GRPCAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	if cfg.QueryCost == (tritonsim.Cost{}) {
		cfg.QueryCost = fastCost
	}
	if cfg.ImageCost == (tritonsim.Cost{}) {
		cfg.ImageCost = fastCost
	}
	sim, err := tritonsim.Start(testutil.Context(t), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	return sim
}

// testConfig is a Config with quick health checks and backoffs (on the
// fake clock: they pass when a test advances it). The health timeout is a
// real-time context, generous so that a loaded machine does not fail a
// check.
func testConfig(policyName string, sims ...*tritonsim.Server) Config {
	cfg := Config{
		Policy:          policyName,
		HealthInterval:  20 * time.Millisecond,
		HealthTimeout:   5 * time.Second,
		EjectBackoff:    150 * time.Millisecond,
		EjectBackoffMax: time.Second,
		DrainTimeout:    5 * time.Second,
	}
	for _, s := range sims {
		cfg.Static = append(cfg.Static, Endpoint{Addr: s.GRPCAddr(), MetricsURL: "http://" + s.MetricsAddr() + "/metrics"})
	}
	return cfg
}

// startRouter builds and runs a router on a fake clock (see fakeClock),
// stopped in t.Cleanup, and waits until want backends are ready.
func startRouter(t *testing.T, cfg Config, deps Deps, want int) *Router {
	t.Helper()
	if deps.Logger == nil {
		deps.Logger = testutil.Logger(t)
	}
	if deps.Clock == nil {
		deps.Clock = clocktest.New(time.Now())
	}
	r, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	// The first checks run at once; ticking retries one that failed.
	waitTicking(t, r, cfg.WithDefaults().HealthInterval, fmt.Sprintf("%d ready backends", want),
		func() bool { return countState(r, StateReady) >= want })
	// Ticking may have started another check; let every health loop come
	// back to its timer, so that no check is in flight when the test
	// begins (one finding a server the test stops next would take it out
	// before any batch does).
	clk := fakeClock(t, r)
	waitFor(t, "every health loop waiting", func() bool { return clk.Armed() >= want })
	return r
}

// fakeClock is the fake clock r runs on. Nothing timed by the router's
// clock (health checks after the first, ejection backoffs, DNS lookups
// after the first, drain polls, the retry budget's window) happens until
// the test advances it, so the tests hold however slow the machine is.
func fakeClock(t *testing.T, r *Router) *clocktest.Fake {
	t.Helper()
	c, ok := r.clock.(*clocktest.Fake)
	if !ok {
		t.Fatalf("router clock %T, want the fake startRouter sets", r.clock)
	}
	return c
}

// waitTicking waits for cond, advancing r's fake clock by step before each
// look, so that the health checks, DNS lookups and drain polls due by then
// run. Advancing while a goroutine of the router is busy is harmless: it
// re-arms its timer on the clock's new time and the next step fires it.
func waitTicking(t *testing.T, r *Router, step time.Duration, what string, cond func() bool) {
	t.Helper()
	clk := fakeClock(t, r)
	waitFor(t, what, func() bool {
		if cond() {
			return true
		}
		clk.Advance(step)
		return false
	})
}

func countState(r *Router, s State) int {
	n := 0
	for _, b := range r.Backends() {
		if b.State == s {
			n++
		}
	}
	return n
}

func status(r *Router, addr string) (BackendStatus, bool) {
	for _, b := range r.Backends() {
		if b.Addr == addr {
			return b, true
		}
	}
	return BackendStatus{}, false
}

// waitFor waits for cond; see testutil.Eventually.
var waitFor = testutil.Eventually

// load sends batches of kind from workers goroutines, n each, and returns
// every error.
func load(ctx context.Context, r *Router, kind model.Kind, workers, n int, timeout time.Duration) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range n {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				item := fmt.Appendf(nil, "query %d %d", w, i)
				if kind == model.Image {
					item = testPNG
				}
				_, err := r.Embed(cctx, kind, [][]byte{item}, 0)
				cancel()
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// testPNG is a small valid page image.
var testPNG = func() []byte {
	img := image.NewGray(image.Rect(0, 0, 8, 8))
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic(err)
	}
	return buf.Bytes()
}()

// countModel counts the calls a simulator saw for model name.
func countModel(s *tritonsim.Server, name string) int {
	n := 0
	for _, o := range s.Observed() {
		if o.Model == name {
			n++
		}
	}
	return n
}

// fakeGPU is a gpu.Source whose figures each test sets.
type fakeGPU struct {
	mu    sync.Mutex
	stats map[string]gpu.Stats
}

var _ gpu.Source = (*fakeGPU)(nil)

func (f *fakeGPU) Stats(backend string) (gpu.Stats, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.stats[backend]
	if ok {
		s.At = time.Now()
	}
	return s, ok
}

// fakeResolver is a Resolver whose answer each test sets.
type fakeResolver struct {
	mu      sync.Mutex
	addrs   []string
	err     error
	lookups int
}

func (f *fakeResolver) set(addrs []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs, f.err = addrs, err
}

func (f *fakeResolver) LookupHost(context.Context, string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	return append([]string(nil), f.addrs...), f.err
}

// count is the number of lookups so far.
func (f *fakeResolver) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups
}

// fakeTargets records the last SetTargets.
type fakeTargets struct {
	mu      sync.Mutex
	targets map[string]string
}

func (f *fakeTargets) SetTargets(t map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.targets = t
}

func (f *fakeTargets) get() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.targets
}
