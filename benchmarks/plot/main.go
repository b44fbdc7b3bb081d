// Command plot turns the JSON Lines written by benchmarks/batching.sh and
// benchmarks/routing.sh into the Markdown tables and PNG plots of the
// benchmark report: per comparison, the median over rounds and the spread
// (smallest and largest), with each round's load average.
//
// It is a module of its own so that the plotting library
// (gonum.org/v1/plot) stays out of the gateway's go.mod.
//
// Usage (from benchmarks/plot):
//
//	go run . -batching ../results/batching.jsonl -routing ../results/routing.jsonl -out ../results
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

func main() {
	batching := flag.String("batching", "", "`file` of batching.sh's JSON lines (skipped when empty)")
	routing := flag.String("routing", "", "`file` of routing.sh's JSON lines (skipped when empty)")
	out := flag.String("out", ".", "`directory` for the Markdown and PNG files")
	name := flag.String("batching-name", "batching", "`name` of the batching report's files: NAME.md and NAME-LOAD-KIND.png")
	loads := flag.String("loads", "", "comma-separated `loads` of the batching file to report (query, image, mix); empty: all")
	flag.Parse()
	if err := run(*batching, *routing, *out, *name, *loads); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(batching, routing, out, name, loads string) error {
	if batching == "" && routing == "" {
		return errors.New("nothing to do: give -batching, -routing or both")
	}
	if batching != "" {
		hdr, runs, err := readRuns(batching)
		if err != nil {
			return err
		}
		if loads != "" {
			keep := strings.Split(loads, ",")
			runs = slices.DeleteFunc(runs, func(r runRecord) bool { return !slices.Contains(keep, r.Load) })
			if len(runs) == 0 {
				return fmt.Errorf("%s: no run of the loads %s", batching, loads)
			}
		}
		if err := writeBatching(hdr, runs, filepath.Base(batching), out, name); err != nil {
			return fmt.Errorf("batching: %w", err)
		}
	}
	if routing != "" {
		hdr, runs, err := readRuns(routing)
		if err != nil {
			return err
		}
		if err := writeRouting(hdr, runs, out); err != nil {
			return fmt.Errorf("routing: %w", err)
		}
	}
	return nil
}

// header is the first line of a results file: how it was made.
type header struct {
	Kind      string  `json:"kind"`
	Command   string  `json:"command"`
	Date      string  `json:"date"`
	Cores     int     `json:"cores"`
	CPU       string  `json:"cpu"`
	Simulator string  `json:"simulator"`
	Note      string  `json:"note"`
	Duration  string  `json:"duration"`
	LoadMax   float64 `json:"load_max"`
	Stall     string  `json:"stall"`
}

// runRecord is one measured run.
type runRecord struct {
	Round        int     `json:"round"`
	Attempt      int     `json:"attempt"`
	RoundLoadavg float64 `json:"round_loadavg"`
	// batching.sh
	Setup          string  `json:"setup"`
	Load           string  `json:"load"`
	Rate           float64 `json:"rate"`
	GPUs           int     `json:"gpus"`
	GPUBusySeconds float64 `json:"gpu_busy_seconds"`
	WallSeconds    float64 `json:"wall_seconds"`
	// routing.sh
	Policy      string             `json:"policy"`
	Scenario    string             `json:"scenario"`
	PicksBefore map[string]float64 `json:"picks_before"`
	PicksAfter  map[string]float64 `json:"picks_after"`
	Retries     map[string]float64 `json:"retries"`

	Report report `json:"report"`
}

// report is the part of loadgen's report the tables use.
type report struct {
	OfferedRate  float64 `json:"offered_rate"`
	AchievedRate float64 `json:"achieved_rate"`
	// ElapsedSeconds runs from the first planned arrival to the last
	// answer.
	ElapsedSeconds float64                `json:"elapsed_seconds"`
	Sent           int                    `json:"sent"`
	Dropped        int                    `json:"dropped"`
	SendLagP99Ms   float64                `json:"send_lag_p99_ms"`
	Kinds          map[string]*kindReport `json:"kinds"`
	Errors         map[string]int         `json:"errors"`
}

type kindReport struct {
	Sent       int     `json:"sent"`
	OK         int     `json:"ok"`
	Throughput float64 `json:"throughput_ok_per_s"`
	P50Ms      float64 `json:"p50_ms"`
	P95Ms      float64 `json:"p95_ms"`
	P99Ms      float64 `json:"p99_ms"`
}

// errorCount is the run's failed calls.
func (r runRecord) errorCount() int {
	n := 0
	for _, v := range r.Report.Errors {
		n += v
	}
	return n
}

// readRuns reads a results file: its header and the runs of the last
// attempt of each round (an earlier attempt was repeated because the
// machine was too loaded, and is left out).
func readRuns(path string) (header, []runRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return header{}, nil, err
	}
	defer f.Close()
	var hdr header
	var all []runRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		if line == 1 {
			if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || hdr.Kind != "header" {
				return header{}, nil, fmt.Errorf("%s:1: not a results header (%v)", path, err)
			}
			continue
		}
		var r runRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return header{}, nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		all = append(all, r)
	}
	if err := sc.Err(); err != nil {
		return header{}, nil, err
	}
	last := map[int]int{}
	for _, r := range all {
		last[r.Round] = max(last[r.Round], r.Attempt)
	}
	var kept []runRecord
	for _, r := range all {
		if r.Attempt == last[r.Round] {
			kept = append(kept, r)
		}
	}
	return hdr, kept, nil
}

// roundLoads lists each kept round's load average at its start, and
// whether any was above the limit.
func roundLoads(hdr header, runs []runRecord) (string, bool) {
	loads := map[int]float64{}
	attempts := map[int]int{}
	for _, r := range runs {
		loads[r.Round] = r.RoundLoadavg
		attempts[r.Round] = r.Attempt
	}
	rounds := make([]int, 0, len(loads))
	for r := range loads {
		rounds = append(rounds, r)
	}
	sort.Ints(rounds)
	s, high := "", false
	for i, r := range rounds {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("round %d: %.2f", r, loads[r])
		if attempts[r] > 0 {
			s += fmt.Sprintf(" (attempt %d)", attempts[r]+1)
		}
		if loads[r] > hdr.LoadMax {
			high = true
		}
	}
	return s, high
}

// stat is the median and the spread of one figure over rounds.
type stat struct{ med, lo, hi float64 }

func statOf(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	v = slices.Clone(v)
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return stat{med: med, lo: v[0], hi: v[n-1]}
}

// String shows the median and, when the rounds differ, the range.
func (s stat) String() string { return s.format("%.0f") }

func (s stat) format(f string) string {
	m := fmt.Sprintf(f, s.med)
	lo, hi := fmt.Sprintf(f, s.lo), fmt.Sprintf(f, s.hi)
	if lo == hi {
		return m
	}
	return m + " (" + lo + "–" + hi + ")"
}

// writeFile writes text to dir/name.
func writeFile(dir, name, text string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)
}
