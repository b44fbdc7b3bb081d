package jwtauth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/jwtauth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	issuer   = "https://idp.example"
	audience = "colpali-gateway"
)

var now = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// signer is a private key and what the JWKS publishes for it.
type signer struct {
	kid    string
	alg    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	edKey    ed25519.PrivateKey
)

func testKeys(t testing.TB) (rs, rs2, es, ed signer) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err == nil {
			rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048)
		}
		if err == nil {
			ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		}
		if err == nil {
			_, edKey, err = ed25519.GenerateKey(rand.Reader)
		}
		if err != nil {
			panic(err)
		}
	})
	return signer{"rs-1", "RS256", jwt.SigningMethodRS256, rsaKey},
		signer{"rs-2", "RS256", jwt.SigningMethodRS256, rsaKey2},
		signer{"es-1", "ES256", jwt.SigningMethodES256, ecKey},
		signer{"ed-1", "EdDSA", jwt.SigningMethodEdDSA, edKey}
}

// jwks serves a key set that tests can change, and counts its fetches.
type jwks struct {
	mu      sync.Mutex
	signers []signer
	fetches atomic.Int64
	srv     *httptest.Server
}

func newJWKS(t *testing.T, signers ...signer) *jwks {
	j := &jwks{signers: signers}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		defer j.mu.Unlock()
		var set jwkset.JWKSMarshal
		for _, s := range j.signers {
			k, err := jwkset.NewJWKFromKey(s.priv.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: jwkset.ALG(s.alg), USE: jwkset.UseSig}})
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			set.Keys = append(set.Keys, k.Marshal())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwks) publish(signers ...signer) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.signers = signers
}

func newVerifier(t *testing.T, url string, mod func(*jwtauth.Config)) *jwtauth.Verifier {
	t.Helper()
	cfg := jwtauth.Config{JWKSURL: url, Issuer: issuer, Audience: audience, FetchTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	v, err := jwtauth.New(cfg, jwtauth.Deps{Now: func() time.Time { return now }, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func claims(mod func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss":    issuer,
		"aud":    []string{audience, "other"},
		"sub":    "user-1",
		"tenant": "team-a",
		"scope":  "openid embed documents:read",
		"iat":    now.Add(-time.Minute).Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"exp":    now.Add(time.Hour).Unix(),
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func sign(t *testing.T, s signer, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	tok.Header["kid"] = s.kid
	out, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifier(t *testing.T) {
	rs, _, es, ed := testKeys(t)
	j := newJWKS(t, rs, es, ed)
	v := newVerifier(t, j.srv.URL, nil)
	ctx := testutil.Context(t)

	// hs256WithPublicKey is the RS/HS confusion: the provider's public key
	// (as PEM, which is what a naive verifier would use as the secret).
	der, err := x509.MarshalPKIXPublicKey(rs.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
	hs.Header["kid"] = rs.kid
	hsToken, err := hs.SignedString(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil))
	noneToken, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		token string
		want  error
		sub   string // in the error message
	}{
		{"RS256", sign(t, rs, claims(nil)), nil, ""},
		{"ES256", sign(t, es, claims(nil)), nil, ""},
		{"EdDSA", sign(t, ed, claims(nil)), nil, ""},
		{"expiry within leeway", sign(t, rs, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() })), nil, ""},
		{"wrong audience", sign(t, rs, claims(func(c jwt.MapClaims) { c["aud"] = "someone-else" })), errclass.Unauthenticated, "audience"},
		{"wrong issuer", sign(t, rs, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), errclass.Unauthenticated, "issuer"},
		{"expired", sign(t, rs, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), errclass.Unauthenticated, "expired"},
		{"no exp", sign(t, rs, claims(func(c jwt.MapClaims) { delete(c, "exp") })), errclass.Unauthenticated, "exp"},
		{"not yet valid", sign(t, rs, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() })), errclass.Unauthenticated, "nbf"},
		{"issued in the future", sign(t, rs, claims(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Minute).Unix() })), errclass.Unauthenticated, "iat"},
		{"alg none", noneToken, errclass.Unauthenticated, "algorithm"},
		{"HS256 with the public key", hsToken, errclass.Unauthenticated, "algorithm"},
		{"kid of another key", func() string { s := es; s.kid = rs.kid; return sign(t, s, claims(nil)) }(), errclass.Unauthenticated, "JWT rejected"},
		{"tampered payload", func() string {
			p := strings.Split(sign(t, rs, claims(nil)), ".")
			p[1] = strings.Split(sign(t, rs, claims(func(c jwt.MapClaims) { c["tenant"] = "team-b" })), ".")[1]
			return strings.Join(p, ".")
		}(), errclass.Unauthenticated, "signature"},
		{"no tenant", sign(t, rs, claims(func(c jwt.MapClaims) { delete(c, "tenant") })), errclass.Unauthenticated, `claim "tenant"`},
		{"bad tenant", sign(t, rs, claims(func(c jwt.MapClaims) { c["tenant"] = "../x" })), errclass.Unauthenticated, `claim "tenant"`},
		{"malformed", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", errclass.Unauthenticated, "JWT rejected"},
		{"oversized", "a." + strings.Repeat("b", jwtauth.MaxTokenBytes) + ".c", errclass.Unauthenticated, "at most"},
		{"an API key", "cpk_abcdefgh_" + strings.Repeat("A", 43), auth.ErrUnrecognized, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Authenticate(ctx, tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if p.Tenant != "team-a" || p.Subject != "user-1" || p.Kind != auth.KindJWT ||
					len(p.Scopes) != 2 || p.Scopes[0] != auth.ScopeEmbed || p.Scopes[1] != auth.ScopeDocumentsRead {
					t.Fatalf("principal %+v", p)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, errclass.Unauthenticated) || !strings.Contains(err.Error(), tc.sub) {
				t.Fatalf("%v, want %v naming %q", err, tc.want, tc.sub)
			}
			if strings.Contains(err.Error(), tc.token[:min(len(tc.token), 20)]) {
				t.Errorf("error repeats the token: %v", err)
			}
		})
	}
}

func TestScopesClaimAsArray(t *testing.T) {
	rs, _, _, _ := testKeys(t)
	j := newJWKS(t, rs)
	v := newVerifier(t, j.srv.URL, func(c *jwtauth.Config) { c.ScopesClaim = "scp"; c.TenantClaim = "org" })
	p, err := v.Authenticate(testutil.Context(t), sign(t, rs, claims(func(c jwt.MapClaims) {
		c["org"] = "org-9"
		c["scp"] = []string{"admin", "documents:write", "email"}
	})))
	if err != nil || p.Tenant != "org-9" || len(p.Scopes) != 2 || !p.Has(auth.ScopeAdmin) || !p.Has(auth.ScopeDocumentsWrite) {
		t.Fatalf("%+v %v", p, err)
	}
}

func TestKeyRotation(t *testing.T) {
	rs, rs2, _, _ := testKeys(t)
	j := newJWKS(t, rs)
	v := newVerifier(t, j.srv.URL, func(c *jwtauth.Config) { c.UnknownKIDInterval = time.Hour })
	ctx := testutil.Context(t)
	if _, err := v.Authenticate(ctx, sign(t, rs, claims(nil))); err != nil {
		t.Fatal(err)
	}
	startFetches := j.fetches.Load()

	// The provider rotates: a token under the new kid makes the verifier
	// refetch, once, and passes.
	j.publish(rs, rs2)
	if _, err := v.Authenticate(ctx, sign(t, rs2, claims(nil))); err != nil {
		t.Fatalf("token under the rotated key: %v", err)
	}
	if n := j.fetches.Load() - startFetches; n != 1 {
		t.Fatalf("%d fetches for the new kid, want 1", n)
	}
	// Made-up kids cannot make it refetch again within the interval.
	forged := rs2
	forged.kid = "forged"
	for range 5 {
		_, err := v.Authenticate(ctx, sign(t, forged, claims(nil)))
		if !errors.Is(err, errclass.Unauthenticated) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if n := j.fetches.Load() - startFetches; n != 1 {
		t.Errorf("%d fetches after 5 unknown kids, want still 1 (rate-limited)", n)
	}
	// The old key retired by the provider stops working at the next refresh.
	j.publish(rs2)
	v2 := newVerifier(t, j.srv.URL, nil)
	if _, err := v2.Authenticate(ctx, sign(t, rs, claims(nil))); !errors.Is(err, errclass.Unauthenticated) {
		t.Errorf("retired key: %v", err)
	}
}

func TestProviderDown(t *testing.T) {
	rs, _, _, _ := testKeys(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + lis.Addr().String() + "/jwks"
	_ = lis.Close() // nothing listens there now
	v := newVerifier(t, url, nil)
	_, err = v.Authenticate(testutil.Context(t), sign(t, rs, claims(nil)))
	if !errors.Is(err, errclass.Unavailable) || errors.Is(err, errclass.Unauthenticated) {
		t.Fatalf("%v, want Unavailable: the token may be good", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  jwtauth.Config
		want []string
	}{
		{jwtauth.Config{}, []string{"jwks url: required", "issuer: required", "audience: required"}},
		{jwtauth.Config{JWKSURL: "http://idp.example/jwks", Issuer: "i", Audience: "a"}, []string{"loopback"}},
		{jwtauth.Config{JWKSURL: "ftp://idp.example/jwks", Issuer: "i", Audience: "a"}, []string{"want https"}},
		{jwtauth.Config{JWKSURL: "https://idp.example/jwks", Issuer: "i", Audience: "a", Algorithms: []string{"RS256", "HS256", "none"}}, []string{`"HS256"`, `"none"`}},
		{jwtauth.Config{JWKSURL: "https://idp.example/jwks", Issuer: "i", Audience: "a", Leeway: time.Hour}, []string{"leeway"}},
	} {
		err := tc.cfg.WithDefaults().Validate()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: %v, want it to name %q", tc.cfg, err, w)
			}
		}
	}
	ok := jwtauth.Config{JWKSURL: "https://idp.example/jwks", Issuer: "i", Audience: "a"}
	if err := ok.WithDefaults().Validate(); err != nil {
		t.Error(err)
	}
}

func TestRegisterFlags(t *testing.T) {
	var cfg jwtauth.Config
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	err := fs.Parse([]string{"-jwt-jwks-url", "https://idp.example/jwks", "-jwt-issuer", "i", "-jwt-audience", "a",
		"-jwt-tenant-claim", "org", "-jwt-algorithms", "ES256,EdDSA", "-jwt-leeway", "10s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.JWKSURL != "https://idp.example/jwks" || cfg.TenantClaim != "org" || cfg.ScopesClaim != "scope" ||
		len(cfg.Algorithms) != 2 || cfg.Leeway != 10*time.Second {
		t.Fatalf("%+v", cfg)
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkVerify(b *testing.B) {
	rs, _, es, ed := testKeys(b)
	for _, s := range []signer{rs, es, ed} {
		b.Run(s.alg, func(b *testing.B) {
			j := &jwks{signers: []signer{s}}
			j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				k, _ := jwkset.NewJWKFromKey(s.priv.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: jwkset.ALG(s.alg)}})
				_ = json.NewEncoder(w).Encode(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{k.Marshal()}})
			}))
			defer j.srv.Close()
			v, err := jwtauth.New(jwtauth.Config{JWKSURL: j.srv.URL, Issuer: issuer, Audience: audience}, jwtauth.Deps{Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			defer v.Close()
			tok := jwt.NewWithClaims(s.method, claims(nil))
			tok.Header["kid"] = s.kid
			token, err := tok.SignedString(s.priv)
			if err != nil {
				b.Fatal(err)
			}
			ctx := testutil.Context(b)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Authenticate(ctx, token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
