package apikey_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/store"
)

// testDatabaseURL is $TEST_DATABASE_URL or an embedded PGlite started
// here, shared by the tests; each test gets a schema of its own.
var testDatabaseURL string

func TestMain(m *testing.M) {
	code := run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) int {
	url, _, stop, err := testutil.Database(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "apikey tests:", err)
		return 1
	}
	defer stop()
	testDatabaseURL = url
	return m.Run()
}

var schemaSeq atomic.Int64

// newStore returns a key store in a fresh schema migrated by the document
// store (which owns the migrations), on the clock now.
func newStore(t *testing.T, now func() time.Time) *apikey.Store {
	t.Helper()
	ctx := testutil.Context(t)
	schema := fmt.Sprintf("apikey_%d_%d", os.Getpid(), schemaSeq.Add(1))
	docs, err := store.Open(ctx, store.Config{URL: testDatabaseURL, Schema: schema, MaxConns: 2, SweepInterval: -1}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropSchema(t, schema) })
	err = docs.Migrate(ctx)
	docs.Close()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := apikey.Open(ctx, apikey.Config{URL: testDatabaseURL, Schema: schema}, now, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	return ks
}

func dropSchema(t *testing.T, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(testDatabaseURL)
	if err != nil {
		t.Error(err)
		return
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}

// clock is a settable clock for expiry.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	c.set(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return c
}
func (c *clock) now() time.Time          { return *c.t.Load() }
func (c *clock) set(t time.Time)         { c.t.Store(&t) }
func (c *clock) advance(d time.Duration) { c.set(c.now().Add(d)) }
