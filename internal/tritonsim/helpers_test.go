package tritonsim

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context { return testutil.Context(t) }

func testLogger(t *testing.T) *slog.Logger { return testutil.Logger(t) }

// fastConfig is a simulator on free loopback ports whose batches take
// well under a millisecond, for tests that do not study timing.
func fastConfig() Config {
	return Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Speed: 100}
}

// startServer starts a simulator stopped in t.Cleanup, and a client for it.
func startServer(t *testing.T, cfg Config) (*Server, inference.GRPCInferenceServiceClient) {
	t.Helper()
	logger := testLogger(t)
	s, err := Start(testContext(t), cfg, logger)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(s.GRPCAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, inference.NewGRPCInferenceServiceClient(conn)
}

var defaultCodec = triton.NewCodec(model.Config{})

// queryRequest is a valid request for the default query model.
func queryRequest(texts ...string) *inference.ModelInferRequest {
	items := make([][]byte, len(texts))
	for i, s := range texts {
		items[i] = []byte(s)
	}
	return defaultCodec.Request(model.Query, items, triton.EmbedOptions{})
}

// imageRequest is a valid request for the default image model.
func imageRequest(t *testing.T, n int) *inference.ModelInferRequest {
	items := make([][]byte, n)
	for i := range items {
		items[i] = testPNG(t, uint8(i))
	}
	return defaultCodec.Request(model.Image, items, triton.EmbedOptions{})
}

// testPNG is a small PNG whose bytes differ with shade.
func testPNG(t *testing.T, shade uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = shade + uint8(i)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testJPEG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	img.Set(1, 1, color.RGBA{R: 200, A: 255})
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// waitFor waits for cond; see testutil.Eventually.
var waitFor = testutil.Eventually

// schedState is a model's queue length and idle instances.
func schedState(s *Server, name string) (queued, idle int) {
	return s.models[name].batcher.state()
}

func statsOf(t *testing.T, ctx context.Context, c inference.GRPCInferenceServiceClient, name string) *inference.ModelStatistics {
	t.Helper()
	resp, err := c.ModelStatistics(ctx, &inference.ModelStatisticsRequest{Name: name})
	if err != nil {
		t.Fatalf("ModelStatistics(%q): %v", name, err)
	}
	if len(resp.GetModelStats()) != 1 {
		t.Fatalf("ModelStatistics(%q): %d entries, want 1", name, len(resp.GetModelStats()))
	}
	return resp.GetModelStats()[0]
}

// family is one parsed metric family: label set (as "k=v,k=v") to value.
type family map[string]float64

// scrape fetches and parses /metrics with Prometheus' own text parser.
func scrape(t *testing.T, ctx context.Context, s *Server) map[string]family {
	t.Helper()
	body, code := httpDo(t, ctx, http.MethodGet, "http://"+s.MetricsAddr()+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(prommodel.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	out := map[string]family{}
	for name, f := range fams {
		vals := family{}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
			vals[strings.Join(labels, ",")] = v
		}
		out[name] = vals
	}
	return out
}

func httpDo(t *testing.T, ctx context.Context, method, url, body string) (string, int) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh transport per call: no idle keep-alive goroutine outlives the
	// test for goleak to find.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

func modelLabels(name string) string { return fmt.Sprintf("model=%s,version=1", name) }
