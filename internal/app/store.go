package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/cli"
	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/redact"
	"github.com/morphik-org/colpali-gateway/store"
)

// databaseURLEnv is read when neither -database-url nor
// COLPALI_DATABASE_URL is set: the variable Postgres tools and platforms use.
const databaseURLEnv = "DATABASE_URL"

// defaultDataDir keeps the embedded database under the working directory,
// so that `make run` finds its documents again after a restart.
const defaultDataDir = "data/pg"

// defaultMigrateTimeout bounds `gateway migrate`.
const defaultMigrateTimeout = 5 * time.Minute

// dbFlags choose the database: a Postgres URL, or the embedded one.
type dbFlags struct {
	URL     string
	Schema  string
	DataDir string
	// Require and InCluster refuse the embedded Postgres (stateless.go).
	Require   bool
	InCluster bool
}

func (d *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.URL, "database-url", "", "Postgres (with pgvector) URL, e.g. postgres://user:pass@host:5432/db; also read from "+databaseURLEnv+"; empty: run the embedded Postgres")
	fs.StringVar(&d.Schema, "database-schema", "public", "schema holding the gateway's tables (one database can serve several gateways, or tests, each in its own schema)")
	fs.StringVar(&d.DataDir, "data-dir", defaultDataDir, "data directory of the embedded Postgres (used without -database-url); empty: in memory, lost on exit")
	d.registerStateless(fs)
}

// resolve applies DATABASE_URL when no flag or COLPALI_ variable set the URL.
func (d *dbFlags) resolve(getenv func(string) string) {
	if d.URL == "" {
		d.URL = getenv(databaseURLEnv)
	}
	d.InCluster = getenv(kubernetesEnv) != ""
}

// openStore opens the document store on d.URL, or on an embedded Postgres
// started in d.DataDir when no URL is set. The store does not need the
// database to be up (it answers ErrUnavailable until it is); the embedded
// Postgres must start, since nothing else would bring it up later. closeDB
// closes the store, then stops the embedded Postgres.
func openStore(ctx context.Context, d dbFlags, logger *slog.Logger) (st *store.Store, closeDB func(), err error) {
	cfg := store.Config{URL: d.URL, Schema: d.Schema}
	stopPG := func() {}
	if cfg.URL == "" {
		if err := d.embeddedAllowed(); err != nil {
			return nil, nil, err
		}
		pg, err := embeddedpg.Start(ctx, embeddedpg.Config{Dir: d.DataDir, Logger: logger.With("component", "embeddedpg")})
		if err != nil {
			return nil, nil, fmt.Errorf("embedded Postgres (set -database-url or %s to use another): %w", databaseURLEnv, err)
		}
		logger.Info("embedded Postgres started", "data_dir", d.DataDir, "url", redact.URL(pg.URL()))
		cfg.URL = pg.URL()
		// PGlite is one Postgres session behind its socket: it runs one
		// statement (or transaction) at a time whatever the pool size, and
		// statements of concurrent connections can interleave in that one
		// session (seen: "portal does not exist"). One connection costs no
		// throughput and keeps them apart.
		cfg.MaxConns = 1
		stopPG = func() {
			if err := pg.Stop(); err != nil {
				logger.Warn("embedded Postgres stop", "error", err.Error())
			}
		}
	}
	// store.Open adds its own component attribute to the logger.
	st, err = store.Open(ctx, cfg, logger)
	if err != nil {
		stopPG()
		return nil, nil, err
	}
	return st, func() { st.Close(); stopPG() }, nil
}

// migrate is `gateway migrate`: apply the migrations to the database the
// flags name (or to the embedded one) and exit.
func migrate(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	var d dbFlags
	var logFlags cli.LogFlags
	fs := flag.NewFlagSet("gateway migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gateway migrate [flags]\n\n"+
			"Applies the document store's database migrations and exits. Flags may also\n"+
			"be set by %sNAME environment variables; the URL also by %s.\n\nFlags:\n", envPrefix, databaseURLEnv)
		fs.PrintDefaults()
	}
	d.register(fs)
	logFlags.Register(fs)
	timeout := fs.Duration("timeout", defaultMigrateTimeout, "how long the migration may take")
	err := cli.Parse(fs, args, envPrefix, getenv)
	if isHelp(err) {
		return err
	}
	d.resolve(getenv)
	errs := []error{err, logFlags.Validate(), d.validateStateless()}
	if *timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout %v: must be positive", *timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger, err := logFlags.Logger(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	_, closeDB, err := openMigrated(ctx, d, logger)
	if err != nil {
		return err
	}
	closeDB()
	logger.Info("database migrated")
	return nil
}

// openMigrated is openStore, then the migrations applied: what the
// commands that act on the database (migrate, keys) start with.
func openMigrated(ctx context.Context, d dbFlags, logger *slog.Logger) (*store.Store, func(), error) {
	st, closeDB, err := openStore(ctx, d, logger)
	if err != nil {
		return nil, nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		closeDB()
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	return st, closeDB, nil
}
