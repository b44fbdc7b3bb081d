package store_test

import (
	"math/rand/v2"
	"testing"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/store"
)

// TestCountTenant: a tenant's committed documents and pages, for the
// storage quota; pending documents and other tenants' do not count.
func TestCountTenant(t *testing.T) {
	ctx := testutil.Context(t)
	s, _ := newStore(t, store.Config{})
	rng := rand.New(rand.NewPCG(11, 12))
	for _, d := range []struct {
		tenant string
		pages  int
	}{{"tenant-a", 3}, {"tenant-a", 2}, {"tenant-b", 4}} {
		if _, _, err := ingestDocument(ctx, s, store.NewDocument{Tenant: d.tenant}, pages(rng, d.pages, 4)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.BeginDocument(ctx, store.NewDocument{Tenant: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	for tenant, want := range map[string][2]int64{"tenant-a": {2, 5}, "tenant-b": {1, 4}, "tenant-c": {0, 0}} {
		docs, pages, err := s.CountTenant(ctx, tenant)
		if err != nil || docs != want[0] || pages != want[1] {
			t.Errorf("CountTenant(%s) = %d documents, %d pages, %v; want %v", tenant, docs, pages, err, want)
		}
	}
	if _, _, err := s.CountTenant(ctx, ""); err == nil {
		t.Error("CountTenant of no tenant: no error")
	}
}
