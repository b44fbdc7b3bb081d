package redact

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://app:s3cret@db:5432/colpali?sslmode=require": "postgres://app:xxxxx@db:5432/colpali?sslmode=require",
		"postgresql://app@db/colpali":                           "postgresql://app@db/colpali",
		"postgres://db/colpali?user=app&password=s3cret":        "postgres://db/colpali?password=xxxxx&user=app",
		"host=db user=app password=s3cret dbname=colpali":       "host=db user=app password=xxxxx dbname=colpali",
		"host=db password='s3 cret' dbname=colpali":             "host=db password=xxxxx dbname=colpali",
		"postgres://app:s3cret@db:bad-port/x":                   "(a URL that cannot be parsed; not shown)",
		"":                                                      "",
	} {
		got := URL(in)
		if got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "s3 cret") {
			t.Errorf("URL(%q) = %q shows the password", in, got)
		}
	}
}

func TestMetadata(t *testing.T) {
	md := map[string][]string{"authorization": {"Bearer k"}, "x-request-id": {"r"}, "Cookie": {"c"}}
	got := Metadata(md)
	if _, ok := got["authorization"]; ok || len(got) != 1 || got["x-request-id"][0] != "r" {
		t.Errorf("Metadata = %v, want only x-request-id", got)
	}
	if len(md) != 3 {
		t.Error("Metadata changed its argument")
	}
}
