package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/batching"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func noEnv(string) string { return "" }

func TestMainReportsEveryBadSetting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env := map[string]string{"COLPALI_MAX_IMAGES": "-2", "COLPALI_ROUTER_RETRY_BUDGET": "0"}
	err := Main(ctx, []string{"-max-queries", "0x", "-default-timeout", "5m", "-query-model", "a b", "-log-format", "xml",
		"-triton-addrs", "nohost,a:1=bad", "-router-policy", "random", "-router-eject-after", "0", "-router-health-interval", "-1s",
		"-triton-dns", "svc", "-gpu-scrape-timeout", "0s", "-gpu-nvml-backends", "a:1=x",
		"-max-top-k", "-1", "-stream-timeout", "-1s"},
		io.Discard, func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("run accepted bad settings")
	}
	for _, want := range []string{"-max-queries", "-max-images -2: must be positive", "-default-timeout 5m0s: exceeds -max-timeout (2m0s)", `-query-model "a b"`, "-log-format",
		`-triton-addrs: backend "nohost"`, `backend "a:1": metrics "bad"`, `-router-policy "random"`, "-router-eject-after 0", "-router-health-interval -1s",
		"-router-retry-budget 0", `-triton-dns "svc"`, "-gpu-scrape-timeout 0s", "-gpu-nvml-backends",
		"-max-top-k -1: must be positive", "-stream-timeout -1s: must be positive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
}

// TestRunRefusesBadBatchingSettings: a zero or negative batching setting
// given explicitly (flag or environment) is refused by its flag's name, not
// silently replaced by the default.
func TestRunRefusesBadBatchingSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env := map[string]string{"COLPALI_QUERY_MAX_QUEUE_SIZE": "0", "COLPALI_IMAGE_LATENCY_TARGET": "-2s"}
	err := Main(ctx, []string{
		"-query-max-batch-size", "0", "-image-max-queue-delay", "-1ms", "-query-max-in-flight-batches", "-1",
		"-batching-mode", "eager", "-image-timeout-action", "drop", "-query-preferred-batch-sizes", "8,128",
		"-image-preferred-batch-sizes", "4,x", "-query-queue-timeout", "0s", "-image-default-priority", "7",
	}, io.Discard, func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("run accepted bad batching settings")
	}
	for _, want := range []string{
		"-query-max-batch-size 0: must be positive", "-image-max-queue-delay -1ms: must be positive",
		"-query-max-in-flight-batches -1", `-batching-mode "eager"`, `-image-timeout-action "drop"`,
		"-query-preferred-batch-sizes [8 128]", "-image-preferred-batch-sizes", `"x"`, "-query-queue-timeout 0s: must be positive",
		"-image-default-priority 7", "-query-max-queue-size 0: must be positive", "-image-latency-target -2s: must be positive",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
}

func TestBatchingFlagsSetTheConfig(t *testing.T) {
	o := newOptions()
	fs := newFlagSet(o, io.Discard)
	if err := fs.Parse([]string{"-batching-mode", "static", "-image-preferred-batch-sizes", "4, 8", "-query-allow-timeout-override", "-query-timeout-action", "delay"}); err != nil {
		t.Fatal(err)
	}
	c := o.batching
	if c.Mode != batching.ModeStatic || !slices.Equal(c.Image.PreferredBatchSizes, []int{4, 8}) || !c.Query.AllowTimeoutOverride || c.Query.TimeoutAction != batching.TimeoutDelay {
		t.Fatalf("config %+v", c)
	}
	if c.Query.MaxBatchSize != batching.DefaultQueryMaxBatchSize || c.Image.MaxQueueDelay != batching.DefaultImageMaxQueueDelay {
		t.Fatalf("defaults not kept: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("image-preferred-batch-sizes").Value.String(); got != "4,8" {
		t.Fatalf("preferred sizes print as %q", got)
	}
}

func TestRunHelp(t *testing.T) {
	var out strings.Builder
	err := Main(context.Background(), []string{"-help"}, &out, noEnv)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "COLPALI_") || !strings.Contains(out.String(), "-triton-addr") {
		t.Fatalf("err %v, usage %q", err, out.String())
	}
}

// running is a gateway started through run, logging JSON to the test log.
type running struct {
	grpcAddr, httpAddr string
	conn               *grpc.ClientConn
	stop               func() error // ends run and returns its error
}

// startRun runs the gateway command with args and env (COLPALI_TRITON_ADDRS
// set to simAddr, a backend in -triton-addrs syntax), waits until it logs where it serves, and dials it. It is
// stopped in t.Cleanup unless stop was called.
func startRun(t *testing.T, ctx context.Context, simAddr string, args []string, env map[string]string) *running {
	t.Helper()
	logR, logW := io.Pipe()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Main(runCtx, append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-log-format", "json", "-auth", "none"}, args...),
			logW, func(k string) string {
				if k == "COLPALI_TRITON_ADDRS" {
					return simAddr
				}
				if _, ok := env[k]; !ok && k == "COLPALI_DRAIN_DELAY" {
					return "1ms" // nothing routes to a test gateway: stop at once
				}
				return env[k]
			})
		logW.Close()
	}()

	// Read log lines until the gateway says where it serves; keep draining
	// afterwards so the gateway never blocks on its log.
	type addrs struct{ grpc, http string }
	served := make(chan addrs, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			var line struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "gateway serving" {
				served <- addrs{line.GRPCAddr, line.HTTPAddr}
			}
			t.Log(sc.Text())
		}
		io.Copy(io.Discard, logR)
	}()
	var once sync.Once
	var runErr error
	r := &running{}
	r.stop = func() error {
		once.Do(func() {
			if r.conn != nil {
				r.conn.Close()
			}
			cancel()
			runErr = <-done
			<-readerDone // no t.Log after the test returns
		})
		return runErr
	}
	t.Cleanup(func() { _ = r.stop() })
	select {
	case a := <-served:
		r.grpcAddr, r.httpAddr = a.grpc, a.http
	case err := <-done:
		done <- err
		t.Fatalf("run returned before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("the gateway never logged its address")
	}
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	return r
}

// embedQuery embeds one query through the running gateway, retrying while
// it answers UNAVAILABLE: its first health check may not have run yet.
func (r *running) embedQuery(ctx context.Context, query string) (*colpaliv1.EmbedQueriesResponse, error) {
	for {
		resp, err := colpaliv1.NewEmbeddingServiceClient(r.conn).EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{query}})
		if status.Code(err) != codes.Unavailable {
			return resp, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unreachableDatabase returns the URL of a Postgres that is not there: a
// loopback port that was free a moment ago.
func unreachableDatabase(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return "postgres://colpali@" + addr + "/colpali?sslmode=disable&connect_timeout=2"
}

// TestRunServesAndStops runs the gateway command against a simulator with
// its database down (DATABASE_URL names nothing): embeddings are served,
// document calls answer UNAVAILABLE, and the command stops with its
// context.
func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	// The simulator's metrics port is random: the backend spec names it.
	r := startRun(t, ctx, sim.GRPCAddr()+"="+sim.MetricsAddr(), nil, map[string]string{
		"DATABASE_URL":                   unreachableDatabase(t),
		"COLPALI_GPU_SCRAPE_INTERVAL":    "50ms",
		"COLPALI_GPU_SCRAPE_TIMEOUT":     "40ms",
		"COLPALI_ROUTER_HEALTH_INTERVAL": "50ms",
	})

	resp, err := r.embedQuery(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	// The scraper, wired to the router's pool, reports the simulator's GPU
	// in the operator's view.
	for {
		list, err := colpaliv1.NewBackendServiceClient(r.conn).ListBackends(ctx, &colpaliv1.ListBackendsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if b := list.GetBackends(); len(b) == 1 && b[0].GetGpu().GetMemoryTotalBytes() > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no GPU telemetry in ListBackends: %v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hresp, err := http.Get("http://" + r.httpAddr + "/v1/backends")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK || !strings.Contains(string(body), sim.GRPCAddr()) {
		t.Errorf("GET /v1/backends: %d %s", hresp.StatusCode, body)
	}
	if len(resp.GetEmbeddings()) != 1 || resp.GetEmbeddings()[0].GetDimension() != 128 {
		t.Fatalf("response %v", resp)
	}
	_, err = colpaliv1.NewDocumentServiceClient(r.conn).ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("ListDocuments with the database down: %v, want Unavailable", err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestMigrateCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	if err := Main(ctx, []string{"migrate", "-help"}, &out, noEnv); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-database-url") {
		t.Errorf("migrate -help: %v, usage %q", err, out.String())
	}
	// The database is down: migrate fails, naming why, within its timeout.
	err := Main(ctx, []string{"migrate", "-timeout", "3s"}, io.Discard, func(k string) string {
		if k == "DATABASE_URL" {
			return unreachableDatabase(t)
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("migrate against no database: %v, want an error", err)
	}
}

// TestRunWithoutEmbeddedPostgres: with no database URL and the embedded
// Postgres's packages missing, the gateway still serves embeddings; the
// DocumentService says storage is not configured.
func TestRunWithoutEmbeddedPostgres(t *testing.T) {
	t.Setenv("COLPALI_PGLITE_DIR", t.TempDir()) // no node_modules there
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	r := startRun(t, ctx, sim.GRPCAddr()+"="+sim.MetricsAddr(), []string{"-data-dir", t.TempDir()},
		map[string]string{"COLPALI_ROUTER_HEALTH_INTERVAL": "50ms"})
	_, err = r.embedQuery(ctx, "hello")
	if err != nil {
		t.Fatalf("EmbedQueries without document storage: %v", err)
	}
	_, err = colpaliv1.NewDocumentServiceClient(r.conn).ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("ListDocuments without document storage: %v, want Unimplemented", err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}
