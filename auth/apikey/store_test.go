package apikey_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

func TestStoreLifecycle(t *testing.T) {
	ctx := testutil.Context(t)
	clk := newClock()
	ks := newStore(t, clk.now)

	plain, rec, err := ks.Create(ctx, "team-a", []auth.Scope{auth.ScopeDocumentsRead, auth.ScopeEmbed}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != apikey.KeyLen || !strings.HasPrefix(plain, "cpk_"+rec.Prefix+"_") || rec.Tenant != "team-a" {
		t.Fatalf("key %d chars, record %+v", len(plain), rec)
	}
	if got := rec.Scopes; len(got) != 2 || got[0] != auth.ScopeEmbed || got[1] != auth.ScopeDocumentsRead {
		t.Errorf("scopes %v, want in AllScopes order", got)
	}
	short, recB, err := ks.Create(ctx, "team-b", []auth.Scope{auth.ScopeAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !recB.ExpiresAt.Equal(clk.now().Add(time.Hour)) {
		t.Errorf("expires %v", recB.ExpiresAt)
	}

	check := func(key string) (apikey.Check, error) {
		k, err := apikey.Parse(key)
		if err != nil {
			t.Fatal(err)
		}
		return ks.Lookup(ctx, k)
	}
	c, err := check(plain)
	if err != nil || c.Principal.Tenant != "team-a" || c.Principal.Subject != rec.Display() || c.Principal.Kind != auth.KindAPIKey {
		t.Fatalf("lookup: %+v %v", c, err)
	}
	// A made-up secret under a real prefix is as unknown as a made-up key.
	forged := plain[:len(plain)-4] + "AAAA"
	if forged == plain {
		forged = plain[:len(plain)-4] + "BBBB"
	}
	if _, err := check(forged); !errors.Is(err, errclass.Unauthenticated) || strings.Contains(err.Error(), rec.Prefix) {
		t.Errorf("forged secret: %v (must not confirm the prefix)", err)
	}

	// Listing: all, by tenant; last use recorded.
	all, err := ks.List(ctx, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("list all: %v %v", all, err)
	}
	if all[0].LastUsedAt.IsZero() || !all[1].LastUsedAt.IsZero() {
		t.Errorf("last used: %v / %v", all[0].LastUsedAt, all[1].LastUsedAt)
	}
	onlyB, err := ks.List(ctx, "team-b")
	if err != nil || len(onlyB) != 1 || onlyB[0].Prefix != recB.Prefix {
		t.Fatalf("list team-b: %v %v", onlyB, err)
	}

	// Expiry, by the injected clock.
	if _, err := check(short); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Hour)
	if _, err := check(short); !errors.Is(err, errclass.Unauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired key: %v", err)
	}

	// Revocation: scoped by tenant, idempotent, by prefix, display name or id.
	if _, err := ks.Revoke(ctx, rec.Prefix, "team-b"); !errors.Is(err, errclass.NotFound) {
		t.Errorf("revoke another tenant's key: %v", err)
	}
	r1, err := ks.Revoke(ctx, rec.Display(), "team-a")
	if err != nil || r1.RevokedAt.IsZero() {
		t.Fatalf("revoke: %+v %v", r1, err)
	}
	r2, err := ks.Revoke(ctx, rec.Prefix, "")
	if err != nil || !r2.RevokedAt.Equal(r1.RevokedAt) {
		t.Errorf("second revoke: %+v %v, want the first time kept", r2, err)
	}
	if _, err := check(plain); !errors.Is(err, errclass.Unauthenticated) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked key: %v", err)
	}
	if _, err := ks.Revoke(ctx, "1000000", ""); !errors.Is(err, errclass.NotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := ks.Revoke(ctx, "cpk_!!", ""); !errors.Is(err, errclass.Invalid) {
		t.Errorf("bad ref: %v", err)
	}
	if r, err := ks.Revoke(ctx, "2", ""); err != nil || r.Prefix != recB.Prefix {
		t.Errorf("revoke by id: %+v %v", r, err)
	}
}

func TestStoreCreateRefusesBadInput(t *testing.T) {
	ctx := testutil.Context(t)
	ks := newStore(t, nil)
	for _, tc := range []struct {
		tenant string
		scopes []auth.Scope
		ttl    time.Duration
		want   string
	}{
		{"", []auth.Scope{auth.ScopeEmbed}, 0, "tenant"},
		{"a b", []auth.Scope{auth.ScopeEmbed}, 0, "tenant"},
		{"t", nil, 0, "scopes"},
		{"t", []auth.Scope{"root"}, 0, "unknown scopes"},
		{"t", []auth.Scope{auth.Public}, 0, "unknown scopes"},
		{"t", []auth.Scope{auth.ScopeEmbed}, -time.Second, "expires"},
	} {
		_, _, err := ks.Create(ctx, tc.tenant, tc.scopes, tc.ttl)
		if !errors.Is(err, errclass.Invalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %v %v: %v, want Invalid naming %s", tc.tenant, tc.scopes, tc.ttl, err, tc.want)
		}
	}
}

func TestStoreWithoutTable(t *testing.T) {
	ctx := testutil.Context(t)
	ks, err := apikey.Open(ctx, apikey.Config{URL: testDatabaseURL, Schema: "no_such_schema"}, nil, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	k, _ := apikey.Parse("cpk_aaaaaaaa_" + strings.Repeat("A", 43))
	if _, err := ks.Lookup(ctx, k); !errors.Is(err, errclass.Unavailable) || !strings.Contains(err.Error(), "migrations") {
		t.Errorf("lookup without the table: %v, want Unavailable naming the migrations", err)
	}
}

func TestOpenValidates(t *testing.T) {
	ctx := testutil.Context(t)
	for _, cfg := range []apikey.Config{
		{},
		{URL: testDatabaseURL, Schema: "Bad-Schema"},
		{URL: testDatabaseURL, MaxConns: -1},
		{URL: "postgres://u:secretpw@[::1"},
	} {
		_, err := apikey.Open(ctx, cfg, nil, nil)
		if err == nil || strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%+v: %v", cfg.Schema, err)
		}
	}
}

// The cached Authenticator over the real store: a key works, its
// revocation takes effect once the cache TTL has passed.
func TestAuthenticatorOverStore(t *testing.T) {
	ctx := testutil.Context(t)
	clk := newClock()
	ks := newStore(t, clk.now)
	a, err := apikey.NewAuthenticator(ks, apikey.CacheConfig{TTL: 30 * time.Second}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	plain, rec, err := ks.Create(ctx, "team-a", []auth.Scope{auth.ScopeEmbed}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(ctx, plain)
	if err != nil || p.Tenant != "team-a" || !p.Has(auth.ScopeEmbed) || p.Has(auth.ScopeAdmin) {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := ks.Revoke(ctx, rec.Prefix, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, plain); err != nil {
		t.Fatalf("within the TTL the cached check stands: %v", err)
	}
	clk.advance(30 * time.Second)
	if _, err := a.Authenticate(ctx, plain); !errors.Is(err, errclass.Unauthenticated) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after the TTL: %v, want revoked", err)
	}
}
