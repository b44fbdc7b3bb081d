package main

import (
	"fmt"
	"runtime"
	"slices"
	"strings"

	"github.com/morphik-org/colpali-gateway/store"
)

type report struct {
	o           options
	args        []string
	db, version string
	load        []string
	reused      bool
	ingestRates []float64  // pages/s per round
	ingestCPUms float64    // process CPU per page during ingestion
	genCPUms    float64    // of which generating the synthetic pages (wall time in the workers)
	callMs      [3]float64 // client wall ms per page in BeginDocument, AddPages, CommitDocument
	ingestDBms  float64    // postgres processes' CPU per page during ingestion
	storedPages int64
	bytes       struct{ total, heap, toast, indexes, hnsw, docs, vectors, codes int64 }
	searches    []searchRun
	plans       []string
}

func (r *report) markdown() string {
	o := r.o
	var b strings.Builder
	fmt.Fprintf(&b, "## %d pages x %d vectors on %s\n\n", o.pages, o.patches, r.db)
	fmt.Fprintf(&b, "Command: `go run ./benchmarks/storebench %s`  \n", strings.Join(redact(r.args), " "))
	fmt.Fprintf(&b, "Database: `%s`  \n", r.version)
	fmt.Fprintf(&b, "Machine: %d CPUs (GOMAXPROCS %d), %s/%s; load average (1, 5, 15 min): %s  \n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, strings.Join(r.load, "; "))
	fmt.Fprintf(&b, "Scale: %d pages x %d vectors x %d dims (%d documents of %d pages); %d queries of %d vectors; seed %d; %d topics, %d per page; %d rounds  \n\n",
		o.pages, o.patches, store.VectorDim, (o.pages+o.pagesPerDoc-1)/o.pagesPerDoc, o.pagesPerDoc, o.queries, o.queryRows, o.seed,
		o.topics, o.topicsPerPage, o.rounds)

	fmt.Fprintf(&b, "### Search (top 10; setting = candidates:rerank)\n\n")
	fmt.Fprintf(&b, "| setting | recall@10 | p50 | p95 | p95 spread over rounds |\n|---|---|---|---|---|\n")
	for _, s := range r.searches {
		p50, p95 := s.medians()
		lo, hi := s.spread()
		fmt.Fprintf(&b, "| %s | %.3f | %s | %s | %s – %s |\n", s.label, s.recall, ms(p50), ms(p95), ms(lo), ms(hi))
	}
	fmt.Fprintf(&b, "\np50 and p95: the median over %d rounds of each round's percentile over %d queries, run one at a time.\n", o.rounds, o.queries)
	fmt.Fprintf(&b, "Recall: against exact MaxSim over every page (every page the filter admits) in float32.\n\n")
	fmt.Fprintf(&b, "Where a search's time goes (mean ms per search, from the store's debug log; first stage = the filter count if any, the HNSW scan and reading the candidates' codes, with the Hamming pass in Go as they arrive; codes = the asymmetric pass (and the Hamming pass when it did not overlap); fetch_rerank = reading the short list's fp16 vectors, with exact MaxSim in Go as they arrive):\n\n")
	fmt.Fprintf(&b, "| setting | %s | CPU: gateway process | CPU: postgres processes |\n|---|%s---|---|\n", strings.Join(stageNames, " | "), strings.Repeat("---|", len(stageNames)))
	for _, s := range r.searches {
		fmt.Fprintf(&b, "| %s |", s.label)
		for _, n := range stageNames {
			fmt.Fprintf(&b, " %.1f |", float64(s.stages[n].Microseconds())/1000)
		}
		db := "n/a"
		if o.databaseURL != "" {
			db = fmt.Sprintf("%.1f", float64(s.dbCPU.Microseconds())/1000)
		}
		fmt.Fprintf(&b, " %.1f | %s |\n", float64(s.cpu.Microseconds())/1000, db)
	}
	b.WriteString("\nCPU columns: CPU time per search, which a loaded machine does not inflate as it does wall time (postgres: every process of that name here, a real Postgres only; n/a on PGlite, whose WebAssembly Postgres runs under node).\n")
	b.WriteString("\n")

	fmt.Fprintf(&b, "### Ingestion and storage\n\n| figure | value |\n|---|---|\n")
	if r.reused {
		fmt.Fprintf(&b, "| ingestion | not measured (-reuse: the pages of an earlier run) |\n")
	} else {
		rates := slices.Clone(r.ingestRates)
		slices.Sort(rates)
		fmt.Fprintf(&b, "| pages per second (BeginDocument, AddPages of %d pages, CommitDocument; %d clients) | %.1f median of %d rounds (%.1f – %.1f) |\n",
			o.pagesPerDoc, o.ingestWorkers, rates[len(rates)/2], len(rates), rates[0], rates[len(rates)-1])
		fmt.Fprintf(&b, "| gateway-side CPU ms per page (process CPU during ingestion, less generating the synthetic pages) | %.1f (%.1f - %.1f) |\n",
			r.ingestCPUms-r.genCPUms, r.ingestCPUms, r.genCPUms)
		if o.databaseURL != "" {
			fmt.Fprintf(&b, "| database CPU ms per page (every postgres process here) | %.1f |\n", r.ingestDBms)
		}
		fmt.Fprintf(&b, "| client wall ms per page in BeginDocument / AddPages (encoding + insert) / CommitDocument (HNSW inserts), summed over clients | %.1f / %.1f / %.1f |\n",
			r.callMs[0], r.callMs[1], r.callMs[2])
	}
	per := func(v int64) int64 { return v / max(r.storedPages, 1) }
	fmt.Fprintf(&b, "| bytes per page, pages table total (heap + TOAST + indexes) | %d |\n", per(r.bytes.total))
	fmt.Fprintf(&b, "| of which heap / TOAST / indexes (HNSW) | %d / %d / %d (%d) |\n", per(r.bytes.heap), per(r.bytes.toast), per(r.bytes.indexes), per(r.bytes.hnsw))
	fmt.Fprintf(&b, "| fp16 vectors per page / codes per page | %d / %d |\n", r.bytes.vectors, r.bytes.codes)
	fmt.Fprintf(&b, "| documents table per page | %d |\n", per(r.bytes.docs))
	fmt.Fprintf(&b, "\n### First stage (EXPLAIN ANALYZE, as Search runs it)\n\n")
	for _, p := range r.plans {
		b.WriteString(p + "\n")
	}
	return b.String()
}

// redact replaces a database URL on the command line (it may hold a
// password) by a variable.
func redact(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		switch {
		case (a == "-database-url" || a == "--database-url") && i+1 < len(out):
			out[i+1] = `"$DATABASE_URL"`
		case strings.HasPrefix(a, "-database-url="), strings.HasPrefix(a, "--database-url="):
			out[i] = `-database-url="$DATABASE_URL"`
		}
	}
	return out
}
