package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	neturl "net/url"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

// unitPage returns rows random unit vectors of store.VectorDim.
func unitPage(rng *rand.Rand, rows int) model.Embedding {
	e := model.Embedding{Rows: rows, Dim: store.VectorDim, Values: make([]float32, rows*store.VectorDim)}
	for r := range rows {
		v := e.Values[r*store.VectorDim : (r+1)*store.VectorDim]
		var n float64
		for i := range v {
			v[i] = float32(rng.NormFloat64())
			n += float64(v[i]) * float64(v[i])
		}
		for i := range v {
			v[i] /= float32(math.Sqrt(n))
		}
	}
	return e
}

func pages(rng *rand.Rand, n, rows int) []model.Embedding {
	out := make([]model.Embedding, n)
	for i := range out {
		out[i] = unitPage(rng, rows)
	}
	return out
}

// queryFrom takes rows of p (a query whose best page is p).
func queryFrom(p model.Embedding, rows ...int) model.Embedding {
	q := model.Embedding{Rows: len(rows), Dim: p.Dim}
	for _, r := range rows {
		q.Values = append(q.Values, p.Vector(r)...)
	}
	return q
}

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{})
	// Two more gateways on the same schema migrate at once, then again.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		other, err := store.Open(ctx, cfg, testutil.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		wg.Go(func() { errs[i] = other.Migrate(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Migrate %d: %v", i, err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	migrations, err := filepath.Glob("migrations/*.up.sql")
	if err != nil || len(migrations) == 0 {
		t.Fatalf("migrations/*.up.sql: %d files, %v", len(migrations), err)
	}
	if n := countRows(t, cfg.Schema, "schema_migrations", ""); n != len(migrations) {
		t.Errorf("schema_migrations has %d rows, want %d (each migration once)", n, len(migrations))
	}
	var typ string
	if err := sqlConn(t).QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = ('"'||$1||'".pages')::regclass AND attname = 'fde'`, cfg.Schema).Scan(&typ); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("bit(%d)", store.FDEBits); typ != want {
		t.Errorf("pages.fde is %s, want %s: the migration and the encoder disagree", typ, want)
	}
}

func TestCreateGetListDelete(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{})
	rng := rand.New(rand.NewPCG(1, 2))

	var created []store.Document
	for i := range 5 {
		doc, ok, err := ingestDocument(ctx, s, store.NewDocument{
			Tenant:   store.DefaultTenant,
			Metadata: map[string]string{"title": fmt.Sprint("doc ", i)},
		}, pages(rng, i+1, 16))
		if err != nil || !ok {
			t.Fatalf("ingest %d: created=%v err=%v", i, ok, err)
		}
		if doc.PageCount != i+1 || doc.Tenant != store.DefaultTenant || doc.Metadata["title"] != fmt.Sprint("doc ", i) {
			t.Errorf("ingest %d returned %+v", i, doc)
		}
		created = append(created, doc)
	}

	got, err := s.GetDocument(ctx, store.DefaultTenant, created[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(created[2], got); diff != "" {
		t.Errorf("GetDocument differs from what the commit returned (-want +got):\n%s", diff)
	}

	// List two at a time: every document once, in creation order.
	var listed []store.Document
	token := ""
	for range 10 {
		docs, next, err := s.ListDocuments(ctx, store.DefaultTenant, 2, token)
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, docs...)
		if next == "" {
			break
		}
		token = next
	}
	if diff := cmp.Diff(created, listed); diff != "" {
		t.Errorf("ListDocuments pages (-want +got):\n%s", diff)
	}
	if _, _, err := s.ListDocuments(ctx, store.DefaultTenant, 2, "not-a-token"); !errors.Is(err, store.ErrInvalidPageToken) {
		t.Errorf("ListDocuments with a bad token: %v, want ErrInvalidPageToken", err)
	}

	if err := s.DeleteDocument(ctx, store.DefaultTenant, created[4].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetDocument(ctx, store.DefaultTenant, created[4].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDocument after delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteDocument(ctx, store.DefaultTenant, created[4].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteDocument: %v, want ErrNotFound", err)
	}
	if n := countRows(t, cfg.Schema, "pages", "document_id = $1", created[4].ID); n != 0 {
		t.Errorf("%d pages (with their vectors) left after delete, want 0", n)
	}
	if n := countRows(t, cfg.Schema, "pages", ""); n != 1+2+3+4 {
		t.Errorf("%d pages stored, want 10 (the other documents')", n)
	}
	if _, err := s.GetDocument(ctx, store.DefaultTenant, "not-a-uuid"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDocument(not-a-uuid): %v, want ErrNotFound", err)
	}
}

func TestCreateRejectsBadEmbeddings(t *testing.T) {
	ctx := testutil.Context(t)
	s, _ := newStore(t, store.Config{})
	nan := unitPage(rand.New(rand.NewPCG(1, 1)), 2)
	nan.Values[3] = float32(math.NaN())
	for name, pages := range map[string][]model.Embedding{
		"no pages":  nil,
		"wrong dim": {{Rows: 1, Dim: 64, Values: make([]float32, 64)}},
		"no rows":   {{Rows: 0, Dim: store.VectorDim}},
		"short":     {{Rows: 2, Dim: store.VectorDim, Values: make([]float32, store.VectorDim)}},
		"NaN":       {nan},
	} {
		_, _, err := ingestDocument(ctx, s, store.NewDocument{Tenant: store.DefaultTenant}, pages)
		if !errors.Is(err, store.ErrInvalidDocument) {
			t.Errorf("%s: ingest = %v, want ErrInvalidDocument", name, err)
		}
	}
}

// TestSearchRanksLikeExactMaxSim stores pages whose right answer is known:
// a query made of some of one page's own vectors scores len(query) on that
// page (dot products of unit vectors with themselves) and less elsewhere,
// and the whole ranking must equal exact MaxSim's.
func TestSearchRanksLikeExactMaxSim(t *testing.T) {
	ctx := testutil.Context(t)
	s, _ := newStore(t, store.Config{Candidates: 100})
	rng := rand.New(rand.NewPCG(3, 4))

	type ref struct {
		doc  store.Document
		page int
		emb  model.Embedding
	}
	var all []ref
	for i := range 12 {
		ps := pages(rng, 3, 24)
		doc, _, err := ingestDocument(ctx, s, store.NewDocument{Tenant: store.DefaultTenant,
			Metadata: map[string]string{"group": fmt.Sprint(i % 3)}}, ps)
		if err != nil {
			t.Fatal(err)
		}
		for p, e := range ps {
			all = append(all, ref{doc, p + 1, e})
		}
	}
	target := all[17]
	query := queryFrom(target.emb, 0, 5, 9, 20)

	hits, err := s.Search(ctx, store.DefaultTenant, query, store.SearchOptions{TopK: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 5 {
		t.Fatalf("%d hits, want 5", len(hits))
	}
	if hits[0].Document.ID != target.doc.ID || hits[0].Page != target.page {
		t.Errorf("best hit %s page %d, want %s page %d", hits[0].Document.ID, hits[0].Page, target.doc.ID, target.page)
	}
	if math.Abs(float64(hits[0].Score)-4) > 0.01 {
		t.Errorf("best score %v, want 4 (four unit vectors matched exactly)", hits[0].Score)
	}
	// Exact MaxSim over every page (in fp32) gives the same top 5.
	sort.Slice(all, func(i, j int) bool { return store.MaxSim(query, all[i].emb) > store.MaxSim(query, all[j].emb) })
	for i, h := range hits {
		want := all[i]
		if h.Document.ID != want.doc.ID || h.Page != want.page {
			t.Errorf("hit %d: %s page %d, want %s page %d", i, h.Document.ID, h.Page, want.doc.ID, want.page)
		}
		if exact := store.MaxSim(query, want.emb); math.Abs(float64(h.Score-exact)) > 0.01 {
			t.Errorf("hit %d: score %v, exact MaxSim %v", i, h.Score, exact)
		}
	}

	// Filters: by metadata and by document id.
	hits, err = s.Search(ctx, store.DefaultTenant, query, store.SearchOptions{TopK: 50,
		Filters: []store.Filter{{Field: "metadata.group", Values: []string{"0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 12 { // 4 documents of 3 pages in group 0
		t.Errorf("metadata filter: %d hits, want 12", len(hits))
	}
	for _, h := range hits {
		if h.Document.Metadata["group"] != "0" {
			t.Errorf("metadata filter let through %+v", h.Document)
		}
	}
	hits, err = s.Search(ctx, store.DefaultTenant, query, store.SearchOptions{TopK: 50,
		Filters: []store.Filter{{Field: "document_id", Values: []string{all[30].doc.ID, "junk"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 3 || hits[0].Document.ID != all[30].doc.ID {
		t.Errorf("document_id filter: %d hits (%+v), want the 3 pages of %s", len(hits), hits, all[30].doc.ID)
	}
	_, err = s.Search(ctx, store.DefaultTenant, query, store.SearchOptions{Filters: []store.Filter{{Field: "colour", Values: []string{"x"}}}})
	if !errors.Is(err, store.ErrInvalidFilter) {
		t.Errorf("unknown filter field: %v, want ErrInvalidFilter", err)
	}
	if _, err := s.Search(ctx, store.DefaultTenant, model.Embedding{Rows: 1, Dim: 3, Values: []float32{1, 0, 0}}, store.SearchOptions{}); !errors.Is(err, store.ErrInvalidDocument) {
		t.Errorf("3-d query: %v, want ErrInvalidDocument", err)
	}
}

func TestIdempotentRetry(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{})
	rng := rand.New(rand.NewPCG(5, 6))
	d := store.NewDocument{Tenant: store.DefaultTenant, IdempotencyKey: "upload-1",
		Metadata: map[string]string{"a": "b"}}
	ps := pages(rng, 2, 8)

	first, created, err := ingestDocument(ctx, s, d, ps)
	if err != nil || !created {
		t.Fatalf("first ingest: created=%v err=%v", created, err)
	}
	again, created, err := ingestDocument(ctx, s, d, ps)
	if err != nil || created {
		t.Fatalf("retried ingest: created=%v err=%v, want the existing document", created, err)
	}
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("retry returned another document (-first +retry):\n%s", diff)
	}
	if n := countRows(t, cfg.Schema, "pages", ""); n != 2 {
		t.Errorf("%d pages after a retry, want 2", n)
	}
	// A retry re-embeds its pages: other floats, same request.
	if doc, created, err := ingestDocument(ctx, s, d, pages(rng, 2, 8)); err != nil || created || doc.ID != first.ID {
		t.Errorf("retry with re-embedded pages: %+v created=%v err=%v, want the first document", doc, created, err)
	}
	for name, other := range map[string]struct {
		d     store.NewDocument
		pages []model.Embedding
	}{
		"other metadata":   {store.NewDocument{Tenant: d.Tenant, IdempotencyKey: d.IdempotencyKey, Metadata: map[string]string{"a": "c"}}, ps},
		"other page count": {d, ps[:1]},
		"other digest":     {store.NewDocument{Tenant: d.Tenant, IdempotencyKey: d.IdempotencyKey, Metadata: d.Metadata, RequestDigest: []byte{1}}, ps},
	} {
		if _, _, err := ingestDocument(ctx, s, other.d, other.pages); !errors.Is(err, store.ErrConflict) {
			t.Errorf("same key, %s: %v, want ErrConflict", name, err)
		}
	}

	// Concurrent requests with one key make at most one document. A staged
	// ingestion whose pending document a concurrent one discarded fails
	// with ErrNotFound, and one that loses the race for the key while the
	// winner is in flight with an errclass.Aborted error (the gateway
	// answers ABORTED for both, and its client retries); never a raw
	// unique violation. Those that succeed agree, and a retry afterwards
	// finds the one document.
	d.IdempotencyKey = "upload-2"
	var wg sync.WaitGroup
	var createdCount atomic.Int32
	ids := make([]string, 4)
	for i := range ids {
		wg.Go(func() {
			doc, created, err := ingestDocument(ctx, s, d, ps)
			if err != nil {
				if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, errclass.Aborted) {
					t.Errorf("concurrent ingest: %v, want success or a discarded pending document", err)
				}
				return
			}
			ids[i] = doc.ID
			if created {
				createdCount.Add(1)
			}
		})
	}
	wg.Wait()
	final, _, err := ingestDocument(ctx, s, d, ps)
	if err != nil {
		t.Fatalf("ingest after the race: %v", err)
	}
	for _, id := range ids {
		if id != "" && id != final.ID {
			t.Errorf("concurrent same-key ingestions returned ids %v, then %s; want one id", ids, final.ID)
		}
	}
	if createdCount.Load() > 1 {
		t.Errorf("%d concurrent same-key ingestions created a document, want at most 1", createdCount.Load())
	}
	if n := countRows(t, cfg.Schema, "documents", "idempotency_key = $1", d.IdempotencyKey); n != 1 {
		t.Errorf("%d documents hold key %s, want 1", n, d.IdempotencyKey)
	}
}

func TestStagedIngestion(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{})
	rng := rand.New(rand.NewPCG(7, 8))
	ps := pages(rng, 3, 8)
	tenant := store.DefaultTenant

	doc, existing, err := s.BeginDocument(ctx, store.NewDocument{Tenant: tenant, IdempotencyKey: "stream-1", Metadata: map[string]string{"k": "v"}})
	if err != nil || existing {
		t.Fatalf("BeginDocument: existing=%v err=%v", existing, err)
	}
	if err := s.AddPages(ctx, tenant, doc.ID, 1, ps[:2]); err != nil {
		t.Fatal(err)
	}
	// Pending: invisible everywhere.
	if _, err := s.GetDocument(ctx, tenant, doc.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDocument of a pending document: %v, want ErrNotFound", err)
	}
	if docs, _, _ := s.ListDocuments(ctx, tenant, 10, ""); len(docs) != 0 {
		t.Errorf("ListDocuments shows a pending document: %+v", docs)
	}
	if hits, err := s.Search(ctx, tenant, queryFrom(ps[0], 0, 1), store.SearchOptions{}); err != nil || len(hits) != 0 {
		t.Errorf("Search finds a pending document: %+v, %v", hits, err)
	}
	// A gap cannot be committed.
	if err := s.AddPages(ctx, tenant, doc.ID, 4, ps[2:3]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitDocument(ctx, tenant, doc.ID); !errors.Is(err, store.ErrInvalidDocument) {
		t.Errorf("commit with page 3 missing: %v, want ErrInvalidDocument", err)
	}
	// Pages 2 (again: a retry replaces it) and 3 fill the gap.
	if err := s.AddPages(ctx, tenant, doc.ID, 2, ps[1:3]); err != nil {
		t.Fatal(err)
	}
	committed, err := s.CommitDocument(ctx, tenant, doc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if committed.PageCount != 4 {
		t.Errorf("committed PageCount %d, want 4", committed.PageCount)
	}
	again, err := s.CommitDocument(ctx, tenant, doc.ID)
	if err != nil || again.ID != doc.ID {
		t.Errorf("second CommitDocument: %+v, %v", again, err)
	}
	hits, err := s.Search(ctx, tenant, queryFrom(ps[1], 0, 1, 2), store.SearchOptions{TopK: 1})
	if err != nil || len(hits) != 1 || hits[0].Document.ID != doc.ID || hits[0].Page != 2 {
		t.Errorf("Search after commit: %+v, %v; want page 2 of %s", hits, err, doc.ID)
	}
	if err := s.AddPages(ctx, tenant, doc.ID, 5, ps[:1]); !errors.Is(err, store.ErrConflict) {
		t.Errorf("AddPages to a committed document: %v, want ErrConflict", err)
	}
	if err := s.AbortDocument(ctx, tenant, doc.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("AbortDocument of a committed document: %v, want ErrConflict", err)
	}
	// The key now names a committed document: Begin returns it.
	same, existing, err := s.BeginDocument(ctx, store.NewDocument{Tenant: tenant, IdempotencyKey: "stream-1", Metadata: map[string]string{"k": "v"}})
	if err != nil || !existing || same.ID != doc.ID {
		t.Errorf("BeginDocument with a committed key: %+v existing=%v err=%v", same, existing, err)
	}

	// A pending document left by a crashed attempt is begun afresh.
	crashed, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: tenant, IdempotencyKey: "stream-2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddPages(ctx, tenant, crashed.ID, 1, ps[:1]); err != nil {
		t.Fatal(err)
	}
	fresh, existing, err := s.BeginDocument(ctx, store.NewDocument{Tenant: tenant, IdempotencyKey: "stream-2"})
	if err != nil || existing || fresh.ID == crashed.ID {
		t.Errorf("BeginDocument over a pending attempt: %+v existing=%v err=%v", fresh, existing, err)
	}
	if n := countRows(t, cfg.Schema, "pages", "document_id = $1", crashed.ID); n != 0 {
		t.Errorf("the abandoned attempt left %d pages", n)
	}
	if err := s.AbortDocument(ctx, tenant, fresh.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.AbortDocument(ctx, tenant, fresh.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second AbortDocument: %v, want ErrNotFound", err)
	}
}

func TestSweepPending(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{PendingTTL: 50 * time.Millisecond, SweepInterval: -1})
	doc, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: store.DefaultTenant})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddPages(ctx, store.DefaultTenant, doc.ID, 1, pages(rand.New(rand.NewPCG(1, 1)), 1, 4)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	n, err := s.SweepPending(ctx)
	if err != nil || n != 1 {
		t.Fatalf("SweepPending = %d, %v; want 1", n, err)
	}
	if c := countRows(t, cfg.Schema, "pages", ""); c != 0 {
		t.Errorf("%d pages left after the sweep", c)
	}
}

// TestTenantIsolation: tenant B never sees, finds, lists, deletes or
// writes tenant A's documents.
func TestTenantIsolation(t *testing.T) {
	ctx := testutil.Context(t)
	s, _ := newStore(t, store.Config{})
	rng := rand.New(rand.NewPCG(9, 10))
	ps := pages(rng, 2, 8)
	a, _, err := ingestDocument(ctx, s, store.NewDocument{Tenant: "tenant-a", IdempotencyKey: "k"}, ps)
	if err != nil {
		t.Fatal(err)
	}
	pending, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: "tenant-a"})
	if err != nil {
		t.Fatal(err)
	}
	const b = "tenant-b"
	if hits, err := s.Search(ctx, b, queryFrom(ps[0], 0, 1), store.SearchOptions{TopK: 10}); err != nil || len(hits) != 0 {
		t.Errorf("B's Search: %+v, %v; want nothing", hits, err)
	}
	if _, err := s.GetDocument(ctx, b, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B's Get of A's document: %v, want ErrNotFound", err)
	}
	if docs, _, err := s.ListDocuments(ctx, b, 10, ""); err != nil || len(docs) != 0 {
		t.Errorf("B's List: %+v, %v; want nothing", docs, err)
	}
	if err := s.DeleteDocument(ctx, b, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B's Delete of A's document: %v, want ErrNotFound", err)
	}
	if err := s.AddPages(ctx, b, pending.ID, 1, ps[:1]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B's AddPages to A's pending document: %v, want ErrNotFound", err)
	}
	if _, err := s.CommitDocument(ctx, b, pending.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B's Commit of A's pending document: %v, want ErrNotFound", err)
	}
	if err := s.AbortDocument(ctx, b, pending.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B's Abort of A's pending document: %v, want ErrNotFound", err)
	}
	// The same idempotency key in B is B's own.
	bDoc, created, err := ingestDocument(ctx, s, store.NewDocument{Tenant: b, IdempotencyKey: "k"}, ps)
	if err != nil || !created || bDoc.ID == a.ID {
		t.Errorf("B's ingest with A's key: %+v created=%v err=%v; want a new document", bDoc, created, err)
	}
	// A still has everything.
	if _, err := s.GetDocument(ctx, "tenant-a", a.ID); err != nil {
		t.Errorf("A's document after B's attempts: %v", err)
	}
	hits, err := s.Search(ctx, "tenant-a", queryFrom(ps[0], 0, 1), store.SearchOptions{TopK: 10})
	if err != nil || len(hits) != 2 || hits[0].Document.ID != a.ID {
		t.Errorf("A's Search: %+v, %v; want A's two pages", hits, err)
	}
}

// cutProxy forwards TCP to target and, once armed, drops both sides after
// limit more bytes from the client: the connection dies mid-request. The
// path stays cut: later connections are closed at once. (pgx cancels the
// query of a broken connection over a new one and waits, up to 15 s, for
// the server to close it; PGlite never answers a cancel request, so a
// cancel forwarded to it held the test for 15 s.)
type cutProxy struct {
	ln     net.Listener
	target string
	limit  atomic.Int64 // < 0: not armed
	cut    atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.limit.Store(-1)
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

func (p *cutProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			_ = client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(client, server); _ = client.Close() })
		p.wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					if lim := p.limit.Load(); lim >= 0 && p.limit.Add(-int64(n)) < 0 {
						p.cut.Store(true)
						_ = client.Close()
						_ = server.Close()
						return
					}
					if _, werr := server.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					_ = server.Close()
					return
				}
			}
		})
	}
}

// TestConnectionKilledMidIngestion cuts the database connection in the
// middle of an AddPages: the caller gets ErrUnavailable, only the pages
// acknowledged before it remain, and nothing of the document is visible.
func TestConnectionKilledMidIngestion(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{})
	host, err := hostPort(testDatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startCutProxy(t, host)
	viaProxy := cfg
	viaProxy.URL = replaceHost(testDatabaseURL, proxy.ln.Addr().String())
	cut, err := store.Open(ctx, viaProxy, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	if err := cut.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(11, 12))
	// 6 x 8 KiB of fp16 vectors: storing a page is heavy under -race
	// (64 KiB pages took 1 s each at load 12 on 2 cores; with 10 pages of
	// 16 KiB in the cut AddPages the test took 12 s of its 20 with four busy
	// loops beside it), and neither size nor count matters, only that the
	// cut falls inside a transaction.
	big := pages(rng, 6, 32)
	// Pages 1-2 are committed by their AddPages; the AddPages cut in the
	// middle (after 16 KiB, 2 of its 4 pages: inside its transaction)
	// leaves none of its own pages.
	doc, _, err := cut.BeginDocument(ctx, store.NewDocument{Tenant: store.DefaultTenant})
	if err != nil {
		t.Fatal(err)
	}
	if err := cut.AddPages(ctx, store.DefaultTenant, doc.ID, 1, big[:2]); err != nil {
		t.Fatal(err)
	}
	proxy.limit.Store(16 << 10)
	if err := cut.AddPages(ctx, store.DefaultTenant, doc.ID, 3, big[2:]); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("AddPages over a cut connection: %v, want ErrUnavailable", err)
	}
	if n := countRows(t, cfg.Schema, "pages", "document_id = $1", doc.ID); n != 2 {
		t.Errorf("%d pages after the cut AddPages, want the 2 acknowledged before it", n)
	}
	if _, err := s.GetDocument(ctx, store.DefaultTenant, doc.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the interrupted document is visible: %v", err)
	}
	// The database is fine afterwards.
	if _, _, err := ingestDocument(ctx, s, store.NewDocument{Tenant: store.DefaultTenant}, big[:1]); err != nil {
		t.Errorf("ingest after the cut: %v", err)
	}
}

func TestDatabaseDownIsUnavailable(t *testing.T) {
	ctx := testutil.Context(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	s, err := store.Open(ctx, store.Config{URL: "postgres://postgres@" + addr + "/postgres?sslmode=disable"}, testutil.Logger(t))
	if err != nil {
		t.Fatalf("Open must not need the database: %v", err)
	}
	defer s.Close()
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping: %v, want ErrUnavailable", err)
	}
	_, _, err = s.BeginDocument(ctx, store.NewDocument{Tenant: store.DefaultTenant})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("BeginDocument: %v, want ErrUnavailable", err)
	}
	if err := s.Migrate(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Migrate: %v, want ErrUnavailable", err)
	}
}

// TestAcknowledgedIngestionSurvivesRestart stops the database after an
// acknowledged commit and finds the document after a restart.
func TestAcknowledgedIngestionSurvivesRestart(t *testing.T) {
	if !usingEmbedded {
		t.Skip("TEST_DATABASE_URL is set: this test restarts an embedded server, which make test always runs")
	}
	dir := t.TempDir()
	pgCfg := embeddedpg.Config{Dir: dir, Logger: testutil.Logger(t), StartTimeout: testutil.StartTimeout}
	srv, err := embeddedpg.Start(t.Context(), pgCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t) // once the server is up: see testutil.StartTimeout
	cfg := store.Config{URL: srv.URL(), SweepInterval: -1}
	s, err := store.Open(ctx, cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ps := pages(rand.New(rand.NewPCG(13, 14)), 2, 8)
	doc, _, err := ingestDocument(ctx, s, store.NewDocument{Tenant: store.DefaultTenant}, ps)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	srv, err = embeddedpg.Start(t.Context(), pgCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	ctx = testutil.Context(t)
	cfg.URL = srv.URL()
	s, err = store.Open(ctx, cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetDocument(ctx, store.DefaultTenant, doc.ID)
	if err != nil || got.PageCount != 2 {
		t.Fatalf("after restart: %+v, %v", got, err)
	}
	hits, err := s.Search(ctx, store.DefaultTenant, queryFrom(ps[1], 0, 1), store.SearchOptions{TopK: 1})
	if err != nil || len(hits) != 1 || hits[0].Page != 2 {
		t.Errorf("Search after restart: %+v, %v", hits, err)
	}
}

func hostPort(url string) (string, error) {
	u, err := neturl.Parse(url)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

func replaceHost(url, host string) string {
	u, _ := neturl.Parse(url)
	u.Host = host
	return u.String()
}

// ingestDocument writes d with pages by the staged path the gateway's
// ingestion takes (BeginDocument, AddPages, CommitDocument), aborting on a
// failure; created is false for the committed document d's idempotency key
// already names. Without a RequestDigest, d's is its page count, as a
// stream's is in the gateway.
func ingestDocument(ctx context.Context, s *store.Store, d store.NewDocument, pages []model.Embedding) (doc store.Document, created bool, err error) {
	if d.RequestDigest == nil {
		d.RequestDigest = fmt.Appendf(nil, "%d pages", len(pages))
	}
	doc, existing, err := s.BeginDocument(ctx, d)
	if err != nil || existing {
		return doc, false, err
	}
	if len(pages) > 0 {
		err = s.AddPages(ctx, d.Tenant, doc.ID, 1, pages)
	}
	if err == nil {
		doc, err = s.CommitDocument(ctx, d.Tenant, doc.ID)
	}
	if err != nil {
		_ = s.AbortDocument(context.WithoutCancel(ctx), d.Tenant, doc.ID)
		return store.Document{}, false, err
	}
	return doc, true, nil
}
