package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t testing.TB) *slog.Logger { return testutil.Logger(t) }

// fakeEmbedder is an Embedder whose behaviour each test sets.
type fakeEmbedder struct {
	embed      func(ctx context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error)
	mu         sync.Mutex
	calls      int
	priorities []int
}

var _ Embedder = (*fakeEmbedder)(nil)

func (f *fakeEmbedder) Embed(ctx context.Context, kind model.Kind, items [][]byte, priority int) ([]model.Embedding, error) {
	f.mu.Lock()
	f.calls++
	f.priorities = append(f.priorities, priority)
	f.mu.Unlock()
	if f.embed != nil {
		return f.embed(ctx, kind, items)
	}
	return constantEmbeddings(len(items), 3, 4), nil
}

func (f *fakeEmbedder) ModelName(kind model.Kind) string { return "fake_" + kind.String() }

func (f *fakeEmbedder) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Priorities returns the priority of every call so far.
func (f *fakeEmbedder) Priorities() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.priorities)
}

// constantEmbeddings returns n embeddings of rows x dim where item i's
// values are all i+1 (not unit length, but easy to check).
func constantEmbeddings(n, rows, dim int) []model.Embedding {
	out := make([]model.Embedding, n)
	for i := range out {
		vals := make([]float32, rows*dim)
		for j := range vals {
			vals[j] = float32(i + 1)
		}
		out[i] = model.Embedding{Rows: rows, Dim: dim, Values: vals}
	}
	return out
}

// testGateway is a running gateway on loopback ports chosen at run time.
type testGateway struct {
	srv     *Server
	conn    *grpc.ClientConn
	client  colpaliv1.EmbeddingServiceClient
	baseURL string
}

// startGateway starts a gateway with deps' Embedder and Ready, stopped in
// t.Cleanup. cfg's addresses are overridden with 127.0.0.1:0.
func startGateway(t testing.TB, cfg Config, deps Deps) *testGateway {
	t.Helper()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 20 * time.Millisecond
	}
	if cfg.Drain.Delay == 0 {
		cfg.Drain.Delay = time.Millisecond // nothing routes to a test gateway; drain_test.go tests the delay
	}
	if deps.Logger == nil {
		deps.Logger = testLogger(t)
	}
	if deps.Embedder == nil {
		deps.Embedder = &fakeEmbedder{}
	}
	if deps.Ready == nil {
		deps.Ready = func(context.Context) error { return nil }
	}
	if deps.Authenticator == nil {
		// As `make run` (-auth none): tenant "default" with every scope.
		deps.Authenticator = auth.None()
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()

	conn, err := grpc.NewClient(srv.GRPCAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testGateway{srv: srv, conn: conn, client: colpaliv1.NewEmbeddingServiceClient(conn), baseURL: "http://" + srv.HTTPAddr()}
}

func testContext(t *testing.T) context.Context { return testutil.Context(t) }

// post sends body as JSON to path and returns the status code and body.
func (g *testGateway) post(t *testing.T, path, body string, header ...string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, g.baseURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

func (g *testGateway) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	return getURL(t, g.baseURL+path)
}

// getAdmin gets path from the admin listener (/metrics, /debug/pprof/).
func (g *testGateway) getAdmin(t *testing.T, path string) (int, []byte) {
	t.Helper()
	return getURL(t, "http://"+g.srv.AdminAddr()+path)
}

func getURL(t *testing.T, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// restError is grpc-gateway's JSON error body.
type restError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func decodeRESTError(t *testing.T, body []byte) restError {
	t.Helper()
	var e restError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	return e
}

// fieldViolations returns the BadRequest field names of err.
func fieldViolations(err error) []string {
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// pngImage encodes a w x h PNG.
func pngImage(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	// Pseudo-random pixels, so that the file's size grows with its area.
	x := uint32(w*7919 + h)
	for i := range img.Pix {
		x = x*1664525 + 1013904223
		img.Pix[i] = uint8(x >> 24)
	}
	img.Set(0, 0, color.White)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var errSentinel = errors.New("sentinel")

// grpcHeader captures the response header of a call.
func grpcHeader(md *metadata.MD) grpc.CallOption { return grpc.Header(md) }
