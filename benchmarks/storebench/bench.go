package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

// corpus is the synthetic data and the exact answers.
type corpus struct {
	o       options
	syn     *synth
	queries []model.Embedding
	// scores[q][i]: exact MaxSim of query q with page i (float32 pages).
	scores [][]float32
	// calls: wall time in each ingestion call, summed over the clients.
	calls struct{ begin, add, commit atomic.Int64 }
}

// Page i belongs to document i / pagesPerDoc; its metadata: "half" is
// the document's number mod 2, "rare" is "1" for one document in 100.
func (c *corpus) docMeta(doc int) map[string]string {
	rare := "0"
	if doc%100 == 0 {
		rare = "1"
	}
	return map[string]string{"doc": strconv.Itoa(doc), "half": strconv.Itoa(doc % 2), "rare": rare}
}

func newCorpus(o options, logger *slog.Logger) *corpus {
	c := &corpus{o: o, syn: newSynth(o.seed, store.VectorDim, o.patches, o.queryRows, o.topics, o.topicsPerPage)}
	rng := rand.New(rand.NewPCG(o.seed, 0x9e3779b97f4a7c15))
	for range o.queries {
		c.queries = append(c.queries, c.syn.query(rng, c.syn.page(o.seed, rng.IntN(o.pages))))
	}
	c.scores = make([][]float32, o.queries)
	for q := range c.scores {
		c.scores[q] = make([]float32, o.pages)
	}
	t0 := time.Now()
	logger.Info("exact MaxSim of every query with every page", "pages", o.pages, "queries", o.queries)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < o.pages; i = int(next.Add(1) - 1) {
				p := c.syn.page(o.seed, i)
				for q, qe := range c.queries {
					c.scores[q][i] = store.MaxSim(qe, p)
				}
			}
		})
	}
	wg.Wait()
	logger.Info("exact answers ready", "took", time.Since(t0).Round(time.Second))
	return c
}

// exactTop returns the k best pages of query q among those keep admits.
func (c *corpus) exactTop(q, k int, keep func(page int) bool) []int {
	var idx []int
	for i := range c.o.pages {
		if keep(i) {
			idx = append(idx, i)
		}
	}
	s := c.scores[q]
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case s[a] > s[b]:
			return -1
		case s[a] < s[b]:
			return 1
		}
		return a - b
	})
	return idx[:min(k, len(idx))]
}

func bench(ctx context.Context, o options, args []string, logger *slog.Logger) error {
	r := report{o: o, args: args, load: []string{"start: " + loadavg()}}
	r.db = "real Postgres (-database-url)"
	url := o.databaseURL
	if url == "" {
		dir := o.dataDir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "storebench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		srv, err := embeddedpg.Start(ctx, embeddedpg.Config{Dir: dir, Logger: logger})
		if err != nil {
			return err
		}
		defer func() { _ = srv.Stop() }()
		url = srv.URL()
		r.db = "embedded PGlite (WebAssembly, data on disk)"
	}
	existing := 0
	if err := withConn(ctx, url, func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, `SELECT version()`).Scan(&r.version); err != nil {
			return err
		}
		if o.reuse {
			// No table yet is no error: then there is nothing to reuse.
			_ = c.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.pages WHERE committed`).Scan(&existing)
		}
		if existing == o.pages {
			return nil
		}
		_, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
		return err
	}); err != nil {
		return err
	}
	c := newCorpus(o, logger)
	r.load = append(r.load, "after the exact answers: "+loadavg())

	s, err := store.Open(ctx, store.Config{URL: url, Schema: schema, MaxConns: int32(o.ingestWorkers), SweepInterval: -1}, logger)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	if existing == o.pages {
		logger.Info("reusing the stored pages", "pages", existing)
		r.reused = true
	} else if err := ingest(ctx, s, c, &r, logger); err != nil {
		return err
	}
	r.load = append(r.load, "after ingestion: "+loadavg())

	docOf, err := documentIndex(ctx, url)
	if err != nil {
		return err
	}
	if err := storage(ctx, url, &r); err != nil {
		return err
	}
	if err := searches(ctx, url, c, docOf, &r, logger); err != nil {
		return err
	}
	r.load = append(r.load, "after the searches: "+loadavg())
	if err := plans(ctx, url, c, &r); err != nil {
		return err
	}
	text := r.markdown()
	fmt.Print(text)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(text), 0o644)
	}
	return nil
}

// ingest stores the corpus through the staged API from ingestWorkers
// clients, in rounds of equal size, each timed.
func ingest(ctx context.Context, s *store.Store, c *corpus, r *report, logger *slog.Logger) error {
	o := c.o
	docs := (o.pages + o.pagesPerDoc - 1) / o.pagesPerDoc
	logger.Info("ingesting", "pages", o.pages, "patches", o.patches, "documents", docs, "workers", o.ingestWorkers)
	var genNanos atomic.Int64
	cpu0, pg0 := cpuTime(), postgresCPU()
	for round := range o.rounds {
		lo, hi := docs*round/o.rounds, docs*(round+1)/o.rounds
		next := atomic.Int64{}
		next.Store(int64(lo))
		var wg sync.WaitGroup
		errs := make([]error, o.ingestWorkers)
		t0 := time.Now()
		for w := range o.ingestWorkers {
			wg.Go(func() {
				for d := int(next.Add(1) - 1); d < hi; d = int(next.Add(1) - 1) {
					if err := ingestDoc(ctx, s, c, d, &genNanos); err != nil {
						errs[w] = fmt.Errorf("document %d: %w", d, err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := firstErr(errs); err != nil {
			return err
		}
		pages := min(hi*o.pagesPerDoc, o.pages) - lo*o.pagesPerDoc
		rate := float64(pages) / time.Since(t0).Seconds()
		r.ingestRates = append(r.ingestRates, rate)
		logger.Info("ingestion round", "round", round+1, "pages", pages, "pages_per_s", fmt.Sprintf("%.1f", rate), "load", loadavg())
	}
	cpu := cpuTime() - cpu0
	r.ingestDBms = float64((postgresCPU() - pg0).Milliseconds()) / float64(o.pages)
	r.ingestCPUms = float64(cpu.Milliseconds()) / float64(o.pages)
	r.genCPUms = float64(genNanos.Load()) / 1e6 / float64(o.pages)
	perPage := func(v int64) float64 { return float64(v) / 1e6 / float64(o.pages) }
	r.callMs = [3]float64{perPage(c.calls.begin.Load()), perPage(c.calls.add.Load()), perPage(c.calls.commit.Load())}
	return nil
}

func ingestDoc(ctx context.Context, s *store.Store, c *corpus, d int, genNanos *atomic.Int64) error {
	o := c.o
	first := d * o.pagesPerDoc
	n := min(o.pagesPerDoc, o.pages-first)
	t0 := time.Now()
	ps := make([]model.Embedding, n)
	for i := range ps {
		ps[i] = c.syn.page(o.seed, first+i)
	}
	t1 := time.Now()
	genNanos.Add(int64(t1.Sub(t0)))
	doc, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: store.DefaultTenant,
		IdempotencyKey: "storebench-" + strconv.Itoa(d), Metadata: c.docMeta(d)})
	if err != nil {
		return err
	}
	t2 := time.Now()
	if err := s.AddPages(ctx, store.DefaultTenant, doc.ID, 1, ps); err != nil {
		return err
	}
	t3 := time.Now()
	_, err = s.CommitDocument(ctx, store.DefaultTenant, doc.ID)
	c.calls.begin.Add(int64(t2.Sub(t1)))
	c.calls.add.Add(int64(t3.Sub(t2)))
	c.calls.commit.Add(int64(time.Since(t3)))
	return err
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// documentIndex maps stored document ids to their numbers (metadata "doc").
func documentIndex(ctx context.Context, url string) (map[string]int, error) {
	out := map[string]int{}
	err := withConn(ctx, url, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT id::text, (metadata->>'doc')::int FROM `+schema+`.documents WHERE state = 'committed'`)
		if err != nil {
			return err
		}
		var id string
		var n int
		_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil })
		return err
	})
	return out, err
}

func storage(ctx context.Context, url string, r *report) error {
	return withConn(ctx, url, func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, `ANALYZE `+schema+`.pages; ANALYZE `+schema+`.documents`); err != nil {
			return err
		}
		return c.QueryRow(ctx, `SELECT pg_total_relation_size('storebench.pages'), pg_relation_size('storebench.pages'),
			coalesce(pg_total_relation_size(nullif((SELECT reltoastrelid FROM pg_class WHERE oid = 'storebench.pages'::regclass), 0)), 0),
			pg_indexes_size('storebench.pages'), pg_relation_size('storebench.pages_fde_hnsw'), pg_total_relation_size('storebench.documents'),
			(SELECT avg(octet_length(vectors))::bigint FROM storebench.pages), (SELECT avg(octet_length(codes))::bigint FROM storebench.pages),
			(SELECT count(*) FROM storebench.pages)`).
			Scan(&r.bytes.total, &r.bytes.heap, &r.bytes.toast, &r.bytes.indexes, &r.bytes.hnsw, &r.bytes.docs,
				&r.bytes.vectors, &r.bytes.codes, &r.storedPages)
	})
}

// withConn runs fn on a plain connection that prepares no named statements
// (the embedded Postgres shares one session between connections).
func withConn(ctx context.Context, url string, fn func(*pgx.Conn) error) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return fn(c)
}

// cpuTime is the process's CPU time so far (user + system): the gateway's
// share of the work, without the database's (another process).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// postgresCPU is the CPU time so far of every process named postgres on
// this machine (a real Postgres's backends and helpers; the embedded
// PGlite runs under node and is not counted): the database's share of the
// work, which the machine's load does not inflate as it does wall time.
// Processes that exited in between are missed, so it is a lower bound.
func postgresCPU() time.Duration {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	const ticks = 100 // USER_HZ on Linux
	var total int64
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != "postgres" {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += ut + st
	}
	return time.Duration(total) * time.Second / ticks
}
