package gateway

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/auth/jwtauth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/quota"
	"github.com/morphik-org/colpali-gateway/router"
)

// These tests run the gateway with its real authenticators (API keys in
// front of a fake key table, JWTs against a JWKS served here) and quotas,
// over gRPC and REST, with the fake embedder and store counting what
// reaches them.

// fakeKeys is the key table behind apikey.Authenticator: each key's
// answer, as the real store gives it (a principal, or Unauthenticated).
type fakeKeys struct {
	mu      sync.Mutex
	answers map[string]func() (apikey.Check, error) // by key prefix
}

var _ apikey.Lookuper = (*fakeKeys)(nil)

func (f *fakeKeys) Lookup(_ context.Context, key apikey.Key) (apikey.Check, error) {
	f.mu.Lock()
	answer, ok := f.answers[key.Prefix]
	f.mu.Unlock()
	if !ok {
		return apikey.Check{}, errclass.Errorf(errclass.Unauthenticated, "unknown API key")
	}
	return answer()
}

// testKey returns a well-formed API key whose prefix is prefix (8
// characters of a-z, 2-7).
func testKey(prefix string) string {
	secret := sha256.Sum256([]byte(prefix))
	return apikey.Scheme + prefix + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
}

// The keys of the tests.
var (
	keyA        = testKey("teamaaaa") // team-a: embed, documents
	keyB        = testKey("teambbbb") // team-b: embed, documents
	keyAdmin    = testKey("adminops") // ops: admin only
	keyReadOnly = testKey("readonly") // team-a: documents:read only
	keyRevoked  = testKey("revokedk")
	keyExpired  = testKey("expiredk")
	keyUnknown  = testKey("unknownk")
)

var clientScopes = []auth.Scope{auth.ScopeEmbed, auth.ScopeDocumentsRead, auth.ScopeDocumentsWrite}

func newFakeKeys() *fakeKeys {
	principal := func(tenant, prefix string, scopes ...auth.Scope) func() (apikey.Check, error) {
		return func() (apikey.Check, error) {
			return apikey.Check{Principal: auth.Principal{Tenant: tenant, Scopes: scopes, Subject: "cpk_" + prefix, Kind: auth.KindAPIKey}}, nil
		}
	}
	return &fakeKeys{answers: map[string]func() (apikey.Check, error){
		"teamaaaa": principal("team-a", "teamaaaa", clientScopes...),
		"teambbbb": principal("team-b", "teambbbb", clientScopes...),
		"adminops": principal("ops", "adminops", auth.ScopeAdmin),
		"readonly": principal("team-a", "readonly", auth.ScopeDocumentsRead),
		"revokedk": func() (apikey.Check, error) {
			return apikey.Check{}, errclass.Errorf(errclass.Unauthenticated, "API key cpk_revokedk was revoked")
		},
		// The store answers an expired key as such too; here the check
		// passes and the Authenticator's own expiry test, made on every
		// call (also from its cache), refuses it.
		"expiredk": func() (apikey.Check, error) {
			return apikey.Check{
				Principal: auth.Principal{Tenant: "team-a", Scopes: clientScopes, Subject: "cpk_expiredk", Kind: auth.KindAPIKey},
				ExpiresAt: time.Now().Add(-time.Minute),
			}, nil
		},
	}}
}

// testIdP is an identity provider: an RSA key and its JWKS.
type testIdP struct {
	key *rsa.PrivateKey
	url string
}

const (
	testIssuer   = "https://idp.example"
	testAudience = "colpali-gateway"
)

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgRS256, USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	set, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(srv.Close)
	return &testIdP{key: key, url: srv.URL}
}

// token signs claims (a valid token of tenant team-a, changed by mod).
func (p *testIdP) token(t *testing.T, mod func(jwt.MapClaims)) string {
	t.Helper()
	c := jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": "user-1", "tenant": "team-a",
		"scope": "embed documents:read documents:write",
		"iat":   time.Now().Add(-time.Minute).Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}
	if mod != nil {
		mod(c)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(p.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noneToken is an unsigned token (alg "none") with valid claims.
func noneToken(t *testing.T) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": "user-1", "tenant": "team-a", "scope": "embed",
		"exp": time.Now().Add(time.Hour).Unix(),
	})
	s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeBackends is an empty pool for the BackendService.
type fakeBackends struct{}

func (fakeBackends) Pool() router.PoolStatus { return router.PoolStatus{Policy: "round_robin"} }

// authGateway is a gateway with keys and JWTs, a fake store and the
// one-hot embedder.
type authGateway struct {
	*docGateway
	idp *testIdP
}

func startAuthGateway(t *testing.T, cfg Config, q *quota.Quotas) *authGateway {
	t.Helper()
	keys, err := apikey.NewAuthenticator(newFakeKeys(), apikey.CacheConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	idp := newTestIdP(t)
	v, err := jwtauth.New(jwtauth.Config{JWKSURL: idp.url, Issuer: testIssuer, Audience: testAudience}, jwtauth.Deps{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	authn, err := auth.ModeKeysJWT.Build(keys, v)
	if err != nil {
		t.Fatal(err)
	}
	fs, emb := newFakeStore(), oneHotEmbedder()
	g := startGateway(t, cfg, Deps{Embedder: emb, Documents: fs, Backends: fakeBackends{}, Authenticator: authn, Quotas: q})
	return &authGateway{docGateway: &docGateway{testGateway: g, docs: colpaliv1.NewDocumentServiceClient(g.conn), store: fs, emb: emb}, idp: idp}
}

// bearer is a per-call credential.
func bearer(token string) grpc.CallOption {
	if token == "" {
		return grpc.EmptyCallOption{}
	}
	return grpc.PerRPCCredentials(bearerCreds(token))
}

type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: the test server is plain text on
// loopback.
func (bearerCreds) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = bearerCreds("")

// rest sends a REST call with token (none when empty) and returns the
// status code and body.
func (g *testGateway) rest(t *testing.T, method, path, body, token string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testContext(t), method, g.baseURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// httpCodes are the HTTP statuses grpc-gateway gives the codes here.
var httpCodes = map[codes.Code]int{
	codes.OK: http.StatusOK, codes.NotFound: http.StatusNotFound, codes.Unauthenticated: http.StatusUnauthorized,
	codes.PermissionDenied: http.StatusForbidden, codes.ResourceExhausted: http.StatusTooManyRequests,
}

// rpc is one call of every RPC of the API, made with a token, over gRPC
// or REST; it returns the code (REST's HTTP status mapped back) and the
// response body as JSON.
type rpc struct {
	name string
	grpc func(ctx context.Context, g *authGateway, token string) (any, error)
	rest func(t *testing.T, g *authGateway, token string) (int, []byte) // nil: no REST route
}

func imageJSON(t *testing.T, width int) string {
	return base64.StdEncoding.EncodeToString(pngImage(t, width, 4))
}

// everyRPC calls each RPC with harmless arguments; docID names a
// document for Get and Delete.
func everyRPC(t *testing.T, docID string) []rpc {
	img := pngImage(t, 3, 4)
	return []rpc{
		{"EmbedQueries", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"page-1"}}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodPost, "/v1/queries:embed", `{"queries":["page-1"]}`, tok)
		}},
		{"EmbedImages", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return g.client.EmbedImages(ctx, &colpaliv1.EmbedImagesRequest{Images: [][]byte{img}}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodPost, "/v1/images:embed", fmt.Sprintf(`{"images":[%q]}`, imageJSON(t, 3)), tok)
		}},
		{"IngestDocument", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return g.docs.IngestDocument(ctx, &colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{Image: img}}}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodPost, "/v1/documents", fmt.Sprintf(`{"pages":[{"image":%q}]}`, imageJSON(t, 3)), tok)
		}},
		{"IngestDocumentStream", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			stream, err := g.docs.IngestDocumentStream(ctx, bearer(tok))
			if err != nil {
				return nil, err
			}
			if err := stream.Send(streamHeader(1, "")); err == nil {
				_ = stream.Send(streamPage(img))
				_ = stream.CloseSend()
			}
			var last *colpaliv1.IngestDocumentStreamResponse
			for {
				resp, err := stream.Recv()
				if err == io.EOF {
					return last, nil
				}
				if err != nil {
					return nil, err
				}
				last = resp
			}
		}, nil},
		{"GetDocument", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return g.docs.GetDocument(ctx, &colpaliv1.GetDocumentRequest{DocumentId: docID}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodGet, "/v1/documents/"+docID, "", tok)
		}},
		{"ListDocuments", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return g.docs.ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodGet, "/v1/documents", "", tok)
		}},
		{"Search", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return g.docs.Search(ctx, &colpaliv1.SearchRequest{Query: "page-3"}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodPost, "/v1/documents:search", `{"query":"page-3"}`, tok)
		}},
		{"DeleteDocument", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return g.docs.DeleteDocument(ctx, &colpaliv1.DeleteDocumentRequest{DocumentId: docID}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodDelete, "/v1/documents/"+docID, "", tok)
		}},
		{"ListBackends", func(ctx context.Context, g *authGateway, tok string) (any, error) {
			return colpaliv1.NewBackendServiceClient(g.conn).ListBackends(ctx, &colpaliv1.ListBackendsRequest{}, bearer(tok))
		}, func(t *testing.T, g *authGateway, tok string) (int, []byte) {
			return g.rest(t, http.MethodGet, "/v1/backends", "", tok)
		}},
	}
}

// TestAuthRefusals: every credential that is missing, bad or short of
// scope is refused with its code, over gRPC and REST, on every RPC, and
// nothing reaches the embedder or the store.
func TestAuthRefusals(t *testing.T) {
	g := startAuthGateway(t, Config{}, nil)
	ctx := testContext(t)
	docID := newUUID()
	wrongAudience := g.idp.token(t, func(c jwt.MapClaims) { c["aud"] = "another-service" })
	expiredJWT := g.idp.token(t, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
	for _, tc := range []struct {
		name, token string
		want        codes.Code
		msg         string // in the message
	}{
		{"no credential", "", codes.Unauthenticated, "missing credential"},
		{"not a bearer token", "x", codes.Unauthenticated, "not of a form"},
		{"unknown key", keyUnknown, codes.Unauthenticated, "unknown API key"},
		{"revoked key", keyRevoked, codes.Unauthenticated, "revoked"},
		{"expired key", keyExpired, codes.Unauthenticated, "expired"},
		{"JWT for another audience", wrongAudience, codes.Unauthenticated, "audience"},
		{"expired JWT", expiredJWT, codes.Unauthenticated, "expired"},
		{"alg none", noneToken(t), codes.Unauthenticated, ""},
		{"admin key on client methods", keyAdmin, codes.PermissionDenied, "needs scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range everyRPC(t, docID) {
				want := tc.want
				if r.name == "ListBackends" && tc.token == keyAdmin {
					want = codes.OK
				}
				_, err := r.grpc(ctx, g, tc.token)
				if status.Code(err) != want || want != codes.OK && !strings.Contains(status.Convert(err).Message(), tc.msg) {
					t.Errorf("gRPC %s: %v, want %v naming %q", r.name, err, want, tc.msg)
				}
				if r.rest != nil {
					if code, body := r.rest(t, g, tc.token); code != httpCodes[want] {
						t.Errorf("REST %s: HTTP %d %s, want %d", r.name, code, body, httpCodes[want])
					}
				}
			}
		})
	}
	// A read-only key reads, and may not write or embed.
	for _, r := range everyRPC(t, docID) {
		want := codes.PermissionDenied
		switch r.name {
		case "GetDocument":
			want = codes.NotFound
		case "ListDocuments", "Search":
			want = codes.OK
		}
		if r.name == "Search" {
			continue // it embeds the query: checked below, with the embedder's count
		}
		if _, err := r.grpc(ctx, g, keyReadOnly); status.Code(err) != want {
			t.Errorf("read-only key, gRPC %s: %v, want %v", r.name, err, want)
		}
	}
	if n := g.emb.Calls(); n != 0 {
		t.Errorf("the embedder was called %d times by refused calls", n)
	}
	if calls := g.store.Calls(); len(calls) != 2 || calls[0] != "get" || !strings.HasPrefix(calls[1], "list") {
		t.Errorf("store calls %v, want only the read-only key's get and list", calls)
	}
}

// TestReflectionNeedsAdmin: the API's description is an admin's, like
// ListBackends.
// TestReflectionNotOnPublicListener: reflection lists every service and
// method, so it is served on the admin listener only (admin.go); on the
// public one it does not exist, whatever the credential, admin included.
func TestReflectionNotOnPublicListener(t *testing.T) {
	g := startAuthGateway(t, Config{}, nil)
	ctx := testContext(t)
	for tok, want := range map[string]codes.Code{keyA: codes.Unimplemented, "": codes.Unimplemented, keyAdmin: codes.Unimplemented} {
		stream, err := reflectionpb.NewServerReflectionClient(g.conn).ServerReflectionInfo(ctx, bearer(tok))
		if err == nil {
			// A refused stream's Send may fail with io.EOF; its status
			// comes from Recv.
			_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			_, err = stream.Recv()
			_ = stream.CloseSend()
		}
		if status.Code(err) != want {
			t.Errorf("reflection with %q: %v, want %v", tok, err, want)
		}
	}
}

// ingested is a document id from an ingest response, gRPC or REST.
func ingestedID(t *testing.T, resp any, body []byte) string {
	t.Helper()
	switch r := resp.(type) {
	case *colpaliv1.IngestDocumentResponse:
		return r.GetDocument().GetDocumentId()
	case *colpaliv1.IngestDocumentStreamResponse:
		return r.GetDocument().GetDocumentId()
	}
	var out struct {
		Document struct {
			DocumentID string `json:"documentId"`
		} `json:"document"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Document.DocumentID == "" {
		t.Fatalf("ingest response %s: %v", body, err)
	}
	return out.Document.DocumentID
}

// TestTenantMatrix: two tenants, every RPC, gRPC and REST. Each tenant
// sees its own documents only: the other's is NOT_FOUND to Get and
// Delete, and absent from List and Search. The same idempotency key under
// two tenants makes two documents.
func TestTenantMatrix(t *testing.T) {
	g := startAuthGateway(t, Config{}, nil)
	ctx := testContext(t)
	tenants := map[string]string{"team-a": keyA, "team-b": keyB}

	// Each tenant ingests, over each path, with the same idempotency key.
	docs := map[string][]string{} // tenant -> its document ids
	for tenant, tok := range tenants {
		resp, err := g.docs.IngestDocument(ctx, &colpaliv1.IngestDocumentRequest{Pages: pages(t, 3, 1), IdempotencyKey: "same-key"}, bearer(tok))
		if err != nil {
			t.Fatalf("%s IngestDocument: %v", tenant, err)
		}
		docs[tenant] = append(docs[tenant], ingestedID(t, resp, nil))

		stream, err := g.docs.IngestDocumentStream(ctx, bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(streamHeader(1, "same-stream-key")); err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(streamPage(pngImage(t, 3, 4))); err != nil {
			t.Fatal(err)
		}
		_ = stream.CloseSend()
		var last *colpaliv1.IngestDocumentStreamResponse
		for {
			resp, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s IngestDocumentStream: %v", tenant, err)
			}
			last = resp
		}
		docs[tenant] = append(docs[tenant], ingestedID(t, last, nil))

		code, body := g.rest(t, http.MethodPost, "/v1/documents", fmt.Sprintf(`{"pages":[{"image":%q}],"idempotencyKey":"same-rest-key"}`, imageJSON(t, 3)), tok)
		if code != http.StatusOK {
			t.Fatalf("%s REST ingest: HTTP %d %s", tenant, code, body)
		}
		docs[tenant] = append(docs[tenant], ingestedID(t, nil, body))
	}
	for _, a := range docs["team-a"] {
		if slices.Contains(docs["team-b"], a) {
			t.Fatalf("the same idempotency key under two tenants gave one document: %v", docs)
		}
	}
	if len(docs["team-a"]) != 3 || len(docs["team-b"]) != 3 {
		t.Fatalf("documents %v", docs)
	}

	for tenant, tok := range tenants {
		other := "team-b"
		if tenant == "team-b" {
			other = "team-a"
		}
		theirs := docs[other][0]
		t.Run(tenant, func(t *testing.T) {
			for _, r := range everyRPC(t, theirs) {
				resp, err := r.grpc(ctx, g, tok)
				code := -1
				var body []byte
				if r.rest != nil {
					code, body = r.rest(t, g, tok)
				}
				switch r.name {
				case "GetDocument", "DeleteDocument":
					if status.Code(err) != codes.NotFound || code != http.StatusNotFound {
						t.Errorf("%s of the other tenant's document: gRPC %v, REST %d %s; want NOT_FOUND", r.name, err, code, body)
					}
				case "ListBackends":
					if status.Code(err) != codes.PermissionDenied || code != http.StatusForbidden {
						t.Errorf("ListBackends by a client key: gRPC %v, REST %d; want PERMISSION_DENIED", err, code)
					}
				case "ListDocuments":
					var got []string
					for _, d := range resp.(*colpaliv1.ListDocumentsResponse).GetDocuments() {
						got = append(got, d.GetDocumentId())
					}
					if want := g.store.ids(tenant); err != nil || !slices.Equal(got, want) {
						t.Errorf("gRPC list: %v %v, want %v", got, err, want)
					}
					if code != http.StatusOK || !strings.Contains(string(body), docs[tenant][0]) {
						t.Errorf("REST list: HTTP %d %s", code, body)
					}
					for _, id := range g.store.ids(other) {
						if strings.Contains(string(body), id) {
							t.Errorf("REST list of %s shows %s's document %s", tenant, other, id)
						}
					}
				case "Search":
					if err != nil || len(resp.(*colpaliv1.SearchResponse).GetResults()) == 0 {
						t.Errorf("gRPC search: %v %v", resp, err)
					}
					for _, res := range resp.(*colpaliv1.SearchResponse).GetResults() {
						if owner := g.store.owner(res.GetDocument().GetDocumentId()); owner != tenant {
							t.Errorf("search of %s found %s's document %s", tenant, owner, res.GetDocument().GetDocumentId())
						}
					}
					if code != http.StatusOK || !strings.Contains(string(body), docs[tenant][0]) {
						t.Errorf("REST search: HTTP %d %s", code, body)
					}
					for _, id := range g.store.ids(other) {
						if strings.Contains(string(body), id) {
							t.Errorf("REST search of %s found %s's document %s", tenant, other, id)
						}
					}
				default: // the embedding RPCs and ingestion work for both
					if err != nil || r.rest != nil && code != http.StatusOK {
						t.Errorf("%s: gRPC %v, REST %d %s", r.name, err, code, body)
					}
				}
			}
		})
	}
	// Nothing of either tenant was deleted by the other.
	for tenant, tok := range tenants {
		for _, id := range docs[tenant] {
			if _, err := g.docs.GetDocument(ctx, &colpaliv1.GetDocumentRequest{DocumentId: id}, bearer(tok)); err != nil {
				t.Errorf("%s's document %s after the other's calls: %v", tenant, id, err)
			}
		}
	}
}

// owner is the tenant of a document of the fake store.
func (f *fakeStore) owner(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.docs[id]; ok {
		return d.Tenant
	}
	return ""
}

// ids are tenant's committed documents, in creation order.
func (f *fakeStore) ids(tenant string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, id := range f.order {
		if _, ok := f.committed(tenant, id); ok {
			out = append(out, id)
		}
	}
	return out
}

// fakeClock is a quota clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestQuotaRateIsPerTenant: a tenant over its call rate gets
// RESOURCE_EXHAUSTED (429) with a RetryInfo delay, and the embedder does
// not see the call, while another tenant's calls all pass. The clock
// stands still, so no token comes back during the test: outcomes, not
// timing.
func TestQuotaRateIsPerTenant(t *testing.T) {
	clk := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	q, err := quota.New(quota.Config{Default: quota.Limits{CallsPerSecond: 1, CallBurst: 3}}, quota.Deps{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	g := startAuthGateway(t, Config{}, q)
	ctx := testContext(t)
	embed := func(tok string) error {
		_, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"page-1"}}, bearer(tok))
		return err
	}
	for i := range 3 {
		if err := embed(keyA); err != nil {
			t.Fatalf("team-a call %d within its burst: %v", i+1, err)
		}
	}
	err = embed(keyA)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("team-a over its rate: %v, want RESOURCE_EXHAUSTED", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > time.Second {
		t.Errorf("RetryInfo %v, want a delay within the second a token takes", retry)
	}
	code, body := g.rest(t, http.MethodPost, "/v1/queries:embed", `{"queries":["page-1"]}`, keyA)
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "RetryInfo") {
		t.Errorf("team-a over REST: HTTP %d %s, want 429 with RetryInfo", code, body)
	}
	calls := g.emb.Calls()
	// team-b has a bucket of its own: all its calls pass while team-a waits.
	for i := range 3 {
		if err := embed(keyB); err != nil {
			t.Errorf("team-b call %d while team-a is limited: %v", i+1, err)
		}
	}
	if got := g.emb.Calls() - calls; got != 3 {
		t.Errorf("embedder calls during team-b's turn: %d, want 3 (team-b's only)", got)
	}
	// A second later team-a has one token again.
	clk.Advance(time.Second)
	if err := embed(keyA); err != nil {
		t.Errorf("team-a after a second: %v", err)
	}
}

// tenantCounter counts a fake store's committed documents per tenant, as
// store.CountTenant does.
type tenantCounter struct{ fs *fakeStore }

func (c tenantCounter) CountTenant(_ context.Context, tenant string) (docs, pages int64, err error) {
	c.fs.mu.Lock()
	defer c.fs.mu.Unlock()
	for _, d := range c.fs.docs {
		if d.committed && d.Tenant == tenant {
			docs++
			pages += int64(len(d.pages))
		}
	}
	return docs, pages, nil
}

// TestStorageQuota: past its storage quota, a tenant's ingestion is
// refused with RESOURCE_EXHAUSTED before any page is embedded; a retry of
// a stored document is still answered, and another tenant still ingests.
// A call with more pages than the page burst is refused as invalid.
func TestStorageQuota(t *testing.T) {
	fs := newFakeStore()
	q, err := quota.New(quota.Config{
		Default: quota.Limits{MaxDocuments: 1, PagesPerSecond: 1, PageBurst: 4},
	}, quota.Deps{Counter: tenantCounter{fs}, Now: (&fakeClock{now: time.Unix(0, 0)}).Now})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.NewAuthenticator(newFakeKeys(), apikey.CacheConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	emb := oneHotEmbedder()
	gw := startGateway(t, Config{}, Deps{Embedder: emb, Documents: fs, Authenticator: keys, Quotas: q})
	docs := colpaliv1.NewDocumentServiceClient(gw.conn)
	ctx := testContext(t)
	ingest := func(tok, key string, n int) (*colpaliv1.IngestDocumentResponse, error) {
		return docs.IngestDocument(ctx, &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, n), IdempotencyKey: key}, bearer(tok))
	}
	first, err := ingest(keyA, "k1", 1)
	if err != nil {
		t.Fatal(err)
	}
	calls := emb.Calls()
	_, err = ingest(keyA, "k2", 1)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "quota of 1") {
		t.Errorf("second document of team-a: %v, want RESOURCE_EXHAUSTED naming the quota", err)
	}
	if emb.Calls() != calls {
		t.Errorf("the refused ingestion reached the embedder")
	}
	if again, err := ingest(keyA, "k1", 1); err != nil || again.GetCreated() || again.GetDocument().GetDocumentId() != first.GetDocument().GetDocumentId() {
		t.Errorf("retry of the stored document: %v, %v", again, err)
	}
	if _, err := ingest(keyB, "k1", 1); err != nil {
		t.Errorf("team-b's first document: %v", err)
	}
	// The page rate: team-b has 3 pages left of its burst of 4, at a
	// standing clock; 5 pages at once can never pass the burst.
	if _, err := ingest(keyB, "k5", 5); status.Code(err) != codes.InvalidArgument {
		t.Errorf("5 pages with a page burst of 4: %v, want INVALID_ARGUMENT", err)
	}
}

// TestCredentialsNeverLogged: neither the token nor the Authorization
// header reaches the log, from gRPC or REST, accepted or refused.
func TestCredentialsNeverLogged(t *testing.T) {
	var logs syncBuffer
	keys, err := apikey.NewAuthenticator(newFakeKeys(), apikey.CacheConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := newBufferLogger(&logs)
	g := startGateway(t, Config{}, Deps{Authenticator: keys, Logger: logger, Documents: newFakeStore()})
	ctx := testContext(t)
	docs := colpaliv1.NewDocumentServiceClient(g.conn)
	for _, tok := range []string{keyA, keyRevoked, keyAdmin} {
		_, _ = g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}, bearer(tok))
		_, _ = docs.GetDocument(metadata.AppendToOutgoingContext(ctx, "x-request-id", "r1"), &colpaliv1.GetDocumentRequest{DocumentId: newUUID()}, bearer(tok))
		g.rest(t, http.MethodPost, "/v1/queries:embed", `{"queries":["q"]}`, tok)
	}
	out := logs.String()
	if !strings.Contains(out, "rpc") {
		t.Fatalf("nothing logged: %q", out)
	}
	for _, tok := range []string{keyA, keyRevoked, keyAdmin} {
		secret := tok[len(apikey.Scheme)+apikey.PrefixLen+1:]
		if strings.Contains(out, secret) {
			t.Errorf("a key's secret is in the log")
		}
	}
	if strings.Contains(strings.ToLower(out), "bearer") {
		t.Errorf("an Authorization value is in the log")
	}
}

// newBufferLogger logs everything, debug included, as JSON into w.
func newBufferLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestStreamPagesCountAsTheyCome: a stream's pages draw on the page rate
// one by one, so a document larger than the page burst may be streamed
// while tokens last; past them the stream is refused with
// RESOURCE_EXHAUSTED and nothing of the document stays.
func TestStreamPagesCountAsTheyCome(t *testing.T) {
	clk := &fakeClock{now: time.Unix(0, 0)}
	q, err := quota.New(quota.Config{Default: quota.Limits{PagesPerSecond: 1, PageBurst: 6}}, quota.Deps{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	g := startAuthGateway(t, Config{MaxImages: 2}, q)
	ctx := testContext(t)
	stream := func(n int) error {
		s, err := g.docs.IngestDocumentStream(ctx, bearer(keyA))
		if err != nil {
			return err
		}
		pgs := pages(t, 1, n)
		go func() {
			if s.Send(streamHeader(int32(n), "")) != nil {
				return
			}
			for _, p := range pgs {
				if s.Send(streamPage(p.GetImage())) != nil {
					return
				}
			}
			_ = s.CloseSend()
		}()
		for {
			if _, err := s.Recv(); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}
	if err := stream(4); err != nil {
		t.Fatalf("4 pages within a burst of 6: %v", err)
	}
	if err := stream(4); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("4 more pages with 2 tokens left: %v, want RESOURCE_EXHAUSTED", err)
	}
	if ids := g.store.ids("team-a"); len(ids) != 1 {
		t.Errorf("team-a's documents %v, want only the first", ids)
	}
	// team-b's pages are its own.
	if _, err := g.docs.IngestDocument(ctx, &colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 6)}, bearer(keyB)); err != nil {
		t.Errorf("team-b's 6 pages: %v", err)
	}
}
