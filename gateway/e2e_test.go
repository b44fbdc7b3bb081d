package gateway

// End-to-end tests: the gateway, its Triton client and router, and a Triton
// simulator, all on loopback ports chosen at run time.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/batching"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/router"
)

// stack is a simulator and a gateway in front of it.
type stack struct {
	*testGateway
	sim *tritonsim.Server
}

// startStack starts a simulator with simCfg (fast costs unless set) and a
// gateway with cfg in front of it.
func startStack(t *testing.T, cfg Config, simCfg tritonsim.Config) *stack {
	t.Helper()
	simCfg.GRPCAddr, simCfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	if simCfg.QueryCost == (tritonsim.Cost{}) {
		simCfg.QueryCost = tritonsim.Cost{Base: time.Millisecond, PerItem: 100 * time.Microsecond}
	}
	if simCfg.ImageCost == (tritonsim.Cost{}) {
		simCfg.ImageCost = tritonsim.Cost{Base: time.Millisecond, PerItem: 500 * time.Microsecond}
	}
	sim, err := tritonsim.Start(context.Background(), simCfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	r := startRouter(t, sim)
	g := startGateway(t, cfg, Deps{Embedder: r, Ready: r.Ready, Backends: r})
	return &stack{testGateway: g, sim: sim}
}

// startRouter runs a router over sims with quick health checks, stopped in
// t.Cleanup (after the gateway in front of it, which cleans up later-registered first).
func startRouter(t *testing.T, sims ...*tritonsim.Server) *router.Router {
	t.Helper()
	return startRouterWith(t, router.Deps{Logger: testLogger(t)}, sims...)
}

// startSim starts a simulator with fast costs on loopback, stopped in
// t.Cleanup.
func startSim(t *testing.T, cfg tritonsim.Config) *tritonsim.Server {
	t.Helper()
	cfg.GRPCAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.QueryCost = tritonsim.Cost{Base: time.Millisecond, PerItem: 100 * time.Microsecond}
	sim, err := tritonsim.Start(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	return sim
}

// startRouterWithConfig runs a router with cfg and deps, stopped in
// t.Cleanup.
func startRouterWithConfig(t *testing.T, cfg router.Config, deps router.Deps) *router.Router {
	t.Helper()
	r, err := router.New(cfg, deps)
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
	return r
}

// startRouterWith is startRouter with deps.
func startRouterWith(t *testing.T, deps router.Deps, sims ...*tritonsim.Server) *router.Router {
	t.Helper()
	cfg := router.Config{HealthInterval: 20 * time.Millisecond}
	for _, s := range sims {
		cfg.Static = append(cfg.Static, router.Endpoint{Addr: s.GRPCAddr(), MetricsURL: "http://" + s.MetricsAddr() + "/metrics"})
	}
	r := startRouterWithConfig(t, cfg, deps)
	// Wait for the first health check of every backend, so calls do not
	// race it.
	testutil.Eventually(t, "the first health check of every backend", func() bool {
		for _, b := range r.Backends() {
			if b.State == router.StateUnknown {
				return false
			}
		}
		return true
	})
	return r
}

// decodeMultiVector returns mv's values, whatever its encoding.
func decodeMultiVector(t *testing.T, mv *colpaliv1.MultiVector) []float32 {
	t.Helper()
	n := int(mv.GetVectorCount() * mv.GetDimension())
	switch mv.GetDataType() {
	case colpaliv1.DataType_DATA_TYPE_FLOAT32:
		v, err := tensor.DecodeFloats(mv.GetData(), tensor.TypeFP32, n)
		if err != nil {
			t.Fatal(err)
		}
		return v
	case colpaliv1.DataType_DATA_TYPE_FLOAT16:
		v, err := tensor.DecodeFloats(mv.GetData(), tensor.TypeFP16, n)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var out []float32
	for _, v := range mv.GetVectors() {
		out = append(out, v.GetValues()...)
	}
	if len(out) != n {
		t.Fatalf("%d values for %d x %d", len(out), mv.GetVectorCount(), mv.GetDimension())
	}
	return out
}

// checkUnitRows fails unless every row of values is L2-normalised (within
// FP16's precision, the simulator's default output type).
func checkUnitRows(t *testing.T, values []float32, dim int) {
	t.Helper()
	for r := 0; r < len(values)/dim; r++ {
		var sum float64
		for _, v := range values[r*dim : (r+1)*dim] {
			sum += float64(v) * float64(v)
		}
		if math.Abs(math.Sqrt(sum)-1) > 5e-3 {
			t.Fatalf("row %d has length %v, want 1", r, math.Sqrt(sum))
		}
	}
}

func TestE2EEmbedQueriesGRPCAndREST(t *testing.T) {
	s := startStack(t, Config{}, tritonsim.Config{})
	queries := []string{"what is late interaction?", "ColPali", "revenue by quarter in the 2023 annual report"}
	resp, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: queries})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetModel() != "colpali_query" || len(resp.GetEmbeddings()) != len(queries) {
		t.Fatalf("model %q, %d embeddings", resp.GetModel(), len(resp.GetEmbeddings()))
	}
	grpcValues := make([][]float32, len(queries))
	for i, mv := range resp.GetEmbeddings() {
		if want := tritonsim.QueryTokens(queries[i]); int(mv.GetVectorCount()) != want || mv.GetDimension() != 128 {
			t.Errorf("query %d: %d x %d, want %d x 128", i, mv.GetVectorCount(), mv.GetDimension(), want)
		}
		grpcValues[i] = decodeMultiVector(t, mv)
		checkUnitRows(t, grpcValues[i], 128)
	}

	// The same queries over REST, as float lists, give the same vectors.
	body, _ := json.Marshal(map[string]any{"queries": queries, "encoding": "EMBEDDING_ENCODING_FLOAT_LIST"})
	code, out, _ := s.post(t, "/v1/queries:embed", string(body))
	if code != http.StatusOK {
		t.Fatalf("REST: HTTP %d %s", code, out)
	}
	var restResp struct {
		Embeddings []struct {
			VectorCount int `json:"vectorCount"`
			Vectors     []struct {
				Values []float32 `json:"values"`
			} `json:"vectors"`
		} `json:"embeddings"`
	}
	if err := json.Unmarshal(out, &restResp); err != nil {
		t.Fatal(err)
	}
	for i, e := range restResp.Embeddings {
		var flat []float32
		for _, v := range e.Vectors {
			flat = append(flat, v.Values...)
		}
		if len(flat) != len(grpcValues[i]) {
			t.Fatalf("query %d: REST has %d values, gRPC %d", i, len(flat), len(grpcValues[i]))
		}
		for j := range flat {
			if flat[j] != grpcValues[i][j] {
				t.Fatalf("query %d value %d: REST %v, gRPC %v", i, j, flat[j], grpcValues[i][j])
			}
		}
	}
}

func TestE2EEmbedImagesOverFourMiB(t *testing.T) {
	s := startStack(t, Config{}, tritonsim.Config{OutputDatatype: "FP32"})
	images := make([][]byte, 16)
	for i := range images {
		images[i] = pngImage(t, 32+i, 32)
	}
	// 16 pages x 1030 x 128 float32 = 8.4 MB: over grpc-go's 4 MiB default
	// on every hop (Triton to gateway, gateway to client).
	resp, err := s.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: images})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEmbeddings()) != 16 || resp.GetModel() != "colpali_image" {
		t.Fatalf("%d embeddings from %q", len(resp.GetEmbeddings()), resp.GetModel())
	}
	first := decodeMultiVector(t, resp.GetEmbeddings()[0])
	for i, mv := range resp.GetEmbeddings() {
		if mv.GetVectorCount() != 1030 {
			t.Fatalf("page %d has %d vectors, want 1030", i, mv.GetVectorCount())
		}
		vals := decodeMultiVector(t, mv)
		checkUnitRows(t, vals, 128)
		if i > 0 && vals[0] == first[0] && vals[1] == first[1] {
			t.Errorf("page %d has the same first vector as page 0: items mixed up?", i)
		}
	}
	// The same page embedded again, alone, gives the same vectors.
	again, err := s.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: images[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if v := decodeMultiVector(t, again.GetEmbeddings()[0]); v[0] != first[0] || v[len(v)-1] != first[len(first)-1] {
		t.Error("the same image embedded twice gave different vectors")
	}
	// And over REST, where the JSON response is larger still.
	var sb strings.Builder
	sb.WriteString(`{"images": [`)
	for i, img := range images {
		if i > 0 {
			sb.WriteString(",")
		}
		b, _ := json.Marshal(img)
		sb.Write(b)
	}
	sb.WriteString(`]}`)
	if code, out, _ := s.post(t, "/v1/images:embed", sb.String()); code != http.StatusOK {
		t.Fatalf("REST: HTTP %d %.300s", code, out)
	}
}

func TestE2EDeadlineReachesTriton(t *testing.T) {
	s := startStack(t, Config{}, tritonsim.Config{})
	ctx, cancel := context.WithTimeout(testContext(t), 4*time.Second)
	defer cancel()
	if _, err := s.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatal(err)
	}
	obs := s.sim.Observed()
	if len(obs) != 1 {
		t.Fatalf("simulator saw %d calls, want 1", len(obs))
	}
	o := obs[0]
	// The call took milliseconds: nearly all of the 4s must be left.
	if o.DeadlineLeft < 3*time.Second || o.DeadlineLeft > 4*time.Second {
		t.Errorf("Triton saw %v of deadline left, want about 4s", o.DeadlineLeft)
	}
	if o.TimeoutParam < 3_000_000 || o.TimeoutParam > 4_000_000 {
		t.Errorf("Triton's timeout parameter = %dµs, want about 4s", o.TimeoutParam)
	}
	if o.Model != "colpali_query" || o.BatchSize != 1 {
		t.Errorf("observation %+v", o)
	}
}

func TestE2EBackendDownIsUnavailableAndNotReady(t *testing.T) {
	s := startStack(t, Config{}, tritonsim.Config{})
	if _, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatal(err)
	}
	addr := s.sim.GRPCAddr()
	s.sim.Stop()
	_, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), addr) {
		t.Fatalf("backend down: %v, want Unavailable naming %s", err, addr)
	}
	code, body, _ := s.post(t, "/v1/queries:embed", `{"queries":["q"]}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), addr) {
		t.Fatalf("REST with backend down: HTTP %d %s", code, body)
	}
	hc := healthpb.NewHealthClient(s.conn)
	ctx := testContext(t)
	for {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("health still %v with the backend down", resp.GetStatus())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestE2EOverloadIsResourceExhausted(t *testing.T) {
	s := startStack(t, Config{}, tritonsim.Config{
		Instances:    1,
		MaxQueueSize: 1,
		Faults:       tritonsim.Faults{ExtraLatency: 300 * time.Millisecond},
	})
	const callers = 6
	var wg sync.WaitGroup
	codesSeen := make(chan codes.Code, callers)
	for i := range callers {
		wg.Go(func() {
			_, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{fmt.Sprint("q", i)}})
			codesSeen <- status.Code(err)
		})
	}
	wg.Wait()
	close(codesSeen)
	counts := map[codes.Code]int{}
	for c := range codesSeen {
		counts[c]++
	}
	// One executes, one waits in the queue of one, the rest are refused.
	if counts[codes.ResourceExhausted] == 0 || counts[codes.OK] == 0 || counts[codes.OK]+counts[codes.ResourceExhausted] != callers {
		t.Fatalf("codes %v, want OK and RESOURCE_EXHAUSTED only", counts)
	}
	if n := len(s.sim.Observed()); n != callers {
		t.Errorf("the simulator saw %d calls for %d callers: the gateway retried", n, callers)
	}
}

func TestE2EBackendFailureKeepsItsCode(t *testing.T) {
	s := startStack(t, Config{}, tritonsim.Config{Faults: tritonsim.Faults{ErrorRate: 1}})
	_, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
	// The backend's address and answer go to the log, not to the client.
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), s.sim.GRPCAddr()) || !strings.Contains(err.Error(), "request id") {
		t.Fatalf("err = %v, want Internal naming the request id, not the backend", err)
	}
}

func TestE2EModelNotReady(t *testing.T) {
	s := startStack(t, Config{}, tritonsim.Config{Faults: tritonsim.Faults{NotReady: []string{"colpali_image"}}})
	_, err := s.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: [][]byte{pngImage(t, 8, 8)}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("image model not ready: %v, want Unavailable", err)
	}
	// Queries still work: only the image model is down.
	if _, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatal(err)
	}
	if code, _ := s.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		// Readiness may take one interval; poll briefly.
		ctx := testContext(t)
		for code != http.StatusServiceUnavailable {
			select {
			case <-ctx.Done():
				t.Fatalf("/readyz = %d with a model not ready", code)
			case <-time.After(10 * time.Millisecond):
			}
			code, _ = s.get(t, "/readyz")
		}
	}
}

// TestE2EListBackends: the operator's view over gRPC and REST, and the same
// figures on /metrics.
func TestE2EListBackends(t *testing.T) {
	healthy := startSim(t, tritonsim.Config{})
	imageDown := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{NotReady: []string{"colpali_image"}}})
	reg := prometheus.NewRegistry()
	r := startRouterWith(t, router.Deps{Logger: testLogger(t), Registerer: reg}, healthy, imageDown)
	g := startGateway(t, Config{}, Deps{Embedder: r, Ready: r.Ready, Backends: r, Registry: reg})
	if _, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatal(err)
	}

	resp, err := colpaliv1.NewBackendServiceClient(g.conn).ListBackends(testContext(t), &colpaliv1.ListBackendsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPolicy() != "gpu_aware" || len(resp.GetBackends()) != 2 {
		t.Fatalf("ListBackends = %v", resp)
	}
	byAddr := map[string]*colpaliv1.Backend{}
	picks := uint64(0)
	for _, b := range resp.GetBackends() {
		byAddr[b.GetAddress()] = b
		picks += b.GetPicks()
		if b.GetState() != colpaliv1.BackendState_BACKEND_STATE_READY || b.GetLastCheckTime() == nil {
			t.Errorf("backend %s: state %v, last check %v", b.GetAddress(), b.GetState(), b.GetLastCheckTime())
		}
	}
	if picks != 1 {
		t.Errorf("picks over the backends = %d, want the 1 call", picks)
	}
	down := byAddr[imageDown.GRPCAddr()]
	if down == nil || len(down.GetModels()) != 2 || down.GetModels()[1].GetModel() != "colpali_image" || down.GetModels()[1].GetReady() {
		t.Errorf("backend with the image model down: %v", down)
	}
	if got := byAddr[healthy.GRPCAddr()].GetMetricsUrl(); got != "http://"+healthy.MetricsAddr()+"/metrics" {
		t.Errorf("metrics URL %q", got)
	}

	code, body := g.get(t, "/v1/backends")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/backends: HTTP %d %s", code, body)
	}
	var rest struct {
		Policy   string `json:"policy"`
		Backends []struct {
			Address string `json:"address"`
			State   string `json:"state"`
		} `json:"backends"`
	}
	if err := json.Unmarshal(body, &rest); err != nil || rest.Policy != "gpu_aware" || len(rest.Backends) != 2 || rest.Backends[0].State != "BACKEND_STATE_READY" {
		t.Fatalf("GET /v1/backends: %s (%v)", body, err)
	}

	code, body = g.getAdmin(t, "/metrics")
	for _, want := range []string{
		`colpali_router_backend_state{backend="` + healthy.GRPCAddr() + `",state="ready"} 1`,
		`colpali_router_backend_model_ready{backend="` + imageDown.GRPCAddr() + `",model="colpali_image"} 0`,
		`colpali_router_retries_total`,
	} {
		if code != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestE2EFailoverAcrossBackends: one of two backends dies; calls keep
// succeeding through the other.
func TestE2EFailoverAcrossBackends(t *testing.T) {
	a := startSim(t, tritonsim.Config{})
	victim := startSim(t, tritonsim.Config{})
	r := startRouterWith(t, router.Deps{Logger: testLogger(t)}, a, victim)
	g := startGateway(t, Config{}, Deps{Embedder: r, Ready: r.Ready, Backends: r})
	for i := range 20 {
		if i == 5 {
			victim.Stop()
		}
		if _, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{fmt.Sprint("q", i)}}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// startBatchedStack is startStack with a batcher between the gateway and the
// router, as cmd/gateway wires them; the registry carries both the
// gateway's and the batcher's metrics.
func startBatchedStack(t *testing.T, cfg Config, batchCfg batching.Config, simCfg tritonsim.Config) (*stack, *batching.Batcher) {
	t.Helper()
	simCfg.GRPCAddr, simCfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	sim, err := tritonsim.Start(context.Background(), simCfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	r := startRouter(t, sim)
	reg := prometheus.NewRegistry()
	b, err := batching.New(batchCfg, batching.Deps{Downstream: r, Logger: testLogger(t), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil {
			t.Errorf("batcher Close: %v", err)
		}
	})
	g := startGateway(t, cfg, Deps{Embedder: b, Ready: r.Ready, Backends: r, Registry: reg})
	return &stack{testGateway: g, sim: sim}, b
}

// TestE2EBatchesForm sends single-query calls from many concurrent clients
// through the batcher to a one-instance simulator and checks that they
// travel in shared batches, that each caller gets its own query's
// embedding, and that the batcher's metrics say so.
func TestE2EBatchesForm(t *testing.T) {
	for _, mode := range []batching.Mode{batching.ModeAdaptive, batching.ModeStatic} {
		t.Run(string(mode), func(t *testing.T) {
			s, _ := startBatchedStack(t, Config{}, batching.Config{Mode: mode},
				tritonsim.Config{Instances: 1, QueryCost: tritonsim.Cost{Base: 20 * time.Millisecond, PerItem: 100 * time.Microsecond}})
			const callers = 24
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			for i := range callers {
				wg.Go(func() {
					q := fmt.Sprintf("query number %d about %s", i, strings.Repeat("x", i))
					resp, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{q}})
					if err != nil {
						errs <- err
						return
					}
					// The simulator's embedding depends on the query's bytes:
					// the row count is the query's, so the rows are its own.
					if mv := resp.GetEmbeddings()[0]; int(mv.GetVectorCount()) != tritonsim.QueryTokens(q) {
						errs <- fmt.Errorf("caller %d got %d rows, want %d: someone else's embedding", i, mv.GetVectorCount(), tritonsim.QueryTokens(q))
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			obs := s.sim.Observed()
			items, largest := 0, 0
			for _, o := range obs {
				items += o.BatchSize
				largest = max(largest, o.BatchSize)
			}
			if items != callers || len(obs) >= callers || largest < 2 {
				t.Fatalf("simulator saw %d calls carrying %d items, the largest %d: want fewer, larger batches for %d callers", len(obs), items, largest, callers)
			}
			code, body := s.getAdmin(t, "/metrics")
			want := fmt.Sprintf(`colpali_batcher_batch_size_count{model="colpali_query"} %d`, len(obs))
			if code != http.StatusOK || !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %q", want)
			}
		})
	}
}

func TestE2EBatcherQueueFullAndPriority(t *testing.T) {
	s, _ := startBatchedStack(t, Config{}, batching.Config{Mode: batching.ModeStatic, Query: batching.ModelConfig{
		MaxQueueSize: 1, MaxInFlightBatches: 1, PreferredBatchSizes: []int{1}, PriorityLevels: 2,
	}}, tritonsim.Config{Instances: 1, Faults: tritonsim.Faults{ExtraLatency: 200 * time.Millisecond}})

	// Over the configured levels: INVALID_ARGUMENT naming the field and the
	// limit, on gRPC and REST, before anything is queued.
	_, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}, Priority: 3})
	checkInvalidArgument(t, err, []string{"priority"}, "1 (first) to 2")
	if code, body, _ := s.post(t, "/v1/queries:embed", `{"queries":["q"],"priority":3}`); code != http.StatusBadRequest || !strings.Contains(string(body), "to 2") {
		t.Fatalf("REST priority 3: HTTP %d %s", code, body)
	}

	// One call runs, one waits, the third finds the queue full.
	const callers = 3
	results := make(chan error, callers)
	for i := range callers {
		go func() {
			_, err := s.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{fmt.Sprint("q", i)}, Priority: 1})
			results <- err
		}()
		time.Sleep(30 * time.Millisecond) // arrive in order
	}
	counts := map[codes.Code]int{}
	for range callers {
		err := <-results
		counts[status.Code(err)]++
		if status.Code(err) == codes.ResourceExhausted && !strings.Contains(err.Error(), "max-queue-size") {
			t.Errorf("queue full: %v, want it to name max-queue-size", err)
		}
	}
	if counts[codes.OK] != 2 || counts[codes.ResourceExhausted] != 1 {
		t.Fatalf("codes %v, want 2 OK and 1 RESOURCE_EXHAUSTED", counts)
	}
	_, body := s.getAdmin(t, "/metrics")
	if want := `colpali_batcher_rejections_total{model="colpali_query",reason="queue_full"} 1`; !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %q", want)
	}
}
