package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// Fuzz targets of the hostile-input surfaces: the REST JSON bodies as
// grpc-gateway unmarshals them into the handlers, and the ingestion
// stream's message sequences. The image checks' target is in
// internal/imagecheck. `go test` runs their seeds (here and under
// testdata/fuzz); `go test -fuzz FuzzREST ./gateway/` explores.

// restRoutes are the REST routes with a body, as a fuzzed byte picks them.
var restRoutes = []string{"/v1/queries:embed", "/v1/images:embed", "/v1/documents", "/v1/documents:search"}

// FuzzREST posts arbitrary bodies to the REST routes of a gateway with a
// fake embedder and store. Whatever the body, the answer is a 2xx or a
// 4xx with a JSON error body: never a 5xx (a panic becomes INTERNAL, 500),
// never a hang.
func FuzzREST(f *testing.F) {
	img := base64.StdEncoding.EncodeToString(pngImage(f, 3, 2))
	for _, s := range []struct {
		route uint8
		body  string
	}{
		{0, `{"queries":["what is late interaction?"]}`},
		{0, `{"queries":["a","b"],"encoding":"EMBEDDING_ENCODING_FLOAT_LIST","priority":1}`},
		{0, `{"queries":[""]}`},
		{0, `{"queries":"not a list"}`},
		{0, `{"queries":["\ud800"]}`},
		{1, `{"images":["` + img + `"]}`},
		{1, `{"images":["` + img + `","AAAA"],"encoding":7}`},
		{1, `{"images":["not base64!"]}`},
		{2, `{"pages":[{"image":"` + img + `"}],"metadata":{"source":"fuzz"},"idempotencyKey":"k"}`},
		{2, `{"pages":[],"metadata":{"\u0000":"x"}}`},
		{3, `{"query":"late interaction","topK":3,"filters":[{"key":"source","values":["fuzz"]}]}`},
		{3, `{"query":"q","topK":-1}`},
		{3, `{"query":"q","unknownField":true}`},
		{3, `[]`},
		{3, ``},
	} {
		f.Add(s.route, []byte(s.body))
	}
	g := startFuzzGateway(f, Config{MaxImages: 2, MaxImageBytes: 64 << 10, MaxImagePixels: 1 << 16, MaxDocumentPages: 3})
	client := &http.Client{Timeout: 30 * time.Second}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := restRoutes[int(route)%len(restRoutes)]
		resp, err := client.Post(g.baseURL+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("POST %s %q: HTTP %d %s", path, body, resp.StatusCode, out)
		}
	})
}

// FuzzIngestStream plays arbitrary message sequences on
// IngestDocumentStream. Each byte is one step: a header (announcing 0 to
// 7 pages, the limit being 5), a good page, a page that is not an image, a
// truncated image, an empty message, or the end of the client's side.
// Whatever the sequence: the call ends (no hang), with OK or a client
// error, never INTERNAL or UNKNOWN; every document begun is committed or
// aborted; and an OK call committed exactly the pages its header announced.
func FuzzIngestStream(f *testing.F) {
	for _, seed := range [][]byte{
		{6 * 2, 1, 1, 4},    // header(2), page, page, end: OK
		{6 * 3, 1, 4},       // fewer pages than announced
		{1},                 // page before header
		{6 * 1, 1, 1, 4},    // more pages than announced
		{6 * 6},             // over the page limit
		{6 * 2, 2, 1},       // a page that is not an image
		{6 * 2, 5, 1, 4},    // a truncated image
		{6 * 2, 3, 1, 1, 4}, // an empty message
		{6 * 1, 6 * 1},      // a second header
		{4},                 // an empty stream
		{},
	} {
		f.Add(seed)
	}
	good := pngImage(f, 3, 2)
	truncated := good[:len(good)-10]
	g := startFuzzGateway(f, Config{MaxStreamPages: 5, MaxImages: 2})
	f.Fuzz(func(t *testing.T, steps []byte) {
		if len(steps) > 64 {
			steps = steps[:64]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		before := len(g.store.Calls())
		stream, err := g.docs.IngestDocumentStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		announced := int32(-1)
	send:
		for _, b := range steps {
			var msg *colpaliv1.IngestDocumentStreamRequest
			switch b % 6 {
			case 0:
				n := int32(b / 6 % 8)
				if announced < 0 {
					announced = n
				}
				msg = streamHeader(n, "")
			case 1:
				msg = streamPage(good)
			case 2:
				msg = streamPage([]byte("GIF89a not a page"))
			case 3:
				msg = &colpaliv1.IngestDocumentStreamRequest{}
			case 4:
				break send
			case 5:
				msg = streamPage(truncated)
			}
			if err := stream.Send(msg); err != nil {
				break // the server ended the call; Recv tells why
			}
		}
		_ = stream.CloseSend() // after the steps, as after an explicit end
		var last *colpaliv1.IngestDocumentStreamResponse
		for {
			resp, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				switch status.Code(err) {
				case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted:
				default:
					t.Fatalf("steps %v: %v", steps, err)
				}
				last = nil
				break
			}
			last = resp
		}
		calls := g.store.Calls()[before:]
		begun := count(calls, "begin")
		if ended := count(calls, "commit") + count(calls, "abort"); begun != ended {
			t.Fatalf("steps %v: store calls %v: %d documents begun, %d committed or aborted", steps, calls, begun, ended)
		}
		if last != nil {
			if doc := last.GetDocument(); doc == nil || doc.GetPageCount() != announced || count(calls, "commit") != 1 {
				t.Fatalf("steps %v: OK with last message %v, store calls %v; want the %d announced pages committed", steps, last, calls, announced)
			}
		}
	})
}

// startFuzzGateway is startDocGateway logging nowhere (a fuzz target may
// not log through its *testing.F once fuzzing), with an embedder that
// takes any item.
func startFuzzGateway(f *testing.F, cfg Config) *docGateway {
	fs, emb := newFakeStore(), &fakeEmbedder{}
	g := startGateway(f, cfg, Deps{Embedder: emb, Documents: fs, Logger: slog.New(slog.DiscardHandler)})
	return &docGateway{testGateway: g, docs: colpaliv1.NewDocumentServiceClient(g.conn), store: fs, emb: emb}
}

func count(calls []string, name string) int {
	n := 0
	for _, c := range calls {
		if c == name {
			n++
		}
	}
	return n
}
