package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router/policy/roundrobin"
	"github.com/morphik-org/colpali-gateway/triton"
)

// checkMode is what a scriptedProber's checks answer.
type checkMode int

const (
	checkPass    checkMode = iota // what the server says
	checkTimeout                  // no answer before the check's deadline
	checkNotLive                  // the server says it is not live
)

// scriptedProber is a backend's health-check connection whose answers the
// test chooses. It also counts the calls each connection gets.
type scriptedProber struct {
	Backend
	mu     sync.Mutex
	mode   checkMode
	checks int // ServerLive calls
	embeds int
}

func (p *scriptedProber) set(m checkMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
}

func (p *scriptedProber) counts() (checks, embeds int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.checks, p.embeds
}

// ServerLive answers as the mode says. A timeout is answered at once with
// the error triton.Client gives when a check's deadline passes, so that
// the test waits for no deadline (the router cannot tell the difference).
func (p *scriptedProber) ServerLive(ctx context.Context) (bool, error) {
	p.mu.Lock()
	p.checks++
	mode := p.mode
	p.mu.Unlock()
	switch mode {
	case checkTimeout:
		return false, errclass.Wrap(errclass.TimedOut, fmt.Errorf("triton %s: ServerLive: %w", p.Addr(), context.DeadlineExceeded))
	case checkNotLive:
		return false, nil
	}
	return p.Backend.ServerLive(ctx)
}

func (p *scriptedProber) Embed(ctx context.Context, kind model.Kind, items [][]byte, opt triton.EmbedOptions) ([]model.Embedding, error) {
	p.mu.Lock()
	p.embeds++
	p.mu.Unlock()
	return p.Backend.Embed(ctx, kind, items, opt)
}

// scriptedDialer dials real triton clients and wraps each in a
// scriptedProber: the first connection to an address carries batches,
// the second health checks (see Deps.Dial).
type scriptedDialer struct {
	mu           sync.Mutex
	data, checks map[string]*scriptedProber
}

func newScriptedDialer() *scriptedDialer {
	return &scriptedDialer{data: map[string]*scriptedProber{}, checks: map[string]*scriptedProber{}}
}

func (d *scriptedDialer) dial(addr string) (Backend, error) {
	c, err := triton.New(triton.Config{Addr: addr})
	if err != nil {
		return nil, err
	}
	p := &scriptedProber{Backend: c}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.data[addr]; !ok {
		d.data[addr] = p
	} else {
		d.checks[addr] = p
	}
	return p, nil
}

// prober is the health-check connection of addr.
func (d *scriptedDialer) prober(t *testing.T, addr string) *scriptedProber {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.checks[addr]
	if !ok {
		t.Fatalf("no health-check connection dialed to %s", addr)
	}
	return p
}

// healthConfig is testConfig with thresholds of 3 failures and 2 passes.
func healthConfig(sims ...*tritonsim.Server) Config {
	cfg := testConfig(roundrobin.Name, sims...)
	cfg.UnhealthyThreshold, cfg.HealthyThreshold = 3, 2
	return cfg
}

// checkRound runs one round of health checks: it waits until the health
// loop of each of the n backends has armed its timer (so that none is
// between two checks), advances the fake clock by interval, and waits
// until every backend has recorded a check at the new time. One round is
// exactly one check per backend, however slow the machine.
func checkRound(t *testing.T, r *Router, n int, interval time.Duration) {
	t.Helper()
	clk := fakeClock(t, r)
	waitFor(t, fmt.Sprintf("%d health timers armed", n), func() bool { return clk.Armed() >= n })
	clk.Advance(interval)
	now := clk.Now()
	waitFor(t, "a health check of every backend", func() bool {
		for _, b := range r.Backends() {
			if b.LastCheck.Before(now) {
				return false
			}
		}
		return true
	})
}

func embedQuery(ctx context.Context, r *Router) error {
	_, err := r.Embed(ctx, model.Query, [][]byte{[]byte("q")}, 0)
	return err
}

// TestCheckThresholds: checks that time out take a backend out after
// UnhealthyThreshold of them in a row, not before; passing checks bring it
// back after HealthyThreshold of them, not before.
func TestCheckThresholds(t *testing.T) {
	sim := startSim(t, tritonsim.Config{})
	other := startSim(t, tritonsim.Config{}) // so that the first is not the last: no panic routing
	d := newScriptedDialer()
	cfg := healthConfig(sim, other)
	r := startRouter(t, cfg, Deps{Dial: d.dial}, 2)
	addr := sim.GRPCAddr()
	p := d.prober(t, addr)

	p.set(checkTimeout)
	for i := 1; i < cfg.UnhealthyThreshold; i++ {
		checkRound(t, r, 2, cfg.HealthInterval)
		if st, _ := status(r, addr); st.State != StateReady || st.ConsecutiveCheckFailures != i {
			t.Fatalf("after %d failed checks: %s with %d counted, want ready with %d", i, st.State, st.ConsecutiveCheckFailures, i)
		}
	}
	checkRound(t, r, 2, cfg.HealthInterval)
	st, _ := status(r, addr)
	if st.State != StateNotReady || st.ConsecutiveCheckFailures != cfg.UnhealthyThreshold || !strings.Contains(st.LastError, "deadline exceeded") {
		t.Fatalf("after %d failed checks: %s with %d counted (%q), want not ready, the timeout named",
			cfg.UnhealthyThreshold, st.State, st.ConsecutiveCheckFailures, st.LastError)
	}
	if n := r.Routable(model.Query); n != 1 {
		t.Errorf("Routable = %d, want 1", n)
	}

	p.set(checkPass)
	for i := 1; i < cfg.HealthyThreshold; i++ {
		checkRound(t, r, 2, cfg.HealthInterval)
		if st, _ := status(r, addr); st.State != StateNotReady || st.ConsecutiveCheckPasses != i || st.ConsecutiveCheckFailures != 0 {
			t.Fatalf("after %d passing checks: %s, %d passes, %d failures; want not ready, %d, 0", i, st.State, st.ConsecutiveCheckPasses, st.ConsecutiveCheckFailures, i)
		}
	}
	checkRound(t, r, 2, cfg.HealthInterval)
	if st, _ := status(r, addr); st.State != StateReady || st.LastError != "" {
		t.Fatalf("after %d passing checks: %s (%q), want ready", cfg.HealthyThreshold, st.State, st.LastError)
	}
}

// TestTimedOutCheckAfterAnsweredBatches: a check that times out is not
// counted when the backend answered batches since the check before: it is
// busy, not dead. Without batches in between, the count goes on.
func TestTimedOutCheckAfterAnsweredBatches(t *testing.T) {
	sim := startSim(t, tritonsim.Config{})
	d := newScriptedDialer()
	cfg := healthConfig(sim)
	cfg.UnhealthyThreshold = 2
	r := startRouter(t, cfg, Deps{Dial: d.dial}, 1)
	addr := sim.GRPCAddr()
	ctx := testutil.Context(t)
	p := d.prober(t, addr)

	p.set(checkTimeout)
	checkRound(t, r, 1, cfg.HealthInterval)
	if st, _ := status(r, addr); st.ConsecutiveCheckFailures != 1 {
		t.Fatalf("%d failed checks counted, want 1", st.ConsecutiveCheckFailures)
	}
	if err := embedQuery(ctx, r); err != nil {
		t.Fatal(err)
	}
	checkRound(t, r, 1, cfg.HealthInterval)
	st, _ := status(r, addr)
	if st.State != StateReady || st.ConsecutiveCheckFailures != 0 || !strings.Contains(st.LastError, "not counted") {
		t.Fatalf("a timed-out check after an answered batch: %s, %d counted (%q); want ready, none counted, and said so",
			st.State, st.ConsecutiveCheckFailures, st.LastError)
	}
	for i := 1; i <= cfg.UnhealthyThreshold; i++ {
		checkRound(t, r, 1, cfg.HealthInterval)
	}
	if st, _ := status(r, addr); st.State != StateNotReady || st.ConsecutiveCheckFailures != cfg.UnhealthyThreshold {
		t.Fatalf("after %d timed-out checks and no batch: %s, %d counted; want not ready", cfg.UnhealthyThreshold, st.State, st.ConsecutiveCheckFailures)
	}
}

// TestDeadBackendOutAtOnce: a refused connection, or a server that says it
// is not live, takes a backend out at the first check, and no batch goes
// there even when it was the last one (a dead backend is no panic
// candidate).
func TestDeadBackendOutAtOnce(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		sim := startSim(t, tritonsim.Config{})
		cfg := healthConfig(sim)
		r := startRouter(t, cfg, Deps{}, 1)
		sim.Stop()
		checkRound(t, r, 1, cfg.HealthInterval)
		st, _ := status(r, sim.GRPCAddr())
		if st.State != StateNotReady || st.Panic {
			t.Fatalf("after one check of a stopped server: %s, panic %v (%q); want not ready, no panic routing", st.State, st.Panic, st.LastError)
		}
		if err := embedQuery(testutil.Context(t), r); !errors.Is(err, ErrNoBackend) {
			t.Errorf("Embed = %v, want ErrNoBackend", err)
		}
	})
	t.Run("not live", func(t *testing.T) {
		sim := startSim(t, tritonsim.Config{})
		d := newScriptedDialer()
		cfg := healthConfig(sim)
		r := startRouter(t, cfg, Deps{Dial: d.dial}, 1)
		d.prober(t, sim.GRPCAddr()).set(checkNotLive)
		checkRound(t, r, 1, cfg.HealthInterval)
		if st, _ := status(r, sim.GRPCAddr()); st.State != StateNotReady || st.LastError != "server not live" {
			t.Fatalf("after one check answering not live: %s (%q), want not ready", st.State, st.LastError)
		}
		if err := embedQuery(testutil.Context(t), r); !errors.Is(err, ErrNoBackend) {
			t.Errorf("Embed = %v, want ErrNoBackend", err)
		}
	})
}

// TestPanicRouting: when every backend of a model fails its checks
// without an answer, batches still go to them (not to one known dead),
// counted; the router reports not ready meanwhile. Panic routing ends when
// a backend passes its checks again.
func TestPanicRouting(t *testing.T) {
	a := startSim(t, tritonsim.Config{})
	b := startSim(t, tritonsim.Config{})
	dead := startSim(t, tritonsim.Config{})
	d := newScriptedDialer()
	cfg := healthConfig(a, b, dead)
	reg := prometheus.NewRegistry()
	r := startRouter(t, cfg, Deps{Dial: d.dial, Registerer: reg}, 3)
	ctx := testutil.Context(t)
	dead.Stop()
	d.prober(t, a.GRPCAddr()).set(checkTimeout)
	d.prober(t, b.GRPCAddr()).set(checkTimeout)
	for range cfg.UnhealthyThreshold {
		checkRound(t, r, 3, cfg.HealthInterval)
	}
	if n := countState(r, StateNotReady); n != 3 {
		t.Fatalf("%d backends not ready, want all 3", n)
	}
	err := r.Ready(ctx)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "panic routing") {
		t.Errorf("Ready = %v, want not ready, saying batches still go out", err)
	}
	if n := r.Routable(model.Query); n != 2 {
		t.Errorf("Routable = %d, want the 2 backends not known dead", n)
	}
	const batches = 6
	for range batches {
		if err := embedQuery(ctx, r); err != nil {
			t.Fatalf("a batch failed in panic routing: %v", err)
		}
	}
	if got := testCounter(r.metrics.panicRouted[model.Query]); got != batches {
		t.Errorf("panic routing counted %v batches, want %d", got, batches)
	}
	if na, nb := countModel(a, queryModel), countModel(b, queryModel); na+nb != batches || na == 0 || nb == 0 {
		t.Errorf("the two backends saw %d and %d batches, want the %d shared", na, nb, batches)
	}
	for _, addr := range []string{a.GRPCAddr(), b.GRPCAddr()} {
		if st, _ := status(r, addr); !st.Panic {
			t.Errorf("%s not reported as panic routed", addr)
		}
	}
	if st, _ := status(r, dead.GRPCAddr()); st.Panic {
		t.Error("the dead backend reported as panic routed")
	}

	d.prober(t, a.GRPCAddr()).set(checkPass)
	for range cfg.HealthyThreshold {
		checkRound(t, r, 3, cfg.HealthInterval)
	}
	if err := r.Ready(ctx); err != nil {
		t.Errorf("Ready = %v after a backend passed its checks again", err)
	}
	before := countModel(b, queryModel)
	for range batches {
		if err := embedQuery(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if got := testCounter(r.metrics.panicRouted[model.Query]); got != batches {
		t.Errorf("panic routing counted %v batches after it ended, want still %d", got, batches)
	}
	if n := countModel(b, queryModel) - before; n != 0 {
		t.Errorf("the backend still failing its checks got %d batches once another was ready", n)
	}
}

// TestChecksOnTheirOwnConnection: health checks never travel on the
// connection that carries batches (where they would wait behind the frames
// of a large answer), and batches never on the checks' connection.
func TestChecksOnTheirOwnConnection(t *testing.T) {
	sim := startSim(t, tritonsim.Config{})
	d := newScriptedDialer()
	cfg := healthConfig(sim)
	r := startRouter(t, cfg, Deps{Dial: d.dial}, 1)
	addr := sim.GRPCAddr()
	for range 3 {
		if _, err := r.Embed(testutil.Context(t), model.Image, [][]byte{testPNG, testPNG}, 0); err != nil {
			t.Fatal(err)
		}
		checkRound(t, r, 1, cfg.HealthInterval)
	}
	d.mu.Lock()
	data := d.data[addr]
	d.mu.Unlock()
	checks := d.prober(t, addr)
	if data.Backend.(*triton.Client) == checks.Backend.(*triton.Client) {
		t.Fatal("batches and checks share one client")
	}
	if c, e := data.counts(); c != 0 || e != 3 {
		t.Errorf("the batches' connection got %d checks and %d batches, want 0 and 3", c, e)
	}
	if c, e := checks.counts(); c < 4 || e != 0 {
		t.Errorf("the checks' connection got %d checks and %d batches, want at least 4 and 0", c, e)
	}
}
