// Command ghzreport reads ghz JSON reports (ghz -O json) and prints one
// Markdown table comparing them: throughput, latency percentiles, errors,
// and each run's ratios to the first (the baseline). Benchmarks run on
// shared, noisy machines, so ratios measured side by side in one run say
// more than absolute figures.
//
// Usage: ghzreport NAME=report.json [NAME=report.json ...]
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ghzreport:", err)
		os.Exit(1)
	}
}

// report is the part of ghz's JSON report that is compared.
type report struct {
	Count                  int64            `json:"count"`
	Total                  time.Duration    `json:"total"`
	RPS                    float64          `json:"rps"`
	StatusCodeDistribution map[string]int64 `json:"statusCodeDistribution"`
	LatencyDistribution    []struct {
		Percentage int           `json:"percentage"`
		Latency    time.Duration `json:"latency"`
	} `json:"latencyDistribution"`
}

func (r report) percentile(p int) time.Duration {
	for _, l := range r.LatencyDistribution {
		if l.Percentage == p {
			return l.Latency
		}
	}
	return 0
}

func (r report) errors() int64 {
	var n int64
	for code, c := range r.StatusCodeDistribution {
		if code != "OK" {
			n += c
		}
	}
	return n
}

type named struct {
	name string
	report
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: ghzreport NAME=report.json [NAME=report.json ...]")
	}
	var runs []named
	for _, a := range args {
		name, path, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("argument %q: want NAME=report.json", a)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if r.Count == 0 {
			return fmt.Errorf("%s: the report has no requests", path)
		}
		runs = append(runs, named{name, r})
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	base := runs[0]
	fmt.Fprintln(out, "| run | requests | errors | req/s | p50 ms | p95 ms | p99 ms | req/s vs "+base.name+" | p50 vs "+base.name+" | p99 vs "+base.name+" |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range runs {
		fmt.Fprintf(out, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %s |\n",
			r.name, r.Count, r.errors(), r.RPS,
			ms(r.percentile(50)), ms(r.percentile(95)), ms(r.percentile(99)),
			ratio(r.RPS, base.RPS),
			ratio(float64(r.percentile(50)), float64(base.percentile(50))),
			ratio(float64(r.percentile(99)), float64(base.percentile(99))))
	}
	return nil
}
