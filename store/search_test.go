package store_test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

type storedPage struct {
	doc  store.Document
	page int
	emb  model.Embedding
}

// ingest stores docs documents of perDoc pages through the staged path,
// metadata "group" = document number mod groups.
func ingest(t *testing.T, s *store.Store, rng *rand.Rand, docs, perDoc, rows, groups int) []storedPage {
	t.Helper()
	ctx := testutil.Context(t)
	var all []storedPage
	for i := range docs {
		doc, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: store.DefaultTenant,
			Metadata: map[string]string{"group": fmt.Sprint(i % groups)}})
		if err != nil {
			t.Fatal(err)
		}
		ps := pages(rng, perDoc, rows)
		if err := s.AddPages(ctx, store.DefaultTenant, doc.ID, 1, ps); err != nil {
			t.Fatal(err)
		}
		if doc, err = s.CommitDocument(ctx, store.DefaultTenant, doc.ID); err != nil {
			t.Fatal(err)
		}
		for p, e := range ps {
			all = append(all, storedPage{doc, p + 1, e})
		}
	}
	return all
}

// The three stages: a short Rerank list still finds the exact top hits,
// filters take the exact path when selective and the index when not, and
// a page without codes (stored before they existed) is still found.
func TestSearchStages(t *testing.T) {
	ctx := testutil.Context(t)
	s, cfg := newStore(t, store.Config{Candidates: 60, Rerank: 8}) // Hamming keeps 32, asymmetric 8
	rng := rand.New(rand.NewPCG(14, 3))
	all := ingest(t, s, rng, 20, 4, 32, 2) // 80 pages, groups 0 and 1 of 40 each

	exactTop := func(q model.Embedding, keep func(storedPage) bool) []storedPage {
		var c []storedPage
		for _, p := range all {
			if keep(p) {
				c = append(c, p)
			}
		}
		sort.Slice(c, func(i, j int) bool { return store.MaxSim(q, c[i].emb) > store.MaxSim(q, c[j].emb) })
		return c
	}
	for i, target := range []storedPage{all[5], all[42], all[77]} {
		q := queryFrom(target.emb, 1, 7, 11, 19, 23)
		for _, tc := range []struct {
			name    string
			filters []store.Filter
			keep    func(storedPage) bool
		}{
			{"no filter", nil, func(storedPage) bool { return true }},
			// 40 pages match: all of them (no more than Candidates).
			{"group filter", []store.Filter{{Field: "metadata.group", Values: []string{target.doc.Metadata["group"]}}},
				func(p storedPage) bool { return p.doc.Metadata["group"] == target.doc.Metadata["group"] }},
			// All 80 pages match, more than Candidates: the index, iteratively.
			{"wide filter", []store.Filter{{Field: "metadata.group", Values: []string{"0", "1"}}},
				func(storedPage) bool { return true }},
			// 4 pages match: all of them, exactly.
			{"document filter", []store.Filter{{Field: "document_id", Values: []string{target.doc.ID}}},
				func(p storedPage) bool { return p.doc.ID == target.doc.ID }},
		} {
			hits, err := s.Search(ctx, store.DefaultTenant, q, store.SearchOptions{TopK: 3, Filters: tc.filters})
			if err != nil {
				t.Fatalf("query %d, %s: %v", i, tc.name, err)
			}
			want := exactTop(q, tc.keep)
			if len(hits) != min(3, len(want)) {
				t.Fatalf("query %d, %s: %d hits, want %d", i, tc.name, len(hits), min(3, len(want)))
			}
			if hits[0].Document.ID != target.doc.ID || hits[0].Page != target.page {
				t.Errorf("query %d, %s: best hit %s/%d, want %s/%d", i, tc.name, hits[0].Document.ID, hits[0].Page, target.doc.ID, target.page)
			}
			for _, h := range hits {
				if !tc.keep(storedPage{doc: h.Document}) && tc.filters != nil {
					t.Errorf("query %d, %s: hit %s/%d does not match the filter", i, tc.name, h.Document.ID, h.Page)
				}
			}
		}
	}

	// A page without codes goes straight to the exact rerank.
	legacy := all[60]
	if _, err := sqlConn(t).Exec(ctx, `UPDATE "`+cfg.Schema+`".pages SET codes = NULL WHERE document_id = $1 AND page = $2`,
		legacy.doc.ID, legacy.page); err != nil {
		t.Fatal(err)
	}
	hits, err := s.Search(ctx, store.DefaultTenant, queryFrom(legacy.emb, 0, 3, 8), store.SearchOptions{TopK: 1})
	if err != nil || len(hits) != 1 || hits[0].Document.ID != legacy.doc.ID || hits[0].Page != legacy.page {
		t.Errorf("page without codes: %+v, %v; want %s/%d", hits, err, legacy.doc.ID, legacy.page)
	}
}
