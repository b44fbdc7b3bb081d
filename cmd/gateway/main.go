// Command gateway is colpali-gateway: the colpali.v1 API over gRPC and
// REST/JSON in front of NVIDIA Triton servers running ColPali.
//
// Every flag can also be set by an environment variable: COLPALI_ and the
// flag's name in upper case with underscores (-triton-addrs is
// COLPALI_TRITON_ADDRS). A flag given on the command line wins. The database
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
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/morphik-org/colpali-gateway/batching"
	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/gpu"
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
	gateway  gateway.Config
	batching batching.Config
	models   model.Config
	triton   triton.Config
	router   router.Config
	// tritonAddrs and tritonAddr (its older, single-address spelling) are
	// parsed into router.Config.Static.
	tritonAddrs, tritonAddr string
	scrape                  gpu.ScraperConfig
	nvml                    gpu.NVMLConfig
	nvmlBackends            string
	db                      dbFlags
	log                     cli.LogFlags
}

// defaultTritonAddr is used when neither -triton-addrs nor -triton-dns is
// given: Triton's own gRPC port on this host.
const defaultTritonAddr = "127.0.0.1:8001"

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

	fs.StringVar(&o.tritonAddrs, "triton-addrs", "", "Triton backends, comma-separated host:port, each optionally =METRICS (host:port or URL of its Prometheus metrics; default http://host:<triton-metrics-port>/metrics); with neither this nor -triton-dns: "+defaultTritonAddr)
	fs.StringVar(&o.tritonAddr, "triton-addr", "", "alias of -triton-addrs, kept for existing set-ups")
	fs.IntVar(&o.triton.MaxRecvMsgSize, "triton-max-recv-msg-size", triton.DefaultMaxRecvMsgSize, "largest Triton response, in bytes")
	rc := &o.router
	fs.IntVar(&rc.MetricsPort, "triton-metrics-port", router.DefaultMetricsPort, "Triton metrics port of backends that name no metrics address (and of those found by DNS)")
	fs.StringVar(&rc.DNS, "triton-dns", "", "name:port of a headless service whose addresses are Triton backends (Kubernetes), re-resolved every -triton-dns-interval")
	fs.DurationVar(&rc.DNSInterval, "triton-dns-interval", router.DefaultDNSInterval, "how often -triton-dns is re-resolved")
	fs.StringVar(&rc.Policy, "router-policy", router.DefaultPolicy, "balancing policy: "+strings.Join(router.Policies, ", "))
	fs.DurationVar(&rc.HealthInterval, "router-health-interval", router.DefaultHealthInterval, "how often each backend's liveness and model readiness are checked")
	fs.DurationVar(&rc.HealthTimeout, "router-health-timeout", router.DefaultHealthTimeout, "time limit of one backend health check")
	fs.IntVar(&rc.EjectAfter, "router-eject-after", router.DefaultEjectAfter, "consecutive failed batches that eject a backend")
	fs.DurationVar(&rc.EjectBackoff, "router-eject-backoff", router.DefaultEjectBackoff, "first ejection's length; doubles with each ejection in a row")
	fs.DurationVar(&rc.EjectBackoffMax, "router-eject-backoff-max", router.DefaultEjectBackoffMax, "longest ejection")
	fs.Float64Var(&rc.RetryBudgetRatio, "router-retry-budget", router.DefaultRetryBudgetRatio, "most failover retries as a fraction of batches (over 10s)")
	fs.Float64Var(&rc.RetryMinPerSecond, "router-retry-min-per-second", router.DefaultRetryMinPerSecond, "failover retries per second allowed whatever -router-retry-budget")
	fs.DurationVar(&rc.DrainTimeout, "router-drain-timeout", router.DefaultDrainTimeout, "how long a leaving backend's batches in flight may take before its connection closes")
	fs.DurationVar(&rc.TelemetryMaxAge, "gpu-max-age", router.DefaultTelemetryMaxAge, "GPU telemetry older than this is ignored by the gpu_aware policy")
	fs.DurationVar(&o.scrape.Interval, "gpu-scrape-interval", gpu.DefaultScrapeInterval, "how often each backend's Triton metrics are scraped")
	fs.DurationVar(&o.scrape.Timeout, "gpu-scrape-timeout", gpu.DefaultScrapeTimeout, "time limit of one metrics scrape")
	fs.StringVar(&o.nvmlBackends, "gpu-nvml-backends", "", "backends whose GPUs are on this node, read through NVML: \"host:port=0,1;host:port=2\" (GPU indexes; none: every GPU); empty: NVML unused")
	fs.DurationVar(&o.nvml.Interval, "gpu-nvml-interval", gpu.DefaultNVMLInterval, "how often NVML is read")

	m := &o.models
	fs.StringVar(&m.QueryModel, "query-model", model.DefaultQueryModel, "Triton model for text queries")
	fs.StringVar(&m.ImageModel, "image-model", model.DefaultImageModel, "Triton model for page images")
	fs.StringVar(&m.ModelVersion, "model-version", model.DefaultModelVersion, "Triton model version (empty: Triton's version policy)")
	fs.StringVar(&m.QueryInput, "query-input", model.DefaultQueryInput, "query model's BYTES input tensor")
	fs.StringVar(&m.ImageInput, "image-input", model.DefaultImageInput, "image model's BYTES input tensor")
	fs.StringVar(&m.EmbeddingsOutput, "embeddings-output", model.DefaultEmbeddingsOutput, "embeddings output tensor [batch, tokens, dim]")
	fs.StringVar(&m.NumTokensOutput, "num-tokens-output", model.DefaultNumTokensOutput, "per-item token count output tensor [batch, 1]")
	fs.IntVar(&m.Dimension, "dimension", model.DefaultDimension, "embedding vector length")

	// Batching flags default to the real defaults, not to zero, so that a
	// zero given explicitly stays zero and Validate refuses it by name.
	d := batching.Config{}.WithDefaults()
	o.batching = d
	fs.StringVar((*string)(&o.batching.Mode), "batching-mode", string(d.Mode), "how calls are batched: adaptive (follow measured latency and load), static (Triton's policy) or none")
	registerQueueFlags(fs, "query", "query", &o.batching.Query, d.Query)
	registerQueueFlags(fs, "image", "page image", &o.batching.Image, d.Image)

	o.db.register(fs)
	o.log.Register(fs)
	return fs
}

// registerQueueFlags registers the -PREFIX-* flags of one model's queue.
func registerQueueFlags(fs *flag.FlagSet, prefix, what string, c *batching.ModelConfig, d batching.ModelConfig) {
	name := func(s string) string { return prefix + "-" + s }
	fs.IntVar(&c.MaxBatchSize, name("max-batch-size"), d.MaxBatchSize, "most "+what+" items in one batch sent to Triton")
	fs.IntVar(&c.ItemCost, name("item-cost"), d.ItemCost, "cost of one "+what+" item, in tokens (a query adds one per 4 bytes)")
	fs.IntVar(&c.MaxBatchCost, name("max-batch-cost"), d.MaxBatchCost, "cost budget of one "+what+" batch, in tokens")
	fs.DurationVar(&c.MaxQueueDelay, name("max-queue-delay"), d.MaxQueueDelay, "longest wait for a fuller "+what+" batch while Triton could take one")
	fs.Var((*batchSizes)(&c.PreferredBatchSizes), name("preferred-batch-sizes"), "comma-separated "+what+" batch sizes the static mode sends without waiting (default none)")
	fs.IntVar(&c.PriorityLevels, name("priority-levels"), d.PriorityLevels, "number of "+what+" priority levels; 1 is served first")
	fs.IntVar(&c.DefaultPriority, name("default-priority"), d.DefaultPriority, "priority level of a "+what+" request that asks for none")
	fs.IntVar(&c.MaxQueueSize, name("max-queue-size"), d.MaxQueueSize, "most "+what+" requests waiting; more are refused with RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.QueueTimeout, name("queue-timeout"), d.QueueTimeout, "longest a "+what+" request waits in the queue before -"+name("timeout-action"))
	fs.StringVar((*string)(&c.TimeoutAction), name("timeout-action"), string(d.TimeoutAction), "what happens to a "+what+" request past its queue timeout: reject (DEADLINE_EXCEEDED) or delay (moved behind the rest)")
	fs.BoolVar(&c.AllowTimeoutOverride, name("allow-timeout-override"), d.AllowTimeoutOverride, "let a "+what+" request's own deadline replace -"+name("queue-timeout"))
	fs.DurationVar(&c.LatencyTarget, name("latency-target"), d.LatencyTarget, "end-to-end "+what+" latency the adaptive mode holds while it grows batches")
	fs.IntVar(&c.MaxInFlightBatches, name("max-in-flight-batches"), d.MaxInFlightBatches, "most "+what+" batches sent to Triton and not yet answered, per backend ready for the model")
}

// batchSizes is a flag.Value for a comma-separated list of batch sizes.
type batchSizes []int

func (b *batchSizes) String() string {
	if b == nil {
		return ""
	}
	return strings.Trim(strings.Join(strings.Fields(fmt.Sprint([]int(*b))), ","), "[]")
}

func (b *batchSizes) Set(s string) error {
	sizes, err := batching.ParseBatchSizes(s)
	if err != nil {
		return err
	}
	*b = sizes
	return nil
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
	// Not WithDefaults: the flags hold the defaults already, and a zero
	// given explicitly must be refused, not replaced.
	if err := o.batching.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.models.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.routerConfig())
	if err := o.scrape.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("-gpu-scrape-interval, -gpu-scrape-timeout: %w", err))
	}
	if backends, err := gpu.ParseNVMLBackends(o.nvmlBackends); err != nil {
		errs = append(errs, fmt.Errorf("-gpu-nvml-backends: %w", err))
	} else {
		o.nvml.Backends = backends
	}
	if o.nvml.Interval <= 0 {
		errs = append(errs, fmt.Errorf("-gpu-nvml-interval %v: must be positive", o.nvml.Interval))
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
	o.router.Triton = o.triton
	o.router.Models = o.models

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// GPU telemetry: every backend's Triton metrics, scraped; and, for the
	// backends on this node, NVML, which is more direct for utilisation and
	// memory and so comes first (Merge takes each group of figures from the
	// first source that has it).
	scraper := gpu.NewScraper(o.scrape, logger.With("component", "gpu_scraper"))
	var telemetry gpu.Source = scraper
	var nvml *gpu.NVML
	if len(o.nvml.Backends) > 0 {
		nvml = gpu.NewNVML(o.nvml, logger.With("component", "gpu_nvml"))
		telemetry = gpu.Merge(nvml, scraper)
	}
	r, err := router.New(o.router, router.Deps{
		Logger: logger, GPU: telemetry, Targets: scraper, Registerer: registry,
	})
	if err != nil {
		return err
	}
	// The router and the scraper outlive the gateway's drain: calls still
	// in flight while it drains need their backends.
	backgroundCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var background sync.WaitGroup
	defer func() {
		stopBackground()
		background.Wait()
	}()
	background.Go(func() {
		if err := r.Run(backgroundCtx); err != nil {
			logger.Error("router stopped", "err", err)
		}
	})
	background.Go(func() {
		if err := scraper.Run(backgroundCtx); err != nil {
			logger.Error("GPU telemetry scraper stopped", "err", err)
		}
	})
	if nvml != nil {
		background.Go(func() {
			if err := nvml.Run(backgroundCtx); err != nil {
				logger.Error("NVML telemetry stopped", "err", err)
			}
		})
	}

	// Without a database URL and without node or the npm packages, the
	// embedded Postgres cannot run: the gateway still serves embeddings,
	// and its DocumentService says storage is not configured.
	var documents gateway.DocumentStore
	st, closeDB, err := openStore(ctx, o.db, logger)
	switch {
	case errors.Is(err, embeddedpg.ErrNotInstalled) || errors.Is(err, exec.ErrNotFound):
		logger.Error("document storage disabled: the embedded Postgres cannot run here; set -database-url (or DATABASE_URL), or run `make install`",
			"error", err.Error())
	case err != nil:
		return err
	default:
		defer closeDB()
		documents = st
		// Migrations run in the background: a database that is down at
		// start-up must not keep the gateway from serving embeddings, and
		// the store answers document calls with ErrUnavailable until
		// migrated.
		migrateCtx, stopMigrating := context.WithCancel(ctx)
		var migrating sync.WaitGroup
		migrating.Go(func() { migrateUntilDone(migrateCtx, st, logger) })
		defer migrating.Wait()
		defer stopMigrating()
	}

	batcher, err := batching.New(o.batching, batching.Deps{Downstream: routerDownstream{r}, Logger: logger, Registry: registry, Backends: r.Routable})
	if err != nil {
		return err
	}
	// The gateway drains its calls first (they wait on the batcher), so
	// this Close normally finds nothing left to flush.
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.gateway.WithDefaults().ShutdownTimeout)
		defer cancel()
		if err := batcher.Close(closeCtx); err != nil {
			logger.Warn("batcher close", "error", err.Error())
		}
	}()

	srv, err := gateway.New(o.gateway, gateway.Deps{
		Logger: logger, Embedder: batcher, Ready: r.Ready, Backends: r, Documents: documents, Registry: registry,
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	var static []string
	for _, e := range o.router.Static {
		static = append(static, e.Addr)
	}
	logger.Info("colpali-gateway starting", "version", version, "triton_addrs", strings.Join(static, ","),
		"triton_dns", o.router.DNS, "router_policy", o.router.Policy, "batching_mode", string(o.batching.Mode),
		"query_model", o.models.QueryModel, "image_model", o.models.ImageModel, "trace_export", exporting)
	return srv.Serve(ctx)
}

// routerConfig parses the backend list into o.router and names every bad
// router flag. Zero and negative values are refused: each flag has a
// meaningful default, and 0 would silently mean that default.
func (o *options) routerConfig() error {
	var errs []error
	list := strings.Trim(o.tritonAddrs+","+o.tritonAddr, ",")
	if list == "" && o.router.DNS == "" {
		list = defaultTritonAddr
	}
	rc := &o.router
	if rc.MetricsPort <= 0 || rc.MetricsPort > 65535 {
		errs = append(errs, fmt.Errorf("-triton-metrics-port %d: want 1 to 65535", rc.MetricsPort))
	} else {
		eps, err := router.ParseEndpoints(list, rc.MetricsPort)
		if err != nil {
			errs = append(errs, fmt.Errorf("-triton-addrs: %w", err))
		}
		rc.Static = eps
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"-triton-dns-interval", rc.DNSInterval}, {"-router-health-interval", rc.HealthInterval},
		{"-router-health-timeout", rc.HealthTimeout}, {"-router-eject-backoff", rc.EjectBackoff},
		{"-router-eject-backoff-max", rc.EjectBackoffMax}, {"-router-drain-timeout", rc.DrainTimeout},
		{"-gpu-max-age", rc.TelemetryMaxAge}, {"-gpu-scrape-interval", o.scrape.Interval}, {"-gpu-scrape-timeout", o.scrape.Timeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", d.flag, d.v))
		}
	}
	if rc.EjectAfter <= 0 {
		errs = append(errs, fmt.Errorf("-router-eject-after %d: must be positive", rc.EjectAfter))
	}
	if !(rc.RetryBudgetRatio > 0) {
		errs = append(errs, fmt.Errorf("-router-retry-budget %v: must be positive", rc.RetryBudgetRatio))
	}
	if !(rc.RetryMinPerSecond > 0) {
		errs = append(errs, fmt.Errorf("-router-retry-min-per-second %v: must be positive", rc.RetryMinPerSecond))
	}
	if !slices.Contains(router.Policies, rc.Policy) {
		errs = append(errs, fmt.Errorf("-router-policy %q: want one of %s", rc.Policy, strings.Join(router.Policies, ", ")))
	}
	if rc.EjectBackoffMax > 0 && rc.EjectBackoffMax < rc.EjectBackoff {
		errs = append(errs, fmt.Errorf("-router-eject-backoff-max %v is below -router-eject-backoff %v", rc.EjectBackoffMax, rc.EjectBackoff))
	}
	if rc.DNS != "" {
		if host, port, err := net.SplitHostPort(rc.DNS); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("-triton-dns %q: want name:port", rc.DNS))
		}
	}
	return errors.Join(errs...)
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

// routerDownstream is the router as the batcher's Downstream: the router
// takes a batch's priority as a parameter, which batching.Downstream does
// not pass yet, and no priority is sent, as before the router took one.
// It goes once batching passes the priority explicitly (issue 9).
type routerDownstream struct{ *router.Router }

func (d routerDownstream) Embed(ctx context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error) {
	return d.Router.Embed(ctx, kind, items, 0)
}
