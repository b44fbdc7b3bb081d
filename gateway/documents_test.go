package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/store"
	"github.com/morphik-org/colpali-gateway/triton"
)

// oneHotEmbedder embeds a page image as one vector of dimension 8 that is
// one-hot at the image's width mod 8, and a query "page-N" as one-hot at N
// mod 8: the page of width N is the query's best match, with score 1, and
// the others score 0.
func oneHotEmbedder() *fakeEmbedder {
	return &fakeEmbedder{embed: func(_ context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error) {
		out := make([]model.Embedding, len(items))
		for i, item := range items {
			hot := 0
			if kind == model.Image {
				cfg, _, err := image.DecodeConfig(bytes.NewReader(item))
				if err != nil {
					return nil, err
				}
				hot = cfg.Width
			} else {
				n, err := strconv.Atoi(strings.TrimPrefix(string(item), "page-"))
				if err != nil {
					return nil, err
				}
				hot = n
			}
			vals := make([]float32, 8)
			vals[hot%8] = 1
			out[i] = model.Embedding{Rows: 1, Dim: 8, Values: vals}
		}
		return out, nil
	}}
}

// docGateway is a gateway with a fake store and a one-hot embedder.
type docGateway struct {
	*testGateway
	docs  colpaliv1.DocumentServiceClient
	store *fakeStore
	emb   *fakeEmbedder
}

func startDocGateway(t testing.TB, cfg Config, fs *fakeStore) *docGateway {
	t.Helper()
	if fs == nil {
		fs = newFakeStore()
	}
	emb := oneHotEmbedder()
	g := startGateway(t, cfg, Deps{Embedder: emb, Documents: fs})
	return &docGateway{testGateway: g, docs: colpaliv1.NewDocumentServiceClient(g.conn), store: fs, emb: emb}
}

// pages returns n PNG pages of widths first, first+1, ...
func pages(t *testing.T, first, n int) []*colpaliv1.Page {
	out := make([]*colpaliv1.Page, n)
	for i := range out {
		out[i] = &colpaliv1.Page{Image: pngImage(t, first+i, 4)}
	}
	return out
}

func TestIngestDocumentInvalidArgument(t *testing.T) {
	g := startDocGateway(t, Config{MaxDocumentPages: 3, MaxImageBytes: 4096, MaxMetadataEntries: 2, MaxMetadataBytes: 20}, nil)
	good := pngImage(t, 8, 8)
	for _, tc := range []struct {
		name   string
		req    *colpaliv1.IngestDocumentRequest
		fields []string
		text   string
	}{
		{"no pages", &colpaliv1.IngestDocumentRequest{}, []string{"pages"}, "at least 1 page"},
		{"too many pages", &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 4)}, []string{"pages"}, "limit is 3 per IngestDocument call"},
		{"page without image", &colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{Image: good}, {}}}, []string{"pages[1].image"}, "empty"},
		{"page not an image", &colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{Image: []byte("%PDF-1.7")}}}, []string{"pages[0].image"}, "not a PNG or JPEG"},
		{"page over the byte limit", &colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{Image: pngImage(t, 90, 90)}}}, []string{"pages[0].image"}, "limit is 4096 bytes"},
		{"too many metadata entries", &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 1), Metadata: map[string]string{"a": "", "b": "", "c": ""}}, []string{"metadata"}, "limit is 2"},
		{"metadata over its size", &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 1), Metadata: map[string]string{"title": strings.Repeat("x", 16)}}, []string{"metadata"}, "21 bytes of keys and values; the limit is 20 bytes"},
		{"empty metadata key", &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 1), Metadata: map[string]string{"": "x"}}, []string{"metadata"}, "empty key"},
		{"metadata key with NUL", &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 1), Metadata: map[string]string{"a\x00": "x"}}, []string{"metadata"}, "NUL"},
		{"idempotency key too long", &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 1), IdempotencyKey: strings.Repeat("k", 257)}, []string{"idempotency_key"}, "limit is 256 bytes"},
		{"several at once", &colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{}, {Image: good}, {}}, IdempotencyKey: strings.Repeat("k", 257)}, []string{"pages[0].image", "pages[2].image", "idempotency_key"}, "pages[0].image: is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.docs.IngestDocument(testContext(t), tc.req)
			checkInvalidArgument(t, err, tc.fields, tc.text)
		})
	}
	if n, calls := g.emb.Calls(), g.store.Calls(); n != 0 || len(calls) != 0 {
		t.Errorf("invalid requests reached the embedder (%d calls) or the store (%v)", n, calls)
	}
}

func TestSearchAndLookupsInvalidArgument(t *testing.T) {
	g := startDocGateway(t, Config{MaxTopK: 20, MaxFilters: 2, MaxQueryBytes: 10}, nil)
	id := newUUID()
	filter := func(field string, values ...string) *colpaliv1.Filter {
		return &colpaliv1.Filter{Field: field, Values: values}
	}
	for _, tc := range []struct {
		name   string
		req    *colpaliv1.SearchRequest
		fields []string
		text   string
	}{
		{"blank query", &colpaliv1.SearchRequest{Query: " "}, []string{"query"}, "empty"},
		{"long query", &colpaliv1.SearchRequest{Query: strings.Repeat("q", 11)}, []string{"query"}, "limit is 10 bytes"},
		{"negative top_k", &colpaliv1.SearchRequest{Query: "page-1", TopK: -1}, []string{"top_k"}, "want 1 to 20"},
		{"top_k over the limit", &colpaliv1.SearchRequest{Query: "page-1", TopK: 21}, []string{"top_k"}, "is 21; want 1 to 20"},
		{"too many filters", &colpaliv1.SearchRequest{Query: "page-1", Filters: []*colpaliv1.Filter{filter("document_id", id), filter("document_id", id), filter("document_id", id)}}, []string{"filters"}, "limit is 2"},
		{"unknown field", &colpaliv1.SearchRequest{Query: "page-1", Filters: []*colpaliv1.Filter{filter("metadata.a", "x"), filter("author", "x")}}, []string{"filters[1].field"}, `unknown field "author"`},
		{"metadata without a key", &colpaliv1.SearchRequest{Query: "page-1", Filters: []*colpaliv1.Filter{filter("metadata.", "x")}}, []string{"filters[0].field"}, "unknown field"},
		{"no values", &colpaliv1.SearchRequest{Query: "page-1", Filters: []*colpaliv1.Filter{filter("metadata.a")}}, []string{"filters[0].values"}, "at least 1 value"},
		{"document id not a UUID", &colpaliv1.SearchRequest{Query: "page-1", Filters: []*colpaliv1.Filter{filter("document_id", id, "nope")}}, []string{"filters[0].values[1]"}, "not a document id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.docs.Search(testContext(t), tc.req)
			checkInvalidArgument(t, err, tc.fields, tc.text)
		})
	}
	t.Run("get without id", func(t *testing.T) {
		_, err := g.docs.GetDocument(testContext(t), &colpaliv1.GetDocumentRequest{})
		checkInvalidArgument(t, err, []string{"document_id"}, "required")
	})
	t.Run("delete with a bad id", func(t *testing.T) {
		_, err := g.docs.DeleteDocument(testContext(t), &colpaliv1.DeleteDocumentRequest{DocumentId: "../etc"})
		checkInvalidArgument(t, err, []string{"document_id"}, "not a document id")
	})
	t.Run("negative page size", func(t *testing.T) {
		_, err := g.docs.ListDocuments(testContext(t), &colpaliv1.ListDocumentsRequest{PageSize: -5})
		checkInvalidArgument(t, err, []string{"page_size"}, "is -5")
	})
	if n, calls := g.emb.Calls(), g.store.Calls(); n != 0 || len(calls) != 0 {
		t.Errorf("invalid requests reached the embedder (%d calls) or the store (%v)", n, calls)
	}

	// The same answers over REST, as HTTP 400 naming the field.
	for _, tc := range []struct{ path, body, text string }{
		{"/v1/documents:search", `{"query":"page-1","topK":21}`, "top_k"},
		{"/v1/documents:search", `{"query":"page-1","filters":[{"field":"author","values":["x"]}]}`, "filters[0].field"},
		{"/v1/documents", `{"pages":[{"image":""}]}`, "pages[0].image"},
	} {
		code, body, _ := g.post(t, tc.path, tc.body)
		if e := decodeRESTError(t, body); code != http.StatusBadRequest || e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, tc.text) {
			t.Errorf("POST %s %s: HTTP %d %s, want 400 naming %s", tc.path, tc.body, code, body, tc.text)
		}
	}
}

func TestStoreErrorsMapToCodes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		code     codes.Code
		httpCode int
		field    string
	}{
		{"not found", fmt.Errorf("document x: %w", store.ErrNotFound), codes.NotFound, http.StatusNotFound, ""},
		{"database down", fmt.Errorf("%w: connection refused", store.ErrUnavailable), codes.Unavailable, http.StatusServiceUnavailable, ""},
		{"key reused", store.ErrConflict, codes.AlreadyExists, http.StatusConflict, ""},
		{"bad page token", fmt.Errorf("%w: not base64", store.ErrInvalidPageToken), codes.InvalidArgument, http.StatusBadRequest, "page_token"},
		{"bad filter", fmt.Errorf("%w: metadata.x", store.ErrInvalidFilter), codes.InvalidArgument, http.StatusBadRequest, "filters"},
		{"anything else", errSentinel, codes.Internal, http.StatusInternalServerError, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeStore()
			fs.list = func(context.Context, string, int, string) ([]store.Document, string, error) { return nil, "", tc.err }
			g := startDocGateway(t, Config{}, fs)
			_, err := g.docs.ListDocuments(testContext(t), &colpaliv1.ListDocumentsRequest{PageToken: "t"})
			if status.Code(err) != tc.code {
				t.Errorf("gRPC: %v, want %v", err, tc.code)
			}
			if tc.field != "" {
				if diff := cmp.Diff([]string{tc.field}, fieldViolations(err)); diff != "" {
					t.Errorf("field violations (-want +got):\n%s", diff)
				}
			}
			code, body := g.get(t, "/v1/documents?pageToken=t")
			if code != tc.httpCode {
				t.Errorf("REST: HTTP %d %s, want %d", code, body, tc.httpCode)
			}
		})
	}
}

func TestUnknownDocumentIsNotFound(t *testing.T) {
	g := startDocGateway(t, Config{}, nil)
	id := newUUID()
	_, err := g.docs.GetDocument(testContext(t), &colpaliv1.GetDocumentRequest{DocumentId: id})
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), id) {
		t.Errorf("GetDocument: %v, want NotFound naming %s", err, id)
	}
	_, err = g.docs.DeleteDocument(testContext(t), &colpaliv1.DeleteDocumentRequest{DocumentId: id})
	if status.Code(err) != codes.NotFound {
		t.Errorf("DeleteDocument: %v, want NotFound", err)
	}
	if code, body := g.get(t, "/v1/documents/"+id); code != http.StatusNotFound {
		t.Errorf("REST GET: HTTP %d %s, want 404", code, body)
	}
}

// TestDatabaseDown: with the database unreachable, ingestion and search
// answer UNAVAILABLE without spending GPU time on the pages, the
// DocumentService's health is NOT_SERVING, and embeddings keep working.
func TestDatabaseDown(t *testing.T) {
	down := fmt.Errorf("%w: dial tcp 127.0.0.1:5432: connection refused", store.ErrUnavailable)
	fs := newFakeStore()
	fs.begin = func(context.Context, store.NewDocument) (store.Document, bool, error) {
		return store.Document{}, false, down
	}
	fs.search = func(context.Context, string, model.Embedding, store.SearchOptions) ([]store.Hit, error) {
		return nil, down
	}
	fs.ping = func(context.Context) error { return down }
	g := startDocGateway(t, Config{}, fs)
	ctx := testContext(t)

	_, err := g.docs.IngestDocument(ctx, &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 2)})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "connection refused") {
		t.Errorf("IngestDocument: %v, want Unavailable", err)
	}
	if n := g.emb.Calls(); n != 0 {
		t.Errorf("the pages were embedded (%d calls) although the database was down", n)
	}
	stream, err := g.docs.IngestDocumentStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Header{Header: &colpaliv1.IngestDocumentHeader{PageCount: 2}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("IngestDocumentStream: %v, want Unavailable", err)
	}
	_, err = g.docs.Search(ctx, &colpaliv1.SearchRequest{Query: "page-1"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Search: %v, want Unavailable", err)
	}
	if code, body, _ := g.post(t, "/v1/documents:search", `{"query":"page-1"}`); code != http.StatusServiceUnavailable {
		t.Errorf("REST search: HTTP %d %s, want 503", code, body)
	}

	if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"page-1"}}); err != nil {
		t.Errorf("EmbedQueries with the database down: %v", err)
	}
	if _, err := g.client.EmbedImages(ctx, &colpaliv1.EmbedImagesRequest{Images: [][]byte{pngImage(t, 3, 3)}}); err != nil {
		t.Errorf("EmbedImages with the database down: %v", err)
	}
	health := healthpb.NewHealthClient(g.conn)
	want := map[string]healthpb.HealthCheckResponse_ServingStatus{
		"":                            healthpb.HealthCheckResponse_SERVING,
		"colpali.v1.EmbeddingService": healthpb.HealthCheckResponse_SERVING,
		"colpali.v1.DocumentService":  healthpb.HealthCheckResponse_NOT_SERVING,
	}
	testutil.Eventually(t, "the health statuses "+fmt.Sprint(want), func() bool {
		for svc, st := range want {
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || resp.GetStatus() != st {
				return false
			}
		}
		return true
	})
	if code, body := g.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with only the database down: HTTP %d %s, want 200", code, body)
	}
}

func TestNoStorageIsUnimplemented(t *testing.T) {
	g := startGateway(t, Config{}, Deps{})
	docs := colpaliv1.NewDocumentServiceClient(g.conn)
	_, err := docs.Search(testContext(t), &colpaliv1.SearchRequest{Query: "q"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "not configured") {
		t.Errorf("Search without storage: %v, want Unimplemented", err)
	}
	if _, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Errorf("EmbedQueries without storage: %v", err)
	}
}

// TestIngestChunksThroughTheEmbedder: a document's pages reach the Embedder
// in calls of at most MaxImages pages, and the store gets them in page order
// before the commit.
func TestIngestChunksThroughTheEmbedder(t *testing.T) {
	g := startDocGateway(t, Config{MaxImages: 4, MaxDocumentPages: 10}, nil)
	var sizes []int
	inner := g.emb.embed
	g.emb.embed = func(ctx context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error) {
		g.emb.mu.Lock()
		sizes = append(sizes, len(items))
		g.emb.mu.Unlock()
		return inner(ctx, kind, items)
	}
	resp, err := g.docs.IngestDocument(testContext(t), &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 10), Metadata: map[string]string{"title": "ten"}})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDocument(); !resp.GetCreated() || d.GetPageCount() != 10 || d.GetMetadata()["title"] != "ten" || !store.ValidDocumentID(d.GetDocumentId()) || d.GetCreateTime() == nil {
		t.Errorf("response %v", resp)
	}
	slices.Sort(sizes)
	if diff := cmp.Diff([]int{2, 4, 4}, sizes); diff != "" {
		t.Errorf("embedder call sizes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"begin", "add 1+4", "add 5+4", "add 9+2", "commit"}, g.store.Calls()); diff != "" {
		t.Errorf("store calls (-want +got):\n%s", diff)
	}
}

// TestIngestFailureAborts: when embedding fails, the pending document is
// aborted and nothing is committed; the client sees the embedder's code.
func TestIngestFailureAborts(t *testing.T) {
	g := startDocGateway(t, Config{MaxImages: 2}, nil)
	g.emb.embed = func(ctx context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error) {
		return nil, fmt.Errorf("%w: colpali_image", router.ErrNotReady)
	}
	_, err := g.docs.IngestDocument(testContext(t), &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 5)})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("IngestDocument: %v, want Unavailable", err)
	}
	if calls := g.store.Calls(); slices.Contains(calls, "commit") || calls[len(calls)-1] != "abort" {
		t.Errorf("store calls %v: want an abort and no commit", calls)
	}
	list, err := g.docs.ListDocuments(testContext(t), &colpaliv1.ListDocumentsRequest{})
	if err != nil || len(list.GetDocuments()) != 0 {
		t.Errorf("ListDocuments after a failed ingestion: %v, %v", list, err)
	}
}

func TestIngestIdempotentRetry(t *testing.T) {
	g := startDocGateway(t, Config{}, nil)
	ctx := testContext(t)
	req := &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 3), IdempotencyKey: "upload-42", Metadata: map[string]string{"title": "t"}}
	first, err := g.docs.IngestDocument(ctx, req)
	if err != nil || !first.GetCreated() {
		t.Fatalf("first ingestion: %v, %v", first, err)
	}
	embedCalls := g.emb.Calls()
	second, err := g.docs.IngestDocument(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if second.GetCreated() || second.GetDocument().GetDocumentId() != first.GetDocument().GetDocumentId() || second.GetDocument().GetPageCount() != 3 {
		t.Errorf("retry answered %v; want the first document (%s) with created false", second, first.GetDocument().GetDocumentId())
	}
	if n := g.emb.Calls(); n != embedCalls {
		t.Errorf("the retry embedded the pages again (%d embedder calls, was %d)", n, embedCalls)
	}
	// The same over REST, and over the stream.
	body := fmt.Sprintf(`{"pages":[{"image":%q}],"idempotencyKey":"upload-42"}`, base64.StdEncoding.EncodeToString(pngImage(t, 2, 2)))
	code, resp, _ := g.post(t, "/v1/documents", body)
	if code != http.StatusOK || !strings.Contains(string(resp), first.GetDocument().GetDocumentId()) || strings.Contains(string(resp), `"created":true`) {
		t.Errorf("REST retry: HTTP %d %s", code, resp)
	}
	stream, err := g.docs.IngestDocumentStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(streamHeader(5, "upload-42")); err != nil {
		t.Fatal(err)
	}
	last, err := stream.Recv()
	if err != nil || last.GetCreated() || last.GetDocument().GetDocumentId() != first.GetDocument().GetDocumentId() {
		t.Fatalf("stream retry: %v, %v", last, err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("stream retry did not end after the document: %v", err)
	}
	list, err := g.docs.ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{})
	if err != nil || len(list.GetDocuments()) != 1 {
		t.Errorf("%d documents after retries (%v), want 1", len(list.GetDocuments()), err)
	}
}

func streamHeader(pageCount int32, key string) *colpaliv1.IngestDocumentStreamRequest {
	return &colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Header{
		Header: &colpaliv1.IngestDocumentHeader{PageCount: pageCount, IdempotencyKey: key, Metadata: map[string]string{"source": "stream"}},
	}}
}

func streamPage(img []byte) *colpaliv1.IngestDocumentStreamRequest {
	return &colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Page{Page: &colpaliv1.Page{Image: img}}}
}

// TestIngestStream sends 10 pages with MaxImages 4 and reads the progress:
// one message when begun, one per stored group of pages, and the document.
func TestIngestStream(t *testing.T) {
	g := startDocGateway(t, Config{MaxImages: 4, MaxDocumentPages: 2}, nil)
	ctx := testContext(t)
	stream, err := g.docs.IngestDocumentStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Send everything at once: progress does not wait for the client.
	pgs := pages(t, 1, 10)
	go func() {
		_ = stream.Send(streamHeader(10, ""))
		for _, p := range pgs {
			if stream.Send(streamPage(p.GetImage())) != nil {
				return
			}
		}
		_ = stream.CloseSend()
	}()
	var stored []int32
	var last *colpaliv1.IngestDocumentStreamResponse
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p := resp.GetProgress(); p.GetPageCount() != 10 || !store.ValidDocumentID(p.GetDocumentId()) || p.GetPagesReceived() < p.GetPagesStored() {
			t.Errorf("progress %v", p)
		}
		stored = append(stored, resp.GetProgress().GetPagesStored())
		last = resp
	}
	if diff := cmp.Diff([]int32{0, 4, 8, 10}, stored); diff != "" {
		t.Errorf("pages stored per message (-want +got):\n%s", diff)
	}
	doc := last.GetDocument()
	if !last.GetCreated() || doc.GetPageCount() != 10 || doc.GetMetadata()["source"] != "stream" || doc.GetDocumentId() != last.GetProgress().GetDocumentId() {
		t.Errorf("last message %v", last)
	}
	// The document is searchable: page 7 (width 7) is the best for "page-7".
	res, err := g.docs.Search(ctx, &colpaliv1.SearchRequest{Query: "page-7", TopK: 1})
	if err != nil || len(res.GetResults()) != 1 || res.GetResults()[0].GetPageNumber() != 7 {
		t.Errorf("Search: %v, %v", res, err)
	}
}

func TestIngestStreamBadInputAborts(t *testing.T) {
	good := pngImage(t, 3, 3)
	for _, tc := range []struct {
		name    string
		msgs    []*colpaliv1.IngestDocumentStreamRequest
		close   bool
		fields  []string
		text    string
		aborted bool
	}{
		{"page before header", []*colpaliv1.IngestDocumentStreamRequest{streamPage(good)}, false, []string{"header"}, "first message must carry the header", false},
		{"no page count", []*colpaliv1.IngestDocumentStreamRequest{streamHeader(0, "")}, false, []string{"header.page_count"}, "want 1 to 5", false},
		{"too many pages", []*colpaliv1.IngestDocumentStreamRequest{streamHeader(6, "")}, false, []string{"header.page_count"}, "limit is 5", false},
		{"empty stream", nil, true, []string{"header"}, "ended before its header", false},
		{"bad page", []*colpaliv1.IngestDocumentStreamRequest{streamHeader(3, ""), streamPage(good), streamPage([]byte("GIF89a"))}, false, []string{"page.image"}, "page 2 is not a PNG or JPEG", true},
		{"second header", []*colpaliv1.IngestDocumentStreamRequest{streamHeader(3, ""), streamHeader(3, "")}, false, []string{"header"}, "second header", true},
		{"fewer pages than announced", []*colpaliv1.IngestDocumentStreamRequest{streamHeader(3, ""), streamPage(good)}, true, []string{"header.page_count"}, "announced 3 pages, but the stream ended after 1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startDocGateway(t, Config{MaxStreamPages: 5}, nil)
			stream, err := g.docs.IngestDocumentStream(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.msgs {
				if err := stream.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			if tc.close {
				_ = stream.CloseSend()
			}
			for err == nil {
				_, err = stream.Recv()
			}
			checkInvalidArgument(t, err, tc.fields, tc.text)
			calls := g.store.Calls()
			if slices.Contains(calls, "commit") || tc.aborted != slices.Contains(calls, "abort") {
				t.Errorf("store calls %v: want no commit, abort %v", calls, tc.aborted)
			}
		})
	}
}

// TestIngestStreamClientCancel: a client that goes away mid-stream leaves
// nothing behind: the pending document (with pages already stored) is
// aborted, never committed.
func TestIngestStreamClientCancel(t *testing.T) {
	g := startDocGateway(t, Config{MaxImages: 2}, nil)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream, err := g.docs.IngestDocumentStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(streamHeader(6, "cancelled")); err != nil {
		t.Fatal(err)
	}
	for _, p := range pages(t, 1, 3) {
		if err := stream.Send(streamPage(p.GetImage())); err != nil {
			t.Fatal(err)
		}
	}
	var id string
	for { // wait until the first two pages are stored
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		id = resp.GetProgress().GetDocumentId()
		if resp.GetProgress().GetPagesStored() == 2 {
			break
		}
	}
	cancel()
	select {
	case aborted := <-g.store.aborted:
		if aborted != id {
			t.Errorf("aborted %s, want %s", aborted, id)
		}
	case <-testContext(t).Done():
		t.Fatal("the pending document was not aborted after the client cancelled")
	}
	if calls := g.store.Calls(); slices.Contains(calls, "commit") {
		t.Errorf("store calls %v: a cancelled ingestion was committed", calls)
	}
	if _, err := g.docs.GetDocument(testContext(t), &colpaliv1.GetDocumentRequest{DocumentId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("GetDocument of the cancelled ingestion: %v, want NotFound", err)
	}
}

// TestIngestStreamTimeout: a stream that stalls past Config.StreamTimeout
// ends with DEADLINE_EXCEEDED and its document is aborted.
func TestIngestStreamTimeout(t *testing.T) {
	g := startDocGateway(t, Config{StreamTimeout: 300 * time.Millisecond}, nil)
	stream, err := g.docs.IngestDocumentStream(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(streamHeader(2, "")); err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("stalled stream: %v, want DeadlineExceeded", err)
	}
	select {
	case <-g.store.aborted:
	case <-testContext(t).Done():
		t.Fatal("the stalled ingestion was not aborted")
	}
}

// TestDocumentsREST runs the whole REST surface: ingest, get, list in
// pages, search with filters, delete.
func TestDocumentsREST(t *testing.T) {
	g := startDocGateway(t, Config{}, nil)
	ingest := func(title string, widths ...int) string {
		var pgs []string
		for _, w := range widths {
			pgs = append(pgs, fmt.Sprintf(`{"image":%q}`, base64.StdEncoding.EncodeToString(pngImage(t, w, 4))))
		}
		code, body, _ := g.post(t, "/v1/documents", fmt.Sprintf(`{"pages":[%s],"metadata":{"title":%q}}`, strings.Join(pgs, ","), title))
		var resp struct {
			Document struct {
				DocumentID string `json:"documentId"`
				PageCount  int    `json:"pageCount"`
			} `json:"document"`
			Created bool `json:"created"`
		}
		if err := json.Unmarshal(body, &resp); code != http.StatusOK || err != nil || !resp.Created || resp.Document.PageCount != len(widths) {
			t.Fatalf("POST /v1/documents: HTTP %d %s", code, body)
		}
		return resp.Document.DocumentID
	}
	a := ingest("a", 1, 2, 3)
	b := ingest("b", 4, 5)
	c := ingest("c", 6)

	code, body := g.get(t, "/v1/documents/"+b)
	if code != http.StatusOK || !strings.Contains(string(body), `"title":"b"`) || !strings.Contains(string(body), `"pageCount":2`) {
		t.Errorf("GET: HTTP %d %s", code, body)
	}

	var ids []string
	token := ""
	for range 3 {
		code, body := g.get(t, "/v1/documents?pageSize=2&pageToken="+token)
		var resp struct {
			Documents []struct {
				DocumentID string `json:"documentId"`
			} `json:"documents"`
			NextPageToken string `json:"nextPageToken"`
		}
		if err := json.Unmarshal(body, &resp); code != http.StatusOK || err != nil {
			t.Fatalf("GET list: HTTP %d %s", code, body)
		}
		for _, d := range resp.Documents {
			ids = append(ids, d.DocumentID)
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	if diff := cmp.Diff([]string{a, b, c}, ids); diff != "" {
		t.Errorf("listed ids (-want +got):\n%s", diff)
	}

	type result struct {
		Document struct {
			DocumentID string            `json:"documentId"`
			Metadata   map[string]string `json:"metadata"`
		} `json:"document"`
		PageNumber int     `json:"pageNumber"`
		Score      float32 `json:"score"`
	}
	search := func(body string) []result {
		code, resp, _ := g.post(t, "/v1/documents:search", body)
		var out struct {
			Results []result `json:"results"`
			Model   string   `json:"model"`
		}
		if err := json.Unmarshal(resp, &out); code != http.StatusOK || err != nil || out.Model != "fake_query" {
			t.Fatalf("search %s: HTTP %d %s", body, code, resp)
		}
		return out.Results
	}
	// Width 5 is page 2 of b.
	res := search(`{"query":"page-5","topK":2}`)
	if len(res) != 2 || res[0].Document.DocumentID != b || res[0].PageNumber != 2 || res[0].Score != 1 || res[0].Document.Metadata["title"] != "b" || res[1].Score != 0 {
		t.Errorf("search page-5: %+v", res)
	}
	// Filtered to a and c, b's best page is out of reach.
	for _, r := range search(`{"query":"page-5","filters":[{"field":"metadata.title","values":["a","c"]}]}`) {
		if r.Document.DocumentID == b {
			t.Errorf("filtered search returned b: %+v", r)
		}
	}
	res = search(fmt.Sprintf(`{"query":"page-2","filters":[{"field":"document_id","values":[%q]}]}`, a))
	if len(res) != 3 || res[0].Document.DocumentID != a || res[0].PageNumber != 2 {
		t.Errorf("search in a: %+v", res)
	}

	req, err := http.NewRequestWithContext(testContext(t), http.MethodDelete, g.baseURL+"/v1/documents/"+b, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE: HTTP %d", resp.StatusCode)
	}
	if code, body := g.get(t, "/v1/documents/"+b); code != http.StatusNotFound {
		t.Errorf("GET after DELETE: HTTP %d %s", code, body)
	}
	for _, r := range search(`{"query":"page-5","topK":10}`) {
		if r.Document.DocumentID == b {
			t.Errorf("search after DELETE returned b: %+v", r)
		}
	}
}

// TestIngestBodyLimit: the REST ingestion route has its own body limit,
// from the gRPC receive limit (counted in base64).
func TestIngestBodyLimit(t *testing.T) {
	g := startDocGateway(t, Config{MaxImages: 1, MaxImageBytes: 1 << 10, MaxRecvMsgSize: 64 << 10}, nil)
	big := fmt.Sprintf(`{"pages":[{"image":%q}]}`, strings.Repeat("A", 256<<10))
	code, body, _ := g.post(t, "/v1/documents", big)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "/v1/documents") {
		t.Errorf("oversized ingestion body: HTTP %d %s, want 413", code, body)
	}
}

// TestDocumentServiceHealthFollowsDatabase: the DocumentService's health
// follows the database, while the overall status stays SERVING.
func TestDocumentServiceHealthFollowsDatabase(t *testing.T) {
	var down atomic.Bool
	fs := newFakeStore()
	fs.ping = func(context.Context) error {
		if down.Load() {
			return store.ErrUnavailable
		}
		return nil
	}
	g := startDocGateway(t, Config{}, fs)
	health := healthpb.NewHealthClient(g.conn)
	ctx := testContext(t)
	expect := func(docs healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		testutil.Eventually(t, "the DocumentService health status "+docs.String(), func() bool {
			overall, err1 := health.Check(ctx, &healthpb.HealthCheckRequest{})
			doc, err2 := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "colpali.v1.DocumentService"})
			return err1 == nil && err2 == nil && overall.GetStatus() == healthpb.HealthCheckResponse_SERVING && doc.GetStatus() == docs
		})
	}
	expect(healthpb.HealthCheckResponse_SERVING)
	down.Store(true)
	expect(healthpb.HealthCheckResponse_NOT_SERVING)
	down.Store(false)
	expect(healthpb.HealthCheckResponse_SERVING)
}

// TestIngestStreamBackendErrorKeepsItsMapping: a backend error met mid-
// stream is mapped like anywhere else (Triton's queue full is
// RESOURCE_EXHAUSTED, not the UNAVAILABLE Triton said), and the document is
// aborted.
func TestIngestStreamBackendErrorKeepsItsMapping(t *testing.T) {
	g := startDocGateway(t, Config{MaxImages: 2}, nil)
	g.emb.embed = func(context.Context, model.Kind, [][]byte) ([]model.Embedding, error) {
		return nil, &triton.Error{Class: triton.ErrOverloaded, Backend: "10.0.0.7:8001", Call: "ModelInfer colpali_image", Status: status.New(codes.Unavailable, "Exceeds maximum queue size")}
	}
	stream, err := g.docs.IngestDocumentStream(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(streamHeader(2, "")); err != nil {
		t.Fatal(err)
	}
	for _, p := range pages(t, 1, 2) {
		if err := stream.Send(streamPage(p.GetImage())); err != nil {
			t.Fatal(err)
		}
	}
	for err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("stream with Triton overloaded: %v, want ResourceExhausted", err)
	}
	if calls := g.store.Calls(); slices.Contains(calls, "commit") || !slices.Contains(calls, "abort") {
		t.Errorf("store calls %v: want an abort and no commit", calls)
	}
}
