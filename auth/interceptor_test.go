package auth_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// fakeServices records the principal and metadata each handler saw.
type fakeServices struct {
	colpaliv1.UnimplementedEmbeddingServiceServer
	colpaliv1.UnimplementedDocumentServiceServer
	colpaliv1.UnimplementedBackendServiceServer

	mu    sync.Mutex
	seen  []auth.Principal
	auths []string
}

func (f *fakeServices) record(ctx context.Context) {
	p, _ := auth.FromContext(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, p)
	f.auths = append(f.auths, md.Get("authorization")...)
	f.auths = append(f.auths, md.Get("grpcgateway-authorization")...)
}

func (f *fakeServices) EmbedQueries(ctx context.Context, _ *colpaliv1.EmbedQueriesRequest) (*colpaliv1.EmbedQueriesResponse, error) {
	f.record(ctx)
	return &colpaliv1.EmbedQueriesResponse{}, nil
}

func (f *fakeServices) IngestDocumentStream(stream grpc.BidiStreamingServer[colpaliv1.IngestDocumentStreamRequest, colpaliv1.IngestDocumentStreamResponse]) error {
	f.record(stream.Context())
	return nil
}

// edgeCodes maps the classes the interceptor returns to codes, as the
// gateway's edge does.
func edgeCodes(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errclass.Unauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, errclass.PermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, errclass.Unavailable):
		return status.Error(codes.Unavailable, err.Error())
	}
	return err
}

func startServer(t *testing.T, authn auth.Authenticator) (*fakeServices, *grpc.ClientConn) {
	t.Helper()
	ic := auth.NewInterceptor(authn, nil)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			return resp, edgeCodes(err)
		}, ic.Unary()),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return edgeCodes(h(srv, ss))
		}, ic.Stream()),
	)
	f := &fakeServices{}
	colpaliv1.RegisterEmbeddingServiceServer(srv, f)
	colpaliv1.RegisterDocumentServiceServer(srv, f)
	colpaliv1.RegisterBackendServiceServer(srv, f)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return f, conn
}

func withToken(ctx context.Context, header string) context.Context {
	if header == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", header)
}

func TestInterceptorOverGRPC(t *testing.T) {
	f, conn := startServer(t, auth.Chain(fixed("k", []auth.Scope{auth.ScopeEmbed}), fixed("w", []auth.Scope{auth.ScopeDocumentsWrite})))
	emb := colpaliv1.NewEmbeddingServiceClient(conn)
	docs := colpaliv1.NewDocumentServiceClient(conn)
	ctx := testutil.Context(t)
	for _, tc := range []struct {
		name, header string
		call         func(context.Context) error
		want         codes.Code
	}{
		{"no credential", "", embed(emb), codes.Unauthenticated},
		{"basic scheme", "Basic a2V5", embed(emb), codes.Unauthenticated},
		{"empty bearer", "Bearer ", embed(emb), codes.Unauthenticated},
		{"unknown form", "Bearer zzz", embed(emb), codes.Unauthenticated},
		{"revoked", "Bearer kbad", embed(emb), codes.Unauthenticated},
		{"store down", "Bearer kdown", embed(emb), codes.Unavailable},
		{"good", "Bearer k1", embed(emb), codes.OK},
		{"as from grpc-gateway", "Bearer k1", func(ctx context.Context) error {
			return embed(emb)(metadata.AppendToOutgoingContext(ctx, "grpcgateway-authorization", "Bearer k1"))
		}, codes.OK},
		{"lower-case scheme", "bearer k1", embed(emb), codes.OK},
		{"wrong scope", "Bearer k1", func(ctx context.Context) error {
			_, err := docs.Search(ctx, &colpaliv1.SearchRequest{})
			return err
		}, codes.PermissionDenied},
		{"admin needed", "Bearer k1", func(ctx context.Context) error {
			_, err := colpaliv1.NewBackendServiceClient(conn).ListBackends(ctx, &colpaliv1.ListBackendsRequest{})
			return err
		}, codes.PermissionDenied},
		{"stream without scope", "Bearer k1", ingestStream(docs), codes.PermissionDenied},
		{"stream", "Bearer w1", ingestStream(docs), codes.OK},
		{"health open", "", func(ctx context.Context) error {
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, codes.OK},
		{"health open even with a bad token", "Bearer kbad", func(ctx context.Context) error {
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(withToken(ctx, tc.header))
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			if _, token, _ := strings.Cut(tc.header, " "); len(token) >= 3 && strings.Contains(status.Convert(err).Message(), token) {
				t.Errorf("message repeats the token: %v", err)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) != 4 {
		t.Fatalf("handlers ran %d times, want 4 (three embeds and a stream): %v", len(f.seen), f.seen)
	}
	if f.seen[0].Tenant != "tenant-k" || f.seen[3].Tenant != "tenant-w" {
		t.Errorf("principals %v", f.seen)
	}
	if len(f.auths) != 0 {
		t.Errorf("handlers saw authorization metadata: %d values", len(f.auths))
	}
}

func embed(c colpaliv1.EmbeddingServiceClient) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{})
		return err
	}
}

func ingestStream(c colpaliv1.DocumentServiceClient) func(context.Context) error {
	return func(ctx context.Context) error {
		s, err := c.IngestDocumentStream(ctx)
		if err != nil {
			return err
		}
		_ = s.CloseSend()
		_, err = s.Recv()
		if err != nil && err.Error() == "EOF" {
			return nil
		}
		return err
	}
}

func TestInterceptorModeNone(t *testing.T) {
	f, conn := startServer(t, auth.None())
	ctx := testutil.Context(t)
	// With no header, and with a header that is not even Bearer.
	for _, h := range []string{"", "Basic x"} {
		if err := embed(colpaliv1.NewEmbeddingServiceClient(conn))(withToken(ctx, h)); err != nil {
			t.Fatalf("%q: %v", h, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[0].Tenant != auth.DefaultTenant || !f.seen[0].Has(auth.ScopeAdmin) || f.seen[0].Kind != auth.KindNone {
		t.Errorf("principal %v", f.seen[0])
	}
}

func TestInterceptorSeveralHeaders(t *testing.T) {
	ic := auth.NewInterceptor(fixed("k", auth.AllScopes), nil)
	_, err := ic.Check(incoming("authorization", "Bearer k1", "authorization", "Bearer k2"), colpaliv1.EmbeddingService_EmbedQueries_FullMethodName)
	if !errors.Is(err, errclass.Unauthenticated) || !strings.Contains(err.Error(), "2 authorization headers") {
		t.Fatalf("%v", err)
	}
}

func TestRequireHTTP(t *testing.T) {
	h := auth.RequireHTTP(auth.Chain(fixed("k", []auth.Scope{auth.ScopeAdmin}), fixed("e", []auth.Scope{auth.ScopeEmbed})), auth.ScopeAdmin,
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, _ := auth.FromContext(r.Context())
			_, _ = w.Write([]byte(p.Tenant))
		}))
	for _, tc := range []struct {
		header string
		code   int
		body   string
	}{
		{"", http.StatusUnauthorized, "missing credential"},
		{"Bearer kbad", http.StatusUnauthorized, "revoked"},
		{"Bearer e1", http.StatusForbidden, `needs scope "admin"`},
		{"Bearer kdown", http.StatusServiceUnavailable, "retry later"},
		{"Bearer k1", http.StatusOK, "tenant-k"},
	} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%q: %d %q, want %d %q", tc.header, rec.Code, rec.Body.String(), tc.code, tc.body)
		}
		if tc.code == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%q: no WWW-Authenticate", tc.header)
		}
	}
}
