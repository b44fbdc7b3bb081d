package quota_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/quota"
)

func TestKeyOverride(t *testing.T) {
	clk := newClock()
	reg := prometheus.NewPedanticRegistry()
	q := newQuotas(t, quota.Config{
		Default: quota.Limits{CallsPerSecond: 1},
		Keys:    map[string]quota.Limits{"cpk_robot": {CallsPerSecond: 100, MaxConcurrent: 1}},
	}, quota.Deps{Now: clk.now, Registerer: reg})
	robot := auth.Principal{Tenant: "a", Subject: "cpk_robot"}
	human := auth.Principal{Tenant: "a", Subject: "cpk_human"}
	// The robot key has buckets of its own: its calls do not drain the
	// tenant's, and the tenant's one call per second does not stop it.
	for range 5 {
		release, err := q.Admit(robot)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Admit(robot); err == nil || !strings.Contains(err.Error(), "key cpk_robot of tenant \"a\"") {
			t.Fatalf("the key's concurrency cap: %v", err)
		}
		release()
	}
	if _, err := q.Admit(human); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Admit(human); err == nil {
		t.Fatal("the tenant's rate not applied to its other keys")
	}
	want := `
# HELP colpali_quota_rejections_total Calls refused by a tenant quota, by tenant (tenants and keys with an override by name, the rest as "other") and limit: calls_per_second, pages_per_second, concurrency, storage_documents, storage_pages.
# TYPE colpali_quota_rejections_total counter
colpali_quota_rejections_total{limit="calls_per_second",tenant="other"} 1
colpali_quota_rejections_total{limit="concurrency",tenant="cpk_robot"} 5
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "colpali_quota_rejections_total"); err != nil {
		t.Error(err)
	}
	_, err := quota.New(quota.Config{Keys: map[string]quota.Limits{"cpk_x": {MaxPages: 3}, "": {}}}, quota.Deps{})
	if err == nil || !strings.Contains(err.Error(), "storage quotas are per tenant") || !strings.Contains(err.Error(), `key override ""`) {
		t.Errorf("bad key overrides: %v", err)
	}
}

func TestParseOverrides(t *testing.T) {
	o, err := quota.ParseOverrides([]byte(`{"tenants": {"team-a": {"calls_per_second": 200, "max_pages": 1000}}, "keys": {"cpk_abc": {"max_concurrent": 2}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if o.Tenants["team-a"].CallsPerSecond != 200 || o.Tenants["team-a"].MaxPages != 1000 || o.Keys["cpk_abc"].MaxConcurrent != 2 {
		t.Fatalf("%+v", o)
	}
	for _, bad := range []string{
		`{"tenants": {"a": {"calls_per_sec": 1}}}`, // misspelt: not silently unlimited
		`{"default": {}}`,
		`{"tenants": {}} {}`,
		`[]`,
	} {
		if _, err := quota.ParseOverrides([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestRegisterFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quotas.json")
	if err := os.WriteFile(path, []byte(`{"tenants": {"big": {"calls_per_second": 1000}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg quota.Config
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-quota-calls-per-second", "20", "-quota-max-concurrent", "8", "-quota-overrides", path, "-quota-busy-retry-delay", "1s"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Default.CallsPerSecond != 20 || cfg.Default.MaxConcurrent != 8 || cfg.Tenants["big"].CallsPerSecond != 1000 || cfg.BusyRetryDelay != time.Second {
		t.Fatalf("%+v", cfg)
	}
	fs = flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-quota-overrides", filepath.Join(t.TempDir(), "missing.json")}); err == nil {
		t.Error("a missing overrides file accepted")
	}
}
