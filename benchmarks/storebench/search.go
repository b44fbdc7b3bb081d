package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/morphik-org/colpali-gateway/store"
)

// searchRun is one setting's searches: recall@10 against exact MaxSim
// (over the pages the filter admits), and each round's latencies.
type searchRun struct {
	label  string
	recall float64
	rounds [][]time.Duration
	stages map[string]time.Duration // mean per search, from the store's debug log
	// CPU per search: this process's (the gateway's part) and the
	// postgres processes' (see postgresCPU).
	cpu, dbCPU time.Duration
}

// A filter of the benchmark: the store's, and which pages it admits.
type benchFilter struct {
	name    string
	filters []store.Filter
	keep    func(doc int) bool
}

func searches(ctx context.Context, url string, c *corpus, docOf map[string]int, r *report, logger *slog.Logger) error {
	o := c.o
	rec := newStages(logger.Handler())
	storeLogger := slog.New(rec)
	type job struct {
		st setting
		f  benchFilter
	}
	var jobs []job
	all := benchFilter{name: "", keep: func(int) bool { return true }}
	for _, st := range o.settings {
		jobs = append(jobs, job{st, all})
	}
	jobs = append(jobs,
		job{o.filterSetting, benchFilter{name: "filter half (50% of pages: index, iterative scan)",
			filters: []store.Filter{{Field: "metadata.half", Values: []string{"0"}}}, keep: func(d int) bool { return d%2 == 0 }}},
		job{o.filterSetting, benchFilter{name: "filter rare (1% of pages: exact)",
			filters: []store.Filter{{Field: "metadata.rare", Values: []string{"1"}}}, keep: func(d int) bool { return d%100 == 0 }}},
	)
	for _, j := range jobs {
		ss, err := store.Open(ctx, store.Config{URL: url, Schema: schema, MaxConns: 1, SweepInterval: -1,
			Candidates: j.st.candidates, Rerank: j.st.rerank}, storeLogger)
		if err != nil {
			return err
		}
		run := searchRun{label: j.st.String()}
		if j.f.name != "" {
			run.label += ", " + j.f.name
		}
		var found, wanted int
		// A short warm-up: the first search of a store loads the pool and
		// the catalog, not the data.
		if _, err := ss.Search(ctx, store.DefaultTenant, c.queries[0], store.SearchOptions{TopK: 10, Filters: j.f.filters}); err != nil {
			ss.Close()
			return err
		}
		rec.take()
		cpu0, pg0 := cpuTime(), postgresCPU()
		for round := range o.rounds {
			var lat []time.Duration
			for q, qe := range c.queries {
				t0 := time.Now()
				hits, err := ss.Search(ctx, store.DefaultTenant, qe, store.SearchOptions{TopK: 10, Filters: j.f.filters})
				if err != nil {
					ss.Close()
					return fmt.Errorf("%s: %w", run.label, err)
				}
				lat = append(lat, time.Since(t0))
				if round > 0 {
					continue
				}
				want := c.exactTop(q, 10, func(i int) bool { return j.f.keep(i / o.pagesPerDoc) })
				wanted += len(want)
				for _, h := range hits {
					if d, ok := docOf[h.Document.ID]; ok && slices.Contains(want, d*o.pagesPerDoc+h.Page-1) {
						found++
					}
				}
			}
			run.rounds = append(run.rounds, lat)
		}
		n := time.Duration(o.rounds * len(c.queries))
		run.cpu, run.dbCPU = (cpuTime()-cpu0)/n, (postgresCPU()-pg0)/n
		ss.Close()
		run.stages = rec.take()
		run.recall = float64(found) / float64(max(wanted, 1))
		p50, p95 := run.medians()
		logger.Info("searched", "setting", run.label, "recall@10", fmt.Sprintf("%.3f", run.recall), "p50", ms(p50), "p95", ms(p95), "load", loadavg())
		r.searches = append(r.searches, run)
	}
	return nil
}

// medians returns the median over rounds of each round's p50 and p95.
func (s searchRun) medians() (p50, p95 time.Duration) {
	var a, b []time.Duration
	for _, l := range s.rounds {
		a = append(a, pct(l, 50))
		b = append(b, pct(l, 95))
	}
	return pct(a, 50), pct(b, 50)
}

// spread returns the smallest and largest round p95.
func (s searchRun) spread() (lo, hi time.Duration) {
	var b []time.Duration
	for _, l := range s.rounds {
		b = append(b, pct(l, 95))
	}
	return slices.Min(b), slices.Max(b)
}

// plans records the first stage's plan and cost, as Search runs it
// (with a stored page's encoding for the query's), unfiltered and under
// the half filter.
func plans(ctx context.Context, url string, c *corpus, r *report) error {
	nCand := c.o.filterSetting.candidates
	return withConn(ctx, url, func(conn *pgx.Conn) error {
		var q pgtype.Bits
		if err := conn.QueryRow(ctx, `SELECT fde FROM storebench.pages LIMIT 1`).Scan(&q); err != nil {
			return err
		}
		for _, tc := range []struct{ name, filter string }{
			{"unfiltered", ""},
			{"filter half", ` AND p.document_id IN (SELECT d.id FROM storebench.documents d WHERE d.tenant = $1 AND d.state = 'committed' AND d.metadata ->> 'half' = ANY('{0}'::text[]))`},
		} {
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, fmt.Sprintf(`SELECT set_config('hnsw.ef_search', '%d', true),
					set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.max_scan_tuples', '20000', true),
					set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
					set_config('enable_sort', 'off', true)`, nCand)); err != nil {
					return err
				}
				rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT p.document_id::text, p.page, p.codes FROM storebench.pages p
					WHERE p.tenant = $1 AND p.committed`+tc.filter+` ORDER BY p.fde <~> $3 LIMIT $2`, store.DefaultTenant, nCand, q)
				if err != nil {
					return err
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				for i, l := range lines {
					if len(l) > 140 { // the query's bit string
						lines[i] = l[:120] + "..."
					}
				}
				r.plans = append(r.plans, fmt.Sprintf("%s, %d candidates:\n\n```\n%s\n```\n", tc.name, nCand, strings.Join(lines, "\n")))
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
