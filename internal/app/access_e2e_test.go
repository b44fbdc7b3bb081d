package app

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

// keysCmd runs `gateway keys ARGS` and returns what it printed on
// standard output.
func keysCmd(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	var out, errOut strings.Builder
	if err := runKeys(ctx, args, &out, &errOut, noEnv); err != nil {
		t.Fatalf("gateway keys %v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}

// withKey is ctx sending key as its bearer credential.
func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// TestAPIKeysEndToEnd: keys made with `gateway keys create` on the
// embedded Postgres let their tenant in, with their scopes, and only into
// their tenant's documents; a call without a key, with a revoked key or
// with an expired one is refused.
func TestAPIKeysEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One embedded Postgres for the keys commands and the gateway (as a
	// shared database would be), so that each command does not start its
	// own.
	pg, err := embeddedpg.Start(ctx, embeddedpg.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pg.Stop() }()
	db := []string{"-database-url", pg.URL()}
	key := func(args ...string) string {
		return strings.TrimSpace(keysCmd(t, ctx, append(append(db[:len(db):len(db)], "create", "-quiet"), args...)...))
	}
	keyA := key("-tenant", "team-a")
	keyB := key("-tenant", "team-b")
	readOnly := key("-tenant", "team-a", "-scopes", "documents:read")
	revoked := key("-tenant", "team-a")
	expired := key("-tenant", "team-a", "-expires", "1ms")
	keysCmd(t, ctx, append(db[:len(db):len(db)], "revoke", revoked[:len("cpk_")+8])...)
	listing := keysCmd(t, ctx, append(db[:len(db):len(db)], "list")...)
	for _, k := range []string{keyA, keyB, readOnly, revoked, expired} {
		if prefix, secret := k[:len("cpk_")+8], k[len("cpk_")+9:]; !strings.Contains(listing, prefix) || strings.Contains(listing, secret) {
			t.Errorf("keys list shows %s's prefix: %v; its secret: %v", prefix, strings.Contains(listing, prefix), strings.Contains(listing, secret))
		}
	}

	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Speed: 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	r := startRun(t, ctx, sim.GRPCAddr()+"="+sim.MetricsAddr(), append(db[:len(db):len(db)], "-auth", "keys"), nil)
	docs := colpaliv1.NewDocumentServiceClient(r.conn)
	embed := colpaliv1.NewEmbeddingServiceClient(r.conn)
	// Until the gateway's first health check and the store are up, calls
	// are UNAVAILABLE.
	for {
		_, err := docs.ListDocuments(withKey(ctx, keyA), &colpaliv1.ListDocumentsRequest{})
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("ListDocuments with a good key: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		_, err := embed.EmbedQueries(withKey(ctx, keyA), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("EmbedQueries with a good key: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, tc := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no key", ctx, codes.Unauthenticated},
		{"revoked key", withKey(ctx, revoked), codes.Unauthenticated},
		{"expired key", withKey(ctx, expired), codes.Unauthenticated},
		{"read-only key", withKey(ctx, readOnly), codes.PermissionDenied},
		{"team-b", withKey(ctx, keyB), codes.OK},
	} {
		_, err := embed.EmbedQueries(tc.ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
		if status.Code(err) != tc.want {
			t.Errorf("EmbedQueries with %s: %v, want %v", tc.name, err, tc.want)
		}
	}

	page := noisePNG(t, 48, 64, 1)
	ingested, err := docs.IngestDocument(withKey(ctx, keyA), &colpaliv1.IngestDocumentRequest{
		Pages: []*colpaliv1.Page{{Image: page}}, IdempotencyKey: "same",
	})
	if err != nil {
		t.Fatal(err)
	}
	id := ingested.GetDocument().GetDocumentId()
	if _, err := docs.GetDocument(withKey(ctx, readOnly), &colpaliv1.GetDocumentRequest{DocumentId: id}); err != nil {
		t.Errorf("team-a's read-only key reading team-a's document: %v", err)
	}
	if _, err := docs.GetDocument(withKey(ctx, keyB), &colpaliv1.GetDocumentRequest{DocumentId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("team-b reading team-a's document: %v, want NOT_FOUND", err)
	}
	if _, err := docs.DeleteDocument(withKey(ctx, keyB), &colpaliv1.DeleteDocumentRequest{DocumentId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("team-b deleting team-a's document: %v, want NOT_FOUND", err)
	}
	list, err := docs.ListDocuments(withKey(ctx, keyB), &colpaliv1.ListDocumentsRequest{})
	if err != nil || len(list.GetDocuments()) != 0 {
		t.Errorf("team-b's list: %v, %v; want empty", list, err)
	}
	hits, err := docs.Search(withKey(ctx, keyB), &colpaliv1.SearchRequest{Query: "q"})
	if err != nil || len(hits.GetResults()) != 0 {
		t.Errorf("team-b's search: %v, %v; want nothing", hits, err)
	}
	other, err := docs.IngestDocument(withKey(ctx, keyB), &colpaliv1.IngestDocumentRequest{
		Pages: []*colpaliv1.Page{{Image: page}}, IdempotencyKey: "same",
	})
	if err != nil || !other.GetCreated() || other.GetDocument().GetDocumentId() == id {
		t.Errorf("team-b ingesting with team-a's idempotency key: %v, %v; want a document of its own", other, err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

// TestAuthNoneIsLoopbackOnly: -auth none listens on loopback by default and
// refuses any other address; the default mode, keys, needs the database.
func TestAuthNoneIsLoopbackOnly(t *testing.T) {
	o, err := parseOptions([]string{"-auth", "none"}, io.Discard, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if o.gateway.GRPCAddr != loopbackGRPCAddr || o.gateway.HTTPAddr != loopbackHTTPAddr {
		t.Errorf("-auth none listens on %s and %s, want loopback", o.gateway.GRPCAddr, o.gateway.HTTPAddr)
	}
	_, err = parseOptions([]string{"-auth", "none", "-grpc-addr", ":9090", "-http-addr", "10.0.0.1:8080"}, io.Discard, noEnv)
	if err == nil || !strings.Contains(err.Error(), `":9090" (all interfaces) is not loopback`) || !strings.Contains(err.Error(), "10.0.0.1:8080") {
		t.Errorf("-auth none on other addresses: %v", err)
	}
	o, err = parseOptions(nil, io.Discard, noEnv)
	if err != nil || o.access.mode.String() != "keys" || o.gateway.GRPCAddr != ":9090" {
		t.Errorf("default mode %v on %s: %v", o.access.mode, o.gateway.GRPCAddr, err)
	}
	if _, err := parseOptions([]string{"-auth", "jwt"}, io.Discard, noEnv); err == nil || !strings.Contains(err.Error(), "jwt jwks url: required") {
		t.Errorf("-auth jwt without -jwt-*: %v", err)
	}
	if _, err := parseOptions([]string{"-auth", "sometimes"}, io.Discard, noEnv); err == nil || !strings.Contains(err.Error(), "-auth") {
		t.Errorf("-auth sometimes: %v", err)
	}
}

// TestKeysModeNeedsTheDatabase: without a database the default mode has
// nowhere to find keys, and says what to do.
func TestKeysModeNeedsTheDatabase(t *testing.T) {
	t.Setenv("COLPALI_PGLITE_DIR", t.TempDir()) // no node_modules there
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Main(ctx, []string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir()}, io.Discard, noEnv)
	if err == nil || !strings.Contains(err.Error(), "-auth none") || !strings.Contains(err.Error(), "-database-url") {
		t.Errorf("keys mode without a database: %v", err)
	}
}
