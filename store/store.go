package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxvector "github.com/pgvector/pgvector-go/pgx"
)

// Config configures a Store. Zero fields take the documented defaults.
type Config struct {
	// URL is the Postgres connection string (postgres://...). Required.
	URL string
	// Schema holds the store's tables. Default "public". pgvector itself is
	// installed in public (or wherever it already is, if on the search path).
	Schema string
	// MaxConns bounds the pool. Default 8. The embedded PGlite serves one
	// transaction at a time whatever this is; more connections only queue
	// there, so 2-4 is plenty for it.
	MaxConns int32
	// ConnectTimeout bounds one connection attempt, so that a database that
	// is down answers ErrUnavailable quickly. Default 5s.
	ConnectTimeout time.Duration
	// Candidates is how many pages the first stage (HNSW over the FDEs)
	// hands to the rerank over their codes; at least a search's TopK.
	// Default 800: with Rerank 40, recall@10 0.96 against exact MaxSim at
	// 10,000 ColPali-shaped pages; see benchmarks/results/store.md for the
	// curve.
	Candidates int
	// EfSearch is hnsw.ef_search for the first stage; raised to Candidates
	// if lower. Default: Candidates.
	EfSearch int
	// Rerank is how many candidates, the best by MaxSim over their
	// binarised vectors (codes.go), get exact MaxSim over their full fp16
	// vectors; at least a search's TopK. Default 40 (4 x DefaultTopK).
	// Together with Candidates it trades recall for latency: a search reads
	// 16 KB a candidate and 264 KB a reranked page of 1030 vectors. At
	// Candidates or more, every candidate is reranked exactly (the search
	// before codes existed).
	Rerank int
	// PendingTTL is how long a staged document may go without a write
	// before the sweeper deletes it. Default 1h.
	PendingTTL time.Duration
	// SweepInterval is how often pending documents are swept. Default 5m;
	// negative disables the sweeper (SweepPending still works).
	SweepInterval time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.Schema = cmp.Or(c.Schema, "public")
	c.MaxConns = cmp.Or(c.MaxConns, 8)
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, 5*time.Second)
	c.Candidates = cmp.Or(c.Candidates, 800)
	c.EfSearch = max(c.EfSearch, c.Candidates)
	c.Rerank = cmp.Or(c.Rerank, 4*DefaultTopK)
	c.PendingTTL = cmp.Or(c.PendingTTL, time.Hour)
	c.SweepInterval = cmp.Or(c.SweepInterval, 5*time.Minute)
	return c
}

// maxEfSearch is pgvector's upper limit for hnsw.ef_search.
const maxEfSearch = 1000

// MaxTopK is the most hits one Search can return: the first stage cannot
// return more candidates than hnsw.ef_search allows.
const MaxTopK = maxEfSearch

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("store: URL: required")
	case !validIdent(c.Schema):
		return fmt.Errorf("store: Schema %q: want a lower-case identifier ([a-z_][a-z0-9_]*)", c.Schema)
	case c.MaxConns < 1:
		return fmt.Errorf("store: MaxConns %d: must be at least 1", c.MaxConns)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("store: ConnectTimeout %v: must be positive", c.ConnectTimeout)
	case c.Candidates < 1 || c.Candidates > maxEfSearch:
		return fmt.Errorf("store: Candidates %d: must be in [1, %d]", c.Candidates, maxEfSearch)
	case c.EfSearch > maxEfSearch:
		return fmt.Errorf("store: EfSearch %d: must be at most %d", c.EfSearch, maxEfSearch)
	case c.Rerank < 1 || c.Rerank > maxEfSearch:
		return fmt.Errorf("store: Rerank %d: must be in [1, %d]", c.Rerank, maxEfSearch)
	case c.PendingTTL <= 0:
		return fmt.Errorf("store: PendingTTL %v: must be positive", c.PendingTTL)
	}
	return nil
}

func validIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Store is documents, pages and their vectors in Postgres with pgvector.
// Its methods are safe for concurrent use.
type Store struct {
	cfg    Config
	pool   *pgxpool.Pool
	logger *slog.Logger
	sql    *strings.Replacer // {documents}, {pages} → schema-qualified names

	vecSchema atomic.Pointer[string] // pgvector's schema, once known (see vectorSchema)
	copyOK    atomic.Int32           // page inserts by COPY: 0 unknown, 1 yes, 2 no (see insertPages)

	stopSweep chan struct{}
	sweepDone sync.WaitGroup
	closeOnce sync.Once
}

// Open returns a Store on cfg.URL. It does not connect: a database that is
// down makes calls answer ErrUnavailable until it is up and migrated.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// The URL may hold a password: do not echo it.
		return nil, errors.New("store: URL: not a valid Postgres connection string")
	}
	pcfg.MaxConns = cfg.MaxConns
	pcfg.MinConns = 0
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	}
	// Unnamed statements with cached descriptions: no session state on the
	// server (PGlite shares one session between all connections, and so
	// does a transaction-mode pooler), at no extra round trip.
	pcfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	pcfg.AfterConnect = registerVectorTypes
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	qs := `"` + cfg.Schema + `".`
	s := &Store{
		cfg:       cfg,
		pool:      pool,
		logger:    logger.With("component", "store"),
		sql:       strings.NewReplacer("{documents}", qs+"documents", "{pages}", qs+"pages", "{schema_migrations}", qs+"schema_migrations"),
		stopSweep: make(chan struct{}),
	}
	if cfg.SweepInterval > 0 {
		s.sweepDone.Add(1)
		go s.sweepLoop() // #nosec G118 -- the sweeper outlives Open's context on purpose; Close stops it through stopSweep
	}
	return s, nil
}

// registerVectorTypes teaches a new connection pgvector's types, once the
// extension exists (before the first Migrate it does not; Migrate resets
// the pool afterwards so that every connection has them).
func registerVectorTypes(ctx context.Context, conn *pgx.Conn) error {
	// In a transaction, like every statement of the store (see inTx).
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var present bool
		if err := tx.QueryRow(ctx, `SELECT to_regtype('halfvec') IS NOT NULL`).Scan(&present); err != nil {
			return err
		}
		if !present {
			return nil
		}
		return pgxvector.RegisterTypes(ctx, conn)
	})
}

// Close stops the sweeper and closes the pool.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		close(s.stopSweep)
		s.sweepDone.Wait()
		s.pool.Close()
	})
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return translate(ctx, s.pool.Ping(ctx))
}

// q returns query with its table placeholders resolved.
func (s *Store) q(query string) string { return s.sql.Replace(query) }

var readOnly = pgx.TxOptions{AccessMode: pgx.ReadOnly}

// inTx runs fn in a transaction and commits it, translating errors.
//
// Every statement of the store runs inside an explicit transaction, reads
// included. On a real Postgres that costs a BEGIN and a COMMIT (simple
// queries, no parsing). On PGlite it is what makes concurrent connections
// safe: its socket server queues protocol messages one by one and keeps a
// connection's messages together only while that connection is inside a
// transaction, so an extended-protocol statement outside one (Parse, Bind,
// Execute, Sync as separate messages) can be interleaved with another
// connection's and bind the wrong statement. BEGIN and COMMIT without
// arguments go as single simple-protocol messages, so they cannot be split.
func (s *Store) inTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	err := pgx.BeginTxFunc(ctx, s.pool, opts, fn)
	return translate(ctx, err)
}

func (s *Store) sweepLoop() {
	defer s.sweepDone.Done()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		n, err := s.SweepPending(ctx)
		cancel()
		switch {
		case err != nil:
			s.logger.Warn("sweeping pending documents failed", "error", err)
		case n > 0:
			s.logger.Info("swept abandoned pending documents", "count", n)
		}
	}
}

// SweepPending deletes staged documents with no write for PendingTTL, in
// every tenant (it is maintenance, not a tenant's request), and returns
// how many it deleted.
func (s *Store) SweepPending(ctx context.Context) (int, error) {
	var n int64
	err := s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, s.q(`DELETE FROM {documents}
			WHERE state = 'pending' AND updated_at < clock_timestamp() - make_interval(secs => $1)`),
			s.cfg.PendingTTL.Seconds())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: sweep pending documents: %w", err)
	}
	return int(n), nil
}
