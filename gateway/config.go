package gateway

import (
	"cmp"
	"net"
	"runtime"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/config"
	"github.com/morphik-org/colpali-gateway/store"
)

// Defaults of Config.
const (
	DefaultGRPCAddr        = ":9090"
	DefaultHTTPAddr        = ":8080"
	DefaultAdminAddr       = "127.0.0.1:9091"
	DefaultTimeout         = 30 * time.Second
	DefaultMaxTimeout      = 2 * time.Minute
	DefaultMaxQueries      = 64
	DefaultMaxQueryBytes   = 2048
	DefaultMaxImages       = 16
	DefaultMaxImageBytes   = 8 << 20
	DefaultMaxImagePixels  = 40_000_000
	DefaultMaxCallPixels   = 160_000_000
	DefaultMaxSendMsgSize  = 64 << 20
	DefaultHealthInterval  = 5 * time.Second
	DefaultMaxStreams      = 1024
	DefaultShutdownTimeout = 15 * time.Second

	DefaultMaxDocumentPages   = 64
	DefaultMaxStreamPages     = 1000
	DefaultMaxMetadataEntries = 64
	DefaultMaxMetadataBytes   = 16 << 10
	DefaultMaxTopK            = 100
	DefaultMaxFilters         = 16
	DefaultStreamTimeout      = 30 * time.Minute
)

// Config is the gateway's own configuration. In a Config built in Go a
// zero field takes its default: New calls WithDefaults. Validate refuses a
// zero field (see package internal/config: one rule for zero).
type Config struct {
	// GRPCAddr is the gRPC listen address. Default ":9090".
	GRPCAddr string
	// HTTPAddr is the REST, /openapi.json and health listen address.
	// Default ":8080".
	HTTPAddr string
	// AdminAddr is the admin listener's address: /metrics, /debug/pprof/,
	// and gRPC reflection, BackendService and health (admin.go). Default
	// "127.0.0.1:9091", loopback: reach it from elsewhere only on purpose.
	AdminAddr string
	// MaxConcurrentDecodes bounds the images checked at once, across all
	// calls (image.go). Default GOMAXPROCS: the checks are CPU-bound, and
	// more at once only adds memory.
	MaxConcurrentDecodes int
	// MaxCallPixels bounds the pixels of all the images of one call or one
	// stream message together. Default 160,000,000 (four pages at
	// MaxImagePixels); an image within MaxImagePixels is refused when the
	// call's earlier images have used up the budget.
	MaxCallPixels int
	// DefaultTimeout is the deadline of a call that arrives without one.
	// Default 30s: gRPC sets no deadline by default, and grpc-gateway's
	// REST calls carry none unless the client sends Grpc-Timeout.
	DefaultTimeout time.Duration
	// MaxTimeout caps a caller's deadline. Default 2m.
	MaxTimeout time.Duration
	// MaxQueries is the most queries in one EmbedQueries call. Default 64.
	MaxQueries int
	// MaxQueryBytes is the longest query, in UTF-8 bytes. Default 2048.
	MaxQueryBytes int
	// MaxImages is the most images in one EmbedImages call. Default 16.
	MaxImages int
	// MaxImageBytes is the largest encoded image. Default 8 MiB.
	MaxImageBytes int
	// MaxImagePixels bounds an image's width x height, so that a small file
	// cannot expand into a huge bitmap in Triton's preprocessing.
	// Default 40,000,000 (an A4 page at 300 dpi is 8.7 million).
	MaxImagePixels int
	// MaxRecvMsgSize bounds one received gRPC message. Default MaxImages x
	// MaxImageBytes + 1 MiB, so the largest valid request fits; grpc-go's own
	// default of 4 MiB would refuse a single large page.
	MaxRecvMsgSize int
	// MaxSendMsgSize bounds one sent gRPC message. Default 64 MiB: 16 pages
	// of 1030 FP32 vectors of 128 dims are 8.4 MB, over grpc-go's 4 MiB.
	MaxSendMsgSize int
	// MaxConcurrentStreams bounds the calls in flight on one client
	// connection (grpc-go's default is unbounded). Default 1024.
	MaxConcurrentStreams int
	// HealthInterval is how often backend readiness is checked. Default 5s.
	HealthInterval time.Duration
	// ShutdownTimeout bounds the drain of calls in flight on shutdown,
	// counted from the end of Drain.Delay. Default 15s.
	ShutdownTimeout time.Duration
	// Drain is how the gateway leaves: the delay on shutdown and the
	// connection ages (drain.go).
	Drain DrainConfig

	// MaxDocumentPages is the most pages in one IngestDocument call.
	// Default 64. The whole request must also fit in MaxRecvMsgSize, so with
	// large pages the byte limit is reached first: clients send large
	// documents with IngestDocumentStream, one page per message.
	MaxDocumentPages int
	// MaxStreamPages is the most pages of one IngestDocumentStream.
	// Default 1000.
	MaxStreamPages int
	// MaxMetadataEntries is the most metadata entries of a document.
	// Default 64.
	MaxMetadataEntries int
	// MaxMetadataBytes bounds a document's metadata keys and values
	// together, in bytes. Default 16 KiB.
	MaxMetadataBytes int
	// MaxTopK is the most pages one Search returns. Default 100, at most
	// store.MaxTopK (1000).
	MaxTopK int
	// MaxFilters is the most filters of one Search. Default 16.
	MaxFilters int
	// StreamTimeout caps the duration of an IngestDocumentStream call (the
	// caller's deadline applies when shorter). Default 30m: a stream of
	// hundreds of pages outlives MaxTimeout, which is meant for one call.
	StreamTimeout time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.GRPCAddr = cmp.Or(c.GRPCAddr, DefaultGRPCAddr)
	c.HTTPAddr = cmp.Or(c.HTTPAddr, DefaultHTTPAddr)
	c.AdminAddr = cmp.Or(c.AdminAddr, DefaultAdminAddr)
	c.MaxConcurrentDecodes = cmp.Or(c.MaxConcurrentDecodes, runtime.GOMAXPROCS(0))
	c.MaxCallPixels = cmp.Or(c.MaxCallPixels, DefaultMaxCallPixels)
	c.DefaultTimeout = cmp.Or(c.DefaultTimeout, DefaultTimeout)
	c.MaxTimeout = cmp.Or(c.MaxTimeout, DefaultMaxTimeout)
	c.HealthInterval = cmp.Or(c.HealthInterval, DefaultHealthInterval)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.MaxQueries = cmp.Or(c.MaxQueries, DefaultMaxQueries)
	c.MaxQueryBytes = cmp.Or(c.MaxQueryBytes, DefaultMaxQueryBytes)
	c.MaxImages = cmp.Or(c.MaxImages, DefaultMaxImages)
	c.MaxImageBytes = cmp.Or(c.MaxImageBytes, DefaultMaxImageBytes)
	c.MaxImagePixels = cmp.Or(c.MaxImagePixels, DefaultMaxImagePixels)
	c.MaxSendMsgSize = cmp.Or(c.MaxSendMsgSize, DefaultMaxSendMsgSize)
	c.MaxConcurrentStreams = cmp.Or(c.MaxConcurrentStreams, DefaultMaxStreams)
	c.MaxDocumentPages = cmp.Or(c.MaxDocumentPages, DefaultMaxDocumentPages)
	c.MaxStreamPages = cmp.Or(c.MaxStreamPages, DefaultMaxStreamPages)
	c.MaxMetadataEntries = cmp.Or(c.MaxMetadataEntries, DefaultMaxMetadataEntries)
	c.MaxMetadataBytes = cmp.Or(c.MaxMetadataBytes, DefaultMaxMetadataBytes)
	c.MaxTopK = cmp.Or(c.MaxTopK, DefaultMaxTopK)
	c.MaxFilters = cmp.Or(c.MaxFilters, DefaultMaxFilters)
	c.StreamTimeout = cmp.Or(c.StreamTimeout, DefaultStreamTimeout)
	c.Drain = c.Drain.WithDefaults()
	if c.MaxRecvMsgSize == 0 && c.MaxImages > 0 && c.MaxImageBytes > 0 {
		c.MaxRecvMsgSize = c.MaxImages*c.MaxImageBytes + 1<<20
	}
	return c
}

// Validate names every bad field of c by its Go name. It takes c as it is:
// a zero field is refused, not defaulted (New calls WithDefaults first).
func (c Config) Validate() error {
	var errs config.Errors
	for _, a := range []struct {
		field, addr string
	}{{"GRPCAddr", c.GRPCAddr}, {"HTTPAddr", c.HTTPAddr}, {"AdminAddr", c.AdminAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs.Bad(a.field, a.addr, "want host:port")
		}
	}
	errs.Add(config.Positive("DefaultTimeout", c.DefaultTimeout))
	errs.Add(config.Positive("MaxTimeout", c.MaxTimeout))
	errs.Add(config.Positive("HealthInterval", c.HealthInterval))
	errs.Add(config.Positive("ShutdownTimeout", c.ShutdownTimeout))
	errs.Add(config.Positive("MaxQueries", c.MaxQueries))
	errs.Add(config.Positive("MaxQueryBytes", c.MaxQueryBytes))
	errs.Add(config.Positive("MaxImages", c.MaxImages))
	errs.Add(config.Positive("MaxImageBytes", c.MaxImageBytes))
	errs.Add(config.Positive("MaxImagePixels", c.MaxImagePixels))
	errs.Add(config.Positive("MaxConcurrentDecodes", c.MaxConcurrentDecodes))
	errs.Add(config.Positive("MaxCallPixels", c.MaxCallPixels))
	errs.Add(config.Positive("MaxSendMsgSize", c.MaxSendMsgSize))
	errs.Add(config.Positive("MaxRecvMsgSize", c.MaxRecvMsgSize))
	errs.Add(config.Positive("MaxConcurrentStreams", c.MaxConcurrentStreams))
	errs.Add(config.Positive("MaxDocumentPages", c.MaxDocumentPages))
	errs.Add(config.Positive("MaxStreamPages", c.MaxStreamPages))
	errs.Add(config.Positive("MaxMetadataEntries", c.MaxMetadataEntries))
	errs.Add(config.Positive("MaxMetadataBytes", c.MaxMetadataBytes))
	errs.Add(config.Positive("MaxTopK", c.MaxTopK))
	errs.Add(config.Positive("MaxFilters", c.MaxFilters))
	errs.Add(config.Positive("StreamTimeout", c.StreamTimeout))
	errs.Nest("Drain.", c.Drain.Validate())
	if c.MaxTopK > store.MaxTopK {
		errs.Bad("MaxTopK", c.MaxTopK, "exceeds %d, the most the store's first stage returns", store.MaxTopK)
	}
	if c.MaxCallPixels > 0 && c.MaxCallPixels < c.MaxImagePixels {
		errs.Bad("MaxCallPixels", c.MaxCallPixels, "below {MaxImagePixels} (%d): an image within its limit would be refused", c.MaxImagePixels)
	}
	if c.MaxTimeout > 0 && c.DefaultTimeout > c.MaxTimeout {
		errs.Bad("DefaultTimeout", c.DefaultTimeout, "exceeds {MaxTimeout} (%v)", c.MaxTimeout)
	}
	if need := c.MaxImages * c.MaxImageBytes; c.MaxRecvMsgSize > 0 && need > 0 && c.MaxRecvMsgSize < need {
		errs.Bad("MaxRecvMsgSize", c.MaxRecvMsgSize, "below {MaxImages} x {MaxImageBytes} = %d: valid requests would be refused", need)
	}
	return errs.Err()
}
