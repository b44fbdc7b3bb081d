package store

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/morphik-org/colpali-gateway/model"
)

// MaxQueryVectors bounds a query's vectors (ColPali queries have ~20).
const MaxQueryVectors = 1024

// candidate is a first-stage hit with what the rerank and the answer need.
type candidate struct {
	doc     Document
	page    int
	patches int
	vectors []byte
	score   float32
}

// Search ranks tenant's committed pages against query: HNSW over the
// pages' FDEs inside Postgres picks Config.Candidates pages (at least
// TopK), then exact MaxSim of the query against each candidate's full
// vectors, in Go, orders them. Hits come best first.
func (s *Store) Search(ctx context.Context, tenant string, query model.Embedding, opts SearchOptions) ([]Hit, error) {
	if err := checkEmbedding("query", query); err != nil {
		return nil, err
	}
	if query.Rows > MaxQueryVectors {
		return nil, fmt.Errorf("%w: query: %d vectors, at most %d", ErrInvalidDocument, query.Rows, MaxQueryVectors)
	}
	topK := cmp.Or(opts.TopK, DefaultTopK)
	if topK < 1 || topK > MaxTopK {
		return nil, fmt.Errorf("%w: TopK %d: must be in [1, %d]", ErrInvalidDocument, opts.TopK, MaxTopK)
	}
	nCand := max(s.cfg.Candidates, topK)
	ef := max(s.cfg.EfSearch, nCand)

	args := []any{tenant, fde.bits(fde.page(query)), nCand}
	filter, args, err := filterSQL(opts.Filters, args)
	if err != nil {
		return nil, err
	}
	// The first stage reads pages alone, so that the plan is the HNSW
	// index's ordered scan whatever the statistics say (PGlite has no
	// autovacuum to keep them). Visibility is pages.committed, set in the
	// commit's transaction; filters on documents are a semi-join, checked
	// per candidate the index yields, and pgvector's iterative scan keeps
	// walking the graph until enough candidates pass or
	// hnsw.max_scan_tuples is reached. The full vectors and the documents
	// are then read by primary key for the candidates only.
	sql := s.q(`WITH c AS MATERIALIZED (
			SELECT p.document_id, p.page FROM {pages} p
			WHERE p.tenant = $1 AND p.committed` + filter + `
			ORDER BY p.fde <~> $2 LIMIT $3)
		SELECT d.id::text, d.tenant, coalesce(d.idempotency_key, ''), d.metadata, d.page_count, d.created_at,
			p.page, p.patches, p.vectors
		FROM c
		JOIN {pages} p ON p.tenant = $1 AND p.document_id = c.document_id AND p.page = c.page
		JOIN {documents} d ON d.tenant = $1 AND d.id = c.document_id`)

	var cands []candidate
	err = s.inTx(ctx, readOnly, func(tx pgx.Tx) error {
		// Transaction-scoped settings (SET LOCAL), so nothing leaks into
		// the session that PGlite shares between connections.
		settings := `SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)`
		if len(opts.Filters) == 0 {
			// Without filters the first stage must be the HNSW scan. With
			// missing or stale statistics (PGlite never autovacuums) the
			// planner may prefer reading every page of the tenant and
			// sorting by distance: exact, but linear in the pages. With
			// filters the planner chooses, since a selective filter is
			// best served by that exact path.
			settings += `, set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)`
		}
		if _, err := tx.Exec(ctx, settings, strconv.Itoa(ef)); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		cands, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (candidate, error) {
			var c candidate
			err := r.Scan(&c.doc.ID, &c.doc.Tenant, &c.doc.IdempotencyKey, &c.doc.Metadata, &c.doc.PageCount, &c.doc.CreatedAt,
				&c.page, &c.patches, &c.vectors)
			return c, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: search: %w", err)
	}
	rerank(query, cands)
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(b.score, a.score), strings.Compare(a.doc.ID, b.doc.ID), cmp.Compare(a.page, b.page))
	})
	hits := make([]Hit, 0, min(topK, len(cands)))
	for _, c := range cands[:min(topK, len(cands))] {
		if c.doc.Metadata == nil {
			c.doc.Metadata = map[string]string{}
		}
		hits = append(hits, Hit{Document: c.doc, Page: c.page, Score: c.score})
	}
	return hits, nil
}

// rerank sets each candidate's exact MaxSim score, spreading the
// candidates over the CPUs; it drops their vectors once scored.
func rerank(query model.Embedding, cands []candidate) {
	workers := min(runtime.GOMAXPROCS(0), len(cands))
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				c := &cands[i]
				c.score = MaxSim(query, DecodeFP16(c.vectors, VectorDim))
				c.vectors = nil
			}
		})
	}
	for i := range cands {
		next <- i
	}
	close(next)
	wg.Wait()
}

// filterSQL turns filters into a condition on p (the pages row): its
// document, of the same tenant ($1), matches every filter.
func filterSQL(filters []Filter, args []any) (string, []any, error) {
	if len(filters) == 0 {
		return "", args, nil
	}
	var b strings.Builder
	b.WriteString(" AND p.document_id IN (SELECT d.id FROM {documents} d WHERE d.tenant = $1 AND d.state = 'committed'")
	for _, f := range filters {
		if len(f.Values) == 0 {
			return "", nil, fmt.Errorf("%w: %q: no values", ErrInvalidFilter, f.Field)
		}
		key, isID, known := ParseFilterField(f.Field)
		switch {
		case isID:
			// An id that is not a UUID names no document.
			ids := make([]string, 0, len(f.Values))
			for _, v := range f.Values {
				if ValidDocumentID(v) {
					ids = append(ids, v)
				}
			}
			args = append(args, ids)
			fmt.Fprintf(&b, " AND d.id = ANY($%d::uuid[])", len(args))
		case known:
			args = append(args, key, f.Values)
			fmt.Fprintf(&b, " AND d.metadata ->> $%d = ANY($%d::text[])", len(args)-1, len(args))
		default:
			return "", nil, fmt.Errorf(`%w: unknown field %q: want %q or %q followed by a metadata key`, ErrInvalidFilter, f.Field, FilterDocumentID, FilterMetadataPrefix)
		}
	}
	b.WriteString(")")
	return b.String(), args, nil
}
