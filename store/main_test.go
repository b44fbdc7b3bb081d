package store_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/store"
)

// testDatabaseURL is the one database every test shares: $TEST_DATABASE_URL
// (a real Postgres with pgvector) or an embedded PGlite started here. Each
// test gets a fresh schema of its own.
var testDatabaseURL string

// usingEmbedded: the tests run on the embedded PGlite they started.
var usingEmbedded bool

func TestMain(m *testing.M) {
	code := run(m)
	if code == 0 {
		// After run has stopped the server and its log reader.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) int {
	url, embedded, stop, err := testutil.Database(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "store tests:", err)
		return 1
	}
	defer stop()
	testDatabaseURL, usingEmbedded = url, embedded
	return m.Run()
}

var schemaSeq atomic.Int64

// newStore opens a migrated store in a schema of its own, dropped when the
// test ends.
func newStore(t *testing.T, cfg store.Config) (*store.Store, store.Config) {
	t.Helper()
	ctx := testutil.Context(t)
	if cfg.URL == "" {
		cfg.URL = testDatabaseURL
	}
	if cfg.Schema == "" {
		cfg.Schema = fmt.Sprintf("test_%d_%d", os.Getpid(), schemaSeq.Add(1))
	}
	cfg.MaxConns = 4
	s, err := store.Open(ctx, cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		dropSchema(t, cfg.Schema)
	})
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// connect opens a plain connection that prepares no named statements: on
// the embedded Postgres every connection shares one session, so pgx's
// default named statement cache collides with another connection's (or an
// earlier test run's) "stmtcache_..." statements.
func connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(testDatabaseURL)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	return pgx.ConnectConfig(ctx, cfg)
}

func dropSchema(t *testing.T, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := connect(ctx)
	if err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}

// sqlConn is a plain connection for checks the store's API cannot make
// (rows left behind).
func sqlConn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := testutil.Context(t)
	conn, err := connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func countRows(t *testing.T, schema, table, where string, args ...any) int {
	t.Helper()
	var n int
	q := `SELECT count(*) FROM "` + schema + `".` + table
	if where != "" {
		q += " WHERE " + where
	}
	if err := sqlConn(t).QueryRow(testutil.Context(t), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
