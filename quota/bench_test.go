package quota_test

import (
	"fmt"
	"testing"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/quota"
)

// BenchmarkAdmit is the cost of admitting and releasing one call, over
// 100 tenants, with every limit on.
func BenchmarkAdmit(b *testing.B) {
	q, err := quota.New(quota.Config{Default: quota.Limits{CallsPerSecond: 1e9, PagesPerSecond: 1e9, MaxConcurrent: 1 << 20}}, quota.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	tenants := make([]string, 100)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("t%d", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			release, err := q.Admit(auth.Principal{Tenant: tenants[i%len(tenants)]})
			if err != nil {
				b.Error(err)
				return
			}
			release()
		}
	})
}
