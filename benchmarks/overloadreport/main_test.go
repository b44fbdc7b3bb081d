package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("cap.json", `{"offered_rate":100,"kinds":{"query":{"ok":1000,"throughput_ok_per_s":100,"p50_ms":10,"p99_ms":50}},"errors":{}}`)
	write("on.json", `{"offered_rate":300,"achieved_rate":299,"kinds":{"query":{"ok":950,"throughput_ok_per_s":95,"p50_ms":20,"p99_ms":400}},
		"errors":{"ResourceExhausted":2000,"Unavailable":3},"error_latency_ms":{"ResourceExhausted":{"p50_ms":0.5,"p99_ms":2.5}}}`)
	write("index.jsonl", `{"report":"cap.json","phase":"capacity","kind":"query","protocol":"grpc","capacity":100,"loadavg":"1.0"}
{"report":"on.json","phase":"overload","kind":"query","protocol":"grpc","mode":"on","level":3,"round":1,"capacity":100,"target_ms":500,"vmhwm_kib":102400,"budget_mib":512}
`)
	var out strings.Builder
	if err := run(filepath.Join(dir, "index.jsonl"), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**100.0/s**", "| grpc | 3 | on | 95 | 400 | 2000 | 2.5 | 3 | 0 | 100 |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
