package gateway

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/batching"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/triton"
)

// hugePNG returns a valid PNG header claiming w x h pixels (the pixel data
// is not there; DecodeConfig reads only the header).
func hugePNG(t *testing.T, w, h uint32) []byte {
	img := pngImage(t, 2, 2)
	binary.BigEndian.PutUint32(img[16:], w)
	binary.BigEndian.PutUint32(img[20:], h)
	binary.BigEndian.PutUint32(img[29:], crc32.ChecksumIEEE(img[12:29]))
	return img
}

func TestEmbedQueriesInvalidArgument(t *testing.T) {
	fake := &fakeEmbedder{}
	g := startGateway(t, Config{MaxQueries: 3, MaxQueryBytes: 10}, Deps{Embedder: fake})
	for _, tc := range []struct {
		name   string
		req    *colpaliv1.EmbedQueriesRequest
		fields []string
		text   string
	}{
		{"no queries", &colpaliv1.EmbedQueriesRequest{}, []string{"queries"}, "at least 1"},
		{"too many", &colpaliv1.EmbedQueriesRequest{Queries: []string{"a", "b", "c", "d"}}, []string{"queries"}, "limit is 3"},
		{"empty string", &colpaliv1.EmbedQueriesRequest{Queries: []string{"ok", ""}}, []string{"queries[1]"}, "empty"},
		{"blank string", &colpaliv1.EmbedQueriesRequest{Queries: []string{" \t"}}, []string{"queries[0]"}, "empty"},
		{"too long", &colpaliv1.EmbedQueriesRequest{Queries: []string{"ok", strings.Repeat("x", 11)}}, []string{"queries[1]"}, "limit is 10 bytes"},
		{"unknown encoding", &colpaliv1.EmbedQueriesRequest{Queries: []string{"ok"}, Encoding: 42}, []string{"encoding"}, "unknown value 42"},
		{"priority without levels", &colpaliv1.EmbedQueriesRequest{Queries: []string{"ok"}, Priority: 2}, []string{"priority"}, "levels 1 (first) to 1"},
		{"several at once", &colpaliv1.EmbedQueriesRequest{Queries: []string{"", strings.Repeat("x", 11)}, Encoding: -1}, []string{"queries[0]", "queries[1]", "encoding"}, "encoding: unknown value -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.client.EmbedQueries(testContext(t), tc.req)
			checkInvalidArgument(t, err, tc.fields, tc.text)
		})
	}
	if n := fake.Calls(); n != 0 {
		t.Errorf("the embedder was called %d times for invalid requests", n)
	}
}

// checkInvalidArgument fails unless err is INVALID_ARGUMENT with exactly
// fields as its BadRequest violations and a message that says text.
func checkInvalidArgument(t *testing.T, err error, fields []string, text string) {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("code = %v (%v), want InvalidArgument", status.Code(err), err)
	}
	if diff := cmp.Diff(fields, fieldViolations(err)); diff != "" {
		t.Errorf("field violations (-want +got):\n%s", diff)
	}
	if !strings.Contains(status.Convert(err).Message(), text) {
		t.Errorf("message %q does not say %q", status.Convert(err).Message(), text)
	}
}

func TestEmbedImagesInvalidArgument(t *testing.T) {
	fake := &fakeEmbedder{}
	g := startGateway(t, Config{MaxImages: 2, MaxImageBytes: 4096, MaxImagePixels: 10_000}, Deps{Embedder: fake})
	good := pngImage(t, 8, 8)
	bigFile := pngImage(t, 90, 90) // noise compresses badly: over 4096 bytes
	if len(bigFile) <= 4096 {
		t.Fatalf("test image is only %d bytes", len(bigFile))
	}
	truncatedJPEG := []byte{0xff, 0xd8, 0xff, 0xe0, 0x00}
	for _, tc := range []struct {
		name   string
		images [][]byte
		fields []string
		text   string
	}{
		{"no images", nil, []string{"images"}, "at least 1"},
		{"too many", [][]byte{good, good, good}, []string{"images"}, "limit is 2"},
		{"empty image", [][]byte{good, {}}, []string{"images[1]"}, "empty"},
		{"not an image", [][]byte{[]byte("%PDF-1.7 not an image")}, []string{"images[0]"}, "not a PNG or JPEG"},
		{"gif", [][]byte{[]byte("GIF89a\x01\x00\x01\x00")}, []string{"images[0]"}, "not a PNG or JPEG"},
		{"truncated jpeg", [][]byte{truncatedJPEG}, []string{"images[0]"}, "cannot be read"},
		{"over the byte limit", [][]byte{bigFile}, []string{"images[0]"}, "limit is 4096 bytes"},
		{"over the pixel limit", [][]byte{hugePNG(t, 20000, 20000)}, []string{"images[0]"}, "limit is 10000 pixels"},
		{"header without pixels", [][]byte{good, hugePNG(t, 50, 50)}, []string{"images[1]"}, "cannot be decoded"},
		{"truncated pixels", [][]byte{good[:len(good)-20]}, []string{"images[0]"}, "cannot be decoded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: tc.images})
			checkInvalidArgument(t, err, tc.fields, tc.text)
		})
	}
	if n := fake.Calls(); n != 0 {
		t.Errorf("the embedder was called %d times for invalid requests", n)
	}
}

func TestEncodings(t *testing.T) {
	g := startGateway(t, Config{}, Deps{})
	queries := []string{"first", "second"}
	for _, tc := range []struct {
		enc      colpaliv1.EmbeddingEncoding
		dataType colpaliv1.DataType
	}{
		{colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_UNSPECIFIED, colpaliv1.DataType_DATA_TYPE_FLOAT32},
		{colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT32_BYTES, colpaliv1.DataType_DATA_TYPE_FLOAT32},
		{colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT16_BYTES, colpaliv1.DataType_DATA_TYPE_FLOAT16},
		{colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT_LIST, colpaliv1.DataType_DATA_TYPE_UNSPECIFIED},
	} {
		t.Run(tc.enc.String(), func(t *testing.T) {
			resp, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: queries, Encoding: tc.enc})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetModel() != "fake_query" || len(resp.GetEmbeddings()) != 2 {
				t.Fatalf("model %q with %d embeddings", resp.GetModel(), len(resp.GetEmbeddings()))
			}
			for i, mv := range resp.GetEmbeddings() {
				if mv.GetVectorCount() != 3 || mv.GetDimension() != 4 || mv.GetDataType() != tc.dataType {
					t.Fatalf("embedding %d: %d x %d of %v", i, mv.GetVectorCount(), mv.GetDimension(), mv.GetDataType())
				}
				var values []float32
				switch tc.dataType {
				case colpaliv1.DataType_DATA_TYPE_UNSPECIFIED:
					for _, v := range mv.GetVectors() {
						values = append(values, v.GetValues()...)
					}
				case colpaliv1.DataType_DATA_TYPE_FLOAT32:
					values, err = tensor.DecodeFloats(mv.GetData(), tensor.TypeFP32, 12)
				case colpaliv1.DataType_DATA_TYPE_FLOAT16:
					values, err = tensor.DecodeFloats(mv.GetData(), tensor.TypeFP16, 12)
				}
				if err != nil {
					t.Fatal(err)
				}
				want := slices.Repeat([]float32{float32(i + 1)}, 12)
				if diff := cmp.Diff(want, values); diff != "" {
					t.Errorf("embedding %d values (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestBackendErrorsMapToCodes(t *testing.T) {
	backendErr := func(class error, code codes.Code, msg string) error {
		return fmt.Errorf("wrapped: %w", &triton.Error{Class: class, Backend: "10.0.0.7:8001", Call: "ModelInfer colpali_query", Status: status.New(code, msg)})
	}
	for _, tc := range []struct {
		name     string
		err      error
		code     codes.Code
		httpCode int
		text     string
	}{
		{"overloaded", backendErr(triton.ErrOverloaded, codes.Unavailable, "Exceeds maximum queue size"), codes.ResourceExhausted, http.StatusTooManyRequests, "retry later"},
		{"unavailable", backendErr(triton.ErrUnavailable, codes.Unavailable, "connection refused"), codes.Unavailable, http.StatusServiceUnavailable, "10.0.0.7:8001"},
		{"rejected", backendErr(triton.ErrRejected, codes.InvalidArgument, "bad image"), codes.InvalidArgument, http.StatusBadRequest, "bad image"},
		{"backend internal", backendErr(triton.ErrFailed, codes.Internal, "CUDA error"), codes.Internal, http.StatusInternalServerError, "internal error; request id"},
		{"timed out in Triton's queue", backendErr(triton.ErrTimedOut, codes.Unavailable, "Request timeout expired"), codes.DeadlineExceeded, http.StatusGatewayTimeout, "timed the request out"},
		{"unknown model is not a client 404", backendErr(triton.ErrFailed, codes.NotFound, "Request for unknown model: 'nope' is not found"), codes.Internal, http.StatusInternalServerError, "internal error; request id"},
		{"size limit is not overload", backendErr(triton.ErrFailed, codes.ResourceExhausted, "grpc: received message larger than max"), codes.Internal, http.StatusInternalServerError, "internal error; request id"},
		{"aborted stays retryable", backendErr(triton.ErrFailed, codes.Aborted, "aborted"), codes.Unavailable, http.StatusServiceUnavailable, "aborted"},
		{"not ready", fmt.Errorf("%w: colpali_query", router.ErrNotReady), codes.Unavailable, http.StatusServiceUnavailable, "not ready"},
		{"no backend", fmt.Errorf("%w for model colpali_query", router.ErrNoBackend), codes.Unavailable, http.StatusServiceUnavailable, "no ready backend"},
		{"bad response", fmt.Errorf("%w: shape", model.ErrBadResponse), codes.Internal, http.StatusInternalServerError, "internal error; request id"},
		{"unclassified", errSentinel, codes.Internal, http.StatusInternalServerError, "internal error; request id"},
		{"batcher queue full", fmt.Errorf("%w: model colpali_query already holds 4096 requests (max-queue-size)", batching.ErrQueueFull), codes.ResourceExhausted, http.StatusTooManyRequests, "max-queue-size"},
		{"batcher queue timeout", fmt.Errorf("%w: waited 2s", batching.ErrQueueTimeout), codes.DeadlineExceeded, http.StatusGatewayTimeout, "timed out in the queue"},
		{"batcher closed", fmt.Errorf("%w: model colpali_query", batching.ErrClosed), codes.Unavailable, http.StatusServiceUnavailable, "closed"},
		{"batcher wrong row count", fmt.Errorf("%w: 1 for 2 items", batching.ErrBadDownstream), codes.Internal, http.StatusInternalServerError, "internal error; request id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeEmbedder{embed: func(context.Context, model.Kind, [][]byte) ([]model.Embedding, error) { return nil, tc.err }}
			g := startGateway(t, Config{}, Deps{Embedder: fake})
			_, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.text) {
				t.Errorf("gRPC: %v, want %v mentioning %q", err, tc.code, tc.text)
			}
			code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`)
			if code != tc.httpCode {
				t.Errorf("REST: HTTP %d %s, want %d", code, body, tc.httpCode)
			}
			if e := decodeRESTError(t, body); e.Code != int(tc.code) || !strings.Contains(e.Message, tc.text) {
				t.Errorf("REST error body %+v, want code %d mentioning %q", e, tc.code, tc.text)
			}
		})
	}
}

func TestDeadlinePolicy(t *testing.T) {
	seen := make(chan time.Duration, 1)
	fake := &fakeEmbedder{embed: func(ctx context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		d, ok := ctx.Deadline()
		if !ok {
			seen <- -1
		} else {
			seen <- time.Until(d)
		}
		return constantEmbeddings(len(items), 1, 4), nil
	}}
	g := startGateway(t, Config{DefaultTimeout: 3 * time.Second, MaxTimeout: 10 * time.Second}, Deps{Embedder: fake})
	call := func(ctx context.Context) time.Duration {
		if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
			t.Fatal(err)
		}
		return <-seen
	}
	if d := call(context.Background()); d <= 0 || d > 3*time.Second {
		t.Errorf("no client deadline: handler saw %v left, want the 3s default", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if d := call(ctx); d <= 3*time.Second || d > 10*time.Second {
		t.Errorf("1m client deadline: handler saw %v left, want capped at 10s", d)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if d := call(ctx2); d <= 3*time.Second || d > 5*time.Second {
		t.Errorf("5s client deadline: handler saw %v left, want the client's 5s kept", d)
	}
	// REST calls carry no deadline unless the client sends Grpc-Timeout.
	if code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`); code != http.StatusOK {
		t.Fatalf("REST: HTTP %d %s", code, body)
	}
	if d := <-seen; d <= 0 || d > 3*time.Second {
		t.Errorf("REST call without Grpc-Timeout: handler saw %v left, want the 3s default", d)
	}
	if code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`, "Grpc-Timeout", "1S"); code != http.StatusOK {
		t.Fatalf("REST: HTTP %d %s", code, body)
	}
	if d := <-seen; d <= 0 || d > time.Second {
		t.Errorf("REST call with Grpc-Timeout 1S: handler saw %v left", d)
	}
}

func TestDeadlineExceededWhileEmbedding(t *testing.T) {
	fake := &fakeEmbedder{embed: func(ctx context.Context, _ model.Kind, _ [][]byte) ([]model.Embedding, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	g := startGateway(t, Config{DefaultTimeout: 50 * time.Millisecond}, Deps{Embedder: fake})
	// No client deadline: the gateway's 50ms default must end the call.
	_, err := g.client.EmbedQueries(context.Background(), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`)
	if code != http.StatusGatewayTimeout {
		t.Fatalf("REST: HTTP %d %s, want 504", code, body)
	}
}

func TestRESTBadInput(t *testing.T) {
	fake := &fakeEmbedder{}
	g := startGateway(t, Config{MaxQueries: 2}, Deps{Embedder: fake})
	for _, tc := range []struct {
		name, path, body, text string
	}{
		{"malformed JSON", "/v1/queries:embed", `{"queries": [`, "unexpected EOF"},
		{"wrong type", "/v1/queries:embed", `{"queries": "one"}`, "unexpected token"},
		{"unknown field", "/v1/queries:embed", `{"queris": ["q"]}`, "queris"},
		{"unknown enum name", "/v1/queries:embed", `{"queries": ["q"], "encoding": "EMBEDDING_ENCODING_INT8"}`, "EMBEDDING_ENCODING_INT8"},
		{"unknown enum number", "/v1/queries:embed", `{"queries": ["q"], "encoding": 9}`, "encoding: unknown value 9"},
		{"too many queries", "/v1/queries:embed", `{"queries": ["a","b","c"]}`, "limit is 2"},
		{"bad base64", "/v1/images:embed", `{"images": ["@@@"]}`, "images"},
		{"not an image", "/v1/images:embed", `{"images": ["` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"]}`, "images[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := g.post(t, tc.path, tc.body)
			if code != http.StatusBadRequest {
				t.Fatalf("HTTP %d %s, want 400", code, body)
			}
			if e := decodeRESTError(t, body); e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, tc.text) {
				t.Errorf("error %+v does not name %q", e, tc.text)
			}
		})
	}
	if n := fake.Calls(); n != 0 {
		t.Errorf("the embedder was called %d times for invalid requests", n)
	}
}

func TestRESTEmbedQueriesFloatList(t *testing.T) {
	g := startGateway(t, Config{}, Deps{})
	code, body, hdr := g.post(t, "/v1/queries:embed",
		`{"queries": ["what is colpali?"], "encoding": "EMBEDDING_ENCODING_FLOAT_LIST"}`, "X-Request-Id", "req-123")
	if code != http.StatusOK {
		t.Fatalf("HTTP %d %s", code, body)
	}
	if got := hdr.Get("X-Request-Id"); got != "req-123" {
		t.Errorf("X-Request-Id = %q, want the caller's req-123", got)
	}
	for name := range hdr {
		if strings.HasPrefix(name, "Grpc-Metadata-") {
			t.Errorf("gRPC metadata leaked into the REST response: %s: %s", name, hdr.Get(name))
		}
	}
	var resp struct {
		Embeddings []struct {
			VectorCount int `json:"vectorCount"`
			Dimension   int `json:"dimension"`
			Vectors     []struct {
				Values []float64 `json:"values"`
			} `json:"vectors"`
		} `json:"embeddings"`
		Model string `json:"model"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(resp.Embeddings) != 1 || resp.Embeddings[0].VectorCount != 3 || len(resp.Embeddings[0].Vectors) != 3 ||
		len(resp.Embeddings[0].Vectors[0].Values) != 4 || resp.Model != "fake_query" {
		t.Fatalf("unexpected response %s", body)
	}
}

func TestRESTEmbedImages(t *testing.T) {
	var got [][]byte
	fake := &fakeEmbedder{embed: func(_ context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error) {
		if kind != model.Image {
			return nil, fmt.Errorf("kind %v", kind)
		}
		got = items
		return constantEmbeddings(len(items), 2, 4), nil
	}}
	g := startGateway(t, Config{}, Deps{Embedder: fake})
	img := pngImage(t, 16, 16)
	code, body, _ := g.post(t, "/v1/images:embed", `{"images": ["`+base64.StdEncoding.EncodeToString(img)+`"]}`)
	if code != http.StatusOK {
		t.Fatalf("HTTP %d %s", code, body)
	}
	if len(got) != 1 || string(got[0]) != string(img) {
		t.Fatalf("the embedder did not receive the image bytes")
	}
	var resp struct {
		Embeddings []struct {
			DataType string `json:"dataType"`
			Data     []byte `json:"data"`
		} `json:"embeddings"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Embeddings) != 1 || resp.Embeddings[0].DataType != "DATA_TYPE_FLOAT32" || len(resp.Embeddings[0].Data) != 2*4*4 {
		t.Fatalf("unexpected response %s", body)
	}
}

func TestPanicIsInternalAndServerSurvives(t *testing.T) {
	first := true
	fake := &fakeEmbedder{embed: func(_ context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		if first {
			first = false
			panic("boom")
		}
		return constantEmbeddings(len(items), 1, 4), nil
	}}
	g := startGateway(t, Config{}, Deps{Embedder: fake})
	_, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "boom") {
		t.Fatalf("panic: %v, want Internal without the panic's text", err)
	}
	if _, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatalf("call after the panic: %v", err)
	}
}

func TestHealthFollowsReadiness(t *testing.T) {
	ready := make(chan error, 1)
	ready <- errSentinel
	last := errSentinel
	check := func(context.Context) error {
		select {
		case last = <-ready:
		default:
		}
		return last
	}
	g := startGateway(t, Config{}, Deps{Ready: check})
	hc := healthpb.NewHealthClient(g.conn)
	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus, wantHTTP int) {
		t.Helper()
		ctx := testContext(t)
		for {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "colpali.v1.EmbeddingService"})
			code, _ := g.get(t, "/readyz")
			if err == nil && resp.GetStatus() == want && code == wantHTTP {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("health never became %v / HTTP %d (last %v, %v, HTTP %d)", want, wantHTTP, resp, err, code)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING, http.StatusServiceUnavailable)
	ready <- nil
	waitFor(healthpb.HealthCheckResponse_SERVING, http.StatusOK)
	ready <- errSentinel
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING, http.StatusServiceUnavailable)
	if code, _ := g.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while not ready, want 200 (liveness is not readiness)", code)
	}
}

func TestOpenAPIAndMetricsServed(t *testing.T) {
	g := startGateway(t, Config{}, Deps{})
	if _, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatal(err)
	}
	// A REST call passes the gRPC interceptors too: it is counted below.
	if code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`); code != http.StatusOK {
		t.Fatalf("REST: HTTP %d %s", code, body)
	}
	code, body := g.get(t, "/openapi.json")
	if code != http.StatusOK {
		t.Fatalf("/openapi.json: HTTP %d", code)
	}
	var doc struct {
		Swagger string                     `json:"swagger"`
		Paths   map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/queries:embed", "/v1/images:embed"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("OpenAPI document lacks %s (has %v)", p, doc.Paths)
		}
	}
	code, body = g.getAdmin(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", code)
	}
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="EmbedQueries",grpc_service="colpali.v1.EmbeddingService",grpc_type="unary"} 2`,
		`colpali_http_requests_total{code="200",method="post",route="/v1/queries:embed"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestRequestIDGeneratedWhenAbsent(t *testing.T) {
	g := startGateway(t, Config{}, Deps{})
	var hdr metadata.MD
	ctx := testContext(t)
	if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}, grpcHeader(&hdr)); err != nil {
		t.Fatal(err)
	}
	if ids := hdr.Get("x-request-id"); len(ids) != 1 || len(ids[0]) != 16 {
		t.Errorf("x-request-id header = %v, want one generated id", ids)
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	err := Config{MaxQueries: -1, DefaultTimeout: time.Hour, MaxTimeout: time.Minute, MaxRecvMsgSize: 10, MaxTopK: 5000}.WithDefaults().Validate()
	for _, want := range []string{"MaxQueries -1: must be positive", "DefaultTimeout 1h0m0s: exceeds MaxTimeout", "MaxRecvMsgSize 10: below", "MaxTopK 5000: exceeds 1000"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestFloat16EncodingRounds(t *testing.T) {
	mv := encode(model.Embedding{Rows: 1, Dim: 2, Values: []float32{1.0 / 3, float32(math.Pi)}}, colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT16_BYTES)
	got, err := tensor.DecodeFloats(mv.GetData(), tensor.TypeFP16, 2)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(got[0])-1.0/3) > 1e-3 || math.Abs(float64(got[1])-math.Pi) > 2e-3 {
		t.Errorf("FP16 values %v are not close to 1/3 and pi", got)
	}
}

func TestRESTBodyOverLimit(t *testing.T) {
	fake := &fakeEmbedder{}
	g := startGateway(t, Config{MaxImages: 1, MaxImageBytes: 1000}, Deps{Embedder: fake})
	code, body, _ := g.post(t, "/v1/images:embed", `{"images": ["`+strings.Repeat("A", 2<<20)+`"]}`)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("HTTP %d %s, want 413", code, body)
	}
	if e := decodeRESTError(t, body); e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, "the limit for /v1/images:embed is") {
		t.Errorf("error %+v does not name the limit", e)
	}
	// The queries route has a limit of its own, far below the images one.
	code, body, _ = g.post(t, "/v1/queries:embed", `{"queries": ["`+strings.Repeat("a", 1<<20)+`"]}`)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "/v1/queries:embed") {
		t.Fatalf("1 MiB of queries: HTTP %d %s, want 413", code, body)
	}
	if fake.Calls() != 0 {
		t.Error("the embedder was called for an oversized body")
	}
}

func TestGRPCMessageOverLimit(t *testing.T) {
	fake := &fakeEmbedder{}
	g := startGateway(t, Config{MaxImages: 1, MaxImageBytes: 1000}, Deps{Embedder: fake})
	_, err := g.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: [][]byte{make([]byte, 2<<20)}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
		t.Fatalf("err = %v, want ResourceExhausted naming the limit", err)
	}
	if fake.Calls() != 0 {
		t.Error("the embedder was called for an oversized message")
	}
}

func TestShutdownDrainsCallsInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	fake := &fakeEmbedder{embed: func(_ context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		close(started)
		<-release
		return constantEmbeddings(len(items), 1, 4), nil
	}}
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", ShutdownTimeout: 10 * time.Second, Drain: DrainConfig{Delay: time.Millisecond}},
		Deps{Logger: testLogger(t), Embedder: fake, Ready: func(context.Context) error { return nil }, Authenticator: auth.None()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	callErr := make(chan error, 1)
	go func() {
		_, err := colpaliv1.NewEmbeddingServiceClient(conn).EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
		callErr <- err
	}()
	<-started
	cancel() // SIGTERM, in effect, with one call in flight
	// Health turns NOT_SERVING while the call drains.
	hc := healthpb.NewHealthClient(conn)
	hctx := testContext(t)
	for {
		if hctx.Err() != nil {
			t.Fatal("health never turned NOT_SERVING during the drain")
		}
		resp, err := hc.Check(hctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if err != nil && status.Code(err) == codes.Unavailable {
			break // the listener is already closed to new streams
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) with a call in flight", err)
	default:
	}
	close(release)
	if err := <-callErr; err != nil {
		t.Fatalf("the call in flight failed during the drain: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// leveledEmbedder is a fakeEmbedder with priority levels, as the batcher.
type leveledEmbedder struct {
	*fakeEmbedder
	levels int
}

func (l leveledEmbedder) PriorityLevels(model.Kind) int { return l.levels }

func TestPriorityReachesTheEmbedder(t *testing.T) {
	fake := &fakeEmbedder{embed: func(ctx context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error) {
		return constantEmbeddings(len(items), 1, 2), nil
	}}
	g := startGateway(t, Config{}, Deps{Embedder: leveledEmbedder{fake, 5}})
	if _, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}, Priority: 5}); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := g.post(t, "/v1/images:embed", fmt.Sprintf(`{"images":[%q],"priority":1}`, base64.StdEncoding.EncodeToString(pngImage(t, 4, 4)))); code != http.StatusOK {
		t.Fatalf("REST: HTTP %d %s", code, body)
	}
	if got := fake.Priorities(); !slices.Equal(got, []int{5, 1}) {
		t.Fatalf("priorities seen %v; want 5, 1", got)
	}
	_, err := g.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: [][]byte{pngImage(t, 4, 4)}, Priority: 6})
	checkInvalidArgument(t, err, []string{"priority"}, "image model has priority levels 1 (first) to 5")
}
