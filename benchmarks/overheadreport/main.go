// Command overheadreport turns the runs of benchmarks/overhead.sh into the
// Markdown of benchmarks/results/overhead.md: every run, then per level the
// median and range over rounds of each path's CPU per call, throughput and
// latency, and the ratios the issue sets goals for, each computed within a
// round (whose runs saw the same machine) before the median is taken.
//
// Usage:
//
//	overheadreport -runs runs.tsv -clk-tck 100
//
// runs.tsv has one line per run, tab-separated: round, path, level, tool
// (ghz or loadgen), the tool's JSON report, the CPU ticks the measured
// process used during the run, the simulator's, and /proc/loadavg's first
// figure at the run's start.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "overheadreport:", err)
		os.Exit(1)
	}
}

// result is one run, read from its tool's report.
type result struct {
	round               int
	path, level, tool   string
	calls, errors       int64
	rps, p50ms, p99ms   float64
	cpuUS, simUS        float64 // CPU per call of the measured process and of the simulator
	load                float64
	targetTicks, simTix int64
}

func run(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("overheadreport", flag.ContinueOnError)
	runsPath := fs.String("runs", "", "`file` of runs (TSV, see the package doc)")
	clk := fs.Int64("clk-tck", 100, "clock `ticks` per second of /proc/PID/stat (getconf CLK_TCK)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runsPath == "" || *clk <= 0 {
		return errors.New("-runs is required and -clk-tck must be positive")
	}
	f, err := os.Open(*runsPath)
	if err != nil {
		return err
	}
	defer f.Close()
	var results []result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		r, err := parseRun(sc.Text(), *clk)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	writeReport(w, results)
	return nil
}

func parseRun(line string, clk int64) (result, error) {
	f := strings.Split(line, "\t")
	if len(f) != 8 {
		return result{}, fmt.Errorf("run %q: want 8 tab-separated fields, got %d", line, len(f))
	}
	r := result{path: f[1], level: f[2], tool: f[3]}
	var errs []error
	atoi := func(s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		errs = append(errs, err)
		return n
	}
	r.round = int(atoi(f[0]))
	r.targetTicks, r.simTix = atoi(f[5]), atoi(f[6])
	load, err := strconv.ParseFloat(f[7], 64)
	errs = append(errs, err)
	r.load = load
	if err := errors.Join(errs...); err != nil {
		return result{}, fmt.Errorf("run %q: %w", line, err)
	}
	raw, err := os.ReadFile(f[4])
	if err != nil {
		return result{}, err
	}
	switch r.tool {
	case "ghz":
		var g struct {
			Total                  time.Duration    `json:"total"`
			RPS                    float64          `json:"rps"`
			StatusCodeDistribution map[string]int64 `json:"statusCodeDistribution"`
			LatencyDistribution    []struct {
				Percentage int           `json:"percentage"`
				Latency    time.Duration `json:"latency"`
			} `json:"latencyDistribution"`
		}
		if err := json.Unmarshal(raw, &g); err != nil {
			return result{}, fmt.Errorf("%s: %w", f[4], err)
		}
		for code, n := range g.StatusCodeDistribution {
			switch code {
			case "OK":
				r.calls += n
			case "Canceled": // the calls in flight when the run's time ran out
			default:
				r.errors += n
			}
		}
		if g.Total > 0 {
			r.rps = float64(r.calls) / g.Total.Seconds()
		}
		for _, l := range g.LatencyDistribution {
			switch l.Percentage {
			case 50:
				r.p50ms = float64(l.Latency) / 1e6
			case 99:
				r.p99ms = float64(l.Latency) / 1e6
			}
		}
	case "loadgen":
		var l struct {
			ElapsedSeconds float64 `json:"elapsed_seconds"`
			Kinds          map[string]struct {
				Sent  int64   `json:"sent"`
				OK    int64   `json:"ok"`
				P50Ms float64 `json:"p50_ms"`
				P99Ms float64 `json:"p99_ms"`
			} `json:"kinds"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			return result{}, fmt.Errorf("%s: %w", f[4], err)
		}
		q := l.Kinds["query"]
		r.calls, r.errors, r.p50ms, r.p99ms = q.OK, q.Sent-q.OK, q.P50Ms, q.P99Ms
		if l.ElapsedSeconds > 0 {
			r.rps = float64(q.OK) / l.ElapsedSeconds
		}
	default:
		return result{}, fmt.Errorf("run %q: tool %q is not ghz or loadgen", line, r.tool)
	}
	if r.calls > 0 {
		r.cpuUS = float64(r.targetTicks) * 1e6 / float64(clk) / float64(r.calls)
		r.simUS = float64(r.simTix) * 1e6 / float64(clk) / float64(r.calls)
	}
	return r, nil
}

// The paths, in report order, and what each measures.
var paths = []struct{ name, what string }{
	{"direct", "ghz → simulator (ModelInfer); CPU is the simulator's"},
	{"forwarder", "ghz → benchmarks/forwarder → simulator (ModelInfer, raw bytes)"},
	{"gateway-grpc", "ghz → gateway EmbedQueries (gRPC) → simulator"},
	{"gateway-grpc-lg", "loadgen → gateway EmbedQueries (gRPC) → simulator"},
	{"gateway-rest-lg", "loadgen → gateway POST /v1/queries:embed (REST) → simulator"},
	{"baseline-grpc", "ghz → baseline gateway EmbedQueries (gRPC) → simulator"},
	{"baseline-rest-lg", "loadgen → baseline gateway POST /v1/queries:embed (REST) → simulator"},
}

// stat is a median with its range, over rounds.
type stat struct{ med, lo, hi float64 }

func summarize(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med, s[0], s[len(s)-1]}
}

func (s stat) format(prec int) string {
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, s.med, prec, s.lo, prec, s.hi)
}

func writeReport(w io.Writer, results []result) {
	levels := []string{}
	for _, r := range results {
		if !slices.Contains(levels, r.level) {
			levels = append(levels, r.level)
		}
	}
	find := func(round int, path, level string) (result, bool) {
		for _, r := range results {
			if r.round == round && r.path == path && r.level == level {
				return r, true
			}
		}
		return result{}, false
	}
	rounds := []int{}
	for _, r := range results {
		if !slices.Contains(rounds, r.round) {
			rounds = append(rounds, r.round)
		}
	}

	fmt.Fprintln(w, "## Summary: median [min–max] over rounds")
	for _, level := range levels {
		fmt.Fprintf(w, "\n### %s\n\n", level)
		fmt.Fprintln(w, "| path | CPU µs per call (measured process) | simulator CPU µs per call | calls/s | p50 ms | p99 ms | errors |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
		for _, p := range paths {
			var cpu, sim, rps, p50, p99 []float64
			var errs int64
			for _, r := range results {
				if r.path == p.name && r.level == level {
					cpu, sim, rps = append(cpu, r.cpuUS), append(sim, r.simUS), append(rps, r.rps)
					p50, p99 = append(p50, r.p50ms), append(p99, r.p99ms)
					errs += r.errors
				}
			}
			if len(cpu) == 0 {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %d |\n", p.name, summarize(cpu).format(0), summarize(sim).format(0),
				summarize(rps).format(0), summarize(p50).format(2), summarize(p99).format(2), errs)
		}
	}

	fmt.Fprintln(w, "\n## Ratios (each computed within a round, then median [min–max])")
	fmt.Fprintln(w, "\n| ratio | level | value | goal |")
	fmt.Fprintln(w, "|---|---|---:|---|")
	ratio := func(name, level, goal string, f func(round int) (float64, bool)) {
		var v []float64
		for _, round := range rounds {
			if x, ok := f(round); ok {
				v = append(v, x)
			}
		}
		if len(v) > 0 {
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, level, summarize(v).format(2), goal)
		}
	}
	cpuRatio := func(a, b, level string) func(int) (float64, bool) {
		return func(round int) (float64, bool) {
			x, ok1 := find(round, a, level)
			y, ok2 := find(round, b, level)
			return x.cpuUS / y.cpuUS, ok1 && ok2 && y.cpuUS > 0
		}
	}
	added := func(level string, pct func(result) float64) func(int) (float64, bool) {
		return func(round int) (float64, bool) {
			d, ok1 := find(round, "direct", level)
			fw, ok2 := find(round, "forwarder", level)
			gw, ok3 := find(round, "gateway-grpc", level)
			fwAdded := pct(fw) - pct(d)
			return (pct(gw) - pct(d)) / fwAdded, ok1 && ok2 && ok3 && fwAdded > 0
		}
	}
	addedMS := func(path, level string, pct func(result) float64) func(int) (float64, bool) {
		return func(round int) (float64, bool) {
			d, ok1 := find(round, "direct", level)
			x, ok2 := find(round, path, level)
			return pct(x) - pct(d), ok1 && ok2
		}
	}
	p50 := func(r result) float64 { return r.p50ms }
	p99 := func(r result) float64 { return r.p99ms }
	for _, level := range levels {
		ratio("gateway gRPC CPU / forwarder CPU", level, "≤ 1.3", cpuRatio("gateway-grpc", "forwarder", level))
		ratio("gateway REST CPU / gateway gRPC CPU (both loadgen)", level, "≤ 1.2", cpuRatio("gateway-rest-lg", "gateway-grpc-lg", level))
		ratio("gateway gRPC CPU / simulator CPU (direct)", level, "", cpuRatio("gateway-grpc", "direct", level))
		ratio("baseline gRPC CPU / forwarder CPU", level, "", cpuRatio("baseline-grpc", "forwarder", level))
		ratio("gateway gRPC CPU / baseline gRPC CPU", level, "", cpuRatio("gateway-grpc", "baseline-grpc", level))
		ratio("gateway REST CPU / baseline REST CPU", level, "", cpuRatio("gateway-rest-lg", "baseline-rest-lg", level))
	}
	for _, level := range levels {
		if !strings.HasPrefix(level, "rate") {
			continue
		}
		ratio("forwarder added p50 ms", level, "", addedMS("forwarder", level, p50))
		ratio("gateway added p50 ms", level, "", addedMS("gateway-grpc", level, p50))
		ratio("forwarder added p99 ms", level, "", addedMS("forwarder", level, p99))
		ratio("gateway added p99 ms", level, "", addedMS("gateway-grpc", level, p99))
		ratio("gateway added p50 / forwarder added p50", level, "≤ 1.5", added(level, p50))
		ratio("gateway added p99 / forwarder added p99", level, "≤ 1.5", added(level, p99))
		ratio("baseline added p50 ms", level, "", addedMS("baseline-grpc", level, p50))
		ratio("baseline added p99 ms", level, "", addedMS("baseline-grpc", level, p99))
	}

	fmt.Fprintln(w, "\n## Every run")
	fmt.Fprintln(w, "\n| round | level | path | load avg | calls | errors | calls/s | p50 ms | p99 ms | CPU µs/call | sim CPU µs/call |")
	fmt.Fprintln(w, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Fprintf(w, "| %d | %s | %s | %.2f | %d | %d | %.0f | %.2f | %.2f | %.0f | %.0f |\n",
			r.round, r.level, r.path, r.load, r.calls, r.errors, r.rps, r.p50ms, r.p99ms, r.cpuUS, r.simUS)
	}
	fmt.Fprintln(w, "\nPaths:")
	for _, p := range paths {
		fmt.Fprintf(w, "- `%s`: %s\n", p.name, p.what)
	}
}
