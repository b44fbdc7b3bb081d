package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/morphik-org/colpali-gateway/batching"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/triton"
)

// dnsAnswer is a router.Resolver whose answer the test sets: the headless
// Service's addresses as Kubernetes would publish them.
type dnsAnswer struct {
	mu    sync.Mutex
	addrs []string
}

var _ router.Resolver = (*dnsAnswer)(nil)

func (d *dnsAnswer) set(addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = addrs
}

func (d *dnsAnswer) LookupHost(context.Context, string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs), nil
}

// TestE2ETritonPoolChurnFailsNoCall replaces a Triton backend under load,
// as a StatefulSet rollout does: DNS stops naming backend A and names a new
// backend C; A is stopped once the router has drained it (in Kubernetes,
// Triton's preStop sleep covers the gateways' re-resolution and drain).
// Calls go through the whole gateway (gRPC, the batcher, the router's DNS
// discovery); none may fail, and A, B and C all serve.
func TestE2ETritonPoolChurnFailsNoCall(t *testing.T) {
	ctx := testContext(t)
	// Batches of 10 ms, so that some are in flight on A when it leaves.
	start := func() *tritonsim.Server {
		sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			Instances: 2, QueryCost: tritonsim.Cost{Base: 10 * time.Millisecond}}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sim.Stop)
		return sim
	}
	sims := map[string]*tritonsim.Server{ // by the pod IP DNS answers
		"10.0.0.1": start(),
		"10.0.0.2": start(),
	}
	var simsMu sync.Mutex
	cfg := router.Config{DNS: "colpali-triton.colpali.svc:8001", DNSInterval: 20 * time.Millisecond, HealthInterval: 20 * time.Millisecond}
	dial := cfg.WithDefaults()
	answer := &dnsAnswer{}
	answer.set("10.0.0.1", "10.0.0.2")
	r := startRouterWithConfig(t, cfg, router.Deps{Logger: testLogger(t), Resolver: answer,
		// The made-up pod IPs lead to the simulators on loopback.
		Dial: func(addr string) (router.Backend, error) {
			simsMu.Lock()
			defer simsMu.Unlock()
			tc := dial.Triton
			tc.Models = dial.Models
			tc.Addr = sims[addr[:len(addr)-len(":8001")]].GRPCAddr()
			return triton.New(tc)
		}})
	b, err := batching.New(batching.Config{}, batching.Deps{Downstream: r, Logger: testLogger(t), Registry: prometheus.NewRegistry(), Backends: r.Routable})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil {
			t.Errorf("batcher Close: %v", err)
		}
	})
	g := startGateway(t, Config{}, Deps{Embedder: b, Ready: r.Ready, Backends: r})
	testutil.Eventually(t, "both backends ready", func() bool { return readyCount(r) == 2 })

	var mu sync.Mutex
	var calls int
	var failures []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				_, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{fmt.Sprintf("worker %d call %d", w, i)}})
				mu.Lock()
				calls++
				if err != nil {
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		})
	}
	served := func(ip string, n int) func() bool {
		return func() bool {
			simsMu.Lock()
			defer simsMu.Unlock()
			return len(sims[ip].Observed()) >= n
		}
	}
	testutil.Eventually(t, "A and B serving", func() bool { return served("10.0.0.1", 10)() && served("10.0.0.2", 10)() })

	testutil.Eventually(t, "batches in flight on A", func() bool {
		return slices.ContainsFunc(r.Backends(), func(s router.BackendStatus) bool { return s.Addr == "10.0.0.1:8001" && s.InFlight > 0 })
	})
	// The rollout: A leaves the Service, C joins it.
	c := start()
	simsMu.Lock()
	sims["10.0.0.3"] = c
	simsMu.Unlock()
	answer.set("10.0.0.2", "10.0.0.3")
	testutil.Eventually(t, "A drained and gone from the pool", func() bool {
		return !slices.ContainsFunc(r.Backends(), func(s router.BackendStatus) bool { return s.Addr == "10.0.0.1:8001" })
	})
	a := sims["10.0.0.1"]
	atExit := len(a.Observed())
	a.Stop() // Triton exits
	testutil.Eventually(t, "C serving", served("10.0.0.3", 20))
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d calls, %d failed; batches on A %d, B %d, C %d", calls, len(failures),
		atExit, len(sims["10.0.0.2"].Observed()), len(c.Observed()))
	for i, err := range failures[:min(len(failures), 5)] {
		t.Errorf("failure %d: %v", i, err)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed across the backend churn", len(failures), calls)
	}
	if got := len(a.Observed()); got != atExit {
		t.Errorf("A got %d batches after it left", got-atExit)
	}
}

// readyCount is the number of ready backends in r's pool.
func readyCount(r *router.Router) int {
	n := 0
	for _, s := range r.Backends() {
		if s.State == router.StateReady {
			n++
		}
	}
	return n
}
