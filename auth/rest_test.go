package auth_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// REST calls reach the same interceptors: grpc-gateway forwards the
// Authorization header as "authorization" metadata, and the codes come
// back as 401 and 403.
func TestInterceptorOverREST(t *testing.T) {
	f, conn := startServer(t, auth.Chain(fixed("k", []auth.Scope{auth.ScopeEmbed})))
	mux := runtime.NewServeMux()
	ctx := testutil.Context(t)
	if err := colpaliv1.RegisterEmbeddingServiceHandler(ctx, mux, conn); err != nil {
		t.Fatal(err)
	}
	if err := colpaliv1.RegisterBackendServiceHandler(ctx, mux, conn); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		method, path, header string
		want                 int
	}{
		{http.MethodPost, "/v1/queries:embed", "", http.StatusUnauthorized},
		{http.MethodPost, "/v1/queries:embed", "Bearer kbad", http.StatusUnauthorized},
		{http.MethodPost, "/v1/queries:embed", "Bearer k1", http.StatusOK},
		{http.MethodGet, "/v1/backends", "Bearer k1", http.StatusForbidden},
	} {
		req, err := http.NewRequestWithContext(ctx, tc.method, srv.URL+tc.path, strings.NewReader(`{"queries":["x"]}`))
		if err != nil {
			t.Fatal(err)
		}
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s with %q: %d, want %d", tc.method, tc.path, tc.header, resp.StatusCode, tc.want)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) != 1 || f.seen[0].Tenant != "tenant-k" || len(f.auths) != 0 {
		t.Errorf("handler saw %v, authorization values %d", f.seen, len(f.auths))
	}
}
