package app

// End to end through the command: a Triton simulator, the gateway as `Main`
// starts it, and the embedded Postgres in a temporary data directory, all on
// loopback; then the gateway (and its embedded Postgres) restarted on the
// same directory.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

// noisePNG is a w x h PNG of pseudo-random grey pixels seeded by seed.
func noisePNG(t *testing.T, w, h int, seed uint32) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	x := seed*2654435761 + 1
	for i := range img.Pix {
		x = x*1664525 + 1013904223
		img.Pix[i] = uint8(x >> 24)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// maxSim is late interaction over row-major vectors of dim values.
func maxSim(q, p []float32, dim int) float32 {
	var sum float32
	for i := 0; i < len(q); i += dim {
		best := float32(-1e30)
		for j := 0; j < len(p); j += dim {
			var dot float32
			for k := range dim {
				dot += q[i+k] * p[j+k]
			}
			best = max(best, dot)
		}
		sum += best
	}
	return sum
}

func flatten(mv *colpaliv1.MultiVector) []float32 {
	var out []float32
	for _, v := range mv.GetVectors() {
		out = append(out, v.GetValues()...)
	}
	return out
}

// waitForStorage polls ListDocuments until the database is migrated and
// answers (UNAVAILABLE until then).
func waitForStorage(t *testing.T, ctx context.Context, docs colpaliv1.DocumentServiceClient) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := docs.ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{})
		if err == nil {
			return
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("ListDocuments: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("document storage never became available: %v", err)
		case <-tick.C:
		}
	}
}

// databaseArgs are the flags that give a run its database: with
// TEST_DATABASE_URL set (make test-postgres), that Postgres in a schema of
// the test's own, dropped at the end; otherwise the embedded one in a new
// data directory.
func databaseArgs(t *testing.T, ctx context.Context) []string {
	t.Helper()
	url := os.Getenv("TEST_DATABASE_URL")
	if url == "" {
		return []string{"-data-dir", t.TempDir()}
	}
	schema := fmt.Sprintf("app_e2e_%d_%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return []string{"-database-url", url, "-database-schema", schema}
}

// TestDocumentsSurviveRestart ingests two documents (one unary, one
// streamed), finds the page that exact MaxSim ranks best for a query among
// the simulator's embeddings, checks that Search ranks it first, restarts
// the gateway on the same data directory and finds both again.
func TestDocumentsSurviveRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Speed: 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	args := append(databaseArgs(t, ctx), "-max-images", "4")

	r := startRun(t, ctx, sim.GRPCAddr(), args, nil)
	docs := colpaliv1.NewDocumentServiceClient(r.conn)
	waitForStorage(t, ctx, docs)

	var images [][]byte
	for i := range 9 {
		images = append(images, noisePNG(t, 48, 64, uint32(i)))
	}
	var unaryPages []*colpaliv1.Page
	for _, img := range images[:5] {
		unaryPages = append(unaryPages, &colpaliv1.Page{Image: img})
	}
	unary, err := docs.IngestDocument(ctx, &colpaliv1.IngestDocumentRequest{
		Pages: unaryPages, Metadata: map[string]string{"title": "unary"}, IdempotencyKey: "e2e-unary",
	})
	if err != nil || !unary.GetCreated() || unary.GetDocument().GetPageCount() != 5 {
		t.Fatalf("IngestDocument: %v, %v", unary, err)
	}

	stream, err := docs.IngestDocumentStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*colpaliv1.IngestDocumentStreamRequest{{Message: &colpaliv1.IngestDocumentStreamRequest_Header{
		Header: &colpaliv1.IngestDocumentHeader{PageCount: 4, Metadata: map[string]string{"title": "streamed"}},
	}}}
	for _, img := range images[5:] {
		msgs = append(msgs, &colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Page{Page: &colpaliv1.Page{Image: img}}})
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	var streamed *colpaliv1.Document
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("IngestDocumentStream: %v", err)
		}
		if resp.GetDocument() != nil {
			streamed = resp.GetDocument()
		}
	}
	if streamed.GetPageCount() != 4 || streamed.GetMetadata()["title"] != "streamed" {
		t.Fatalf("streamed document %v", streamed)
	}

	// The expected answer, from the embeddings themselves: exact MaxSim of
	// the query against every page.
	const query = "quarterly revenue by region"
	emb := colpaliv1.NewEmbeddingServiceClient(r.conn)
	qe, err := emb.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{query}, Encoding: colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT_LIST})
	if err != nil {
		t.Fatal(err)
	}
	q := flatten(qe.GetEmbeddings()[0])
	dim := int(qe.GetEmbeddings()[0].GetDimension())
	type page struct {
		doc   string
		n     int32
		score float32
	}
	best := page{score: -1e30}
	for i := 0; i < len(images); i += 4 {
		ie, err := emb.EmbedImages(ctx, &colpaliv1.EmbedImagesRequest{Images: images[i:min(i+4, len(images))], Encoding: colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT_LIST})
		if err != nil {
			t.Fatal(err)
		}
		for j, mv := range ie.GetEmbeddings() {
			k := i + j
			p := page{doc: unary.GetDocument().GetDocumentId(), n: int32(k + 1)}
			if k >= 5 {
				p = page{doc: streamed.GetDocumentId(), n: int32(k - 4)}
			}
			if p.score = maxSim(q, flatten(mv), dim); p.score > best.score {
				best = p
			}
		}
	}

	search := func(docs colpaliv1.DocumentServiceClient) {
		t.Helper()
		res, err := docs.Search(ctx, &colpaliv1.SearchRequest{Query: query, TopK: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetResults()) != 3 {
			t.Fatalf("Search returned %d results, want 3", len(res.GetResults()))
		}
		top := res.GetResults()[0]
		if top.GetDocument().GetDocumentId() != best.doc || top.GetPageNumber() != best.n {
			t.Errorf("Search ranks page %d of %s first (score %v); exact MaxSim ranks page %d of %s first (score %v)",
				top.GetPageNumber(), top.GetDocument().GetDocumentId(), top.GetScore(), best.n, best.doc, best.score)
		}
		// Vectors may be stored at half precision: scores agree to about 1%.
		if d := top.GetScore() - best.score; d > 0.01*best.score+0.05 || d < -(0.01*best.score+0.05) {
			t.Errorf("top score %v, exact MaxSim %v", top.GetScore(), best.score)
		}
		for i := 1; i < len(res.GetResults()); i++ {
			if res.GetResults()[i].GetScore() > res.GetResults()[i-1].GetScore() {
				t.Errorf("results not best first: %v", res.GetResults())
			}
		}
	}
	search(docs)

	if err := r.stop(); err != nil {
		t.Fatalf("first run: %v", err)
	}

	// A new gateway (and a new embedded Postgres) on the same database.
	r = startRun(t, ctx, sim.GRPCAddr(), args, nil)
	docs = colpaliv1.NewDocumentServiceClient(r.conn)
	waitForStorage(t, ctx, docs)
	got, err := docs.GetDocument(ctx, &colpaliv1.GetDocumentRequest{DocumentId: streamed.GetDocumentId()})
	if err != nil || got.GetDocument().GetPageCount() != 4 {
		t.Fatalf("GetDocument after restart: %v, %v", got, err)
	}
	list, err := docs.ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{})
	if err != nil || len(list.GetDocuments()) != 2 || list.GetDocuments()[0].GetDocumentId() != unary.GetDocument().GetDocumentId() {
		t.Fatalf("ListDocuments after restart: %v, %v", list, err)
	}
	// The idempotency key still holds after the restart.
	again, err := docs.IngestDocument(ctx, &colpaliv1.IngestDocumentRequest{
		Pages: unaryPages, Metadata: map[string]string{"title": "unary"}, IdempotencyKey: "e2e-unary",
	})
	if err != nil || again.GetCreated() || again.GetDocument().GetDocumentId() != unary.GetDocument().GetDocumentId() {
		t.Errorf("retry after restart: %v, %v", again, err)
	}
	search(docs)
	if err := r.stop(); err != nil {
		t.Fatalf("second run: %v", err)
	}
}
