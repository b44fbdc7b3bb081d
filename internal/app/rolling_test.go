package app

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/stats"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

// rollingServiceConfig is what a client of a gateway fleet sets: calls
// spread over every address, and a call answered UNAVAILABLE tried again
// elsewhere (gRFC A6).
const rollingServiceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "colpali.v1.EmbeddingService"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
  }]
}`

// attemptCounter counts a client's call attempts: the first of each call
// and the retries its retry policy made (transparent retries, of a call
// that never reached a server, are grpc-go's and counted apart).
type attemptCounter struct{ attempts, transparent atomic.Int64 }

func (c *attemptCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *attemptCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if b, ok := s.(*stats.Begin); ok && b.Client {
		if b.IsTransparentRetryAttempt {
			c.transparent.Add(1)
		} else {
			c.attempts.Add(1)
		}
	}
}
func (c *attemptCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *attemptCounter) HandleConn(context.Context, stats.ConnStats) {}

// loadLoop is a closed-loop load: workers calling EmbedQueries until
// stopped, counting calls, failures and which gateway answered each.
type loadLoop struct {
	mu       sync.Mutex
	calls    int
	failures []error
	byAddr   map[string]int
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(ctx context.Context, client colpaliv1.EmbeddingServiceClient, workers int) *loadLoop {
	l := &loadLoop{byAddr: map[string]int{}, stop: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				var p peer.Peer
				callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := client.EmbedQueries(callCtx, &colpaliv1.EmbedQueriesRequest{Queries: []string{fmt.Sprintf("worker %d call %d", w, i)}}, grpc.Peer(&p))
				cancel()
				l.mu.Lock()
				l.calls++
				if err != nil {
					l.failures = append(l.failures, err)
				} else if p.Addr != nil {
					l.byAddr[p.Addr.String()]++
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *loadLoop) served(addr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byAddr[addr]
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

func readyz(addr string) int {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRollingRestartFailsNoCall rolls two gateways, as a Deployment with
// maxSurge 1 and maxUnavailable 0 does, under a closed-loop load from a
// client that balances over them round-robin: for each old gateway a new
// one starts and, once ready, joins the client's addresses; then the old
// one gets its SIGTERM (its context ends). The first old gateway leaves
// the addresses as soon as its readiness fails, as an endpoint does in
// Kubernetes; the second stays listed until it has exited, as with a
// client that learns of the rollout late, which then has only the drain's
// GOAWAY to go by. No call may fail, and every gateway serves calls.
func TestRollingRestartFailsNoCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Instances: 2,
		QueryCost: tritonsim.Cost{Base: 2 * time.Millisecond, PerItem: 100 * time.Microsecond}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	env := map[string]string{
		"DATABASE_URL":                   unreachableDatabase(t),
		"COLPALI_ROUTER_HEALTH_INTERVAL": "50ms",
		"COLPALI_HEALTH_INTERVAL":        "50ms",
		// Long enough for this test to notice the readiness change, short
		// enough to keep it quick; when it is not long enough the client
		// still has the GOAWAY, as in the second step.
		"COLPALI_DRAIN_DELAY": "1s",
	}
	start := func() *running {
		r := startRun(t, ctx, sim.GRPCAddr()+"="+sim.MetricsAddr(), nil, env)
		waitFor(t, ctx, "gateway "+r.grpcAddr+" ready", func() bool { return readyz(r.httpAddr) == http.StatusOK })
		return r
	}
	gateways := []*running{start(), start()}
	addrs := func() resolver.State {
		var s resolver.State
		for _, g := range gateways {
			if g != nil {
				s.Addresses = append(s.Addresses, resolver.Address{Addr: g.grpcAddr})
			}
		}
		return s
	}
	res := manual.NewBuilderWithScheme("rolling")
	res.InitialState(addrs())
	counter := &attemptCounter{}
	conn, err := grpc.NewClient(res.Scheme()+":///colpali-gateway", grpc.WithResolvers(res),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(rollingServiceConfig), grpc.WithStatsHandler(counter))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	load := startLoad(ctx, colpaliv1.NewEmbeddingServiceClient(conn), 4)
	everyAddr := []string{gateways[0].grpcAddr, gateways[1].grpcAddr}
	for _, g := range gateways {
		waitFor(t, ctx, "the first gateways serving", func() bool { return load.served(g.grpcAddr) >= 20 })
	}
	for i := range gateways {
		old := gateways[i]
		// maxSurge 1: the new gateway first, joining once ready.
		nu := start()
		everyAddr = append(everyAddr, nu.grpcAddr)
		gateways = append(gateways, nu)
		res.UpdateState(addrs())
		waitFor(t, ctx, "the new gateway serving", func() bool { return load.served(nu.grpcAddr) >= 20 })

		servedBefore := load.served(old.grpcAddr)
		stopped := make(chan error, 1)
		go func() { stopped <- old.stop() }()
		if i == 0 {
			waitFor(t, ctx, "the old gateway's readiness failing", func() bool { return readyz(old.httpAddr) != http.StatusOK })
			gateways[i] = nil
			res.UpdateState(addrs())
		}
		if err := <-stopped; err != nil {
			t.Fatalf("gateway %s stopped with %v", old.grpcAddr, err)
		}
		t.Logf("gateway %s served %d calls, %d of them after its SIGTERM", old.grpcAddr, load.served(old.grpcAddr), load.served(old.grpcAddr)-servedBefore)
		gateways[i] = nil
		res.UpdateState(addrs())
	}
	close(load.stop)
	load.wg.Wait()

	load.mu.Lock()
	defer load.mu.Unlock()
	t.Logf("%d calls, %d failed; by gateway %v; %d attempts (%d retried by policy), %d transparent retries",
		load.calls, len(load.failures), load.byAddr, counter.attempts.Load(), counter.attempts.Load()-int64(load.calls), counter.transparent.Load())
	for i, err := range load.failures[:min(len(load.failures), 5)] {
		t.Errorf("failure %d: %v", i, err)
	}
	if len(load.failures) > 0 {
		t.Fatalf("%d of %d calls failed across the rolling restart", len(load.failures), load.calls)
	}
	for _, a := range everyAddr {
		if load.byAddr[a] == 0 {
			t.Errorf("gateway %s served no call", a)
		}
	}
	// The retry policy is the client's safety net; the drain should leave
	// it nothing to do: no attempt answered UNAVAILABLE.
	if retried := counter.attempts.Load() - int64(load.calls); retried != 0 {
		t.Errorf("%d calls were retried by the client's policy: some attempt was answered UNAVAILABLE", retried)
	}
}
