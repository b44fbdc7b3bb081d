package gateway

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"

	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/clock/clocktest"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
)

// TestDrainSequence walks the drain step by step, the delay held by a fake
// clock: on shutdown health turns NOT_SERVING at once and calls are still
// served, new connections too, for the whole delay; after it no new
// connection is taken while the call in flight finishes; the flush comes
// after that call; then Serve returns.
func TestDrainSequence(t *testing.T) {
	started, release := make(chan struct{}, 8), make(chan struct{})
	var hold atomic.Bool // calls wait for release while set
	fake := &fakeEmbedder{embed: func(_ context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		if hold.Load() {
			started <- struct{}{}
			<-release
		}
		return constantEmbeddings(len(items), 1, 4), nil
	}}
	var flushed atomic.Int32 // 1: flushed after the call in flight ended; 2: before
	clk := clocktest.New(time.Now())
	const delay = 5 * time.Second
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HealthInterval: 20 * time.Millisecond,
		Drain: DrainConfig{Delay: delay}, ShutdownTimeout: time.Minute},
		Deps{Logger: testLogger(t), Embedder: fake, Ready: func(context.Context) error { return nil }, Clock: clk, Authenticator: auth.None(),
			Flush: func(context.Context) error {
				select {
				case <-release:
					flushed.Store(1)
				default:
					flushed.Store(2)
				}
				return nil
			}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	dial := func() (colpaliv1.EmbeddingServiceClient, healthpb.HealthClient) {
		conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return colpaliv1.NewEmbeddingServiceClient(conn), healthpb.NewHealthClient(conn)
	}
	embed := func(c colpaliv1.EmbeddingServiceClient) error {
		_, err := c.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
		return err
	}
	client, hc := dial()
	testutil.Eventually(t, "the gateway ready", func() bool {
		resp, err := hc.Check(testContext(t), &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})

	// A client watching health (grpc-go's client-side health checking
	// does) learns of the drain at once, and its stream ends after the
	// delay rather than hold the GracefulStop.
	watch, err := hc.Watch(testContext(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v %v, want SERVING", resp, err)
	}

	// One call in flight across the whole drain.
	hold.Store(true)
	inFlight := make(chan error, 1)
	go func() { inFlight <- embed(client) }()
	<-started
	hold.Store(false)

	cancel() // SIGTERM, in effect
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch at the drain: %v %v, want NOT_SERVING", resp, err)
	}
	testutil.Eventually(t, "the drain delay's timer armed", func() bool { return clk.Armed() == 1 })
	for _, svc := range []string{"", embeddingServiceName, documentServiceName} {
		resp, err := hc.Check(testContext(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health of %q during the delay: %v %v, want NOT_SERVING", svc, resp, err)
		}
	}
	resp, err := http.Get("http://" + srv.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the delay: %d, want 503", resp.StatusCode)
	}
	// Still serving, on existing and on new connections, REST too.
	if err := embed(client); err != nil {
		t.Errorf("call on an existing connection during the delay: %v", err)
	}
	late, _ := dial()
	if err := embed(late); err != nil {
		t.Errorf("call on a new connection during the delay: %v", err)
	}
	resp, err = http.Post("http://"+srv.HTTPAddr()+"/v1/queries:embed", "application/json", strings.NewReader(`{"queries":["q"]}`))
	if err != nil {
		t.Fatalf("REST call during the delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("REST call during the delay: HTTP %d", resp.StatusCode)
	}

	clk.Advance(delay)
	if resp, err := watch.Recv(); err == nil {
		t.Errorf("Watch after the delay: %v, want the stream ended", resp)
	}
	// No new connections now; the call in flight holds Serve.
	testutil.Eventually(t, "the listeners closed", func() bool {
		for _, addr := range []string{srv.HTTPAddr(), srv.GRPCAddr()} {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return false
			}
		}
		return true
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	after, _ := dial()
	if _, err := after.EmbedQueries(ctx2, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err == nil {
		t.Error("a new connection was served after the delay")
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) with a call in flight", err)
	default:
	}
	if flushed.Load() != 0 {
		t.Fatal("flushed before the call in flight ended")
	}
	close(release)
	if err := <-inFlight; err != nil {
		t.Errorf("the call in flight failed during the drain: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if flushed.Load() != 1 {
		t.Errorf("flush state %d, want 1 (once, after the call in flight)", flushed.Load())
	}
}

func TestDrainConfigValidate(t *testing.T) {
	err := Config{Drain: DrainConfig{Delay: -time.Second, MaxConnectionAge: time.Minute, MaxConnectionAgeGrace: time.Second}}.WithDefaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "Drain.Delay -1s: must be positive") {
		t.Errorf("Validate: %v, want Drain.Delay named", err)
	}
	c := Config{}.WithDefaults().Drain
	if c.Delay != DefaultDrainDelay || c.MaxConnectionAge != DefaultMaxConnectionAge || c.MaxConnectionAgeGrace != DefaultMaxConnectionAgeGrace {
		t.Errorf("defaults %+v", c)
	}
}

// connCounter counts a client's connections.
type connCounter struct{ conns atomic.Int32 }

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.conns.Add(1)
	}
}

// TestConnectionAgeFailsNoCall: past Drain.MaxConnectionAge the gateway
// sends GOAWAY; the client reconnects (to whichever replica its balancer
// picks), its new calls go on the new connection, and a call in flight on
// the old one finishes there.
func TestConnectionAgeFailsNoCall(t *testing.T) {
	counter := &connCounter{}
	started, reconnected := make(chan struct{}), make(chan struct{})
	fake := &fakeEmbedder{embed: func(ctx context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		if string(items[0]) == "long" {
			// Held until the client has a second connection: the first
			// one is past its age by then.
			close(started)
			select {
			case <-reconnected:
			case <-ctx.Done():
			}
		}
		return constantEmbeddings(len(items), 1, 4), nil
	}}
	g := startGateway(t, Config{Drain: DrainConfig{MaxConnectionAge: 50 * time.Millisecond, MaxConnectionAgeGrace: time.Minute}}, Deps{Embedder: fake})
	conn, err := grpc.NewClient(g.srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(counter))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := colpaliv1.NewEmbeddingServiceClient(conn)
	first := make(chan error, 1)
	go func() {
		_, err := client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"long"}})
		first <- err
	}()
	<-started
	calls := 0
	for counter.conns.Load() < 3 {
		if _, err := client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
			t.Fatalf("call %d, on connection %d: %v", calls, counter.conns.Load(), err)
		}
		calls++
		if counter.conns.Load() >= 2 {
			select {
			case <-reconnected:
			default:
				close(reconnected)
			}
		}
	}
	if err := <-first; err != nil {
		t.Errorf("the call in flight across the GOAWAY: %v", err)
	}
	t.Logf("%d calls over %d connections", calls, counter.conns.Load())
}
