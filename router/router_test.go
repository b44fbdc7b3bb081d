package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router/policy"
	"github.com/morphik-org/colpali-gateway/router/policy/gpuaware"
	"github.com/morphik-org/colpali-gateway/router/policy/leastoutstanding"
	"github.com/morphik-org/colpali-gateway/router/policy/roundrobin"
	"github.com/morphik-org/colpali-gateway/triton"
)

const (
	queryModel = "colpali_query"
	imageModel = "colpali_image"
)

func TestEmbedSendsTimeoutPriorityAndDecodes(t *testing.T) {
	sim := startSim(t, tritonsim.Config{})
	r := startRouter(t, testConfig(roundrobin.Name, sim), Deps{}, 1)
	ctx, cancel := context.WithTimeout(testutil.Context(t), 2*time.Second)
	defer cancel()
	embs, err := r.Embed(ctx, model.Query, [][]byte{[]byte("a b"), []byte("c")}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(embs) != 2 || embs[0].Dim != 128 || embs[0].Rows == 0 {
		t.Fatalf("embeddings %+v", embs)
	}
	if _, err := r.Embed(ctx, model.Query, [][]byte{[]byte("d")}, 0); err != nil {
		t.Fatal(err)
	}
	obs := sim.Observed()
	if len(obs) != 2 || obs[0].TimeoutParam <= 1_000_000 || obs[0].TimeoutParam > 2_000_000 {
		t.Fatalf("observed %+v, want two calls whose timeout parameter is the ~2s left", obs)
	}
	if obs[0].Priority != 2 || obs[1].Priority != 0 {
		t.Errorf("priority parameters %d and %d, want 2 and none", obs[0].Priority, obs[1].Priority)
	}
	if r.ModelName(model.Image) != "colpali_image" {
		t.Errorf("ModelName(image) = %q", r.ModelName(model.Image))
	}
}

// TestSlowBackendGetsFewerBatches: three backends, one three times slower;
// round robin gives it a third of the batches whatever its speed, gpu_aware
// learns its speed and gives it markedly fewer. The batches cost tens of
// milliseconds, so that the speeds differ by more than the scheduling delays
// of a loaded machine: with a 4 ms batch (12 ms on the slow backend) and
// four busy loops beside the tests, gpu_aware gave the slow one 54%.
func TestSlowBackendGetsFewerBatches(t *testing.T) {
	cost := tritonsim.Cost{Base: 25 * time.Millisecond, PerItem: 100 * time.Microsecond}
	share := map[string]float64{}
	for _, pol := range []string{roundrobin.Name, gpuaware.Name} {
		fast1 := startSim(t, tritonsim.Config{QueryCost: cost})
		fast2 := startSim(t, tritonsim.Config{QueryCost: cost})
		slow := startSim(t, tritonsim.Config{QueryCost: cost, Speed: 0.33})
		r := startRouter(t, testConfig(pol, fast1, fast2, slow), Deps{}, 3)
		// No deadline per call: shares are the subject, and a call that
		// took over 10 s happened with four busy loops at load 30.
		if errs := load(testutil.Context(t), r, model.Query, 6, 40, testutil.Timeout); len(errs) > 0 {
			t.Fatalf("%s: %d errors, first %v", pol, len(errs), errs[0])
		}
		total := countModel(fast1, queryModel) + countModel(fast2, queryModel) + countModel(slow, queryModel)
		share[pol] = float64(countModel(slow, queryModel)) / float64(total)
		t.Logf("%s: slow backend got %.0f%% of %d batches", pol, 100*share[pol], total)
	}
	if share[roundrobin.Name] < 0.3 {
		t.Errorf("round robin gave the slow backend %.2f of the batches, want about a third", share[roundrobin.Name])
	}
	if share[gpuaware.Name] > 0.75*share[roundrobin.Name] {
		t.Errorf("gpu_aware gave the slow backend %.2f of the batches, round robin %.2f: want markedly fewer",
			share[gpuaware.Name], share[roundrobin.Name])
	}
}

// TestKillMidLoad: a backend dies under load; every batch that had deadline
// left is retried on another backend, so none fails. The load goes on in
// rounds until the victim has died: gpu_aware may give it few batches when
// CPU noise makes it look slow (it once got under 40 of 240 on a loaded
// machine).
func TestKillMidLoad(t *testing.T) {
	for _, pol := range []string{roundrobin.Name, leastoutstanding.Name, gpuaware.Name} {
		t.Run(pol, func(t *testing.T) {
			a := startSim(t, tritonsim.Config{})
			b := startSim(t, tritonsim.Config{})
			victim := startSim(t, tritonsim.Config{StopAfter: 40})
			r := startRouter(t, testConfig(pol, a, b, victim), Deps{}, 3)
			ctx := testutil.Context(t)
			for crashed := false; !crashed; {
				if errs := load(ctx, r, model.Query, 8, 30, 5*time.Second); len(errs) > 0 {
					t.Fatalf("%d batches failed, first: %v", len(errs), errors.Join(errs...))
				}
				select {
				case <-victim.Done():
					crashed = true
				case <-ctx.Done():
					t.Fatal("the victim never crashed: the test did not test failover")
				default:
				}
			}
			waitFor(t, "the dead backend out of the routing set", func() bool {
				st, _ := status(r, victim.GRPCAddr())
				return st.State == StateNotReady || st.State == StateEjected
			})
		})
	}
}

// TestErroringBackendEjectedAndReadmitted: a backend failing every batch is
// ejected after EjectAfter failures in a row, readmitted after its backoff,
// and ejected again for longer when it keeps failing.
func TestErroringBackendEjectedAndReadmitted(t *testing.T) {
	good := startSim(t, tritonsim.Config{})
	bad := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{ErrorRate: 1}})
	cfg := testConfig(roundrobin.Name, good, bad)
	cfg.EjectAfter = 3
	r := startRouter(t, cfg, Deps{}, 2)
	clk := fakeClock(t, r)
	ctx := testutil.Context(t)

	failures := 0
	for range 10 {
		if _, err := r.Embed(ctx, model.Query, [][]byte{[]byte("q")}, 0); err != nil {
			if !errors.Is(err, triton.ErrFailed) {
				t.Fatalf("error %v, want the simulated failure (ErrFailed)", err)
			}
			failures++
		}
	}
	if failures != 3 {
		t.Errorf("%d batches failed, want 3 (EjectAfter) before the ejection", failures)
	}
	st, _ := status(r, bad.GRPCAddr())
	if st.State != StateEjected || st.Ejections != 1 {
		t.Fatalf("bad backend %s after %d ejections, want ejected once", st.State, st.Ejections)
	}
	if first := st.EjectedUntil.Sub(clk.Now()); first != cfg.EjectBackoff {
		t.Errorf("first backoff %v, want EjectBackoff %v", first, cfg.EjectBackoff)
	}
	// Not readmitted before its backoff ends, however many checks pass.
	for range 3 {
		clk.Advance(cfg.HealthInterval)
	}
	clk.Advance(cfg.EjectBackoff - 3*cfg.HealthInterval - time.Millisecond)
	if st, _ := status(r, bad.GRPCAddr()); st.State != StateEjected {
		t.Fatalf("bad backend %s before its backoff ended, want still ejected", st.State)
	}
	waitTicking(t, r, cfg.HealthInterval, "readmission", func() bool {
		st, _ := status(r, bad.GRPCAddr())
		return st.State == StateReady
	})

	for range 8 {
		_, _ = r.Embed(ctx, model.Query, [][]byte{[]byte("q")}, 0)
	}
	st, _ = status(r, bad.GRPCAddr())
	if st.State != StateEjected || st.Ejections != 2 {
		t.Fatalf("bad backend %s after %d ejections, want ejected a second time", st.State, st.Ejections)
	}
	if second := st.EjectedUntil.Sub(clk.Now()); second != 2*cfg.EjectBackoff {
		t.Errorf("second backoff %v, want twice the first (%v)", second, 2*cfg.EjectBackoff)
	}
}

// TestFlakyBackendGetsFewerBatches: a backend failing half of its batches,
// fast, is not ejected (EjectAfter is out of reach) but gpu_aware learns to
// avoid it, where round robin would give it a third. (With a third of its
// batches failing the signal is weaker than CPU noise on a loaded machine:
// it still got 26-33% there.)
func TestFlakyBackendGetsFewerBatches(t *testing.T) {
	a := startSim(t, tritonsim.Config{})
	b := startSim(t, tritonsim.Config{})
	flaky := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{ErrorRate: 0.5}})
	cfg := testConfig(gpuaware.Name, a, b, flaky)
	cfg.EjectAfter = 1000
	r := startRouter(t, cfg, Deps{}, 3)
	errs := load(testutil.Context(t), r, model.Query, 6, 50, 5*time.Second)
	for _, err := range errs {
		if !errors.Is(err, triton.ErrFailed) {
			t.Fatalf("unexpected error %v", err)
		}
	}
	total := countModel(a, queryModel) + countModel(b, queryModel) + countModel(flaky, queryModel)
	share := float64(countModel(flaky, queryModel)) / float64(total)
	t.Logf("flaky backend got %.0f%% of %d batches; %d failed", 100*share, total, len(errs))
	if share > 0.25 {
		t.Errorf("flaky backend got %.2f of the batches, want well under a third", share)
	}
}

// TestLastBackendNotEjected: with one backend, failures reach the caller but
// do not empty the pool: neither failures the backend reports nor calls
// failing UNAVAILABLE, which take it out until a health check passes but
// must not eject it, or it would stay out for the backoff after its server
// came back.
func TestLastBackendNotEjected(t *testing.T) {
	t.Run("failed", func(t *testing.T) {
		bad := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{ErrorRate: 1}})
		cfg := testConfig(gpuaware.Name, bad)
		cfg.EjectAfter = 2
		r := startRouter(t, cfg, Deps{}, 1)
		for range 4 {
			if _, err := r.Embed(testutil.Context(t), model.Query, [][]byte{[]byte("q")}, 0); !errors.Is(err, triton.ErrFailed) {
				t.Fatalf("err %v, want ErrFailed", err)
			}
		}
		if st, _ := status(r, bad.GRPCAddr()); st.State != StateReady {
			t.Fatalf("the only backend is %s, want ready", st.State)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		// Three batches in flight when the server dies fail UNAVAILABLE
		// together, more than EjectAfter; a long backoff would show.
		sim := startSim(t, tritonsim.Config{QueryCost: tritonsim.Cost{Base: 10 * time.Second}, Instances: 3})
		addr := sim.GRPCAddr()
		cfg := testConfig(gpuaware.Name, sim)
		cfg.EjectAfter = 2
		cfg.EjectBackoff, cfg.EjectBackoffMax = time.Hour, time.Hour
		r := startRouter(t, cfg, Deps{}, 1)
		ctx := testutil.Context(t)
		errc := make(chan []error, 1)
		go func() { errc <- load(ctx, r, model.Query, 3, 1, 20*time.Second) }()
		waitFor(t, "3 batches in flight", func() bool { st, _ := status(r, addr); return st.InFlight == 3 })
		sim.Stop()
		errs := <-errc
		if len(errs) != 3 {
			t.Fatalf("%d batches failed, want the 3 in flight: %v", len(errs), errs)
		}
		for _, err := range errs {
			if !errors.Is(err, triton.ErrUnavailable) {
				t.Fatalf("error %v, want ErrUnavailable", err)
			}
		}
		st, _ := status(r, addr)
		if st.State == StateEjected || st.Ejections != 0 || st.ConsecutiveFailures != 3 {
			t.Fatalf("the only backend after its server died: %s, %d ejections, %d consecutive failures; want not ejected, 3",
				st.State, st.Ejections, st.ConsecutiveFailures)
		}
		// The server comes back on the same address.
		back, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: addr, MetricsAddr: "127.0.0.1:0", QueryCost: fastCost, ImageCost: fastCost}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(back.Stop)
		waitTicking(t, r, cfg.HealthInterval, "the backend ready again", func() bool { st, _ := status(r, addr); return st.State == StateReady })
		if _, err := r.Embed(ctx, model.Query, [][]byte{[]byte("q")}, 0); err != nil {
			t.Fatalf("after the server came back: %v", err)
		}
		if st, _ := status(r, addr); st.ConsecutiveFailures != 0 {
			t.Errorf("%d consecutive failures after a success, want 0", st.ConsecutiveFailures)
		}
	})
}

// TestEjectionNeedsAnotherBackendForItsModels: a backend whose calls fail
// UNAVAILABLE is ejected when another backend serves each of its models,
// and its batches are retried there.
func TestEjectionNeedsAnotherBackendForItsModels(t *testing.T) {
	good := startSim(t, tritonsim.Config{})
	victim := startSim(t, tritonsim.Config{QueryCost: tritonsim.Cost{Base: 10 * time.Second}, Instances: 3})
	cfg := testConfig(roundrobin.Name, good, victim)
	cfg.EjectAfter = 2
	cfg.EjectBackoff, cfg.EjectBackoffMax = time.Hour, time.Hour
	r := startRouter(t, cfg, Deps{}, 2)
	r.policy = preferAddr(victim.GRPCAddr())
	ctx := testutil.Context(t)
	errc := make(chan []error, 1)
	go func() { errc <- load(ctx, r, model.Query, 3, 1, 20*time.Second) }()
	waitFor(t, "3 batches in flight", func() bool { st, _ := status(r, victim.GRPCAddr()); return st.InFlight == 3 })
	victim.Stop()
	if errs := <-errc; len(errs) > 0 {
		t.Fatalf("batches failed instead of being retried: %v", errs)
	}
	if st, _ := status(r, victim.GRPCAddr()); st.State != StateEjected || st.Ejections != 1 {
		t.Fatalf("dead backend %s after %d ejections, want ejected once while another serves its models", st.State, st.Ejections)
	}
}

// preferAddr is a policy that picks the backend at its address when it is a
// candidate, else the first candidate.
type preferAddr string

func (p preferAddr) Name() string { return "prefer_addr" }

func (p preferAddr) Pick(cands []policy.Candidate, _ policy.Batch) (int, time.Duration) {
	return max(slices.IndexFunc(cands, func(c policy.Candidate) bool { return c.Addr() == string(p) }), 0), 0
}

// TestEjectBackoff: the backoff doubles from EjectBackoff up to
// EjectBackoffMax and never overflows, however many ejections in a row.
func TestEjectBackoff(t *testing.T) {
	for _, c := range []struct {
		first, limit time.Duration
		level        int
		want         time.Duration
	}{
		{time.Second, 30 * time.Second, 0, time.Second},
		{time.Second, 30 * time.Second, 3, 8 * time.Second},
		{time.Second, 30 * time.Second, 5, 30 * time.Second},
		{time.Second, 30 * time.Second, 40, 30 * time.Second},
		{time.Hour, 1<<63 - 1, 21, time.Hour << 21},
		{time.Hour, 1<<63 - 1, 22, 1<<63 - 1}, // a shift by 22 wraps negative
		{time.Hour, 1 << 62, 40, 1 << 62},
		{time.Hour, 1<<63 - 1, 1000, 1<<63 - 1},
		{time.Minute, time.Minute, 7, time.Minute},
	} {
		if got := ejectBackoff(c.first, c.limit, c.level); got != c.want {
			t.Errorf("ejectBackoff(%v, %v, %d) = %v, want %v", c.first, c.limit, c.level, got, c.want)
		}
	}
}

// leaveDuringPick is a policy that, on its first pick, chooses the backend
// at addr and, before answering, makes it leave the pool and waits until
// its connection is closed: the widest form of the race between a pick and
// a drain. Later picks take the first candidate.
type leaveDuringPick struct {
	t      *testing.T
	addr   string
	leave  func()
	closed <-chan struct{}
	done   bool
}

func (p *leaveDuringPick) Name() string { return "leave_during_pick" }

func (p *leaveDuringPick) Pick(cands []policy.Candidate, _ policy.Batch) (int, time.Duration) {
	if p.done {
		return 0, 0
	}
	p.done = true
	i := slices.IndexFunc(cands, func(c policy.Candidate) bool { return c.Addr() == p.addr })
	if i < 0 {
		p.t.Fatalf("%s not among the candidates", p.addr)
	}
	p.leave()
	select {
	case <-p.closed:
	case <-testutil.Context(p.t).Done():
		p.t.Fatal("the leaving backend's connection never closed")
	}
	return i, 0
}

// closeNotifier is a Backend that closes a channel when it is closed.
type closeNotifier struct {
	Backend
	closed chan struct{}
}

func (c *closeNotifier) Close() error {
	close(c.closed)
	return c.Backend.Close()
}

// TestPickRacingDrain: a batch whose pick chose a backend that then left the
// pool and drained (its connection closed) before the batch was counted in
// flight there goes to another backend instead of failing on the closed
// connection.
func TestPickRacingDrain(t *testing.T) {
	a := startSim(t, tritonsim.Config{})
	leaving := startSim(t, tritonsim.Config{})
	real := map[string]string{"10.0.0.1:8001": a.GRPCAddr(), "10.0.0.2:8001": leaving.GRPCAddr()}
	closed := make(chan struct{})
	res := &fakeResolver{addrs: []string{"10.0.0.1", "10.0.0.2"}}
	cfg := testConfig(roundrobin.Name)
	cfg.DNS, cfg.DNSInterval = "triton.default.svc:8001", time.Hour
	dialed := 0
	deps := Deps{Resolver: res, Dial: func(addr string) (Backend, error) {
		c, err := triton.New(triton.Config{Addr: real[addr]})
		if err != nil || addr != "10.0.0.2:8001" {
			return c, err
		}
		if dialed++; dialed > 1 {
			return c, nil // the health checks' connection
		}
		return &closeNotifier{Backend: c, closed: closed}, nil
	}}
	r := startRouter(t, cfg, deps, 2)
	ctx := testutil.Context(t)
	r.policy = &leaveDuringPick{t: t, addr: "10.0.0.2:8001", closed: closed, leave: func() {
		res.set([]string{"10.0.0.1"}, nil)
		r.resolve(ctx, "triton.default.svc", "8001")
	}}
	if _, err := r.Embed(ctx, model.Query, [][]byte{[]byte("q")}, 0); err != nil {
		t.Fatalf("the batch failed: %v", err)
	}
	if n := countModel(leaving, queryModel); n != 0 {
		t.Errorf("the backend that left saw %d batches", n)
	}
	if n := countModel(a, queryModel); n != 1 {
		t.Errorf("the remaining backend saw %d batches, want 1", n)
	}
}

// TestModelNotReadyNeverRouted: a backend whose image model is not ready
// gets query batches but never image batches; when no backend has the
// model, Embed fails ErrNoBackend, Ready fails naming it, and the other
// model still works.
func TestModelNotReadyNeverRouted(t *testing.T) {
	both := startSim(t, tritonsim.Config{})
	queryOnly := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{NotReady: []string{"colpali_image"}}})
	cfg := testConfig(roundrobin.Name, both, queryOnly)
	r := startRouter(t, cfg, Deps{}, 2)
	ctx := testutil.Context(t)
	// No deadline per call but the test's: routing is the subject, and an
	// image batch took over 5 s with four busy loops at load 30.
	if errs := load(ctx, r, model.Image, 2, 10, testutil.Timeout); len(errs) > 0 {
		t.Fatalf("image batches failed: %v", errs[0])
	}
	if errs := load(ctx, r, model.Query, 2, 10, testutil.Timeout); len(errs) > 0 {
		t.Fatalf("query batches failed: %v", errs[0])
	}
	if n := countModel(queryOnly, "colpali_image"); n != 0 {
		t.Errorf("%d image batches went to the backend whose image model is not ready", n)
	}
	if n := countModel(queryOnly, queryModel); n == 0 {
		t.Error("no query batch went to the backend whose query model is ready")
	}

	both.SetFaults(tritonsim.Faults{NotReady: []string{"colpali_image"}})
	waitTicking(t, r, cfg.HealthInterval, "no backend ready for images", func() bool {
		_, err := r.Embed(ctx, model.Image, [][]byte{testPNG}, 0)
		return errors.Is(err, ErrNoBackend)
	})
	if err := r.Ready(ctx); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "colpali_image") || !strings.Contains(err.Error(), both.GRPCAddr()) {
		t.Errorf("Ready = %v, want ErrNotReady naming the image model and the backends", err)
	}
	if _, err := r.Embed(ctx, model.Query, [][]byte{[]byte("q")}, 0); err != nil {
		t.Errorf("queries failed while their model is ready: %v", err)
	}
	both.SetFaults(tritonsim.Faults{})
	waitTicking(t, r, cfg.HealthInterval, "router ready again", func() bool { return r.Ready(ctx) == nil })
}

// TestDNSJoinLeaveDrain: backends found through DNS join when they appear
// and drain when they disappear: the batches in flight on a leaving backend
// complete, no new batch goes there, then it leaves the pool.
func TestDNSJoinLeaveDrain(t *testing.T) {
	a := startSim(t, tritonsim.Config{})
	slow := startSim(t, tritonsim.Config{QueryCost: tritonsim.Cost{Base: 300 * time.Millisecond}, Instances: 8})
	c := startSim(t, tritonsim.Config{})
	// DNS answers made-up addresses; Dial maps them to the simulators.
	real := map[string]string{"10.0.0.1:8001": a.GRPCAddr(), "10.0.0.2:8001": slow.GRPCAddr(), "10.0.0.3:8001": c.GRPCAddr()}
	res := &fakeResolver{addrs: []string{"10.0.0.1", "10.0.0.2"}}
	targets := &fakeTargets{}
	cfg := testConfig(roundrobin.Name)
	cfg.DNS, cfg.DNSInterval = "triton.default.svc:8001", 10*time.Millisecond
	deps := Deps{Resolver: res, Targets: targets, Dial: func(addr string) (Backend, error) {
		return triton.New(triton.Config{Addr: real[addr]})
	}}
	r := startRouter(t, cfg, deps, 2)
	if got := targets.get(); got["10.0.0.2:8001"] != "http://10.0.0.2:8002/metrics" || len(got) != 2 {
		t.Errorf("scrape targets %v", got)
	}

	ctx := testutil.Context(t)
	errc := make(chan []error, 1)
	go func() { errc <- load(ctx, r, model.Query, 4, 1, 5*time.Second) }()
	waitFor(t, "batches in flight on the slow backend", func() bool {
		st, _ := status(r, "10.0.0.2:8001")
		return st.InFlight > 0
	})
	res.set([]string{"10.0.0.1", "10.0.0.3"}, nil)
	waitTicking(t, r, cfg.DNSInterval, "the slow backend draining", func() bool {
		st, _ := status(r, "10.0.0.2:8001")
		return st.State == StateDraining
	})
	if errs := <-errc; len(errs) > 0 {
		t.Fatalf("batches failed during the drain: %v", errs[0])
	}
	waitTicking(t, r, drainPoll, "the slow backend gone and the new one ready", func() bool {
		_, gone := status(r, "10.0.0.2:8001")
		st, _ := status(r, "10.0.0.3:8001")
		return !gone && st.State == StateReady
	})
	before := len(slow.Observed())
	if errs := load(ctx, r, model.Query, 2, 5, 5*time.Second); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if after := len(slow.Observed()); after != before {
		t.Errorf("%d batches went to the backend after it left", after-before)
	}
	if countModel(c, queryModel) == 0 {
		t.Error("the joined backend got no batch")
	}
	if got := targets.get(); len(got) != 2 || got["10.0.0.3:8001"] == "" {
		t.Errorf("scrape targets after the change %v", got)
	}

	// Failed lookups keep the pool.
	res.set(nil, errors.New("server misbehaving"))
	clk := fakeClock(t, r)
	for range 5 {
		n := res.count()
		clk.Advance(cfg.DNSInterval)
		waitTicking(t, r, cfg.DNSInterval, "another lookup", func() bool { return res.count() > n })
	}
	if n := countState(r, StateReady); n != 2 {
		t.Errorf("%d ready backends after a failed lookup, want the 2 kept", n)
	}
}

// TestGPUTelemetrySteers: of two identical backends, the one whose
// telemetry reports a long queue of other clients' requests gets fewer
// batches; one short of GPU memory gets none while the other has room.
func TestGPUTelemetrySteers(t *testing.T) {
	a := startSim(t, tritonsim.Config{})
	b := startSim(t, tritonsim.Config{})
	src := &fakeGPU{stats: map[string]gpu.Stats{
		a.GRPCAddr(): {Pending: 20, QueueTimePerRequest: 200 * time.Millisecond, Utilization: 1, MemoryUsed: 1, MemoryTotal: 80,
			Models: map[string]gpu.ModelStats{queryModel: {Reported: gpu.FieldQueue | gpu.FieldRates, Pending: 20, QueueTimePerRequest: 200 * time.Millisecond}}},
		b.GRPCAddr(): {Utilization: 0.1, MemoryUsed: 10, MemoryTotal: 80},
	}}
	r := startRouter(t, testConfig(gpuaware.Name, a, b), Deps{GPU: src}, 2)
	ctx := testutil.Context(t)
	if errs := load(ctx, r, model.Query, 2, 20, 5*time.Second); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if na, nb := countModel(a, queryModel), countModel(b, queryModel); na*4 > nb {
		t.Errorf("busy backend got %d batches, idle one %d: want the idle one to get most", na, nb)
	}
	st, _ := status(r, a.GRPCAddr())
	if !st.GPUFresh || st.GPU.Pending != 20 {
		t.Errorf("status GPU %+v fresh %v", st.GPU, st.GPUFresh)
	}

	src.mu.Lock()
	src.stats[a.GRPCAddr()] = gpu.Stats{MemoryUsed: 10, MemoryTotal: 80}
	src.stats[b.GRPCAddr()] = gpu.Stats{MemoryUsed: 79, MemoryTotal: 80}
	src.mu.Unlock()
	nb := countModel(b, queryModel)
	if errs := load(ctx, r, model.Query, 2, 10, 5*time.Second); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if got := countModel(b, queryModel) - nb; got != 0 {
		t.Errorf("backend short of memory got %d batches", got)
	}
}

// TestPageBatchesSteerQueries: under a mixed load, queries avoid the
// backend whose GPU is busy with page batches. Only a serves the page
// model, so its GPU (shared by both models, as by default) always has a
// 200 ms page batch running or queued; b's is free. A query at a waits
// behind the pages; the policy counts them, from the pages this gateway
// has in flight there, and sends the queries to b.
func TestPageBatchesSteerQueries(t *testing.T) {
	a := startSim(t, tritonsim.Config{ImageCost: tritonsim.Cost{Base: 150 * time.Millisecond, PerItem: 50 * time.Millisecond}})
	b := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{NotReady: []string{imageModel}}})
	r := startRouter(t, testConfig(gpuaware.Name, a, b), Deps{}, 2)
	ctx := testutil.Context(t)
	pagesDone := make(chan []error, 1)
	stopPages := make(chan struct{})
	go func() {
		var errs []error
		for {
			select {
			case <-stopPages:
				pagesDone <- errs
				return
			default:
			}
			errs = append(errs, load(ctx, r, model.Image, 2, 1, 10*time.Second)...)
		}
	}()
	// Wait until a page batch is in flight, so that the first queries
	// already see one.
	waitFor(t, "a page batch in flight", func() bool {
		st, _ := status(r, a.GRPCAddr())
		return st.Models[model.Image].InFlight > 0
	})
	errs := load(ctx, r, model.Query, 4, 25, 10*time.Second)
	close(stopPages)
	errs = append(errs, <-pagesDone...)
	for _, err := range errs {
		t.Error(err)
	}
	na, nb := countModel(a, queryModel), countModel(b, queryModel)
	if na*5 > nb {
		t.Errorf("query batches: %d to the backend busy with pages, %d to the free one; want at least 5 times more to the free one", na, nb)
	}
	if countModel(a, imageModel) == 0 {
		t.Error("no page batch ran")
	}
	st, _ := status(r, a.GRPCAddr())
	if st.Models[model.Image].LatencyPerCost == 0 || st.Models[model.Query].InFlight != 0 {
		t.Errorf("per-model status of the page backend: %+v", st.Models)
	}
}

// TestOverloadedRetriedElsewhereNotSame: a full queue on one backend is
// retried on another, never on the same.
func TestOverloadedRetriedElsewhereNotSame(t *testing.T) {
	long := tritonsim.Cost{Base: 200 * time.Millisecond}
	full := startSim(t, tritonsim.Config{QueryCost: long, MaxQueueSize: 1, DisableDynamicBatching: true})
	r := startRouter(t, testConfig(roundrobin.Name, full), Deps{}, 1)
	ctx := testutil.Context(t)
	// One executing and one queued fill it; the third overflows, and with
	// one backend there is nowhere to retry.
	errs := load(ctx, r, model.Query, 3, 1, 5*time.Second)
	if len(errs) != 1 || !errors.Is(errs[0], triton.ErrOverloaded) {
		t.Fatalf("errors %v, want one ErrOverloaded", errs)
	}
	if n := countModel(full, queryModel); n != 3 {
		t.Errorf("the full backend saw %d calls, want 3 (no retry onto it)", n)
	}
	if st, _ := status(r, full.GRPCAddr()); st.ConsecutiveFailures != 0 || st.State != StateReady {
		t.Errorf("overload counted against the backend: %+v", st)
	}
}

// TestOverloadedRetriedOnAnotherBackend: the batch that finds one queue
// full completes on the other backend; the full one sees it once.
func TestOverloadedRetriedOnAnotherBackend(t *testing.T) {
	full := startSim(t, tritonsim.Config{QueryCost: tritonsim.Cost{Base: 300 * time.Millisecond}, MaxQueueSize: 1, DisableDynamicBatching: true})
	free := startSim(t, tritonsim.Config{})
	r := startRouter(t, testConfig(roundrobin.Name, full, free), Deps{}, 2)
	// Round robin sends 3 of the 6 to the full backend: one executes, one
	// waits, the third overflows and goes to the free one.
	if errs := load(testutil.Context(t), r, model.Query, 6, 1, 5*time.Second); len(errs) > 0 {
		t.Fatalf("errors %v, want the overflow retried", errs)
	}
	if n := countModel(full, queryModel); n != 3 {
		t.Errorf("the full backend saw %d calls, want 3", n)
	}
	if n := countModel(free, queryModel); n != 4 {
		t.Errorf("the free backend saw %d calls, want its 3 and the retry", n)
	}
}

// TestRetryBudgetExhausted: with no budget left, a batch whose backend died
// is not retried, and the refusal is counted.
func TestRetryBudgetExhausted(t *testing.T) {
	live := startSim(t, tritonsim.Config{})
	victim := startSim(t, tritonsim.Config{})
	cfg := testConfig(roundrobin.Name, live, victim)
	cfg.HealthInterval = time.Hour // only the failure itself reveals the death
	cfg.RetryBudgetRatio, cfg.RetryMinPerSecond = 1e-9, 1e-9
	r := startRouter(t, cfg, Deps{}, 2)
	victim.Stop()
	var failed error
	for range 4 {
		if _, err := r.Embed(testutil.Context(t), model.Query, [][]byte{[]byte("q")}, 0); err != nil {
			if failed != nil {
				t.Fatalf("a second batch failed: %v", err)
			}
			failed = err
		}
	}
	if !errors.Is(failed, triton.ErrUnavailable) {
		t.Fatalf("failure %v, want the dead backend's ErrUnavailable (not retried)", failed)
	}
	if got := testCounter(r.metrics.budgetExhausted); got != 1 {
		t.Errorf("budget exhausted counted %v times, want 1", got)
	}
	if st, _ := status(r, victim.GRPCAddr()); st.State != StateNotReady {
		t.Errorf("dead backend %s, want not ready after its failure", st.State)
	}
	if st, _ := status(r, live.GRPCAddr()); st.InFlight != 0 || st.InFlightCost != 0 {
		t.Errorf("the retry refused by the budget stayed counted in flight on %s: %d batches, cost %v",
			live.GRPCAddr(), st.InFlight, st.InFlightCost)
	}
}

func testCounter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func TestRetryBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newRetryBudget(0.1, 1, func() time.Time { return now })
	for range 100 {
		b.request()
	}
	allowed := 0
	for range 50 {
		if b.allowRetry() {
			allowed++
		}
	}
	if allowed != 20 { // 10% of 100, plus 1/s over 10 s
		t.Errorf("%d retries allowed, want 20", allowed)
	}
	now = now.Add(11 * time.Second) // the window has passed
	if allowed := countAllowed(b, 50); allowed != 10 {
		t.Errorf("%d retries allowed on an empty window, want the floor of 10", allowed)
	}
}

func countAllowed(b *retryBudget, n int) int {
	allowed := 0
	for range n {
		if b.allowRetry() {
			allowed++
		}
	}
	return allowed
}

func TestParseEndpoints(t *testing.T) {
	eps, err := ParseEndpoints(" a:8001, 127.0.0.1:9001=127.0.0.1:9002 ,b:1=https://m.example/x,", 8002)
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{
		{"a:8001", "http://a:8002/metrics"},
		{"127.0.0.1:9001", "http://127.0.0.1:9002/metrics"},
		{"b:1", "https://m.example/x"},
	}
	if fmt.Sprint(eps) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", eps, want)
	}
	_, err = ParseEndpoints("nohost,a:1=bad,a:2,a:2", 8002)
	for _, s := range []string{`"nohost"`, `"a:1"`, `"a:2" listed twice`} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v does not name %s", err, s)
		}
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	cfg := Config{Policy: "random", DNS: "nohostport", EjectBackoff: time.Minute, EjectBackoffMax: time.Second,
		RetryBudgetRatio: -1, Static: []Endpoint{{Addr: "x"}}, UnhealthyThreshold: -1, HealthyThreshold: -2}
	err := cfg.WithDefaults().Validate()
	for _, s := range []string{`Policy "random"`, `DNS "nohostport"`, "EjectBackoffMax 1s: below EjectBackoff", "RetryBudgetRatio -1", `Static "x"`,
		"UnhealthyThreshold -1", "HealthyThreshold -2"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v does not name %s", err, s)
		}
	}
	if _, err := New(Config{}, Deps{}); err == nil || !strings.Contains(err.Error(), "no backends") {
		t.Errorf("New without backends: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	sim := startSim(t, tritonsim.Config{})
	reg := prometheus.NewRegistry()
	r := startRouter(t, testConfig(gpuaware.Name, sim), Deps{Registerer: reg}, 1)
	if _, err := r.Embed(testutil.Context(t), model.Query, [][]byte{[]byte("q")}, 0); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() != "backend" {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"colpali_router_backend_state,state=ready":               1,
		"colpali_router_backend_state,state=ejected":             0,
		"colpali_router_backend_picks_total,policy=gpu_aware":    1,
		"colpali_router_backend_model_ready,model=colpali_query": 1,
		"colpali_router_backend_in_flight":                       0,
		"colpali_router_backend_consecutive_check_failures":      0,
		"colpali_router_panic_routing_total,model=colpali_query": 0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if got["colpali_router_backend_consecutive_check_passes"] < 1 {
		t.Error("no passing health check exported")
	}
	if got["colpali_router_backend_latency_per_cost_seconds"] <= 0 {
		t.Error("latency per cost not exported after a batch")
	}
}
