// Command gateway is colpali-gateway: the colpali.v1 API over gRPC and
// REST/JSON in front of NVIDIA Triton servers running ColPali.
//
// Every flag can also be set by an environment variable: COLPALI_ and the
// flag's name in upper case with underscores (-triton-addr is
// COLPALI_TRITON_ADDR). A flag given on the command line wins. The database
// URL is also read from DATABASE_URL, Postgres' usual variable.
//
// Documents are stored in Postgres with pgvector: -database-url, or else an
// embedded Postgres (PGlite, under node) keeping its data in -data-dir.
// `gateway migrate [flags]` applies the database migrations and exits; the
// gateway also applies them at start-up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/internal/cli"
	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/telemetry"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/store"
	"github.com/morphik-org/colpali-gateway/triton"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const envPrefix = "COLPALI_"

// databaseURLEnv is read when neither -database-url nor
// COLPALI_DATABASE_URL is set: the variable Postgres tools and platforms use.
const databaseURLEnv = "DATABASE_URL"

// defaultDataDir keeps the embedded database under the working directory,
// so that `make run` finds its documents again after a restart.
const defaultDataDir = "data/pg"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// options are the command line: the gateway's Config plus what main wires.
type options struct {
	gateway gateway.Config
	models  model.Config
	triton  triton.Config
	db      dbFlags
	log     cli.LogFlags
}

// dbFlags choose the database: a Postgres URL, or the embedded one.
type dbFlags struct {
	URL     string
	DataDir string
}

func (d *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.URL, "database-url", "", "Postgres (with pgvector) URL, e.g. postgres://user:pass@host:5432/db; also read from "+databaseURLEnv+"; empty: run the embedded Postgres")
	fs.StringVar(&d.DataDir, "data-dir", defaultDataDir, "data directory of the embedded Postgres (used without -database-url); empty: in memory, lost on exit")
}

// resolve applies DATABASE_URL when no flag or COLPALI_ variable set the URL.
func (d *dbFlags) resolve(getenv func(string) string) {
	if d.URL == "" {
		d.URL = getenv(databaseURLEnv)
	}
}

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gateway [flags]\n       gateway migrate [flags]   (apply the database migrations and exit)\n\n"+
			"colpali-gateway serves the colpali.v1 API (gRPC and REST/JSON) in front of\n"+
			"Triton servers running ColPali. Every flag may also be set by the environment\n"+
			"variable %sNAME, NAME being the flag in upper case with underscores.\n\nFlags:\n", envPrefix)
		fs.PrintDefaults()
	}
	g := &o.gateway
	fs.StringVar(&g.GRPCAddr, "grpc-addr", gateway.DefaultGRPCAddr, "gRPC listen address")
	fs.StringVar(&g.HTTPAddr, "http-addr", gateway.DefaultHTTPAddr, "REST, /metrics and /openapi.json listen address")
	fs.DurationVar(&g.DefaultTimeout, "default-timeout", gateway.DefaultTimeout, "deadline of a call that carries none")
	fs.DurationVar(&g.MaxTimeout, "max-timeout", gateway.DefaultMaxTimeout, "longest deadline a caller may ask for")
	fs.IntVar(&g.MaxQueries, "max-queries", gateway.DefaultMaxQueries, "most queries in one EmbedQueries call")
	fs.IntVar(&g.MaxQueryBytes, "max-query-bytes", gateway.DefaultMaxQueryBytes, "longest query, in UTF-8 bytes")
	fs.IntVar(&g.MaxImages, "max-images", gateway.DefaultMaxImages, "most images in one EmbedImages call")
	fs.IntVar(&g.MaxImageBytes, "max-image-bytes", gateway.DefaultMaxImageBytes, "largest encoded image, in bytes")
	fs.IntVar(&g.MaxImagePixels, "max-image-pixels", gateway.DefaultMaxImagePixels, "largest image, in width x height pixels")
	fs.IntVar(&g.MaxRecvMsgSize, "max-recv-msg-size", 0, "largest gRPC request, in bytes (0: max-images x max-image-bytes + 1 MiB)")
	fs.IntVar(&g.MaxSendMsgSize, "max-send-msg-size", gateway.DefaultMaxSendMsgSize, "largest gRPC response, in bytes")
	fs.IntVar(&g.MaxConcurrentStreams, "max-concurrent-streams", gateway.DefaultMaxStreams, "most calls in flight on one gRPC connection")
	fs.IntVar(&g.MaxDocumentPages, "max-document-pages", gateway.DefaultMaxDocumentPages, "most pages in one IngestDocument call (the request must also fit -max-recv-msg-size)")
	fs.IntVar(&g.MaxStreamPages, "max-stream-pages", gateway.DefaultMaxStreamPages, "most pages of one IngestDocumentStream")
	fs.IntVar(&g.MaxMetadataEntries, "max-metadata-entries", gateway.DefaultMaxMetadataEntries, "most metadata entries of a document")
	fs.IntVar(&g.MaxMetadataBytes, "max-metadata-bytes", gateway.DefaultMaxMetadataBytes, "most bytes of a document's metadata keys and values")
	fs.IntVar(&g.MaxTopK, "max-top-k", gateway.DefaultMaxTopK, "most pages one Search returns")
	fs.IntVar(&g.MaxFilters, "max-filters", gateway.DefaultMaxFilters, "most filters of one Search")
	fs.DurationVar(&g.StreamTimeout, "stream-timeout", gateway.DefaultStreamTimeout, "longest an IngestDocumentStream call may last")
	fs.DurationVar(&g.HealthInterval, "health-interval", gateway.DefaultHealthInterval, "how often backend readiness is checked")
	fs.DurationVar(&g.ShutdownTimeout, "shutdown-timeout", gateway.DefaultShutdownTimeout, "how long calls in flight may drain on shutdown")

	fs.StringVar(&o.triton.Addr, "triton-addr", "127.0.0.1:8001", "Triton gRPC address, host:port")
	fs.IntVar(&o.triton.MaxRecvMsgSize, "triton-max-recv-msg-size", triton.DefaultMaxRecvMsgSize, "largest Triton response, in bytes")

	m := &o.models
	fs.StringVar(&m.QueryModel, "query-model", model.DefaultQueryModel, "Triton model for text queries")
	fs.StringVar(&m.ImageModel, "image-model", model.DefaultImageModel, "Triton model for page images")
	fs.StringVar(&m.ModelVersion, "model-version", model.DefaultModelVersion, "Triton model version (empty: Triton's version policy)")
	fs.StringVar(&m.QueryInput, "query-input", model.DefaultQueryInput, "query model's BYTES input tensor")
	fs.StringVar(&m.ImageInput, "image-input", model.DefaultImageInput, "image model's BYTES input tensor")
	fs.StringVar(&m.EmbeddingsOutput, "embeddings-output", model.DefaultEmbeddingsOutput, "embeddings output tensor [batch, tokens, dim]")
	fs.StringVar(&m.NumTokensOutput, "num-tokens-output", model.DefaultNumTokensOutput, "per-item token count output tensor [batch, 1]")
	fs.IntVar(&m.Dimension, "dimension", model.DefaultDimension, "embedding vector length")

	o.db.register(fs)
	o.log.Register(fs)
	return fs
}

// run parses args (and the environment, through getenv), serves until ctx
// ends, and returns why it stopped.
func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 && args[0] == "migrate" {
		return runMigrate(ctx, args[1:], stderr, getenv)
	}
	var o options
	fs := newFlagSet(&o, stderr)
	err := cli.Parse(fs, args, envPrefix, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	o.db.resolve(getenv)
	errs := []error{err}
	logger, logErr := o.log.Logger(stderr)
	errs = append(errs, logErr)
	// Validate everything before starting anything, and report it all.
	if err := o.gateway.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.models.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.triton.Addr == "" {
		errs = append(errs, errors.New("-triton-addr is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	exporting, shutdownTracing, err := telemetry.Setup(ctx, "colpali-gateway", version)
	if err != nil {
		return err
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(flushCtx)
	}()

	// The Triton client must be able to send the largest request the
	// gateway accepts: tie its send limit to the gateway's receive limit.
	o.triton.MaxSendMsgSize = max(triton.DefaultMaxSendMsgSize, o.gateway.WithDefaults().MaxRecvMsgSize+1<<20)
	backend, err := triton.New(o.triton)
	if err != nil {
		return err
	}
	defer backend.Close()
	r := router.New(o.models, backend)

	st, closeDB, err := openStore(ctx, o.db, logger)
	if err != nil {
		return err
	}
	defer closeDB()
	// Migrations run in the background: a database that is down at
	// start-up must not keep the gateway from serving embeddings, and the
	// store answers document calls with ErrUnavailable until migrated.
	migrateCtx, stopMigrating := context.WithCancel(ctx)
	var migrating sync.WaitGroup
	migrating.Go(func() { migrateUntilDone(migrateCtx, st, logger) })
	defer migrating.Wait()
	defer stopMigrating()

	srv, err := gateway.New(o.gateway, gateway.Deps{Logger: logger, Embedder: r, Ready: r.Ready, Documents: st})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	logger.Info("colpali-gateway starting", "version", version, "triton_addr", o.triton.Addr,
		"query_model", o.models.QueryModel, "image_model", o.models.ImageModel, "trace_export", exporting)
	return srv.Serve(ctx)
}

// openStore opens the document store on d.URL, or on an embedded Postgres
// started in d.DataDir when no URL is set. The store does not need the
// database to be up (it answers ErrUnavailable until it is); the embedded
// Postgres must start, since nothing else would bring it up later. closeDB
// closes the store, then stops the embedded Postgres.
func openStore(ctx context.Context, d dbFlags, logger *slog.Logger) (st *store.Store, closeDB func(), err error) {
	cfg := store.Config{URL: d.URL}
	stopPG := func() {}
	if cfg.URL == "" {
		pg, err := embeddedpg.Start(ctx, embeddedpg.Config{Dir: d.DataDir, Logger: logger.With("component", "embeddedpg")})
		if err != nil {
			return nil, nil, fmt.Errorf("embedded Postgres (set -database-url or %s to use another): %w", databaseURLEnv, err)
		}
		logger.Info("embedded Postgres started", "data_dir", d.DataDir, "url", pg.URL())
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
	st, err = store.Open(ctx, cfg, logger.With("component", "store"))
	if err != nil {
		stopPG()
		return nil, nil, err
	}
	return st, func() { st.Close(); stopPG() }, nil
}

// migrateUntilDone applies the migrations, retrying with backoff (1s
// doubling to 30s) while the database cannot be reached, until they are
// applied or ctx ends.
func migrateUntilDone(ctx context.Context, st *store.Store, logger *slog.Logger) {
	const maxBackoff = 30 * time.Second
	backoff := time.Second
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := st.Migrate(attemptCtx)
		cancel()
		if err == nil {
			logger.Info("database migrated; document storage available")
			return
		}
		if ctx.Err() != nil {
			return
		}
		logger.Warn("database migration failed; document calls answer UNAVAILABLE until it succeeds", "error", err.Error(), "retry_in", backoff)
		timer.Reset(backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// runMigrate is `gateway migrate`: apply the migrations to the database the
// flags name (or to the embedded one) and exit.
func runMigrate(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	var d dbFlags
	var logFlags cli.LogFlags
	var timeout time.Duration
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
	fs.DurationVar(&timeout, "timeout", 5*time.Minute, "how long the migration may take")
	err := cli.Parse(fs, args, envPrefix, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	d.resolve(getenv)
	logger, logErr := logFlags.Logger(stderr)
	if err := errors.Join(err, logErr); err != nil {
		return err
	}
	if timeout <= 0 {
		return fmt.Errorf("-timeout must be positive, got %v", timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, closeDB, err := openStore(ctx, d, logger)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := st.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	logger.Info("database migrated")
	return nil
}
