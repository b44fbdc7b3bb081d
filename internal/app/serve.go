package app

import (
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/morphik-org/colpali-gateway/batching"
	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/telemetry"
	"github.com/morphik-org/colpali-gateway/router"
)

// serve is the gateway itself: parse and validate everything, wire the
// components, and serve until ctx ends.
func serve(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	o, err := parseOptions(args, stderr, getenv)
	if err != nil {
		return err
	}
	logger, err := o.log.Logger(stderr)
	if err != nil {
		return err
	}

	exporting, shutdownTracing, err := telemetry.Setup(ctx, "colpali-gateway", Version)
	if err != nil {
		return err
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(flushCtx)
	}()

	listenersTLS, runTLS, err := o.transport.apply(o, logger)
	if err != nil {
		return err
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// GPU telemetry: every backend's Triton metrics, scraped; and, for the
	// backends on this node, NVML, which is more direct for utilisation and
	// memory and so comes first (Merge takes each group of figures from the
	// first source that has it).
	scraper := gpu.NewScraper(o.scrape, logger.With("component", "gpu_scraper"))
	var gpuTelemetry gpu.Source = scraper
	var nvml *gpu.NVML
	if len(o.nvml.Backends) > 0 {
		nvml = gpu.NewNVML(o.nvml, logger.With("component", "gpu_nvml"))
		gpuTelemetry = gpu.Merge(nvml, scraper)
	}
	r, err := router.New(o.router, router.Deps{
		Logger: logger, GPU: gpuTelemetry, Targets: scraper, Registerer: registry,
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
	background.Go(func() { runTLS(backgroundCtx) })
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
	case storageRefused(err): // in a cluster without a database URL: stateless.go
		logger.Error("document storage disabled", "error", err.Error())
	case errors.Is(err, embeddedpg.ErrNotInstalled) || errors.Is(err, exec.ErrNotFound):
		logger.Error("document storage disabled: the embedded Postgres cannot run here; set -database-url (or DATABASE_URL), or run `make install`",
			"error", err.Error())
	case err != nil:
		return err
	default:
		defer closeDB()
		documents = st
		// Migrations run in the background: a database that is down at
		// start-up must not keep the gateway from serving embeddings.
		migrateCtx, stopMigrating := context.WithCancel(ctx)
		var migrating sync.WaitGroup
		migrating.Go(func() { st.MigrateUntilDone(migrateCtx) })
		defer migrating.Wait()
		defer stopMigrating()
	}

	batcher, err := batching.New(o.batching, batching.Deps{Downstream: r, Logger: logger, Registry: registry, Backends: r.Routable})
	if err != nil {
		return err
	}
	// The gateway's drain flushes the batcher once its calls are done
	// (gateway.Deps.Flush); this Close covers a gateway that never
	// served, and is a no-op after that flush.
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.gateway.ShutdownTimeout)
		defer cancel()
		if err := batcher.Close(closeCtx); err != nil {
			logger.Warn("batcher close", "error", err.Error())
		}
	}()

	acc, err := buildAccess(ctx, o.access, st, registry, logger)
	if err != nil {
		return err
	}
	defer acc.close()
	admit, err := o.admission.controller(logger, registry)
	if err != nil {
		return err
	}
	o.admission.applyHeapFloor(logger)
	srv, err := gateway.New(o.gateway, gateway.Deps{
		Logger: logger, Embedder: batcher, Ready: r.Ready, Backends: r, Documents: documents, Registry: registry,
		Flush:         batcher.Close,
		Authenticator: acc.authn, Quotas: acc.quotas,
		TLS:       listenersTLS,
		Admission: admit,
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
	logger.Info("colpali-gateway starting", "version", Version, "triton_addrs", strings.Join(static, ","),
		"triton_dns", o.router.DNS, "router_policy", o.router.Policy, "batching_mode", string(o.batching.Mode),
		"query_model", o.router.Models.QueryModel, "image_model", o.router.Models.ImageModel, "trace_export", exporting, "auth", o.access.mode.String())
	logger.Info("transport", o.transport.tlsLogged()...)
	return srv.Serve(ctx)
}
