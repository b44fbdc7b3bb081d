package store

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/morphik-org/colpali-gateway/model"
)

// MaxQueryVectors bounds a query's vectors (ColPali queries have ~20).
const MaxQueryVectors = 1024

// searchStagesMsg is the debug log message with a search's stage times.
const searchStagesMsg = "search stages"

// maxScanTuples bounds a filtered first stage's iterative index scan
// (hnsw.max_scan_tuples): how many index tuples pgvector visits looking
// for Candidates pages that pass the filter before it stops with fewer.
const maxScanTuples = 20000

// candidate is a page on its way through the stages.
type candidate struct {
	docID   string
	page    int
	codes   []byte // nil: stored before codes existed
	doc     Document
	vectors []byte
	score   float32
}

// Search ranks tenant's committed pages against query in three stages:
//
//  1. Candidates pages, by HNSW over the pages' FDEs inside Postgres (or,
//     when the tenant's pages under the filter are at most Candidates,
//     all of them, since then that is no dearer and exact);
//  2. the best Rerank of those by MaxSim over their binarised vectors
//     (16 KB a page, codes.go: Hamming by popcount, then the float query
//     against the bits), in Go;
//  3. exact MaxSim against those pages' full vectors, in Go.
//
// Hits come best first.
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
	nRerank := max(s.cfg.Rerank, topK)

	// $1 tenant, $2 the candidate count, then the filter's values.
	filter, args, err := filterSQL(opts.Filters, []any{tenant, nCand})
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	qfde := fde.bits(fde.page(query))
	tEncode := time.Now()

	var cands []candidate
	err = s.inTx(ctx, readOnly, func(tx pgx.Tx) error {
		vs, err := s.vectorSchema(ctx, tx)
		if err != nil {
			return err
		}
		// The pages the search may return (the tenant's, under the
		// filter), counted up to the candidate budget: when all of them
		// fit it, they are the candidates (exact, and no dearer than the
		// index's); otherwise the index is walked, skipping pages that do
		// not match the filter, until Candidates pass. A small tenant, or
		// a selective filter, is thus searched exactly.
		var n int
		if err := tx.QueryRow(ctx, s.q(`SELECT count(*) FROM (SELECT 1 FROM {pages} p
			WHERE p.tenant = $1 AND p.committed`+filter+` LIMIT $2 + 1) m`), args...).Scan(&n); err != nil {
			return err
		}
		exact := n <= nCand
		var sql string
		stageArgs := args
		if exact {
			sql = s.q(`SELECT p.document_id::text, p.page, p.codes FROM {pages} p
				WHERE p.tenant = $1 AND p.committed` + filter + ` LIMIT $2`)
		} else {
			// The index's ordered scan whatever the statistics say (PGlite
			// has no autovacuum to keep them; a real Postgres may misjudge
			// a filter), iterative (pgvector 0.8) so that a filter does not
			// empty the candidate list: relaxed order, since stage 2
			// reorders anyway. Transaction-scoped settings (set_config's
			// true), so nothing leaks into the session that PGlite shares
			// between connections.
			if _, err := tx.Exec(ctx, `SELECT set_config('hnsw.ef_search', $1, true),
				set_config('hnsw.iterative_scan', 'relaxed_order', true),
				set_config('hnsw.max_scan_tuples', $2, true),
				set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
				set_config('enable_sort', 'off', true)`, strconv.Itoa(ef), strconv.Itoa(maxScanTuples)); err != nil {
				return err
			}
			stageArgs = append(slices.Clone(args), qfde)
			sql = s.q(`SELECT p.document_id::text, p.page, p.codes FROM {pages} p
				WHERE p.tenant = $1 AND p.committed` + filter + `
				ORDER BY p.fde OPERATOR(` + quoteIdent(vs) + `.<~>) $` + strconv.Itoa(len(stageArgs)) + ` LIMIT $2`)
		}
		rows, err := tx.Query(ctx, sql, stageArgs...)
		if err != nil {
			return err
		}
		// The Hamming pass, when the list will need it, as rows arrive.
		var score func(*candidate)
		if nCand > asymFactor*nRerank {
			q := codesOf(patchCodes(query))
			score = func(c *candidate) {
				if c.codes != nil {
					c.score = float32(hammingMaxSim(q, c.codes))
				}
			}
		}
		cands, err = scoreRows(rows, make([]candidate, nCand), func(r pgx.Rows, c *candidate) error {
			return r.Scan(&c.docID, &c.page, &c.codes)
		}, score)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: search: %w", err)
	}
	tFirst := time.Now()
	nFirst := len(cands)
	cands = shortlist(query, cands, nRerank, nCand > asymFactor*nRerank)
	tCodes := time.Now()
	if len(cands) == 0 {
		return []Hit{}, nil
	}

	// The short list's full vectors and documents, by primary key.
	ids := make([]string, len(cands))
	nums := make([]int32, len(cands))
	for i, c := range cands {
		ids[i], nums[i] = c.docID, int32(c.page)
	}
	err = s.inTx(ctx, readOnly, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.q(`SELECT d.id::text, d.tenant, coalesce(d.idempotency_key, ''), d.metadata, d.page_count, d.created_at,
				p.page, p.vectors
			FROM unnest($2::uuid[], $3::int[]) AS c(document_id, page)
			JOIN {pages} p ON p.tenant = $1 AND p.document_id = c.document_id AND p.page = c.page
			JOIN {documents} d ON d.tenant = $1 AND d.id = c.document_id`), tenant, ids, nums)
		if err != nil {
			return err
		}
		// Exact MaxSim as each page's vectors arrive.
		cands, err = scoreRows(rows, make([]candidate, len(ids)), func(r pgx.Rows, c *candidate) error {
			return r.Scan(&c.doc.ID, &c.doc.Tenant, &c.doc.IdempotencyKey, &c.doc.Metadata, &c.doc.PageCount, &c.doc.CreatedAt,
				&c.page, &c.vectors)
		}, func(c *candidate) {
			c.score = MaxSim(query, DecodeFP16(c.vectors, VectorDim))
			c.vectors = nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: search: %w", err)
	}
	tFetch := time.Now()
	// Where a search's time goes, for benchmarks/storebench and for a
	// slow query's diagnosis (debug level: nothing is built otherwise).
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.LogAttrs(ctx, slog.LevelDebug, searchStagesMsg,
			slog.Int("candidates", nFirst), slog.Int("reranked", len(cands)),
			slog.Duration("encode", tEncode.Sub(t0)), slog.Duration("first_stage", tFirst.Sub(tEncode)),
			slog.Duration("codes", tCodes.Sub(tFirst)), slog.Duration("fetch_rerank", tFetch.Sub(tCodes)))
	}
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

// asymFactor: the Hamming pass keeps asymFactor x Rerank candidates for
// the asymmetric pass. Hamming MaxSim is the cheaper (~1 ns a vector
// pair against ~4) and coarser of the two: measured on the benchmark's
// corpus, the exact top 10 is all inside Hamming's top 80-160, but only
// 95% inside its top 40, against 99% for the asymmetric score.
const asymFactor = 4

// shortlist keeps the n candidates that score best over their codes, and
// every candidate without codes (stored before they existed: those go to
// the exact rerank as all candidates once did). Two passes: Hamming
// MaxSim (bits against bits, by popcount) keeps asymFactor x n, then
// MaxSim of the float query against the ±1 codes keeps n. hammed: the
// candidates' scores are their Hamming MaxSim already.
func shortlist(query model.Embedding, cands []candidate, n int, hammed bool) []candidate {
	if len(cands) <= n {
		return cands
	}
	var coded, legacy []candidate
	for _, c := range cands {
		if c.codes == nil {
			legacy = append(legacy, c)
		} else {
			coded = append(coded, c)
		}
	}
	if len(coded) > asymFactor*n {
		if !hammed {
			q := codesOf(patchCodes(query))
			parallel(len(coded), func(i int) { coded[i].score = float32(hammingMaxSim(q, coded[i].codes)) })
		}
		coded = bestBy(coded, asymFactor*n)
	}
	if len(coded) > n {
		t := newAsymTables(query)
		parallel(len(coded), func(i int) { coded[i].score = t.maxSim(coded[i].codes) })
		coded = bestBy(coded, n)
	}
	for i := range coded {
		coded[i].codes = nil
	}
	return append(coded, legacy...)
}

// bestBy keeps the n candidates of highest score.
func bestBy(cands []candidate, n int) []candidate {
	slices.SortFunc(cands, func(a, b candidate) int { return cmp.Compare(b.score, a.score) })
	return cands[:min(n, len(cands))]
}

// scoreRows scans rows into buf (the most rows the statement can give)
// and runs score (if not nil) on each row, on the CPUs, as the next rows
// arrive: the database's reading and the gateway's arithmetic overlap.
func scoreRows(rows pgx.Rows, buf []candidate, scan func(pgx.Rows, *candidate) error, score func(*candidate)) ([]candidate, error) {
	defer rows.Close()
	next := make(chan int, len(buf)) // never blocks the reader
	var wg sync.WaitGroup
	if score != nil {
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				for i := range next {
					score(&buf[i])
				}
			})
		}
	}
	n := 0
	var err error
	for err == nil && rows.Next() {
		switch {
		case n == len(buf):
			err = fmt.Errorf("more than the %d rows asked for", len(buf))
		default:
			if err = scan(rows, &buf[n]); err == nil && score != nil {
				next <- n
			}
			n++
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		err = rows.Err()
	}
	return buf[:n], err
}

// parallel runs fn(0..n-1) over the CPUs.
func parallel(n int, fn func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// filterSQL turns filters into a condition on p (the pages row): its
// document, of the same tenant ($1), matches every filter. Its values
// are appended to args and numbered after them.
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
