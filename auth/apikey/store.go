package apikey

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Config configures a Store.
type Config struct {
	// URL is the Postgres connection string; the same database as the
	// document store. Required.
	URL string
	// Schema holds the api_keys table (the store's schema, where its
	// migration 003 created it). Default "public".
	Schema string
	// MaxConns bounds the pool. Default 2: with the cache in front, the
	// database sees one lookup per key per CacheTTL.
	MaxConns int32
	// ConnectTimeout bounds one connection attempt. Default 5s.
	ConnectTimeout time.Duration
}

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, "public")
	c.MaxConns = cmp.Or(c.MaxConns, 2)
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, 5*time.Second)
	return c
}

func (c Config) validate() error {
	switch {
	case c.URL == "":
		return errors.New("apikey: URL: required")
	case len(c.Schema) > 63 || toLowerIdent(c.Schema) == "":
		return fmt.Errorf("apikey: Schema %q: want a lower-case identifier ([a-z_][a-z0-9_]*)", c.Schema)
	case c.MaxConns < 1:
		return fmt.Errorf("apikey: MaxConns %d: must be at least 1", c.MaxConns)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("apikey: ConnectTimeout %v: must be positive", c.ConnectTimeout)
	}
	return nil
}

// toLowerIdent returns s if it is a plain lower-case SQL identifier, and
// "" otherwise (as the document store's Schema).
func toLowerIdent(s string) string {
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return ""
		}
	}
	return s
}

// Record is a key as listed: everything but its secret.
type Record struct {
	ID     int64
	Prefix string
	Tenant string
	Scopes []auth.Scope
	// CreatedAt is set by the database. ExpiresAt, RevokedAt and
	// LastUsedAt are zero when not set.
	CreatedAt, ExpiresAt, RevokedAt, LastUsedAt time.Time
}

// Display is the key's public name, "cpk_<prefix>".
func (r Record) Display() string { return Scheme + r.Prefix }

// Store keeps API keys in Postgres. Its methods are safe for concurrent
// use. Open does not create the table: the document store's Migrate does
// (store/migrations/003_api_keys.up.sql).
type Store struct {
	pool   *pgxpool.Pool
	table  string
	now    func() time.Time
	logger *slog.Logger
}

// Open returns a Store on cfg.URL; it does not connect yet. now is the
// clock for expiry (time.Now when nil).
func Open(ctx context.Context, cfg Config, now func() time.Time, logger *slog.Logger) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, errors.New("apikey: URL: not a valid Postgres connection string") // do not echo a password
	}
	pcfg.MaxConns = cfg.MaxConns
	pcfg.MinConns = 0
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	}
	// As the document store: no named statements (PGlite and transaction
	// poolers share sessions), every statement in a transaction.
	pcfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("apikey: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Store{pool: pool, table: `"` + cfg.Schema + `".api_keys`, now: now, logger: logger.With("component", "apikey")}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

const columns = `id, prefix, tenant, scopes, created_at, expires_at, revoked_at, last_used_at`

func scanRecord(row pgx.Row) (Record, error) {
	var r Record
	var scopes []string
	var exp, rev, used *time.Time
	if err := row.Scan(&r.ID, &r.Prefix, &r.Tenant, &scopes, &r.CreatedAt, &exp, &rev, &used); err != nil {
		return Record{}, err
	}
	for _, sc := range scopes {
		r.Scopes = append(r.Scopes, auth.Scope(sc))
	}
	for _, p := range []struct {
		src *time.Time
		dst *time.Time
	}{{exp, &r.ExpiresAt}, {rev, &r.RevokedAt}, {used, &r.LastUsedAt}} {
		if p.src != nil {
			*p.dst = *p.src
		}
	}
	return r, nil
}

// Create makes a key for tenant with scopes, expiring after ttl (never
// when 0), and returns it in clear with its record. The clear key is
// shown to the operator once and kept nowhere.
func (s *Store) Create(ctx context.Context, tenant string, scopes []auth.Scope, ttl time.Duration) (string, Record, error) {
	if err := auth.ValidateTenant(tenant); err != nil {
		return "", Record{}, errclass.Wrap(errclass.Invalid, err)
	}
	names := make([]string, 0, len(scopes))
	for _, sc := range scopes {
		names = append(names, string(sc))
	}
	scopes, err := auth.ScopesOf(names)
	switch {
	case err != nil:
		return "", Record{}, errclass.Wrap(errclass.Invalid, err)
	case len(scopes) == 0:
		return "", Record{}, errclass.Errorf(errclass.Invalid, "scopes: want at least one of %v", auth.AllScopes)
	case ttl < 0:
		return "", Record{}, errclass.Errorf(errclass.Invalid, "expires: %v: must be positive, or 0 for never", ttl)
	}
	names = names[:0]
	for _, sc := range scopes { // checked, without duplicates, in a fixed order
		names = append(names, string(sc))
	}
	var expires *time.Time
	if ttl > 0 {
		e := s.now().Add(ttl)
		expires = &e
	}
	// 40 random prefix bits: a collision is rare, and a retry resolves it.
	for attempt := 0; ; attempt++ {
		plain, key, err := generate()
		if err != nil {
			return "", Record{}, errclass.Wrap(errclass.Internal, err)
		}
		var rec Record
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			rec, err = scanRecord(tx.QueryRow(ctx, `INSERT INTO `+s.table+` (prefix, hash, tenant, scopes, expires_at)
				VALUES ($1, $2, $3, $4, $5) RETURNING `+columns, key.Prefix, key.Hash[:], tenant, names, expires))
			return err
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && attempt < 3 {
			continue
		}
		if err != nil {
			return "", Record{}, s.translate(ctx, "create an API key", err)
		}
		return plain, rec, nil
	}
}

// List returns the keys of tenant, or of every tenant when tenant is "",
// revoked and expired ones included, by tenant and creation time.
func (s *Store) List(ctx context.Context, tenant string) ([]Record, error) {
	var out []Record
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+columns+` FROM `+s.table+`
			WHERE $1 = '' OR tenant = $1 ORDER BY tenant, created_at, id`, tenant)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) { return scanRecord(row) })
		return err
	})
	if err != nil {
		return nil, s.translate(ctx, "list API keys", err)
	}
	return out, nil
}

// Revoke revokes the key named by ref: its prefix, its display name
// ("cpk_<prefix>") or its id. With tenant set, a key of another tenant is
// NotFound. Revoking a revoked key keeps its first revocation time and is
// no error. Gateways stop accepting it within their cache TTL.
func (s *Store) Revoke(ctx context.Context, ref, tenant string) (Record, error) {
	where := `prefix = $1`
	arg := any(ref)
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
		where, arg = `id = $1`, id
	} else {
		if len(ref) == len(Scheme)+PrefixLen && ref[:len(Scheme)] == Scheme {
			ref = ref[len(Scheme):]
		}
		if !ValidPrefix(ref) {
			return Record{}, errclass.Wrap(errclass.Invalid, errclass.Field("key", "want a key prefix (%d characters a-z2-7), cpk_<prefix>, or an id", PrefixLen))
		}
		arg = ref
	}
	var rec Record
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		rec, err = scanRecord(tx.QueryRow(ctx, `UPDATE `+s.table+` SET revoked_at = coalesce(revoked_at, clock_timestamp())
			WHERE `+where+` AND ($2 = '' OR tenant = $2) RETURNING `+columns, arg, tenant))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, errclass.Errorf(errclass.NotFound, "API key %s: no such key", ref)
	}
	if err != nil {
		return Record{}, s.translate(ctx, "revoke an API key", err)
	}
	return rec, nil
}

// Check is what Lookup found: the principal, and when its key expires
// (zero: never), for the cache to re-check on every call.
type Check struct {
	Principal auth.Principal
	ExpiresAt time.Time
}

// Lookup checks a key against the database, uncached (the Authenticator
// caches it). A key that is unknown, does not match its hash, is revoked
// or is expired is Unauthenticated; the message names the key's prefix
// only once its secret has matched, so that prefixes cannot be probed.
func (s *Store) Lookup(ctx context.Context, key Key) (Check, error) {
	var hash []byte
	var rec Record
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		row := tx.QueryRow(ctx, `SELECT hash, `+columns+` FROM `+s.table+` WHERE prefix = $1`, key.Prefix)
		var scopes []string
		var exp, rev, used *time.Time
		if err := row.Scan(&hash, &rec.ID, &rec.Prefix, &rec.Tenant, &scopes, &rec.CreatedAt, &exp, &rev, &used); err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(hash, key.Hash[:]) != 1 {
			return pgx.ErrNoRows
		}
		for _, sc := range scopes {
			rec.Scopes = append(rec.Scopes, auth.Scope(sc))
		}
		if exp != nil {
			rec.ExpiresAt = *exp
		}
		if rev != nil {
			rec.RevokedAt = *rev
			return nil
		}
		// Only for a key that works; once per cache miss, not per call.
		_, err := tx.Exec(ctx, `UPDATE `+s.table+` SET last_used_at = $2 WHERE id = $1`, rec.ID, s.now())
		return err
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Check{}, errclass.Errorf(errclass.Unauthenticated, "unknown API key")
	case err != nil:
		return Check{}, s.translate(ctx, "check an API key", err)
	case !rec.RevokedAt.IsZero():
		return Check{}, errclass.Errorf(errclass.Unauthenticated, "API key %s was revoked", rec.Display())
	}
	c := Check{
		Principal: auth.Principal{Tenant: rec.Tenant, Scopes: rec.Scopes, Subject: rec.Display(), Kind: auth.KindAPIKey},
		ExpiresAt: rec.ExpiresAt,
	}
	return c, expired(c, s.now())
}

func expired(c Check, now time.Time) error {
	if !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt) {
		return errclass.Errorf(errclass.Unauthenticated, "API key %s expired at %s", c.Principal.Subject, c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// translate sorts a database failure: the caller's own deadline is
// TimedOut, cancellation stays itself, anything else is Unavailable (the
// credential may be fine; the caller may retry) with the cause in the log.
func (s *Store) translate(ctx context.Context, what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("apikey: %s: %w", what, context.Canceled)
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return errclass.Errorf(errclass.TimedOut, "apikey: %s: %w", what, context.DeadlineExceeded)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return errclass.Errorf(errclass.Unavailable, "apikey: %s: table api_keys missing: run the store's migrations", what)
	}
	// The cause may name hosts and ports: to the log, not to the caller.
	s.logger.Warn("api key database call failed", "op", what, "error", err)
	return errclass.Errorf(errclass.Unavailable, "apikey: %s: database unavailable, retry later", what)
}
