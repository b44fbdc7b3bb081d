package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func newFS() (*flag.FlagSet, *string, *int, *time.Duration) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	addr := fs.String("grpc-addr", ":9090", "")
	n := fs.Int("max-queries", 64, "")
	d := fs.Duration("default-timeout", time.Second, "")
	return fs, addr, n, d
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseEnvThenFlags(t *testing.T) {
	fs, addr, n, d := newFS()
	err := Parse(fs, []string{"-max-queries", "7"}, "COLPALI_", env(map[string]string{
		"COLPALI_GRPC_ADDR":   "127.0.0.1:1",
		"COLPALI_MAX_QUERIES": "3",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if *addr != "127.0.0.1:1" || *n != 7 || *d != time.Second {
		t.Errorf("got addr %q, max-queries %d, timeout %v; want the env address, the flag's 7 and the default 1s", *addr, *n, *d)
	}
}

func TestParseReportsEveryError(t *testing.T) {
	fs, _, _, _ := newFS()
	err := Parse(fs, []string{"-max-queries", "many", "-default-timeout=soon", "-nope"}, "COLPALI_",
		env(map[string]string{"COLPALI_GRPC_ADDR": "", "COLPALI_DEFAULT_TIMEOUT": "later"}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"COLPALI_DEFAULT_TIMEOUT", "-max-queries", "-default-timeout", "-nope"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestParseRejectsPositionalArguments(t *testing.T) {
	fs, _, _, _ := newFS()
	if err := Parse(fs, []string{"serve"}, "", nil); err == nil || !strings.Contains(err.Error(), "serve") {
		t.Fatalf("err = %v, want it to name the stray argument", err)
	}
}

func TestParseHelpPrintsUsage(t *testing.T) {
	fs, _, _, _ := newFS()
	var out bytes.Buffer
	fs.SetOutput(&out)
	if err := Parse(fs, []string{"-help"}, "", nil); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(out.String(), "max-queries") {
		t.Errorf("usage %q lacks the flags", out.String())
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := LogFlags{Format: "json", Level: "warn"}.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown"`) {
		t.Errorf("log output %q", got)
	}
	if _, err := (LogFlags{Format: "xml", Level: "info"}).Logger(&buf); err == nil {
		t.Error("no error for -log-format xml")
	}
	if _, err := (LogFlags{Format: "text", Level: "loud"}).Logger(&buf); err == nil {
		t.Error("no error for -log-level loud")
	}
	err = LogFlags{Format: "xml", Level: "loud"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "-log-format") || !strings.Contains(err.Error(), "-log-level") {
		t.Errorf("Validate() = %v, want both flags named at once", err)
	}
}
