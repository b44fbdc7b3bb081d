// Command gateway is colpali-gateway: the colpali.v1 API over gRPC and
// REST/JSON in front of NVIDIA Triton servers running ColPali.
//
// Every flag can also be set by an environment variable: COLPALI_ and the
// flag's name in upper case with underscores (-triton-addr is
// COLPALI_TRITON_ADDR). A flag given on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/morphik-org/colpali-gateway/batching"
	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/internal/cli"
	"github.com/morphik-org/colpali-gateway/internal/telemetry"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/triton"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const envPrefix = "COLPALI_"

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
	log      cli.LogFlags
}

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gateway [flags]\n\n"+
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

	// Batching flags default to the real defaults, not to zero, so that a
	// zero given explicitly stays zero and Validate refuses it by name.
	d := batching.Config{}.WithDefaults()
	o.batching = d
	fs.StringVar((*string)(&o.batching.Mode), "batching-mode", string(d.Mode), "how calls are batched: adaptive (follow measured latency and load), static (Triton's policy) or none")
	registerQueueFlags(fs, "query", "query", &o.batching.Query, d.Query)
	registerQueueFlags(fs, "image", "page image", &o.batching.Image, d.Image)

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
	fs.IntVar(&c.MaxInFlightBatches, name("max-in-flight-batches"), d.MaxInFlightBatches, "most "+what+" batches sent to Triton and not yet answered")
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
	var o options
	fs := newFlagSet(&o, stderr)
	err := cli.Parse(fs, args, envPrefix, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
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

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	batcher, err := batching.New(o.batching, batching.Deps{Downstream: r, Logger: logger, Registry: registry})
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

	srv, err := gateway.New(o.gateway, gateway.Deps{Logger: logger, Embedder: batcher, Ready: r.Ready, Registry: registry})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	logger.Info("colpali-gateway starting", "version", version, "triton_addr", o.triton.Addr,
		"query_model", o.models.QueryModel, "image_model", o.models.ImageModel, "batching_mode", string(o.batching.Mode),
		"trace_export", exporting)
	return srv.Serve(ctx)
}
