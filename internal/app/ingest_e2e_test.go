package app

// `gateway ingest` against the gateway as Main runs it, and concurrent
// ingestions of one idempotency key, on the embedded Postgres or on
// TEST_DATABASE_URL.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

func TestDocumentsThroughTheCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Speed: 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	// Eight ingestions at once, over the ingest class's first limit: this
	// test is of the store's idempotency, not of admission.
	r := startRun(t, ctx, sim.GRPCAddr(), append(databaseArgs(t, ctx), "-max-images", "4", "-admission-image-initial-limit", "8"), nil)
	docs := colpaliv1.NewDocumentServiceClient(r.conn)
	waitForStorage(t, ctx, docs)

	t.Run("ingest command", func(t *testing.T) {
		dir := t.TempDir()
		for i := range 6 {
			sub := filepath.Join(dir, []string{"alpha", "beta"}[i%2])
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("page-%d.png", i)), noisePNG(t, 40, 56, uint32(100+i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "alpha", "metadata.json"), []byte(`{"title": "Alpha"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		for run := range 2 {
			if err := Main(ctx, []string{"ingest", "-addr", r.grpcAddr, dir}, &logWriter{t}, noEnv); err != nil {
				t.Fatalf("gateway ingest (run %d): %v", run+1, err)
			}
		}
		list, err := docs.ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]*colpaliv1.Document{}
		for _, d := range list.GetDocuments() {
			found[d.GetMetadata()["source"]] = d
		}
		if a, b := found["alpha"], found["beta"]; a.GetPageCount() != 3 || b.GetPageCount() != 3 || a.GetMetadata()["title"] != "Alpha" {
			t.Fatalf("after two runs: alpha %v, beta %v; want one document each, 3 pages", a, b)
		}
		if n := len(list.GetDocuments()); n != 2 {
			t.Errorf("%d documents after two runs of the same folder, want 2", n)
		}
	})

	t.Run("same key at once", func(t *testing.T) {
		req := &colpaliv1.IngestDocumentRequest{
			Pages: []*colpaliv1.Page{{Image: noisePNG(t, 40, 40, 7)}, {Image: noisePNG(t, 40, 40, 8)}}, IdempotencyKey: "same-key-at-once",
		}
		const n = 8
		var wg sync.WaitGroup
		results := make([]*colpaliv1.IngestDocumentResponse, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { results[i], errs[i] = docs.IngestDocument(ctx, req) })
		}
		wg.Wait()
		ids := map[string]bool{}
		created := 0
		for i := range n {
			switch code := status.Code(errs[i]); code {
			case codes.OK:
				ids[results[i].GetDocument().GetDocumentId()] = true
				if results[i].GetCreated() {
					created++
				}
			case codes.Aborted:
				// Lost the race while the winner's document was pending:
				// a retry is answered from the stored document.
			default:
				t.Errorf("call %d: %v; want OK or ABORTED", i, errs[i])
			}
		}
		again, err := docs.IngestDocument(ctx, req)
		if err != nil || again.GetCreated() {
			t.Fatalf("retry after the race: %v, %v", again, err)
		}
		if len(ids) > 1 || created > 1 || (len(ids) == 1 && !ids[again.GetDocument().GetDocumentId()]) {
			t.Errorf("%d document ids, %d created, retry got %s: want one document", len(ids), created, again.GetDocument().GetDocumentId())
		}
	})
}

// logWriter sends a command's output to t.Log.
type logWriter struct{ t *testing.T }

func (w *logWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
