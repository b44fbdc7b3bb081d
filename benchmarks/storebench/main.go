// Command storebench measures the store on synthetic clustered
// multi-vector pages, against exact MaxSim over every page:
//
//   - recall@10 and search p50/p95 of store.Search at each setting of its
//     knobs (-settings candidates:rerank,...), unfiltered and under a
//     filter that matches half the corpus (the index path) and one that
//     matches 1% (the exact path), over -rounds rounds of the queries;
//
//   - ingestion through BeginDocument/AddPages/CommitDocument from
//     -ingest-workers clients: pages per second per round, and the
//     gateway process's CPU milliseconds per page;
//
//   - bytes stored per page, and the first stage's plan and cost.
//
//     go run ./benchmarks/storebench -pages 10000 -patches 1030 -seed 1
//
// With no -database-url it starts the embedded PGlite (on a data directory
// on disk); with one it runs on that Postgres (the schema "storebench" is
// dropped and recreated, unless -reuse finds it already holding -pages).
// The exact answers are computed in Go from the generated float32 pages
// (the store keeps fp16), so recall counts every approximation the store
// makes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

const schema = "storebench"

// setting is one point on the recall/latency trade-off.
type setting struct{ candidates, rerank int }

func (s setting) String() string { return fmt.Sprintf("%d:%d", s.candidates, s.rerank) }

type options struct {
	pages, patches, pagesPerDoc, queries, queryRows int
	topics, topicsPerPage                           int
	rounds, ingestWorkers                           int
	seed                                            uint64
	settings                                        []setting
	filterSetting                                   setting
	databaseURL, dataDir, out                       string
	reuse                                           bool
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
	var settings, filterSetting string
	fs.IntVar(&o.pages, "pages", 10000, "pages to ingest")
	fs.IntVar(&o.patches, "patches", 1030, "vectors per page (ColPali: 1030)")
	fs.IntVar(&o.pagesPerDoc, "pages-per-doc", 10, "pages per document")
	fs.IntVar(&o.queries, "queries", 30, "queries")
	fs.IntVar(&o.queryRows, "query-rows", 20, "vectors per query")
	fs.IntVar(&o.topics, "topics", 1024, "cluster centres of the synthetic corpus")
	fs.IntVar(&o.topicsPerPage, "topics-per-page", 8, "clusters a page draws its patches from")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of the queries per setting (and of ingestion)")
	fs.IntVar(&o.ingestWorkers, "ingest-workers", 2, "concurrent ingestion clients")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed (data and queries)")
	fs.StringVar(&settings, "settings", "200:20,400:20,400:40,800:40,800:80,400:400",
		"store settings to compare, candidates:rerank, comma-separated (rerank = candidates: every candidate reranked exactly)")
	fs.StringVar(&filterSetting, "filter-setting", "800:40", "the setting the filtered searches use")
	fs.StringVar(&o.databaseURL, "database-url", "", "Postgres with pgvector; empty: the embedded PGlite")
	fs.StringVar(&o.dataDir, "data-dir", "", "embedded data directory; empty: a temporary one")
	fs.StringVar(&o.out, "out", "", "write the Markdown report here as well as to stdout")
	fs.BoolVar(&o.reuse, "reuse", false, "keep the schema's pages if it already holds -pages of them (searches only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []error
	for _, s := range strings.Split(settings, ",") {
		st, err := parseSetting(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("-settings: %w", err))
		}
		o.settings = append(o.settings, st)
	}
	var err error
	if o.filterSetting, err = parseSetting(filterSetting); err != nil {
		errs = append(errs, fmt.Errorf("-filter-setting: %w", err))
	}
	if o.pages < 100 || o.patches < 1 || o.queries < 1 || o.pagesPerDoc < 1 || o.rounds < 1 || o.ingestWorkers < 1 {
		errs = append(errs, errors.New("-pages must be >= 100; -patches, -queries, -pages-per-doc, -rounds, -ingest-workers >= 1"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return bench(ctx, o, os.Args[1:], logger)
}

func parseSetting(s string) (setting, error) {
	c, r, ok := strings.Cut(strings.TrimSpace(s), ":")
	nc, err1 := strconv.Atoi(c)
	nr, err2 := strconv.Atoi(r)
	if !ok || err1 != nil || err2 != nil || nc < 10 || nc > 1000 || nr < 10 || nr > 1000 {
		return setting{}, fmt.Errorf("%q: want candidates:rerank, each in [10, 1000]", s)
	}
	return setting{nc, nr}, nil
}
