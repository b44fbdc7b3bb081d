// Command overloadreport turns the runs of benchmarks/overload.sh into the
// Markdown tables of results/overload.md. It reads an index, one JSON object
// a line, naming each run's loadgen report and what the script measured
// beside it (the gateway's peak RSS, the phase, the mode), and prints: the
// capacity ladders and the capacity chosen, every overload and image run,
// and for each protocol, level and mode the median over rounds with the
// spread (min to max).
//
// Usage: overloadreport INDEX.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: overloadreport INDEX.jsonl")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "overloadreport:", err)
		os.Exit(1)
	}
}

// entry is one line of the index.
type entry struct {
	Report   string  `json:"report"`
	Phase    string  `json:"phase"` // capacity, overload, image
	Kind     string  `json:"kind"`  // query, image
	Protocol string  `json:"protocol"`
	Mode     string  `json:"mode"` // on, off
	Level    float64 `json:"level"`
	Round    int     `json:"round"`
	Capacity float64 `json:"capacity"`
	// TargetMs is the latency target of the kind.
	TargetMs  float64 `json:"target_ms"`
	VmHWMKiB  float64 `json:"vmhwm_kib"`
	BudgetMiB float64 `json:"budget_mib"`
	// GatewayCPUSeconds is the gateway's CPU time over the run.
	GatewayCPUSeconds float64 `json:"gateway_cpu_seconds"`
	LoadAvg           string  `json:"loadavg"`
	OOM               bool    `json:"oom"`

	rep report
}

// report is the part of a loadgen report read here.
type report struct {
	OfferedRate  float64 `json:"offered_rate"`
	AchievedRate float64 `json:"achieved_rate"`
	Sent         int     `json:"sent"`
	Dropped      int     `json:"dropped"`
	SendLagP99Ms float64 `json:"send_lag_p99_ms"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	Kinds        map[string]struct {
		OK         int     `json:"ok"`
		Throughput float64 `json:"throughput_ok_per_s"`
		P50Ms      float64 `json:"p50_ms"`
		P99Ms      float64 `json:"p99_ms"`
	} `json:"kinds"`
	Errors       map[string]int `json:"errors"`
	ErrorLatency map[string]struct {
		P50Ms float64 `json:"p50_ms"`
		P99Ms float64 `json:"p99_ms"`
	} `json:"error_latency_ms"`
}

func run(index string, w io.Writer) error {
	f, err := os.Open(index)
	if err != nil {
		return err
	}
	defer f.Close()
	var entries []*entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		e := &entry{}
		if err := json.Unmarshal(sc.Bytes(), e); err != nil {
			return fmt.Errorf("%s: %w", index, err)
		}
		path := e.Report
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(index), path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &e.rep); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(entries) == 0 {
		return errors.New("no runs in the index")
	}
	capacityTable(w, entries)
	for _, phase := range []string{"overload", "image"} {
		runs := slices.DeleteFunc(slices.Clone(entries), func(e *entry) bool { return e.Phase != phase })
		if len(runs) == 0 {
			continue
		}
		summaryTable(w, phase, runs)
		runsTable(w, phase, runs)
	}
	return nil
}

func capacityTable(w io.Writer, entries []*entry) {
	fmt.Fprintln(w, "### Capacity ladders (admission off)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| kind | protocol | offered/s | OK/s | p50 ms | p99 ms | errors | load avg | capacity chosen |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, e := range entries {
		if e.Phase != "capacity" {
			continue
		}
		k := e.rep.Kinds[e.Kind]
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %.0f | %.0f | %s | %s | %s |\n", e.Kind, e.Protocol, e.rep.OfferedRate, k.Throughput, k.P50Ms, k.P99Ms,
			errText(e.rep.Errors), e.LoadAvg, orDash(e.Capacity))
	}
	fmt.Fprintln(w)
}

func orDash(v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("**%.1f/s**", v)
}

func errText(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// figures are what one run is judged on.
type figures struct {
	goodputPct, okRate, p99, rejP50, rejP99, rssMiB float64
	n429, n503, nOther                              int
}

func figuresOf(e *entry) figures {
	k := e.rep.Kinds[e.Kind]
	f := figures{okRate: k.Throughput, p99: k.P99Ms, rssMiB: e.VmHWMKiB / 1024}
	if e.Capacity > 0 {
		f.goodputPct = 100 * k.Throughput / e.Capacity
	}
	for code, n := range e.rep.Errors {
		switch code {
		case "ResourceExhausted":
			f.n429 += n
		case "Unavailable":
			f.n503 += n
		default:
			f.nOther += n
		}
	}
	if l, ok := e.rep.ErrorLatency["ResourceExhausted"]; ok {
		f.rejP50, f.rejP99 = l.P50Ms, l.P99Ms
	}
	return f
}

func runsTable(w io.Writer, phase string, runs []*entry) {
	fmt.Fprintf(w, "### Every %s run\n\n", phase)
	fmt.Fprintln(w, "| round | protocol | x capacity | admission | offered/s (sent) | OK/s | goodput % of capacity | admitted p50 / p99 ms | 429s | 429 p50 / p99 ms | 503s | other errors | gateway VmHWM MiB | CPU s: gateway / generator | generator's send lag p99 ms | load avg |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, e := range runs {
		f := figuresOf(e)
		k := e.rep.Kinds[e.Kind]
		other := map[string]int{}
		for c, n := range e.rep.Errors {
			if c != "ResourceExhausted" && c != "Unavailable" {
				other[c] = n
			}
		}
		oom := ""
		if e.OOM {
			oom = " (OOM)"
		}
		fmt.Fprintf(w, "| %d | %s | %g | %s | %.1f (%.1f) | %.1f | %.0f | %.0f / %.0f | %d | %.1f / %.1f | %d | %s | %.0f%s | %.1f / %.1f | %.0f | %s |\n",
			e.Round, e.Protocol, e.Level, e.Mode, e.rep.OfferedRate, e.rep.AchievedRate, f.okRate, f.goodputPct, k.P50Ms, k.P99Ms,
			f.n429, f.rejP50, f.rejP99, f.n503, errText(other), f.rssMiB, oom, e.GatewayCPUSeconds, e.rep.CPUSeconds, e.rep.SendLagP99Ms, e.LoadAvg)
	}
	fmt.Fprintln(w)
}

func summaryTable(w io.Writer, phase string, runs []*entry) {
	type key struct {
		protocol string
		level    float64
		mode     string
	}
	groups := map[key][]*entry{}
	var keys []key
	for _, e := range runs {
		k := key{e.Protocol, e.Level, e.Mode}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], e)
	}
	slices.SortStableFunc(keys, func(a, b key) int {
		switch {
		case a.protocol != b.protocol:
			return strings.Compare(a.protocol, b.protocol)
		case a.level != b.level:
			if a.level < b.level {
				return -1
			}
			return 1
		}
		return -strings.Compare(a.mode, b.mode) // on before off
	})
	first := runs[0]
	fmt.Fprintf(w, "### %s: median (min to max) over %d round(s)\n\n", phase, len(groups[keys[0]]))
	fmt.Fprintf(w, "Latency target of admitted calls: %.0f ms. Memory budget: %.0f MiB.\n\n", first.TargetMs, first.BudgetMiB)
	fmt.Fprintln(w, "| protocol | x capacity | admission | goodput % of capacity | admitted p99 ms | 429s | 429 p99 ms | 503s | other errors | gateway VmHWM MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, k := range keys {
		var gp, p99, n429, rej, n503, other, rss []float64
		for _, e := range groups[k] {
			f := figuresOf(e)
			gp, p99, rej, rss = append(gp, f.goodputPct), append(p99, f.p99), append(rej, f.rejP99), append(rss, f.rssMiB)
			n429, n503, other = append(n429, float64(f.n429)), append(n503, float64(f.n503)), append(other, float64(f.nOther))
		}
		fmt.Fprintf(w, "| %s | %g | %s | %s | %s | %s | %s | %s | %s | %s |\n", k.protocol, k.level, k.mode,
			spread(gp, "%.0f"), spread(p99, "%.0f"), spread(n429, "%.0f"), spread(rej, "%.1f"), spread(n503, "%.0f"), spread(other, "%.0f"), spread(rss, "%.0f"))
	}
	fmt.Fprintln(w)
}

// spread is "median (min to max)", or the one value.
func spread(v []float64, format string) string {
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if len(s) == 1 || s[0] == s[len(s)-1] {
		return fmt.Sprintf(format, med)
	}
	return fmt.Sprintf(format+" ("+format+" to "+format+")", med, s[0], s[len(s)-1])
}
