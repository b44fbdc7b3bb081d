package gateway

// End-to-end tests of the DocumentService over the real store: the gateway,
// the router and a Triton simulator, and the embedded Postgres, all on
// loopback.

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/store"
)

// startEmbeddedPostgres starts an in-memory embedded Postgres (its npm
// packages, which `make` installs, are found from the working directory),
// stopped in t.Cleanup.
func startEmbeddedPostgres(t *testing.T) *embeddedpg.Server {
	t.Helper()
	pg, err := embeddedpg.Start(t.Context(), embeddedpg.Config{Logger: testLogger(t), StartTimeout: testutil.StartTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	return pg
}

// TestE2EDatabaseGoesDown: with the database gone, ingestion and search
// answer UNAVAILABLE and embeddings keep being served.
func TestE2EDatabaseGoesDown(t *testing.T) {
	pg := startEmbeddedPostgres(t)
	// PGlite under a loaded machine (and -race) is slow: more time than the
	// usual test context, still bounded.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{URL: pg.URL(), MaxConns: 1}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Speed: 50}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	r := startRouter(t, sim)
	// Health checks (which ping the database's one connection) at a
	// moderate pace, not the 20ms of the other tests.
	g := startGateway(t, Config{HealthInterval: 500 * time.Millisecond}, Deps{Embedder: r, Ready: r.Ready, Documents: st})
	docs := colpaliv1.NewDocumentServiceClient(g.conn)

	req := &colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{Image: pngImage(t, 32, 32)}, {Image: pngImage(t, 33, 32)}}}
	resp, err := docs.IngestDocument(ctx, req)
	if err != nil || resp.GetDocument().GetPageCount() != 2 {
		t.Fatalf("IngestDocument: %v, %v", resp, err)
	}
	res, err := docs.Search(ctx, &colpaliv1.SearchRequest{Query: "a query", TopK: 5})
	if err != nil || len(res.GetResults()) != 2 {
		t.Fatalf("Search: %v, %v", res, err)
	}

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := docs.IngestDocument(ctx, req); status.Code(err) != codes.Unavailable {
		t.Errorf("IngestDocument with the database down: %v, want Unavailable", err)
	}
	if _, err := docs.Search(ctx, &colpaliv1.SearchRequest{Query: "a query"}); status.Code(err) != codes.Unavailable {
		t.Errorf("Search with the database down: %v, want Unavailable", err)
	}
	code, body, _ := g.post(t, "/v1/documents:search", `{"query":"a query"}`)
	if code != 503 || !strings.Contains(string(body), "unavailable") {
		t.Errorf("REST search with the database down: HTTP %d %s, want 503", code, body)
	}
	if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"a query"}}); err != nil {
		t.Errorf("EmbedQueries with the database down: %v", err)
	}
}
