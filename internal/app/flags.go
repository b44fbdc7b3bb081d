package app

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/morphik-org/colpali-gateway/batching"
	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/internal/cli"
	"github.com/morphik-org/colpali-gateway/internal/config"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/triton"
)

// defaultTritonAddr is used when neither -triton-addrs nor -triton-dns is
// given: Triton's own gRPC port on this host.
const defaultTritonAddr = "127.0.0.1:8001"

// options are the command line: each component's Config plus what the
// command wires itself.
type options struct {
	gateway  gateway.Config
	batching batching.Config
	// router holds the model and Triton connection Configs too
	// (router.Models, router.Triton).
	router router.Config
	// tritonAddrs and tritonAddr (its older, single-address spelling) are
	// parsed into router.Static.
	tritonAddrs, tritonAddr string
	scrape                  gpu.ScraperConfig
	nvml                    gpu.NVMLConfig
	nvmlBackends            string
	db                      dbFlags
	log                     cli.LogFlags
	access                  accessFlags    // -auth, -jwt-*, -quota-*: access.go
	transport               transportFlags // transport.go
	admission               admissionFlags

	// flags maps a Config field, as the Config's Validate names it with
	// the component's prefix ("gateway.MaxQueries"), to its flag.
	flags map[string]string
}

// Prefixes of the field names in options.flags, one per Config.
const (
	gatewayFields  = "gateway."
	batchingFields = "batching."
	routerFields   = "router."
	scrapeFields   = "scrape."
	nvmlFields     = "nvml."
)

// newOptions returns options holding every default: the flags registered
// on them take these values as their own defaults, so that a flag left
// unset means the default and an explicit zero stays zero, for Validate
// to refuse by name.
func newOptions() *options {
	o := &options{
		gateway:  gateway.Config{}.WithDefaults(),
		batching: batching.Config{}.WithDefaults(),
		router:   router.Config{}.WithDefaults(),
		// Stale is left zero: it derives from the interval flag.
		scrape: gpu.ScraperConfig{Interval: gpu.DefaultScrapeInterval, Timeout: gpu.DefaultScrapeTimeout, MaxBytes: gpu.DefaultMaxBytes},
		nvml:   gpu.NVMLConfig{Interval: gpu.DefaultNVMLInterval},
		flags:  map[string]string{},
	}
	// No fixed default: derived from -max-images and -max-image-bytes
	// after parsing, unless given.
	o.gateway.MaxRecvMsgSize = 0
	return o
}

// binder registers flags on fields of options and records which field
// each flag sets. A flag's default is the field's value at registration.
type binder struct {
	fs     *flag.FlagSet
	flags  map[string]string
	prefix string
}

func (b binder) bind(field, name string) { b.flags[b.prefix+field] = name }

func (b binder) int(p *int, name, field, usage string) {
	b.fs.IntVar(p, name, *p, usage)
	b.bind(field, name)
}

func (b binder) duration(p *time.Duration, name, field, usage string) {
	b.fs.DurationVar(p, name, *p, usage)
	b.bind(field, name)
}

func (b binder) float(p *float64, name, field, usage string) {
	b.fs.Float64Var(p, name, *p, usage)
	b.bind(field, name)
}

func (b binder) string(p *string, name, field, usage string) {
	b.fs.StringVar(p, name, *p, usage)
	b.bind(field, name)
}

func (b binder) with(prefix string) binder { b.prefix = prefix; return b }

// newFlagSet registers every flag of the serving command on o.
func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead())
		fs.PrintDefaults()
	}
	b := binder{fs: fs, flags: o.flags}

	g, gb := &o.gateway, b.with(gatewayFields)
	gb.string(&g.GRPCAddr, "grpc-addr", "GRPCAddr", "gRPC listen address")
	gb.string(&g.HTTPAddr, "http-addr", "HTTPAddr", "REST, /metrics and /openapi.json listen address")
	gb.duration(&g.DefaultTimeout, "default-timeout", "DefaultTimeout", "deadline of a call that carries none")
	gb.duration(&g.MaxTimeout, "max-timeout", "MaxTimeout", "longest deadline a caller may ask for")
	gb.int(&g.MaxQueries, "max-queries", "MaxQueries", "most queries in one EmbedQueries call")
	gb.int(&g.MaxQueryBytes, "max-query-bytes", "MaxQueryBytes", "longest query, in UTF-8 bytes")
	gb.int(&g.MaxImages, "max-images", "MaxImages", "most images in one EmbedImages call")
	gb.int(&g.MaxImageBytes, "max-image-bytes", "MaxImageBytes", "largest encoded image, in bytes")
	gb.int(&g.MaxImagePixels, "max-image-pixels", "MaxImagePixels", "largest image, in width x height pixels")
	gb.int(&g.MaxRecvMsgSize, "max-recv-msg-size", "MaxRecvMsgSize", "largest gRPC request, in bytes (unset: max-images x max-image-bytes + 1 MiB)")
	gb.int(&g.MaxSendMsgSize, "max-send-msg-size", "MaxSendMsgSize", "largest gRPC response, in bytes")
	gb.int(&g.MaxConcurrentStreams, "max-concurrent-streams", "MaxConcurrentStreams", "most calls in flight on one gRPC connection")
	gb.int(&g.MaxDocumentPages, "max-document-pages", "MaxDocumentPages", "most pages in one IngestDocument call (the request must also fit -max-recv-msg-size)")
	gb.int(&g.MaxStreamPages, "max-stream-pages", "MaxStreamPages", "most pages of one IngestDocumentStream")
	gb.int(&g.MaxMetadataEntries, "max-metadata-entries", "MaxMetadataEntries", "most metadata entries of a document")
	gb.int(&g.MaxMetadataBytes, "max-metadata-bytes", "MaxMetadataBytes", "most bytes of a document's metadata keys and values")
	gb.int(&g.MaxTopK, "max-top-k", "MaxTopK", "most pages one Search returns")
	gb.int(&g.MaxFilters, "max-filters", "MaxFilters", "most filters of one Search")
	gb.duration(&g.StreamTimeout, "stream-timeout", "StreamTimeout", "longest an IngestDocumentStream call may last")
	gb.duration(&g.HealthInterval, "health-interval", "HealthInterval", "how often backend readiness is checked")
	gb.duration(&g.ShutdownTimeout, "shutdown-timeout", "ShutdownTimeout", "how long calls in flight may drain on shutdown, after -drain-delay")
	registerDrainFlags(gb, &g.Drain) // shutdown.go

	rc, rb := &o.router, b.with(routerFields)
	fs.StringVar(&o.tritonAddrs, "triton-addrs", "", "Triton backends, comma-separated host:port, each optionally =METRICS (host:port or URL of its Prometheus metrics; default http://host:<triton-metrics-port>/metrics); with neither this nor -triton-dns: "+defaultTritonAddr)
	rb.bind("Static", "triton-addrs")
	fs.StringVar(&o.tritonAddr, "triton-addr", "", "alias of -triton-addrs, kept for existing set-ups")
	rb.int(&rc.Triton.MaxRecvMsgSize, "triton-max-recv-msg-size", "Triton.MaxRecvMsgSize", "largest Triton response, in bytes")
	rb.int(&rc.MetricsPort, "triton-metrics-port", "MetricsPort", "Triton metrics port of backends that name no metrics address (and of those found by DNS)")
	rb.string(&rc.DNS, "triton-dns", "DNS", "name:port of a headless service whose addresses are Triton backends (Kubernetes), re-resolved every -triton-dns-interval")
	rb.duration(&rc.DNSInterval, "triton-dns-interval", "DNSInterval", "how often -triton-dns is re-resolved")
	rb.string(&rc.Policy, "router-policy", "Policy", "balancing policy: "+strings.Join(router.Policies, ", "))
	rb.duration(&rc.HealthInterval, "router-health-interval", "HealthInterval", "how often each backend's liveness and model readiness are checked")
	rb.duration(&rc.HealthTimeout, "router-health-timeout", "HealthTimeout", "time limit of one backend health check")
	rb.int(&rc.UnhealthyThreshold, "router-unhealthy-threshold", "UnhealthyThreshold", "health checks in a row failing without an answer that take a backend out (a refused connection or a server not live: at once)")
	rb.int(&rc.HealthyThreshold, "router-healthy-threshold", "HealthyThreshold", "passing health checks in a row that bring back a backend taken out by failed checks")
	rb.int(&rc.EjectAfter, "router-eject-after", "EjectAfter", "consecutive failed batches that eject a backend")
	rb.duration(&rc.EjectBackoff, "router-eject-backoff", "EjectBackoff", "first ejection's length; doubles with each ejection in a row")
	rb.duration(&rc.EjectBackoffMax, "router-eject-backoff-max", "EjectBackoffMax", "longest ejection")
	rb.float(&rc.RetryBudgetRatio, "router-retry-budget", "RetryBudgetRatio", "most failover retries as a fraction of batches (over 10s)")
	rb.float(&rc.RetryMinPerSecond, "router-retry-min-per-second", "RetryMinPerSecond", "failover retries per second allowed whatever -router-retry-budget")
	rb.duration(&rc.DrainTimeout, "router-drain-timeout", "DrainTimeout", "how long a leaving backend's batches in flight may take before its connection closes")
	rb.duration(&rc.TelemetryMaxAge, "gpu-max-age", "TelemetryMaxAge", "GPU telemetry older than this is ignored by the gpu_aware policy")
	sb := b.with(scrapeFields)
	sb.duration(&o.scrape.Interval, "gpu-scrape-interval", "Interval", "how often each backend's Triton metrics are scraped")
	sb.duration(&o.scrape.Timeout, "gpu-scrape-timeout", "Timeout", "time limit of one metrics scrape")
	nb := b.with(nvmlFields)
	fs.StringVar(&o.nvmlBackends, "gpu-nvml-backends", "", "backends whose GPUs are on this node, read through NVML: \"host:port=0,1;host:port=2\" (GPU indexes; none: every GPU); empty: NVML unused")
	nb.bind("Backends", "gpu-nvml-backends")
	nb.duration(&o.nvml.Interval, "gpu-nvml-interval", "Interval", "how often NVML is read")

	m := &rc.Models
	rb.string(&m.QueryModel, "query-model", "Models.QueryModel", "Triton model for text queries")
	rb.string(&m.ImageModel, "image-model", "Models.ImageModel", "Triton model for page images")
	rb.string(&m.ModelVersion, "model-version", "Models.ModelVersion", "Triton model version (empty: Triton's version policy)")
	rb.string(&m.QueryInput, "query-input", "Models.QueryInput", "query model's BYTES input tensor")
	rb.string(&m.ImageInput, "image-input", "Models.ImageInput", "image model's BYTES input tensor")
	rb.string(&m.EmbeddingsOutput, "embeddings-output", "Models.EmbeddingsOutput", "embeddings output tensor [batch, tokens, dim]")
	rb.string(&m.NumTokensOutput, "num-tokens-output", "Models.NumTokensOutput", "per-item token count output tensor [batch, 1]")
	rb.int(&m.Dimension, "dimension", "Models.Dimension", "embedding vector length")

	bb := b.with(batchingFields)
	bb.string((*string)(&o.batching.Mode), "batching-mode", "Mode", "how calls are batched: adaptive (follow measured latency and load), static (Triton's policy) or none")
	registerQueueFlags(bb, "query", "query", "Query.", &o.batching.Query)
	registerQueueFlags(bb, "image", "page image", "Image.", &o.batching.Image)

	o.admission.register(b)
	o.db.register(fs)
	o.log.Register(fs)
	o.access.register(fs)
	registerTransportFlags(b, o)
	return fs
}

// registerQueueFlags registers the -PREFIX-* flags of one model's queue,
// whose fields Validate names under field ("Query.").
func registerQueueFlags(b binder, prefix, what, field string, c *batching.ModelConfig) {
	name := func(s string) string { return prefix + "-" + s }
	b = b.with(b.prefix + field)
	b.int(&c.MaxBatchSize, name("max-batch-size"), "MaxBatchSize", "most "+what+" items in one batch sent to Triton")
	b.int(&c.ItemCost, name("item-cost"), "ItemCost", "cost of one "+what+" item, in tokens (a query adds one per 4 bytes)")
	b.int(&c.MaxBatchCost, name("max-batch-cost"), "MaxBatchCost", "cost budget of one "+what+" batch, in tokens")
	b.duration(&c.MaxQueueDelay, name("max-queue-delay"), "MaxQueueDelay", "longest wait for a fuller "+what+" batch while Triton could take one")
	b.fs.Var((*batchSizes)(&c.PreferredBatchSizes), name("preferred-batch-sizes"), "comma-separated "+what+" batch sizes the static mode sends without waiting (default none)")
	b.bind("PreferredBatchSizes", name("preferred-batch-sizes"))
	b.int(&c.PriorityLevels, name("priority-levels"), "PriorityLevels", "number of "+what+" priority levels; 1 is served first")
	b.int(&c.DefaultPriority, name("default-priority"), "DefaultPriority", "priority level of a "+what+" request that asks for none")
	b.int(&c.MaxQueueSize, name("max-queue-size"), "MaxQueueSize", "most "+what+" requests waiting; more are refused with RESOURCE_EXHAUSTED")
	b.duration(&c.QueueTimeout, name("queue-timeout"), "QueueTimeout", "longest a "+what+" request waits in the queue before -"+name("timeout-action"))
	b.string((*string)(&c.TimeoutAction), name("timeout-action"), "TimeoutAction", "what happens to a "+what+" request past its queue timeout: reject (DEADLINE_EXCEEDED) or delay (moved behind the rest)")
	b.fs.BoolVar(&c.AllowTimeoutOverride, name("allow-timeout-override"), c.AllowTimeoutOverride, "let a "+what+" request's own deadline replace -"+name("queue-timeout"))
	b.duration(&c.LatencyTarget, name("latency-target"), "LatencyTarget", "end-to-end "+what+" latency the adaptive mode holds while it grows batches")
	b.int(&c.MaxInFlightBatches, name("max-in-flight-batches"), "MaxInFlightBatches", "most "+what+" batches sent to Triton and not yet answered, per backend ready for the model")
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

// parseOptions parses args and the environment into options and validates
// every Config, reporting every bad flag at once by its flag name.
func parseOptions(args []string, stderr io.Writer, getenv func(string) string) (*options, error) {
	o := newOptions()
	fs := newFlagSet(o, stderr)
	err := cli.Parse(fs, args, envPrefix, getenv)
	if isHelp(err) {
		return nil, err
	}
	errs := []error{err, o.log.Validate(), o.transport.validate()}
	o.db.resolve(getenv)
	errs = append(errs, o.db.validateStateless())
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	o.derive(given)
	errs = append(errs, o.access.resolve(given, &o.gateway))

	list := strings.Trim(o.tritonAddrs+","+o.tritonAddr, ",")
	if list == "" && o.router.DNS == "" {
		list = defaultTritonAddr
	}
	if eps, err := router.ParseEndpoints(list, o.router.MetricsPort); err != nil {
		errs = append(errs, fmt.Errorf("-triton-addrs: %w", err))
	} else {
		o.router.Static = eps
	}
	if backends, err := gpu.ParseNVMLBackends(o.nvmlBackends); err != nil {
		errs = append(errs, fmt.Errorf("-gpu-nvml-backends: %w", err))
	} else {
		o.nvml.Backends = backends
	}

	for _, c := range []struct {
		prefix string
		err    error
	}{
		{gatewayFields, o.gateway.Validate()},
		{batchingFields, o.batching.Validate()},
		{routerFields, o.router.Validate()},
		{scrapeFields, o.scrape.Validate()},
		{nvmlFields, o.nvml.Validate()},
		{admissionFields, o.admission.validate()},
	} {
		errs = append(errs, config.Rename(c.err, o.flagName(c.prefix)))
	}
	return o, errors.Join(errs...)
}

// derive sets the fields whose default derives from other flags, unless
// their flag was given.
func (o *options) derive(given map[string]bool) {
	if !given["max-recv-msg-size"] {
		// With -max-images or -max-image-bytes bad (and reported), the
		// default ones give the value, rather than a second error here.
		o.gateway.MaxRecvMsgSize = cmp.Or(o.gateway.WithDefaults().MaxRecvMsgSize, gateway.Config{}.WithDefaults().MaxRecvMsgSize)
	}
	// The Triton client must be able to send the largest request the
	// gateway accepts: its send limit follows the gateway's receive limit.
	o.router.Triton.MaxSendMsgSize = max(triton.DefaultMaxSendMsgSize, o.gateway.MaxRecvMsgSize+1<<20)
}

// flagName returns the function that renames a field of the Config under
// prefix to its flag ("-max-queries"); a field without a flag keeps its
// name, prefixed.
func (o *options) flagName(prefix string) func(string) string {
	return func(field string) string {
		if name, ok := o.flags[prefix+field]; ok {
			return "-" + name
		}
		return prefix + field
	}
}
