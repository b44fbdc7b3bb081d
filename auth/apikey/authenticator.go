package apikey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Lookuper checks a key against the source of truth; *Store is one.
type Lookuper interface {
	Lookup(ctx context.Context, key Key) (Check, error)
}

var _ Lookuper = (*Store)(nil)

// CacheConfig bounds the Authenticator's cache.
type CacheConfig struct {
	// TTL is how long a check is reused: the delay before a revocation
	// takes effect. Default 30s; at most 10m.
	TTL time.Duration
	// Size bounds the keys that passed. Default 10000.
	Size int
	// NegativeSize bounds the tokens that failed (unknown, revoked), kept
	// apart so that a flood of made-up keys cannot push out the real
	// ones. Default 1000.
	NegativeSize int
}

func (c CacheConfig) withDefaults() CacheConfig {
	c.TTL = cmp.Or(c.TTL, 30*time.Second)
	c.Size = cmp.Or(c.Size, 10000)
	c.NegativeSize = cmp.Or(c.NegativeSize, 1000)
	return c
}

func (c CacheConfig) validate() error {
	switch {
	case c.TTL < 0 || c.TTL > 10*time.Minute:
		return fmt.Errorf("apikey: cache TTL %v: must be in (0, 10m]", c.TTL)
	case c.Size < 1:
		return fmt.Errorf("apikey: cache Size %d: must be at least 1", c.Size)
	case c.NegativeSize < 1:
		return fmt.Errorf("apikey: cache NegativeSize %d: must be at least 1", c.NegativeSize)
	}
	return nil
}

// lookupTimeout bounds one database check.
const lookupTimeout = 5 * time.Second

// Authenticator checks API keys through a cache in front of a Lookuper.
// A failure to reach the database is not cached.
type Authenticator struct {
	src   Lookuper
	cfg   CacheConfig
	now   func() time.Time
	group singleflight.Group

	mu  sync.Mutex
	ok  map[[32]byte]entry
	bad map[[32]byte]entry
}

type entry struct {
	check   Check
	err     error // Unauthenticated; nil in ok
	fetched time.Time
}

var _ auth.Authenticator = (*Authenticator)(nil)

// NewAuthenticator returns an Authenticator over src; now is its clock
// (time.Now when nil).
func NewAuthenticator(src Lookuper, cfg CacheConfig, now func() time.Time) (*Authenticator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Authenticator{src: src, cfg: cfg, now: now, ok: map[[32]byte]entry{}, bad: map[[32]byte]entry{}}, nil
}

// Authenticate implements auth.Authenticator. A token that does not start
// with "cpk_" is auth.ErrUnrecognized (for the chain's next link).
func (a *Authenticator) Authenticate(ctx context.Context, bearer string) (auth.Principal, error) {
	key, err := Parse(bearer)
	if errors.Is(err, errNotAKey) {
		return auth.Principal{}, errclass.Wrap(errclass.Unauthenticated, fmt.Errorf("%w: %w", auth.ErrUnrecognized, err))
	}
	if err != nil {
		return auth.Principal{}, errclass.Wrap(errclass.Unauthenticated, err)
	}
	now := a.now()
	if e, ok := a.cached(key.Hash, now); ok {
		return a.answer(e, now)
	}
	// One database trip for concurrent misses on the same key. The trip
	// is not tied to the first caller's cancellation, since others may be
	// waiting on it; each caller stops waiting when its own context ends.
	ch := a.group.DoChan(string(key.Hash[:]), func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		c, err := a.src.Lookup(lctx, key)
		if err != nil && !errors.Is(err, errclass.Unauthenticated) {
			return nil, err // not cached: the next call tries again
		}
		e := entry{check: c, err: err, fetched: a.now()}
		a.store(key.Hash, e)
		return e, nil
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return auth.Principal{}, fmt.Errorf("apikey: waiting for the key check: %w", ctx.Err())
	}
	if res.Err != nil {
		return auth.Principal{}, res.Err
	}
	v := res.Val
	return a.answer(v.(entry), now)
}

func (a *Authenticator) answer(e entry, now time.Time) (auth.Principal, error) {
	if e.err != nil {
		return auth.Principal{}, e.err
	}
	if err := expired(e.check, now); err != nil {
		return auth.Principal{}, err
	}
	return e.check.Principal, nil
}

func (a *Authenticator) cached(h [32]byte, now time.Time) (entry, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.ok[h]
	if !ok {
		e, ok = a.bad[h]
	}
	if !ok || now.Sub(e.fetched) >= a.cfg.TTL {
		return entry{}, false
	}
	return e, true
}

func (a *Authenticator) store(h [32]byte, e entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, limit := a.ok, a.cfg.Size
	delete(a.bad, h)
	delete(a.ok, h)
	if e.err != nil {
		m, limit = a.bad, a.cfg.NegativeSize
	}
	if len(m) >= limit {
		// Drop the stale entries; if every entry is fresh, drop one at
		// random (map order), which costs its key one more lookup.
		for k, old := range m {
			if e.fetched.Sub(old.fetched) >= a.cfg.TTL {
				delete(m, k)
			}
		}
		for k := range m {
			if len(m) < limit {
				break
			}
			delete(m, k)
		}
	}
	m[h] = e
}

// Forget drops every cached check, so that a revocation made through this
// process takes effect at once here (other gateways still wait for TTL).
func (a *Authenticator) Forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.ok)
	clear(a.bad)
}
