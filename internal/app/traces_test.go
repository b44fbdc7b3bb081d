package app

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
)

// otlpReceiver is an OTLP/gRPC trace collector on loopback that keeps every
// span exported to it, with its resource's service.name.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu       sync.Mutex
	spans    []*tracepb.Span
	services map[string]bool
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				r.services[a.GetValue().GetStringValue()] = true
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// startOTLPReceiver serves an otlpReceiver on a loopback port until the
// test ends, and returns it and its address.
func startOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recv := &otlpReceiver{services: map[string]bool{}}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, recv)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return recv, lis.Addr().String()
}

// traceIndex is the exported spans by trace id (hex).
type traceIndex map[string][]*tracepb.Span

// one returns the one span of trace tid that matches, failing otherwise.
func (x traceIndex) one(t *testing.T, tid, what string, match func(*tracepb.Span) bool) *tracepb.Span {
	t.Helper()
	var found []*tracepb.Span
	for _, s := range x[tid] {
		if match(s) {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		var names []string
		for _, s := range x[tid] {
			names = append(names, fmt.Sprintf("%s(%s, span %x, parent %x)", s.GetName(), s.GetKind(), s.GetSpanId(), s.GetParentSpanId()))
		}
		t.Fatalf("trace %s: %d spans of %s, want 1; the trace has %s", tid, len(found), what, strings.Join(names, ", "))
	}
	return found[0]
}

func named(name string, kind tracepb.Span_SpanKind) func(*tracepb.Span) bool {
	return func(s *tracepb.Span) bool { return s.GetName() == name && s.GetKind() == kind }
}

// childOf fails unless span's parent is parent (a span id).
func childOf(t *testing.T, what string, span *tracepb.Span, parent []byte) {
	t.Helper()
	if !slices.Equal(span.GetParentSpanId(), parent) {
		t.Errorf("%s: parent %x, want %x", what, span.GetParentSpanId(), parent)
	}
}

// caller is a client span the test stands for: the trace context it sends.
type caller struct{ traceID, spanID string }

func newCaller(i int) caller {
	return caller{traceID: fmt.Sprintf("c01a%028x", i+1), spanID: fmt.Sprintf("5eed%012x", i+1)}
}

func (c caller) traceparent() string { return "00-" + c.traceID + "-" + c.spanID + "-01" }

func (c caller) spanIDBytes() []byte { b, _ := hex.DecodeString(c.spanID); return b }

// TestTraceRunsFromClientToBackend exports the gateway's spans to an OTLP
// receiver in the test (OTEL_EXPORTER_OTLP_ENDPOINT, as in production) and
// follows each caller's trace: from the client's span through the gateway's
// server span (REST: the HTTP server span, the loopback gRPC client span,
// then the gRPC server span), the batcher's batch span and the router's
// Triton client span, to the traceparent the simulator received. Three
// image calls that share one batch are in the batch span: the first
// caller's trace holds it, the other two are its links.
func TestTraceRunsFromClientToBackend(t *testing.T) {
	recv, otlpAddr := startOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+otlpAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	// Static batching: queries go alone at once; images wait until three
	// have come (preferred size), far longer than the test takes to send
	// them, so that the three share one batch whatever the machine's load.
	r := startRun(t, ctx, sim.GRPCAddr()+"="+sim.MetricsAddr(), []string{
		"-batching-mode", "static", "-query-max-queue-delay", "1ms",
		"-image-preferred-batch-sizes", "3", "-image-max-queue-delay", "30s",
	}, map[string]string{"DATABASE_URL": unreachableDatabase(t), "COLPALI_ROUTER_HEALTH_INTERVAL": "50ms"})
	if _, err := r.embedQuery(ctx, "warm-up"); err != nil { // ready, untraced
		t.Fatal(err)
	}
	client := colpaliv1.NewEmbeddingServiceClient(r.conn)
	withTrace := func(c caller) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "traceparent", c.traceparent())
	}
	post := func(c caller, path, body string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.httpAddr+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("traceparent", c.traceparent())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
		}
		return nil
	}

	grpcCaller, restCaller := newCaller(0), newCaller(1)
	if _, err := client.EmbedQueries(withTrace(grpcCaller), &colpaliv1.EmbedQueriesRequest{Queries: []string{"traced over gRPC"}}); err != nil {
		t.Fatal(err)
	}
	if err := post(restCaller, "/v1/queries:embed", `{"queries":["traced over REST"]}`); err != nil {
		t.Fatal(err)
	}
	imageCallers := []caller{newCaller(2), newCaller(3), newCaller(4)}
	page := noisePNG(t, 32, 32, 1)
	var wg sync.WaitGroup
	errs := make([]error, len(imageCallers))
	for i, c := range imageCallers {
		wg.Go(func() {
			if i == 2 { // one of them over REST
				errs[i] = post(c, "/v1/images:embed", fmt.Sprintf(`{"images":[%q]}`, base64.StdEncoding.EncodeToString(page)))
				return
			}
			_, errs[i] = client.EmbedImages(withTrace(c), &colpaliv1.EmbedImagesRequest{Images: [][]byte{page}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("image call %d: %v", i, err)
		}
	}
	// Stopping flushes the exporter.
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	recv.mu.Lock()
	spans := slices.Clone(recv.spans)
	if !recv.services["colpali-gateway"] {
		t.Errorf("resources' service names %v, want colpali-gateway", recv.services)
	}
	recv.mu.Unlock()
	x := traceIndex{}
	for _, s := range spans {
		tid := hex.EncodeToString(s.GetTraceId())
		x[tid] = append(x[tid], s)
	}
	traceparents := map[string]bool{}
	for _, ob := range sim.Observed() {
		traceparents[ob.Traceparent] = true
	}
	// backend follows a batch span to the Triton call it made and to what
	// the simulator received.
	backend := func(tid string, batch *tracepb.Span) {
		t.Helper()
		infer := x.one(t, tid, "the Triton call", func(s *tracepb.Span) bool {
			return named("inference.GRPCInferenceService/ModelInfer", tracepb.Span_SPAN_KIND_CLIENT)(s) && slices.Equal(s.GetParentSpanId(), batch.GetSpanId())
		})
		if tp := fmt.Sprintf("00-%s-%x-01", tid, infer.GetSpanId()); !traceparents[tp] {
			t.Errorf("trace %s: the simulator received no traceparent %s", tid, tp)
		}
	}
	batchOf := func(tid string, server *tracepb.Span) *tracepb.Span {
		t.Helper()
		return x.one(t, tid, "the batch", func(s *tracepb.Span) bool {
			return s.GetName() == "colpali.batcher/batch" && slices.Equal(s.GetParentSpanId(), server.GetSpanId())
		})
	}
	const queries, images = "colpali.v1.EmbeddingService/EmbedQueries", "colpali.v1.EmbeddingService/EmbedImages"

	// gRPC: client → server span → batch → Triton call → simulator.
	server := x.one(t, grpcCaller.traceID, "the gRPC server span", named(queries, tracepb.Span_SPAN_KIND_SERVER))
	childOf(t, "gRPC server span", server, grpcCaller.spanIDBytes())
	backend(grpcCaller.traceID, batchOf(grpcCaller.traceID, server))

	// REST: client → HTTP server span → batch → Triton call → simulator.
	// The REST side calls the gRPC handlers in process (gateway/restconn.go):
	// no loopback client or second server span between.
	restServer := func(c caller, method string) *tracepb.Span {
		t.Helper()
		httpSpan := x.one(t, c.traceID, "the HTTP server span", func(s *tracepb.Span) bool {
			return s.GetKind() == tracepb.Span_SPAN_KIND_SERVER && slices.Equal(s.GetParentSpanId(), c.spanIDBytes())
		})
		for _, s := range x[c.traceID] {
			if named(method, tracepb.Span_SPAN_KIND_CLIENT)(s) {
				t.Errorf("trace %s: a loopback client span of %s; want none (REST is served in process)", c.traceID, method)
			}
		}
		return httpSpan
	}
	server = restServer(restCaller, queries)
	backend(restCaller.traceID, batchOf(restCaller.traceID, server))

	// The shared image batch: in the first caller's trace, linking the
	// others' server spans.
	servers := map[string]*tracepb.Span{}
	for i, c := range imageCallers {
		if i == 2 {
			servers[c.traceID] = restServer(c, images)
		} else {
			servers[c.traceID] = x.one(t, c.traceID, "the gRPC server span", named(images, tracepb.Span_SPAN_KIND_SERVER))
			childOf(t, "gRPC server span", servers[c.traceID], c.spanIDBytes())
		}
	}
	var first string
	var batch *tracepb.Span
	for tid, srv := range servers {
		for _, s := range x[tid] {
			if s.GetName() == "colpali.batcher/batch" && slices.Equal(s.GetParentSpanId(), srv.GetSpanId()) {
				if batch != nil {
					t.Fatalf("two image batches (traces %s and %s): the calls did not share one", first, tid)
				}
				first, batch = tid, s
			}
		}
	}
	if batch == nil {
		t.Fatal("no image batch span under any image caller's server span")
	}
	attrs := map[string]string{}
	for _, a := range batch.GetAttributes() {
		attrs[a.GetKey()] = fmt.Sprint(a.GetValue().GetStringValue(), a.GetValue().GetIntValue())
	}
	if attrs["colpali.batch.requests"] != "3" || !strings.HasPrefix(attrs["colpali.model"], model.DefaultImageModel) {
		t.Errorf("image batch attributes %v, want 3 requests of %s", attrs, model.DefaultImageModel)
	}
	var linked, want []string
	for _, l := range batch.GetLinks() {
		linked = append(linked, fmt.Sprintf("%x/%x", l.GetTraceId(), l.GetSpanId()))
	}
	for tid, srv := range servers {
		if tid != first {
			want = append(want, fmt.Sprintf("%s/%x", tid, srv.GetSpanId()))
		}
	}
	slices.Sort(linked)
	slices.Sort(want)
	if !slices.Equal(linked, want) {
		t.Errorf("image batch links %v, want the other callers' server spans %v", linked, want)
	}
	backend(first, batch)
}
