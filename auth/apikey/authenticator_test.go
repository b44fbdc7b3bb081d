package apikey_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

func TestParse(t *testing.T) {
	good := "cpk_abcdefgh_" + strings.Repeat("A", 43)
	k, err := apikey.Parse(good)
	if err != nil || k.Prefix != "abcdefgh" {
		t.Fatalf("%+v %v", k, err)
	}
	for _, bad := range []string{
		"",
		"eyJhbGciOi.x.y",
		"cpk_abcdefgh_" + strings.Repeat("A", 42),
		"cpk_abcdefgh-" + strings.Repeat("A", 43),
		"cpk_ABCDEFGH_" + strings.Repeat("A", 43),
		"cpk_abcdefg1_" + strings.Repeat("A", 43),
		"cpk_abcdefgh_" + strings.Repeat("A", 42) + "=",
		"cpk_abcdefgh_" + strings.Repeat("A", 42) + "+",
	} {
		_, err := apikey.Parse(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if len(bad) > 20 && strings.Contains(err.Error(), bad[13:]) {
			t.Errorf("error repeats the secret: %v", err)
		}
	}
}

// fakeLookuper answers from a map and counts its calls.
type fakeLookuper struct {
	calls  atomic.Int64
	gate   chan struct{} // when set, Lookup waits on it
	mu     sync.Mutex
	keys   map[string]apikey.Check // by prefix
	failDB bool
}

func (f *fakeLookuper) Lookup(ctx context.Context, k apikey.Key) (apikey.Check, error) {
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failDB {
		return apikey.Check{}, errclass.Errorf(errclass.Unavailable, "database down")
	}
	c, ok := f.keys[k.Prefix]
	if !ok {
		return apikey.Check{}, errclass.Errorf(errclass.Unauthenticated, "unknown API key")
	}
	return c, nil
}

var _ apikey.Lookuper = (*fakeLookuper)(nil)

func keyWithPrefix(p string) string { return "cpk_" + p + "_" + strings.Repeat("B", 43) }

func TestAuthenticatorCaches(t *testing.T) {
	ctx := testutil.Context(t)
	clk := newClock()
	src := &fakeLookuper{keys: map[string]apikey.Check{
		"aaaaaaaa": {Principal: auth.Principal{Tenant: "a", Subject: "cpk_aaaaaaaa"}},
		"bbbbbbbb": {Principal: auth.Principal{Tenant: "b"}, ExpiresAt: clk.now().Add(time.Minute)},
	}}
	a, err := apikey.NewAuthenticator(src, apikey.CacheConfig{TTL: 30 * time.Second}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	mustTenant := func(key, want string) {
		t.Helper()
		p, err := a.Authenticate(ctx, key)
		if err != nil || p.Tenant != want {
			t.Fatalf("%s: %v %v, want tenant %s", key[:12], p, err, want)
		}
	}
	mustFail := func(key string, class error, sub string) {
		t.Helper()
		_, err := a.Authenticate(ctx, key)
		if !errors.Is(err, class) || !strings.Contains(err.Error(), sub) {
			t.Fatalf("%s: %v, want %v naming %q", key[:12], err, class, sub)
		}
	}
	ka, kb, kc := keyWithPrefix("aaaaaaaa"), keyWithPrefix("bbbbbbbb"), keyWithPrefix("cccccccc")
	mustTenant(ka, "a")
	mustTenant(ka, "a")
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d lookups for two calls within the TTL, want 1", n)
	}
	// Forget drops the cache: the next call looks the key up again.
	a.Forget()
	mustTenant(ka, "a")
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d lookups after Forget, want 2", n)
	}
	// Unknown keys are cached too, apart.
	mustFail(kc, errclass.Unauthenticated, "unknown")
	mustFail(kc, errclass.Unauthenticated, "unknown")
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("%d lookups, want 2", n)
	}
	// Revocation takes effect once the TTL has passed.
	src.mu.Lock()
	delete(src.keys, "aaaaaaaa")
	src.mu.Unlock()
	clk.advance(29 * time.Second)
	mustTenant(ka, "a")
	clk.advance(time.Second)
	mustFail(ka, errclass.Unauthenticated, "unknown")
	// Expiry is checked on every call, cached or not.
	mustTenant(kb, "b")
	clk.advance(time.Minute)
	mustFail(kb, errclass.Unauthenticated, "expired")
	// A database failure is not cached, and is not Unauthenticated.
	src.mu.Lock()
	src.failDB = true
	src.mu.Unlock()
	before := src.calls.Load()
	mustFail(kc, errclass.Unavailable, "database down") // the cached "unknown" for kc is stale by now
	mustFail(kc, errclass.Unavailable, "database down")
	if n := src.calls.Load() - before; n != 2 {
		t.Errorf("%d lookups while the database is down, want 2 (no caching)", n)
	}
	// Tokens of another kind are left to the chain's next link.
	_, err = a.Authenticate(ctx, "eyJhbGciOiJSUzI1NiJ9.e30.sig")
	if !errors.Is(err, auth.ErrUnrecognized) || !errors.Is(err, errclass.Unauthenticated) {
		t.Errorf("a JWT: %v", err)
	}
	_, err = a.Authenticate(ctx, "cpk_short")
	if errors.Is(err, auth.ErrUnrecognized) || !errors.Is(err, errclass.Unauthenticated) {
		t.Errorf("a malformed key must be claimed, not passed on: %v", err)
	}
}

func TestAuthenticatorOneLookupForConcurrentMisses(t *testing.T) {
	ctx := testutil.Context(t)
	src := &fakeLookuper{gate: make(chan struct{}), keys: map[string]apikey.Check{"aaaaaaaa": {Principal: auth.Principal{Tenant: "a"}}}}
	a, err := apikey.NewAuthenticator(src, apikey.CacheConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := a.Authenticate(ctx, keyWithPrefix("aaaaaaaa"))
			errs <- err
		})
	}
	testutil.Eventually(t, "the first lookup to start", func() bool { return src.calls.Load() == 1 })
	close(src.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d lookups for 8 concurrent calls, want 1", n)
	}
}

func TestAuthenticatorCallerCancels(t *testing.T) {
	src := &fakeLookuper{gate: make(chan struct{}), keys: map[string]apikey.Check{}}
	a, err := apikey.NewAuthenticator(src, apikey.CacheConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testutil.Context(t))
	cancel()
	if _, err := a.Authenticate(ctx, keyWithPrefix("aaaaaaaa")); !errors.Is(err, context.Canceled) {
		t.Errorf("%v, want canceled", err)
	}
	close(src.gate) // let the lookup finish, for goleak
	testutil.Eventually(t, "the lookup to run", func() bool { return src.calls.Load() == 1 })
}

func TestAuthenticatorBoundedCache(t *testing.T) {
	ctx := testutil.Context(t)
	clk := newClock()
	src := &fakeLookuper{keys: map[string]apikey.Check{"aaaaaaaa": {Principal: auth.Principal{Tenant: "a"}}}}
	a, err := apikey.NewAuthenticator(src, apikey.CacheConfig{NegativeSize: 4}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, keyWithPrefix("aaaaaaaa")); err != nil {
		t.Fatal(err)
	}
	// A flood of made-up keys fills only the negative cache...
	for _, p := range []string{"cccccccc", "dddddddd", "eeeeeeee", "ffffffff", "gggggggg", "hhhhhhhh"} {
		_, _ = a.Authenticate(ctx, keyWithPrefix(p))
	}
	before := src.calls.Load()
	// ...and the real key is still cached.
	if _, err := a.Authenticate(ctx, keyWithPrefix("aaaaaaaa")); err != nil || src.calls.Load() != before {
		t.Errorf("real key evicted by unknown ones: %v, %d lookups", err, src.calls.Load()-before)
	}
	for _, cfg := range []apikey.CacheConfig{{TTL: -time.Second}, {TTL: time.Hour}, {Size: -1}} {
		if _, err := apikey.NewAuthenticator(src, cfg, nil); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
