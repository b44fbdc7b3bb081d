package apikey_test

import (
	"testing"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// BenchmarkAuthenticateCached is the cost of a call's key check once the
// key is cached: parse, SHA-256, a map lookup.
func BenchmarkAuthenticateCached(b *testing.B) {
	src := &fakeLookuper{keys: map[string]apikey.Check{"aaaaaaaa": {Principal: auth.Principal{Tenant: "a"}}}}
	a, err := apikey.NewAuthenticator(src, apikey.CacheConfig{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := testutil.Context(b)
	key := keyWithPrefix("aaaaaaaa")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Authenticate(ctx, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
