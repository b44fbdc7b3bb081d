package admission

import (
	"cmp"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/config"
)

// Defaults of Config.
const (
	DefaultLatencyTarget      = 500 * time.Millisecond
	DefaultImageLatencyTarget = 5 * time.Second
	DefaultMaxWindow          = 2 * time.Second
	DefaultInitialLimit       = 32
	DefaultImageInitialLimit  = 4
	DefaultMinLimit           = 2
	DefaultMaxLimit           = 2048
	DefaultWindow             = 250 * time.Millisecond
	DefaultMinSamples         = 16
	DefaultQuantile           = 0.99
	DefaultGrowBelow          = 0.7
	DefaultSmoothing          = 0.3
	DefaultBackoff            = 0.9
	DefaultPriorityReserve    = 0.25
	DefaultMinRetryDelay      = 50 * time.Millisecond
	DefaultMaxRetryDelay      = 5 * time.Second
	DefaultCallMemoryShare    = 0.75
)

// Config is the admission controller's configuration. A zero field takes
// its default (WithDefaults); Validate refuses a zero or out-of-range one.
type Config struct {
	// LatencyTarget is the latency the admitted query embeddings and
	// searches keep: a class's limit shrinks while its window's Quantile
	// latency is above its target. Default 500ms.
	LatencyTarget time.Duration
	// ImageLatencyTarget is LatencyTarget for page image embeddings and
	// ingestions (of up to 16 pages a call, the default most; an
	// ingestion's latency is divided by its groups of 16 pages), which take
	// far longer than a query. Default 5s.
	ImageLatencyTarget time.Duration
	// InitialLimit is the limit of query embeddings and searches before
	// any call has completed. Default 32.
	InitialLimit int
	// ImageInitialLimit is InitialLimit for page image embeddings and
	// ingestions. It starts low, as TCP's slow start does: their calls
	// take seconds, so that a limit set too high is known only when calls
	// admitted over it have queued for seconds (one GPU answers about one
	// 16-page call a second; at 32, the calls admitted last would wait
	// half a minute). Default 4.
	ImageInitialLimit int
	// MinLimit and MaxLimit bound each class's limit. Defaults 2 and 2048:
	// a GPU that answers one image call a second keeps the image target of
	// 5s with at most 4 calls in flight, and a floor of 4 would hold it
	// at the target's edge.
	MinLimit, MaxLimit int
	// Window is the shortest time over which completed calls are gathered
	// before the limit moves. Default 250ms.
	Window time.Duration
	// MinSamples is the fewest completed calls in a window before the limit
	// moves. Default 16.
	MinSamples int
	// MaxWindow closes a window with fewer than MinSamples calls (but at
	// least one), so that a class of slow calls (16-page images at a few
	// calls a second) still adapts within seconds. Default 2s.
	MaxWindow time.Duration
	// Quantile of a window's latencies compared with LatencyTarget: the
	// share of admitted calls that keep within the target. Default 0.99
	// (of a window of fewer than 100 calls, its slowest).
	Quantile float64
	// GrowBelow is the share of the target, in (0, 1], under which a
	// window's Quantile latency lets the limit grow; between it and the
	// target the limit holds. The band makes the limit settle under the
	// target rather than oscillate across it (1: no band). Default 0.7.
	GrowBelow float64
	// Smoothing is the weight of each window's raised limit against the
	// old one, in (0, 1]; a lowered limit applies at once. Default 0.3.
	Smoothing float64
	// Backoff multiplies the limit after a window in which calls were
	// dropped downstream (timed out, or refused as overloaded), in (0, 1).
	// Default 0.9.
	Backoff float64
	// PriorityReserve is the share of the limit the least urgent priority
	// level may not use, in (0, 1) (a tiny share such as 0.001 treats the
	// levels alike). Default 0.25.
	PriorityReserve float64
	// MemoryBudget is the memory, in bytes, the gateway keeps itself
	// under: the gateway sets the Go runtime's soft memory limit to it
	// (ApplyMemoryLimit; unless GOMEMLIMIT is lower), so that the collector
	// runs before the heap passes it, and admitted calls reserve at most
	// CallMemoryShare of it. Default: DefaultMemoryBudget() (from the
	// container's memory limit or GOMEMLIMIT).
	MemoryBudget int64
	// CallMemoryShare is the share of MemoryBudget that admitted calls may
	// reserve together, in (0, 1). The rest is for what no call reserves:
	// the gateway's own heap (connections, pools, metrics), calls still
	// being received or refused, and the collector's headroom (with the
	// live heap at the limit, the collector would run without pause).
	// Default 0.75.
	CallMemoryShare float64
	// MinRetryDelay and MaxRetryDelay bound the RetryInfo delay suggested
	// to refused calls (the class's recent latency). Defaults 50ms and 5s.
	MinRetryDelay, MaxRetryDelay time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.LatencyTarget = cmp.Or(c.LatencyTarget, DefaultLatencyTarget)
	c.ImageLatencyTarget = cmp.Or(c.ImageLatencyTarget, DefaultImageLatencyTarget)
	c.MaxWindow = cmp.Or(c.MaxWindow, DefaultMaxWindow)
	c.InitialLimit = cmp.Or(c.InitialLimit, DefaultInitialLimit)
	c.ImageInitialLimit = cmp.Or(c.ImageInitialLimit, DefaultImageInitialLimit)
	c.MinLimit = cmp.Or(c.MinLimit, DefaultMinLimit)
	c.MaxLimit = cmp.Or(c.MaxLimit, DefaultMaxLimit)
	c.Window = cmp.Or(c.Window, DefaultWindow)
	c.MinSamples = cmp.Or(c.MinSamples, DefaultMinSamples)
	c.Quantile = cmp.Or(c.Quantile, DefaultQuantile)
	c.GrowBelow = cmp.Or(c.GrowBelow, DefaultGrowBelow)
	c.Smoothing = cmp.Or(c.Smoothing, DefaultSmoothing)
	c.Backoff = cmp.Or(c.Backoff, DefaultBackoff)
	c.PriorityReserve = cmp.Or(c.PriorityReserve, DefaultPriorityReserve)
	c.CallMemoryShare = cmp.Or(c.CallMemoryShare, DefaultCallMemoryShare)
	c.MinRetryDelay = cmp.Or(c.MinRetryDelay, DefaultMinRetryDelay)
	c.MaxRetryDelay = cmp.Or(c.MaxRetryDelay, DefaultMaxRetryDelay)
	if c.MemoryBudget == 0 {
		c.MemoryBudget, _ = DefaultMemoryBudget()
	}
	return c
}

// CallMemory is the bytes that admitted calls may reserve together:
// CallMemoryShare of MemoryBudget.
func (c Config) CallMemory() int64 {
	return int64(float64(c.MemoryBudget) * c.CallMemoryShare)
}

// Validate names every bad field of c by its Go name.
func (c Config) Validate() error {
	var errs config.Errors
	errs.Add(config.Positive("LatencyTarget", c.LatencyTarget))
	errs.Add(config.Positive("ImageLatencyTarget", c.ImageLatencyTarget))
	errs.Add(config.Positive("MaxWindow", c.MaxWindow))
	if c.Window > 0 && c.MaxWindow > 0 && c.Window > c.MaxWindow {
		errs.Bad("Window", c.Window, "exceeds {MaxWindow} (%v)", c.MaxWindow)
	}
	errs.Add(config.Positive("InitialLimit", c.InitialLimit))
	errs.Add(config.Positive("ImageInitialLimit", c.ImageInitialLimit))
	errs.Add(config.Positive("MinLimit", c.MinLimit))
	errs.Add(config.Positive("MaxLimit", c.MaxLimit))
	errs.Add(config.Positive("Window", c.Window))
	errs.Add(config.Positive("MinSamples", c.MinSamples))
	errs.Add(config.Positive("MemoryBudget", c.MemoryBudget))
	errs.Add(config.Positive("MinRetryDelay", c.MinRetryDelay))
	errs.Add(config.Positive("MaxRetryDelay", c.MaxRetryDelay))
	if c.MinLimit > 0 && c.MaxLimit > 0 && c.MinLimit > c.MaxLimit {
		errs.Bad("MinLimit", c.MinLimit, "exceeds {MaxLimit} (%d)", c.MaxLimit)
	}
	if c.InitialLimit > 0 && (c.InitialLimit < c.MinLimit || c.InitialLimit > c.MaxLimit) {
		errs.Bad("InitialLimit", c.InitialLimit, "outside {MinLimit} to {MaxLimit} (%d to %d)", c.MinLimit, c.MaxLimit)
	}
	if c.ImageInitialLimit > 0 && (c.ImageInitialLimit < c.MinLimit || c.ImageInitialLimit > c.MaxLimit) {
		errs.Bad("ImageInitialLimit", c.ImageInitialLimit, "outside {MinLimit} to {MaxLimit} (%d to %d)", c.MinLimit, c.MaxLimit)
	}
	if !(c.Quantile > 0 && c.Quantile <= 1) {
		errs.Bad("Quantile", c.Quantile, "want above 0 and at most 1")
	}
	if !(c.GrowBelow > 0 && c.GrowBelow <= 1) {
		errs.Bad("GrowBelow", c.GrowBelow, "want above 0 and at most 1")
	}
	if !(c.Smoothing > 0 && c.Smoothing <= 1) {
		errs.Bad("Smoothing", c.Smoothing, "want above 0 and at most 1")
	}
	if !(c.Backoff > 0 && c.Backoff < 1) {
		errs.Bad("Backoff", c.Backoff, "want above 0 and below 1")
	}
	if !(c.PriorityReserve > 0 && c.PriorityReserve < 1) {
		errs.Bad("PriorityReserve", c.PriorityReserve, "want above 0 and below 1")
	}
	if !(c.CallMemoryShare > 0 && c.CallMemoryShare < 1) {
		errs.Bad("CallMemoryShare", c.CallMemoryShare, "want above 0 and below 1")
	}
	if c.MinRetryDelay > 0 && c.MaxRetryDelay > 0 && c.MinRetryDelay > c.MaxRetryDelay {
		errs.Bad("MinRetryDelay", c.MinRetryDelay, "exceeds {MaxRetryDelay} (%v)", c.MaxRetryDelay)
	}
	return errs.Err()
}
