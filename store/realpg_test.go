package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/store"
)

// Bugs a real Postgres showed and PGlite hid (issue 14).

// Eight ingestions begun at once with one key: every call is answered as
// a retry would be (the document, or ABORTED to retry later), none with
// the unique index's violation, and one pending document holds the key.
func TestConcurrentBeginSameKey(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{})
	const calls = 8
	// One connection for the checks: the embedded Postgres takes 8.
	conn := sqlConn(t)
	holders := func(key string) int {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM "`+cfg.Schema+`".documents WHERE idempotency_key = $1`, key).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for round := range 3 {
		key := fmt.Sprint("race-", round)
		d := store.NewDocument{Tenant: store.DefaultTenant, IdempotencyKey: key, Metadata: map[string]string{"k": "v"}}
		var wg sync.WaitGroup
		errs := make([]error, calls)
		start := make(chan struct{})
		for i := range calls {
			wg.Go(func() {
				<-start
				_, _, errs[i] = s.BeginDocument(ctx, d)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, errclass.Aborted) {
				t.Errorf("round %d call %d: %v, want success or class Aborted", round, i, err)
			}
		}
		if n := holders(key); n != 1 {
			t.Errorf("round %d: %d documents hold the key, want 1", round, n)
		}
	}

	// A committed document: every racing retry gets it, existing.
	rng := rand.New(rand.NewPCG(14, 1))
	d := store.NewDocument{Tenant: store.DefaultTenant, IdempotencyKey: "race-committed"}
	doc, _, err := s.BeginDocument(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddPages(ctx, d.Tenant, doc.ID, 1, pages(rng, 1, 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitDocument(ctx, d.Tenant, doc.ID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			got, existing, err := s.BeginDocument(ctx, d)
			if err != nil || !existing || got.ID != doc.ID {
				t.Errorf("retry of a committed key: %s existing=%v err=%v, want %s", got.ID, existing, err, doc.ID)
			}
		})
	}
	wg.Wait()

	// Racing requests that differ: each gets a document of its own, ABORTED
	// or ALREADY_EXISTS (ErrConflict), never an internal error.
	var mu sync.Mutex
	classes := map[string]int{}
	start := make(chan struct{})
	for i := range calls {
		wg.Go(func() {
			<-start
			_, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: store.DefaultTenant, IdempotencyKey: "race-differ",
				Metadata: map[string]string{"n": fmt.Sprint(i)}})
			class := "ok"
			switch {
			case errors.Is(err, errclass.Aborted):
				class = "aborted"
			case errors.Is(err, store.ErrConflict):
				class = "conflict"
			case err != nil:
				t.Errorf("racing different requests: %v", err)
			}
			mu.Lock()
			classes[class]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	t.Logf("racing different requests: %v", classes)
	if n := holders("race-differ"); n != 1 {
		t.Errorf("%d documents hold race-differ, want 1", n)
	}
}

// pgvector installed in a schema of its own (Supabase's "extensions"),
// not on the role's search_path: Migrate and Search find it there. This
// needs a database without pgvector and the right to create it, so it
// runs on an embedded PGlite of its own.
func TestVectorInAnotherSchema(t *testing.T) {
	if !usingEmbedded {
		t.Skip("needs a database where pgvector can be installed in another schema (the embedded PGlite)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	srv, err := embeddedpg.Start(ctx, embeddedpg.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	cfg, err := pgx.ParseConfig(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE SCHEMA extensions`,
		`CREATE EXTENSION vector SCHEMA extensions`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	_ = conn.Close(ctx)

	s, err := store.Open(ctx, store.Config{URL: srv.URL(), Schema: "app", MaxConns: 2, SweepInterval: -1}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate with pgvector in schema extensions: %v", err)
	}
	rng := rand.New(rand.NewPCG(14, 2))
	ps := pages(rng, 3, 8)
	doc, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: store.DefaultTenant})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddPages(ctx, store.DefaultTenant, doc.ID, 1, ps); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitDocument(ctx, store.DefaultTenant, doc.ID); err != nil {
		t.Fatal(err)
	}
	// A second store, which never migrated, searches too.
	other, err := store.Open(ctx, store.Config{URL: srv.URL(), Schema: "app", MaxConns: 2, SweepInterval: -1}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for name, st := range map[string]*store.Store{"migrated": s, "not migrated": other} {
		for _, f := range [][]store.Filter{nil, {{Field: "document_id", Values: []string{doc.ID}}}} {
			hits, err := st.Search(ctx, store.DefaultTenant, queryFrom(ps[2], 0, 1), store.SearchOptions{TopK: 1, Filters: f})
			if err != nil || len(hits) != 1 || hits[0].Page != 3 {
				t.Errorf("%s store, filters %v: Search: %+v, %v; want page 3", name, f, hits, err)
			}
		}
	}
}
