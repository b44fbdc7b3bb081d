package auth_test

import (
	"context"
	"testing"

	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// BenchmarkCheck is the interceptor's check of one EmbedQueries call with
// the metadata a gRPC client sends, without authentication (-auth none)
// and with a bearer token (removed from the context by Check).
func BenchmarkCheck(b *testing.B) {
	method := colpaliv1.EmbeddingService_EmbedQueries_FullMethodName
	common := []string{":authority", "127.0.0.1:9090", "content-type", "application/grpc", "user-agent", "grpc-go/1.79.0", "grpc-accept-encoding", "gzip"}
	for _, tc := range []struct {
		name  string
		authn auth.Authenticator
		md    []string
	}{
		{"none", auth.None(), common},
		{"bearer", auth.AuthenticatorFunc(func(context.Context, string) (auth.Principal, error) {
			return auth.Principal{Tenant: "t", Scopes: []auth.Scope{auth.ScopeEmbed}}, nil
		}), append(common[:len(common):len(common)], "authorization", "Bearer k1")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ic := auth.NewInterceptor(tc.authn, nil)
			ctx := incoming(tc.md...)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ic.Check(ctx, method); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
