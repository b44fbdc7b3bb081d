// Command storebench measures the store's search against exact MaxSim on
// synthetic clustered multi-vector pages, side by side in one run:
// recall@10 of the ANN + rerank Search at several candidate counts, p50/p95
// latency of each and of the exact brute-force scan, ingestion pages per
// second and bytes stored per page.
//
//	go run ./benchmarks/storebench -pages 10000 -patches 256 -seed 1
//
// With no -database-url it starts the embedded PGlite (on a data directory
// on disk); with one it runs on that Postgres (the schema "storebench" is
// dropped and recreated).
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/ingest"
	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

const schema = "storebench"

type options struct {
	pages, patches, pagesPerDoc, queries, queryRows int
	topics, topicsPerPage                           int
	seed                                            uint64
	candidates                                      []int
	databaseURL, dataDir, out                       string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "storebench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("storebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var cands string
	fs.IntVar(&o.pages, "pages", 10000, "pages to ingest")
	fs.IntVar(&o.patches, "patches", 256, "vectors per page (ColPali: 1030)")
	fs.IntVar(&o.pagesPerDoc, "pages-per-doc", 10, "pages per document")
	fs.IntVar(&o.queries, "queries", 50, "queries")
	fs.IntVar(&o.queryRows, "query-rows", 20, "vectors per query")
	fs.IntVar(&o.topics, "topics", 1024, "cluster centres of the synthetic corpus")
	fs.IntVar(&o.topicsPerPage, "topics-per-page", 8, "clusters a page draws its patches from")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed (data and queries)")
	fs.StringVar(&cands, "candidates", "200,400,800", "first-stage candidate counts to compare (comma-separated)")
	fs.StringVar(&o.databaseURL, "database-url", "", "Postgres with pgvector; empty: the embedded PGlite")
	fs.StringVar(&o.dataDir, "data-dir", "", "embedded data directory; empty: a temporary one")
	fs.StringVar(&o.out, "out", "", "write the Markdown report here as well as to stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []error
	for _, c := range strings.Split(cands, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 10 || n > 1000 {
			errs = append(errs, fmt.Errorf("-candidates: %q is not a count in [10, 1000]", c))
		}
		o.candidates = append(o.candidates, n)
	}
	if o.pages < 10 || o.patches < 1 || o.queries < 1 || o.pagesPerDoc < 1 {
		errs = append(errs, errors.New("-pages must be >= 10; -patches, -queries, -pages-per-doc >= 1"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return bench(ctx, o, logger)
}

func bench(ctx context.Context, o options, logger *slog.Logger) error {
	dbName := "real Postgres (-database-url)"
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
		dbName = "embedded PGlite (Postgres 18, pgvector 0.8.7, WebAssembly, data on disk)"
	}
	var version string
	if err := withConn(ctx, url, func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			return err
		}
		return c.QueryRow(ctx, `SELECT version()`).Scan(&version)
	}); err != nil {
		return err
	}

	// Ingest.
	syn := newSynth(o.seed, store.VectorDim, o.patches, o.queryRows, o.topics, o.topicsPerPage)
	s, err := store.Open(ctx, store.Config{URL: url, Schema: schema, MaxConns: 2, SweepInterval: -1}, logger)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	type ref struct {
		doc  string
		page int
	}
	refs := make([]ref, 0, o.pages)
	// Pages go in as the gateway's ingestion writes them: through the
	// ingest package (begin, AddPages per group of the gateway's default
	// -max-images pages, several groups in flight, commit), with an
	// Embedder that hands back the synthetic page each item names.
	emb := &syntheticEmbedder{}
	ing, err := ingest.New(ingest.Config{GroupSize: gateway.DefaultMaxImages}, emb, s, logger)
	if err != nil {
		return err
	}
	var ingestTime time.Duration
	logger.Info("ingesting", "pages", o.pages, "patches", o.patches, "pages_per_doc", o.pagesPerDoc)
	for first := 0; first < o.pages; first += o.pagesPerDoc {
		n := min(o.pagesPerDoc, o.pages-first)
		emb.pages = make([]model.Embedding, n)
		for i := range emb.pages {
			emb.pages[i] = syn.page(o.seed, first+i)
		}
		next := 0
		t0 := time.Now()
		doc, _, err := ing.Ingest(ctx, ingest.Document{
			Tenant: store.DefaultTenant, Metadata: map[string]string{"first_page": strconv.Itoa(first)},
			RequestDigest: fmt.Appendf(nil, "pages %d..", first), PageCount: n,
			Next: func(context.Context) ([]byte, error) {
				next++
				return binary.AppendUvarint(nil, uint64(next-1)), nil
			},
		})
		if err != nil {
			return fmt.Errorf("ingest pages %d..: %w", first, err)
		}
		ingestTime += time.Since(t0)
		for i := range n {
			refs = append(refs, ref{doc.ID, i + 1})
		}
		if (first/o.pagesPerDoc)%100 == 99 {
			logger.Info("ingested", "pages", len(refs), "pages_per_s", float64(len(refs))/ingestTime.Seconds())
		}
	}
	pagesPerSec := float64(o.pages) / ingestTime.Seconds()

	// Storage.
	var pagesBytes, pagesIndexBytes, hnswBytes, docsBytes int64
	if err := withConn(ctx, url, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT pg_total_relation_size('storebench.pages'), pg_indexes_size('storebench.pages'),
			pg_relation_size('storebench.pages_fde_hnsw'), pg_total_relation_size('storebench.documents')`).
			Scan(&pagesBytes, &pagesIndexBytes, &hnswBytes, &docsBytes)
	}); err != nil {
		return err
	}

	// The stored vectors, for the exact scan.
	logger.Info("reading the stored vectors back for the exact scan")
	index := map[ref]int{}
	for i, r := range refs {
		index[r] = i
	}
	stored := make([]model.Embedding, o.pages)
	if err := withConn(ctx, url, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT document_id::text, page, vectors FROM storebench.pages`)
			if err != nil {
				return err
			}
			var r ref
			var b []byte
			_, err = pgx.ForEachRow(rows, []any{&r.doc, &r.page, &b}, func() error {
				stored[index[r]] = store.DecodeFP16(b, store.VectorDim)
				return nil
			})
			return err
		})
	}); err != nil {
		return err
	}

	// Queries and their exact answers.
	rng := rand.New(rand.NewPCG(o.seed, 0x9e3779b97f4a7c15))
	queries := make([]model.Embedding, o.queries)
	exact := make([][]int, o.queries)
	exactLat := make([]time.Duration, o.queries)
	logger.Info("exact MaxSim over all pages", "queries", o.queries)
	for i := range queries {
		queries[i] = syn.query(rng, syn.page(o.seed, rng.IntN(o.pages)))
		t0 := time.Now()
		exact[i] = exactTop(queries[i], stored, 10)
		exactLat[i] = time.Since(t0)
	}

	// The store's Search at each candidate count.
	type result struct {
		candidates int
		recall     float64
		lat        []time.Duration
	}
	var results []result
	var plan string
	for _, c := range o.candidates {
		ss, err := store.Open(ctx, store.Config{URL: url, Schema: schema, MaxConns: 1, Candidates: c, SweepInterval: -1}, logger)
		if err != nil {
			return err
		}
		res := result{candidates: c}
		var hitSum int
		for i, q := range queries {
			t0 := time.Now()
			hits, err := ss.Search(ctx, store.DefaultTenant, q, store.SearchOptions{TopK: 10})
			if err != nil {
				ss.Close()
				return err
			}
			res.lat = append(res.lat, time.Since(t0))
			for _, h := range hits {
				if slices.Contains(exact[i], index[ref{h.Document.ID, h.Page}]) {
					hitSum++
				}
			}
		}
		ss.Close()
		res.recall = float64(hitSum) / float64(10*o.queries)
		results = append(results, res)
		logger.Info("searched", "candidates", c, "recall@10", res.recall, "p50", pct(res.lat, 50))
	}
	if err := withConn(ctx, url, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			// The first stage of store.Search, as it plans here (with the
			// settings Search makes for a query without filters).
			if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off`); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `EXPLAIN (COSTS OFF) SELECT p.document_id, p.page FROM storebench.pages p
				WHERE p.tenant = 'default' AND p.committed
				ORDER BY p.fde <~> $1 LIMIT 400`, pgtype.Bits{Bytes: make([]byte, store.FDEBits/8), Len: store.FDEBits, Valid: true})
			if err != nil {
				return err
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			for i, l := range lines {
				if len(l) > 120 { // the query's bit string
					lines[i] = l[:100] + "..."
				}
			}
			plan = strings.Join(lines, "\n")
			return err
		})
	}); err != nil {
		return err
	}

	// Report.
	var b strings.Builder
	fmt.Fprintf(&b, "## Store search: ANN (HNSW over binarised FDE) + exact MaxSim rerank vs exact brute-force MaxSim\n\n")
	fmt.Fprintf(&b, "Command: `go run ./benchmarks/storebench %s`  \n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "Database: %s — `%s`  \n", dbName, version)
	fmt.Fprintf(&b, "Machine: %d CPUs (GOMAXPROCS %d), %s/%s  \n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "Scale: %d pages x %d vectors x %d dims (%d documents of %d pages); %d queries of %d vectors; seed %d; %d topics, %d per page  \n\n",
		o.pages, o.patches, store.VectorDim, (o.pages+o.pagesPerDoc-1)/o.pagesPerDoc, o.pagesPerDoc, o.queries, o.queryRows, o.seed, o.topics, o.topicsPerPage)
	fmt.Fprintf(&b, "| method | recall@10 | p50 latency | p95 latency | p50 vs exact |\n|---|---|---|---|---|\n")
	ep50 := pct(exactLat, 50)
	fmt.Fprintf(&b, "| exact MaxSim, all %d pages (Go, in memory, %d threads: a lower bound for a scan that reads from the database) | 1.000 | %s | %s | 1x |\n",
		o.pages, runtime.GOMAXPROCS(0), ms(ep50), ms(pct(exactLat, 95)))
	for _, r := range results {
		p50 := pct(r.lat, 50)
		fmt.Fprintf(&b, "| store.Search, %d candidates (HNSW in the database + rerank in Go) | %.3f | %s | %s | %.1fx faster |\n",
			r.candidates, r.recall, ms(p50), ms(pct(r.lat, 95)), float64(ep50)/float64(p50))
	}
	fmt.Fprintf(&b, "\n| ingestion | figure |\n|---|---|\n")
	fmt.Fprintf(&b, "| pages per second (ingest.Service as the gateway runs it, %d-page documents, groups of %d, one client) | %.1f |\n", o.pagesPerDoc, gateway.DefaultMaxImages, pagesPerSec)
	fmt.Fprintf(&b, "| bytes per page, pages table total (heap + TOAST + indexes) | %d |\n", pagesBytes/int64(o.pages))
	fmt.Fprintf(&b, "| of which indexes (HNSW + primary key) | %d (HNSW %d) |\n", pagesIndexBytes/int64(o.pages), hnswBytes/int64(o.pages))
	fmt.Fprintf(&b, "| raw fp16 vectors per page (%d x %d x 2) | %d |\n", o.patches, store.VectorDim, o.patches*store.VectorDim*2)
	fmt.Fprintf(&b, "| documents table per page | %d |\n", docsBytes/int64(o.pages))
	fmt.Fprintf(&b, "\nFirst-stage plan (EXPLAIN):\n\n```\n%s\n```\n", plan)
	report := b.String()
	fmt.Print(report)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(report), 0o644)
	}
	return nil
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

// exactTop returns the indexes of the k pages with the highest exact
// MaxSim, scanning every page on every CPU.
func exactTop(q model.Embedding, pages []model.Embedding, k int) []int {
	scores := make([]float32, len(pages))
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(pages); i += workers {
				scores[i] = store.MaxSim(q, pages[i])
			}
		})
	}
	wg.Wait()
	idx := make([]int, len(pages))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	return idx[:k]
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// syntheticEmbedder stands in for the GPUs: an item is a page's index in
// pages (a uvarint), and its embedding is that precomputed page, so that
// the ingestion's time is the store's and the pipeline's alone.
type syntheticEmbedder struct {
	pages []model.Embedding // of the document being ingested; read-only meanwhile
}

func (e *syntheticEmbedder) Embed(_ context.Context, _ model.Kind, items [][]byte, _ int) ([]model.Embedding, error) {
	out := make([]model.Embedding, len(items))
	for i, item := range items {
		idx, n := binary.Uvarint(item)
		if n <= 0 || idx >= uint64(len(e.pages)) {
			return nil, fmt.Errorf("storebench: item %x names no page", item)
		}
		out[i] = e.pages[idx]
	}
	return out, nil
}
