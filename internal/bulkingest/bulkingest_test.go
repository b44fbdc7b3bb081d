package bulkingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// fakeDocuments is a DocumentService that keeps committed documents by
// idempotency key, answers a known key from the header as the gateway
// does, and can be told to fail or to block a document.
type fakeDocuments struct {
	colpaliv1.UnimplementedDocumentServiceServer
	mu        sync.Mutex
	byKey     map[string]stored
	auth      []string
	failTitle string        // a document with this "title" fails INVALID_ARGUMENT after its first page
	block     chan struct{} // when set, streams wait for a page until their context ends
	blocked   chan struct{} // closed when a stream starts waiting on block
	aborted   int           // streams that ended without commit because their context ended
}

type stored struct {
	id       string
	metadata map[string]string
	pages    [][]byte
}

func (f *fakeDocuments) IngestDocumentStream(stream grpc.BidiStreamingServer[colpaliv1.IngestDocumentStreamRequest, colpaliv1.IngestDocumentStreamResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	f.mu.Lock()
	f.auth = append(f.auth, md.Get("authorization")...)
	doc, known := f.byKey[h.GetIdempotencyKey()]
	f.mu.Unlock()
	if known {
		return stream.Send(&colpaliv1.IngestDocumentStreamResponse{Document: &colpaliv1.Document{DocumentId: doc.id, PageCount: int32(len(doc.pages))}})
	}
	var pages [][]byte
	for range h.GetPageCount() {
		if f.block != nil {
			close(f.blocked)
			<-stream.Context().Done()
			f.mu.Lock()
			f.aborted++
			f.mu.Unlock()
			return stream.Context().Err()
		}
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		pages = append(pages, msg.GetPage().GetImage())
		if h.GetMetadata()["title"] == f.failTitle && f.failTitle != "" {
			return status.Error(codes.InvalidArgument, "pages[0].image: not a PNG or JPEG image")
		}
		if err := stream.Send(&colpaliv1.IngestDocumentStreamResponse{Progress: &colpaliv1.IngestProgress{PagesStored: int32(len(pages))}}); err != nil {
			return err
		}
	}
	f.mu.Lock()
	id := "doc-" + h.GetMetadata()["source"]
	f.byKey[h.GetIdempotencyKey()] = stored{id: id, metadata: h.GetMetadata(), pages: pages}
	f.mu.Unlock()
	return stream.Send(&colpaliv1.IngestDocumentStreamResponse{Document: &colpaliv1.Document{DocumentId: id, PageCount: int32(len(pages))}, Created: true})
}

func startFake(t *testing.T, f *fakeDocuments) string {
	t.Helper()
	f.byKey = map[string]stored{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	colpaliv1.RegisterDocumentServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// writeTree writes files (path relative to the root -> content) into a
// new folder.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func noEnv(string) string { return "" }

func TestScanGroupsPagesAndMetadata(t *testing.T) {
	root := writeTree(t, map[string]string{
		"annual/p10.png":        "a10",
		"annual/p2.png":         "a2",
		"annual/p1.jpg":         "a1",
		"annual/notes.txt":      "not a page",
		"annual/metadata.json":  `{"title": "Annual report", "year": "2025"}`,
		"annual/deeper/x.png":   "not read",
		"report-002.png":        "r2",
		"report-001.png":        "r1",
		"report.json":           `{"source": "scanner 3"}`,
		"cover.png":             "c",
		"empty/readme.txt":      "no images",
		"README.md":             "ignored",
		"invoice_10.jpeg":       "i10",
		"invoice_9.jpeg":        "i9",
		"invoice.unrelated.txt": "ignored",
	})
	docs, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range docs {
		var pages []string
		for _, p := range d.Pages {
			rel, _ := filepath.Rel(root, p)
			pages = append(pages, rel)
		}
		got = append(got, d.Name+": "+strings.Join(pages, ",")+" "+d.Metadata["source"]+"/"+d.Metadata["title"])
	}
	want := []string{
		"annual: annual/p1.jpg,annual/p2.png,annual/p10.png annual/Annual report",
		"cover: cover.png cover/",
		"invoice: invoice_9.jpeg,invoice_10.jpeg invoice/",
		"report: report-001.png,report-002.png scanner 3/",
	}
	if !slices.Equal(got, want) {
		t.Errorf("documents:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestScanRefusesBadSidecar(t *testing.T) {
	root := writeTree(t, map[string]string{"a/1.png": "x", "a/metadata.json": `{"pages": 3}`})
	if _, err := Scan(root); err == nil || !strings.Contains(err.Error(), "metadata.json") {
		t.Fatalf("Scan: %v, want an error naming the sidecar", err)
	}
}

func TestIdempotencyKeyFollowsContent(t *testing.T) {
	root := writeTree(t, map[string]string{"a/1.png": "one", "a/2.png": "two"})
	docs, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	k1, err := IdempotencyKey(docs[0])
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := IdempotencyKey(docs[0]); k2 != k1 {
		t.Fatalf("key not stable: %s then %s", k1, k2)
	}
	if err := os.WriteFile(filepath.Join(root, "a/2.png"), []byte("TWO"), 0o644); err != nil {
		t.Fatal(err)
	}
	if k3, _ := IdempotencyKey(docs[0]); k3 == k1 {
		t.Error("a changed page kept the key")
	}
	docs[0].Metadata["title"] = "x"
	if k4, _ := IdempotencyKey(docs[0]); k4 == k1 {
		t.Error("changed metadata kept the key")
	}
}

func TestRunStoresThenSkips(t *testing.T) {
	f := &fakeDocuments{}
	addr := startFake(t, f)
	root := writeTree(t, map[string]string{"a/1.png": "a1", "a/2.png": "a2", "b-1.png": "b1", "c/1.png": "c1"})
	ctx := testutil.Context(t)

	var out, errOut bytes.Buffer
	if err := Run(ctx, []string{"-addr", addr, "-api-key", "cpk_test", root}, &out, &errOut, noEnv); err != nil {
		t.Fatalf("Run: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "stored 3 documents (4 pages), skipped 0 already stored, failed 0") {
		t.Errorf("summary %q", out.String())
	}
	if got := strings.Count(errOut.String(), "stored  "); got != 3 {
		t.Errorf("progress lines (not a terminal): %d 'stored', want 3:\n%s", got, errOut.String())
	}
	if a := f.byKey; len(a) != 3 {
		t.Fatalf("%d documents stored, want 3", len(a))
	}
	for _, d := range f.byKey {
		if d.metadata["source"] == "a" && (string(d.pages[0]) != "a1" || string(d.pages[1]) != "a2") {
			t.Errorf("document a pages %q, want in order", d.pages)
		}
	}
	if len(f.auth) != 3 || f.auth[0] != "Bearer cpk_test" {
		t.Errorf("authorization sent: %q", f.auth)
	}

	out.Reset()
	errOut.Reset()
	if err := Run(ctx, []string{"-addr", addr, root}, &out, &errOut, noEnv); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if !strings.Contains(out.String(), "stored 0 documents (0 pages), skipped 3 already stored, failed 0") {
		t.Errorf("second summary %q", out.String())
	}
}

func TestRunReportsFailuresAndGoesOn(t *testing.T) {
	f := &fakeDocuments{failTitle: "bad"}
	addr := startFake(t, f)
	root := writeTree(t, map[string]string{"a/1.png": "a1", "b/1.png": "b1", "b/metadata.json": `{"title": "bad"}`, "c/1.png": "c1"})
	var out, errOut bytes.Buffer
	err := Run(testutil.Context(t), []string{"-addr", addr, "-parallel", "1", root}, &out, &errOut, noEnv)
	if err == nil || !strings.Contains(err.Error(), "1 of 3 documents failed") {
		t.Fatalf("Run: %v, want one failure", err)
	}
	if !strings.Contains(out.String(), "failed b: InvalidArgument: pages[0].image: not a PNG or JPEG image") {
		t.Errorf("summary does not give the reason:\n%s", out.String())
	}
	if len(f.byKey) != 2 {
		t.Errorf("%d documents stored, want the 2 good ones", len(f.byKey))
	}
}

func TestRunUnreadablePageFailsThatDocument(t *testing.T) {
	f := &fakeDocuments{}
	addr := startFake(t, f)
	root := writeTree(t, map[string]string{"a/1.png": "a1", "a/2.png": "a2"})
	docs, _ := Scan(root)
	// The key is computed before streaming; a page that vanishes after that
	// ends the stream and the document is not kept.
	client, conn := newTestClient(t, addr)
	defer conn.Close()
	if err := os.Remove(docs[0].Pages[1]); err != nil {
		t.Fatal(err)
	}
	docs[0].Pages = append(docs[0].Pages[:1], docs[0].Pages[1]) // still listed
	o := ingestOne(testutil.Context(t), client, testutil.Timeout, docs[0], newReporter(io.Discard, false, docs))
	if o.err == nil || !errors.Is(o.err, os.ErrNotExist) && !strings.Contains(o.err.Error(), "no such file") {
		t.Fatalf("outcome %v, want the missing file named", o.err)
	}
	if len(f.byKey) != 0 {
		t.Error("a document with an unreadable page was stored")
	}
}

func newTestClient(t *testing.T, addr string) (colpaliv1.DocumentServiceClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := dial(Config{Addr: addr, MaxMessageBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return colpaliv1.NewDocumentServiceClient(conn), conn
}

func TestInterruptKeepsNothingHalfDone(t *testing.T) {
	f := &fakeDocuments{block: make(chan struct{}), blocked: make(chan struct{})}
	addr := startFake(t, f)
	root := writeTree(t, map[string]string{"a/1.png": "a1", "b/1.png": "b1", "c/1.png": "c1"})
	ctx, cancel := context.WithCancel(testutil.Context(t))
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"-addr", addr, "-parallel", "1", root}, &out, io.Discard, noEnv) }()
	select {
	case <-f.blocked: // the first document is streaming
	case err := <-done:
		t.Fatalf("Run ended before streaming: %v\n%s", err, out.String())
	}
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Run: %v, want interrupted", err)
	}
	if !strings.Contains(out.String(), "interrupted 1, not started 2") {
		t.Errorf("summary %q", out.String())
	}
	testutil.Eventually(t, "the server to see the stream end", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.aborted == 1
	})
	if len(f.byKey) != 0 {
		t.Error("an interrupted document was committed")
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	var errOut bytes.Buffer
	err := Run(testutil.Context(t), []string{"-parallel", "0", "-document-timeout", "-1s"}, io.Discard, &errOut, noEnv)
	for _, want := range []string{"want the folder", "-parallel 0", "-document-timeout -1s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}
