package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `{"count":200,"total":162519533,"rps":1000,"statusCodeDistribution":{"OK":198,"Unavailable":2},
"latencyDistribution":[{"percentage":50,"latency":5000000},{"percentage":95,"latency":7000000},{"percentage":99,"latency":8000000}]}`

const sample2 = `{"count":100,"total":1,"rps":500,"statusCodeDistribution":{"OK":100},
"latencyDistribution":[{"percentage":50,"latency":10000000},{"percentage":95,"latency":14000000},{"percentage":99,"latency":24000000}]}`

func TestRunComparesToBaseline(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	if err := os.WriteFile(a, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte(sample2), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := run([]string{"direct=" + a, "gateway=" + b}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| direct | 200 | 2 | 1000 | 5.00 | 7.00 | 8.00 | 1.00x | 1.00x | 1.00x |",
		"| gateway | 100 | 0 | 500 | 10.00 | 14.00 | 24.00 | 0.50x | 2.00x | 3.00x |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, []byte(`{"count":0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"noequals"}, {"x=" + filepath.Join(dir, "missing.json")}, {"x=" + empty}} {
		if err := run(args, &strings.Builder{}); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
