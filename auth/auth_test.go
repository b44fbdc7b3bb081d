package auth_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// Every RPC the API defines has an entry: a new one must be given a scope
// (or is refused, but then its author should know why).
func TestEveryMethodHasAScope(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{colpaliv1.EmbeddingService_ServiceDesc, colpaliv1.DocumentService_ServiceDesc, colpaliv1.BackendService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			if sc, ok := auth.Required(nil, full); !ok || sc == auth.Public {
				t.Errorf("%s: scope %q, listed %v; want a real scope", full, sc, ok)
			}
		}
	}
}

func TestAuthorize(t *testing.T) {
	all := auth.Principal{Tenant: "t", Scopes: auth.AllScopes}
	embedOnly := auth.Principal{Tenant: "t", Scopes: []auth.Scope{auth.ScopeEmbed}}
	for _, tc := range []struct {
		method string
		p      auth.Principal
		want   error
	}{
		{colpaliv1.EmbeddingService_EmbedQueries_FullMethodName, embedOnly, nil},
		{colpaliv1.EmbeddingService_EmbedImages_FullMethodName, embedOnly, nil},
		{colpaliv1.DocumentService_Search_FullMethodName, embedOnly, errclass.PermissionDenied},
		{colpaliv1.DocumentService_IngestDocumentStream_FullMethodName, auth.Principal{Scopes: []auth.Scope{auth.ScopeDocumentsRead}}, errclass.PermissionDenied},
		{colpaliv1.DocumentService_IngestDocumentStream_FullMethodName, auth.Principal{Scopes: []auth.Scope{auth.ScopeDocumentsWrite}}, nil},
		{colpaliv1.DocumentService_DeleteDocument_FullMethodName, auth.Principal{Scopes: []auth.Scope{auth.ScopeDocumentsWrite}}, nil},
		{colpaliv1.DocumentService_ListDocuments_FullMethodName, auth.Principal{Scopes: []auth.Scope{auth.ScopeDocumentsRead}}, nil},
		{colpaliv1.BackendService_ListBackends_FullMethodName, embedOnly, errclass.PermissionDenied},
		{colpaliv1.BackendService_ListBackends_FullMethodName, all, nil},
		{"/grpc.health.v1.Health/Check", auth.Principal{}, nil},
		{"/grpc.health.v1.Health/Watch", auth.Principal{}, nil},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", embedOnly, errclass.PermissionDenied},
		{"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", all, nil},
		{"/colpali.v1.EmbeddingService/EmbedAudio", all, errclass.PermissionDenied}, // unknown: fail closed
		{"/x.Admin/Anything", all, errclass.PermissionDenied},
		{"", all, errclass.PermissionDenied},
	} {
		err := auth.Authorize(nil, tc.method, tc.p)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s with %v: %v, want %v", tc.method, tc.p.Scopes, err, tc.want)
		}
	}
}

func TestParseScopes(t *testing.T) {
	got, err := auth.ParseScopes("admin, embed,embed documents:read")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]auth.Scope{auth.ScopeEmbed, auth.ScopeDocumentsRead, auth.ScopeAdmin}, got); diff != "" {
		t.Error(diff)
	}
	for _, bad := range []string{"public", "documents:delete", "embed,root"} {
		if _, err := auth.ParseScopes(bad); err == nil || !strings.Contains(err.Error(), "unknown scopes") {
			t.Errorf("%q: %v, want unknown scopes", bad, err)
		}
	}
}

func TestValidateTenant(t *testing.T) {
	for _, ok := range []string{"default", "team-a", "A.b_c-1", "0", strings.Repeat("x", auth.MaxTenantLen)} {
		if err := auth.ValidateTenant(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "a b", "a/b", "ü", strings.Repeat("x", auth.MaxTenantLen+1), "a\n"} {
		if err := auth.ValidateTenant(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestMode(t *testing.T) {
	for _, tc := range []struct {
		in         string
		want       auth.Mode
		keys, jwt  bool
		wantErrSub string
	}{
		{"", auth.ModeKeys, true, false, ""},
		{"keys", auth.ModeKeys, true, false, ""},
		{"JWT", auth.ModeJWT, false, true, ""},
		{"keys+jwt", auth.ModeKeysJWT, true, true, ""},
		{"none", auth.ModeNone, false, false, ""},
		{"off", "", false, false, "want one of"},
	} {
		var m auth.Mode
		err := m.Set(tc.in)
		if tc.wantErrSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) {
				t.Errorf("%q: %v", tc.in, err)
			}
			continue
		}
		if err != nil || m != tc.want || m.Keys() != tc.keys || m.JWT() != tc.jwt {
			t.Errorf("%q: %v %v keys=%v jwt=%v", tc.in, m, err, m.Keys(), m.JWT())
		}
	}
	if _, err := auth.ModeKeysJWT.Build(fixed("k", nil), nil); err == nil {
		t.Error("keys+jwt without a verifier built")
	}
	if _, err := auth.ModeKeys.Build(nil, nil); err == nil {
		t.Error("keys without a key store built")
	}
}

// fixed is an authenticator that claims tokens starting with prefix.
func fixed(prefix string, scopes []auth.Scope) auth.Authenticator {
	return auth.AuthenticatorFunc(func(_ context.Context, bearer string) (auth.Principal, error) {
		if !strings.HasPrefix(bearer, prefix) {
			return auth.Principal{}, errclass.Wrap(errclass.Unauthenticated, auth.ErrUnrecognized)
		}
		if bearer == prefix+"bad" {
			return auth.Principal{}, errclass.Errorf(errclass.Unauthenticated, "revoked")
		}
		if bearer == prefix+"down" {
			return auth.Principal{}, errclass.Errorf(errclass.Unavailable, "database down")
		}
		return auth.Principal{Tenant: "tenant-" + prefix, Scopes: scopes, Subject: prefix}, nil
	})
}

func TestChain(t *testing.T) {
	ctx := testutil.Context(t)
	c := auth.Chain(fixed("k", auth.AllScopes), fixed("j", auth.AllScopes))
	for _, tc := range []struct {
		token, tenant string
		want          error
	}{
		{"k1", "tenant-k", nil},
		{"j1", "tenant-j", nil},
		{"kbad", "", errclass.Unauthenticated},
		{"jdown", "", errclass.Unavailable},
		{"x", "", auth.ErrUnrecognized},
	} {
		p, err := c.Authenticate(ctx, tc.token)
		if p.Tenant != tc.tenant || !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%q: %v %v", tc.token, p, err)
		}
		if tc.want == auth.ErrUnrecognized && !errors.Is(err, errclass.Unauthenticated) {
			t.Errorf("%q: unrecognized must be Unauthenticated: %v", tc.token, err)
		}
	}
}

func TestRequireLoopback(t *testing.T) {
	if err := auth.RequireLoopback("127.0.0.1:8080", "[::1]:9090", "localhost:1", "127.0.0.2:3"); err != nil {
		t.Fatal(err)
	}
	err := auth.RequireLoopback(":8080", "0.0.0.0:1", "10.0.0.1:2", "[::]:3", "example.com:4", "nonsense", "127.0.0.1:5")
	if err == nil {
		t.Fatal("non-loopback accepted")
	}
	for _, a := range []string{`":8080"`, `"0.0.0.0:1"`, `"10.0.0.1:2"`, `"[::]:3"`, `"example.com:4"`, `"nonsense"`} {
		if !strings.Contains(err.Error(), a) {
			t.Errorf("error does not name %s: %v", a, err)
		}
	}
	if strings.Contains(err.Error(), "127.0.0.1:5") {
		t.Errorf("loopback named: %v", err)
	}
}

func TestPrincipalInContext(t *testing.T) {
	ctx := context.Background()
	if _, ok := auth.FromContext(ctx); ok {
		t.Fatal("principal in an empty context")
	}
	p := auth.Principal{Tenant: "a", Scopes: []auth.Scope{auth.ScopeEmbed}, Kind: auth.KindAPIKey}
	got, ok := auth.FromContext(auth.NewContext(ctx, p))
	if !ok || !slices.Equal(got.Scopes, p.Scopes) || got.Tenant != "a" {
		t.Fatalf("got %v %v", got, ok)
	}
}

// The metadata helpers the interceptor tests share.
func incoming(kv ...string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
}
