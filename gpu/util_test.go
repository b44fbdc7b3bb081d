package gpu

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMetricsURL(t *testing.T) {
	for _, tc := range []struct {
		addr string
		port int
		want string
	}{
		{"triton-0.triton:8001", 0, "http://triton-0.triton:8002/metrics"},
		{"127.0.0.1:40001", 40002, "http://127.0.0.1:40002/metrics"},
		{"[::1]:8001", 0, "http://[::1]:8002/metrics"},
	} {
		if got, err := MetricsURL(tc.addr, tc.port); err != nil || got != tc.want {
			t.Errorf("MetricsURL(%q, %d) = %q, %v; want %q", tc.addr, tc.port, got, err, tc.want)
		}
	}
	for _, bad := range []struct {
		addr string
		port int
	}{{"no-port", 0}, {"h:1", -1}, {"h:1", 70000}} {
		if got, err := MetricsURL(bad.addr, bad.port); err == nil {
			t.Errorf("MetricsURL(%q, %d) = %q, want an error", bad.addr, bad.port, got)
		}
	}
}

func TestParseNVMLBackends(t *testing.T) {
	got, err := ParseNVMLBackends(" 127.0.0.1:8001=0, 1 ;triton:8001; ")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string][]int{"127.0.0.1:8001": {0, 1}, "triton:8001": {}}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got, err := ParseNVMLBackends(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"=0", "a:1=x", "a:1=-1", "a:1=", "a:1;a:1=2"} {
		if got, err := ParseNVMLBackends(bad); err == nil {
			t.Errorf("ParseNVMLBackends(%q) = %v, want an error", bad, got)
		}
	}
}
