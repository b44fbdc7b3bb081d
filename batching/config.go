package batching

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
)

// Mode is how a Batcher forms batches.
type Mode string

const (
	// ModeAdaptive follows the measured backend latency and arrival rate
	// (see the package doc). The default.
	ModeAdaptive Mode = "adaptive"
	// ModeStatic is Triton's dynamic_batching policy: preferred batch
	// sizes and a fixed max queue delay.
	ModeStatic Mode = "static"
	// ModeNone sends every call downstream on its own, at once, without a
	// queue: the behaviour before batching, kept for comparison.
	ModeNone Mode = "none"
)

// TimeoutAction is what happens to a request that waits in the queue past
// its queue timeout, as Triton's queue policy timeout_action.
type TimeoutAction string

const (
	// TimeoutReject fails the request with ErrQueueTimeout. The default.
	TimeoutReject TimeoutAction = "reject"
	// TimeoutDelay keeps the request but moves it behind every request that
	// has not timed out, whatever their priorities.
	TimeoutDelay TimeoutAction = "delay"
)

// Defaults of Config and ModelConfig. Queries are cheap (a ColPali query is
// ~20 tokens through the language model), pages costly (~1030 patches
// through the vision tower and the language model): the two models differ
// in batch size, cost, delay and latency target.
const (
	DefaultMode = ModeAdaptive

	DefaultQueryMaxBatchSize  = 64
	DefaultQueryItemCost      = 8
	DefaultQueryMaxBatchCost  = 2048
	DefaultQueryMaxQueueDelay = 5 * time.Millisecond
	DefaultQueryMaxQueueSize  = 4096
	DefaultQueryQueueTimeout  = 2 * time.Second
	DefaultQueryLatencyTarget = 50 * time.Millisecond

	DefaultImageMaxBatchSize  = 16
	DefaultImageItemCost      = 1030
	DefaultImageMaxBatchCost  = 16 * 1030
	DefaultImageMaxQueueDelay = 50 * time.Millisecond
	DefaultImageMaxQueueSize  = 1024
	DefaultImageQueueTimeout  = 30 * time.Second
	DefaultImageLatencyTarget = time.Second

	DefaultPriorityLevels     = 3
	DefaultDefaultPriority    = 2
	DefaultTimeoutAction      = TimeoutReject
	DefaultMaxInFlightBatches = 2

	// queryBytesPerToken is the bytes of UTF-8 text per language model
	// token, roughly: a query's cost grows with its length.
	queryBytesPerToken = 4
	// maxPriorityLevels keeps a mistyped flag from building absurd queues.
	maxPriorityLevels = 64
)

// ModelConfig configures the queue of one model. A zero field is unset and
// takes its default (which depends on the model: see Config.WithDefaults);
// see Config.Validate for the rule on zero.
type ModelConfig struct {
	// MaxBatchSize is the most items in one batch sent downstream (Triton's
	// max_batch_size; it must not exceed the model's). Default 64 for
	// queries, 16 for pages.
	MaxBatchSize int
	// ItemCost is the fixed cost of one item, in tokens: a batch's cost is
	// the sum of its items' costs and may not exceed MaxBatchCost. A query
	// also costs one unit per 4 bytes of its text; a page costs ItemCost
	// whatever its file size (ColPali sees a fixed 32x32 patch grid).
	// Default 8 for queries, 1030 for pages.
	ItemCost int
	// MaxBatchCost is the cost budget of one batch. An item costlier than
	// the whole budget is sent alone. Default 2048 for queries (64 short
	// queries, or 3 of 2048 bytes), 16480 for pages (16 pages).
	MaxBatchCost int
	// MaxQueueDelay bounds how long the oldest queued request waits for a
	// fuller batch while the backend could take one (Triton's
	// max_queue_delay_microseconds). The static policy waits up to it; the
	// adaptive policy chooses a delay between 0 and it. Default 5ms for
	// queries, 50ms for pages.
	MaxQueueDelay time.Duration
	// PreferredBatchSizes are the batch sizes the static policy forms
	// without waiting (Triton's preferred_batch_size); each at most
	// MaxBatchSize. Default none: wait for MaxBatchSize or MaxQueueDelay.
	PreferredBatchSizes []int
	// PriorityLevels is the number of priority levels; level 1 is served
	// first (Triton's priority_levels). Default 3.
	PriorityLevels int
	// DefaultPriority is the level of a request that asks for none. Default
	// 2, so that callers can be put ahead (1) or behind (3) normal traffic.
	DefaultPriority int
	// MaxQueueSize is the most requests waiting in the queue (Triton's
	// max_queue_size, counted in client requests); one more fails at once
	// with ErrQueueFull. Default 4096 for queries, 1024 for pages.
	MaxQueueSize int
	// QueueTimeout is how long a request may wait in the queue before
	// TimeoutAction applies (Triton's default_timeout_microseconds).
	// Default 2s for queries, 30s for pages.
	QueueTimeout time.Duration
	// TimeoutAction is TimeoutReject or TimeoutDelay. Default reject.
	TimeoutAction TimeoutAction
	// AllowTimeoutOverride lets a caller's deadline replace QueueTimeout as
	// its queue timeout (Triton's allow_timeout_override, where the client
	// sends its own timeout). Default false.
	AllowTimeoutOverride bool
	// LatencyTarget is the end-to-end latency (queue plus backend) the
	// adaptive policy holds while it grows batches. Default 50ms for
	// queries, 1s for pages.
	LatencyTarget time.Duration
	// MaxInFlightBatches is the most batches of this model sent downstream
	// and not yet answered, per backend ready for the model (Deps.Backends).
	// Batches form while these slots are busy, as Triton's form while its
	// model instances are busy. Default 2: one computing and one on its
	// way, so a backend never idles for a round trip.
	MaxInFlightBatches int
}

// Config configures a Batcher: the mode and each model's queue.
type Config struct {
	// Mode is ModeAdaptive, ModeStatic or ModeNone. Default adaptive.
	Mode Mode
	// Query is the text query model's queue.
	Query ModelConfig
	// Image is the page image model's queue.
	Image ModelConfig
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Mode = cmp.Or(c.Mode, DefaultMode)
	c.Query = c.Query.withDefaults(ModelConfig{
		MaxBatchSize:  DefaultQueryMaxBatchSize,
		ItemCost:      DefaultQueryItemCost,
		MaxBatchCost:  DefaultQueryMaxBatchCost,
		MaxQueueDelay: DefaultQueryMaxQueueDelay,
		MaxQueueSize:  DefaultQueryMaxQueueSize,
		QueueTimeout:  DefaultQueryQueueTimeout,
		LatencyTarget: DefaultQueryLatencyTarget,
	})
	c.Image = c.Image.withDefaults(ModelConfig{
		MaxBatchSize:  DefaultImageMaxBatchSize,
		ItemCost:      DefaultImageItemCost,
		MaxBatchCost:  DefaultImageMaxBatchCost,
		MaxQueueDelay: DefaultImageMaxQueueDelay,
		MaxQueueSize:  DefaultImageMaxQueueSize,
		QueueTimeout:  DefaultImageQueueTimeout,
		LatencyTarget: DefaultImageLatencyTarget,
	})
	return c
}

func (c ModelConfig) withDefaults(d ModelConfig) ModelConfig {
	c.MaxBatchSize = cmp.Or(c.MaxBatchSize, d.MaxBatchSize)
	c.ItemCost = cmp.Or(c.ItemCost, d.ItemCost)
	c.MaxBatchCost = cmp.Or(c.MaxBatchCost, d.MaxBatchCost)
	c.MaxQueueDelay = cmp.Or(c.MaxQueueDelay, d.MaxQueueDelay)
	c.MaxQueueSize = cmp.Or(c.MaxQueueSize, d.MaxQueueSize)
	c.QueueTimeout = cmp.Or(c.QueueTimeout, d.QueueTimeout)
	c.LatencyTarget = cmp.Or(c.LatencyTarget, d.LatencyTarget)
	c.PriorityLevels = cmp.Or(c.PriorityLevels, DefaultPriorityLevels)
	c.DefaultPriority = cmp.Or(c.DefaultPriority, min(DefaultDefaultPriority, c.PriorityLevels))
	c.TimeoutAction = cmp.Or(c.TimeoutAction, DefaultTimeoutAction)
	c.MaxInFlightBatches = cmp.Or(c.MaxInFlightBatches, DefaultMaxInFlightBatches)
	c.PreferredBatchSizes = slices.Clone(c.PreferredBatchSizes)
	return c
}

// Validate reports every bad setting of c at once, each named by its
// field ("Query.MaxBatchSize 0: must be positive"), so that an application
// can name the setting (a flag, say) the field came from.
//
// The rule for zero is the same for every number: WithDefaults (which New
// applies) takes a zero field as unset and gives it its default, and
// Validate refuses zero or a negative value. So a Config written in code
// leaves a field zero to get its default, and an application that reads
// settings starts from Config{}.WithDefaults() and validates what it read
// without applying the defaults again, so that an explicit zero is an
// error rather than silently the default.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeAdaptive, ModeStatic, ModeNone:
	default:
		errs = append(errs, invalidSetting("Mode", c.Mode, "want %s, %s or %s", ModeAdaptive, ModeStatic, ModeNone))
	}
	errs = append(errs, c.Query.validate("Query.")...)
	errs = append(errs, c.Image.validate("Image.")...)
	return errors.Join(errs...)
}

// Validate reports every bad setting of a ModelConfig, as Config.Validate
// does, with field names unqualified ("MaxBatchSize 0: must be
// positive").
func (c ModelConfig) Validate() error { return errors.Join(c.validate("")...) }

// validate names each bad setting by prefix (the field path of c in its
// Config, "Query.") and its field name.
func (c ModelConfig) validate(prefix string) []error {
	var errs []error
	bad := func(field string, value any, format string, args ...any) {
		errs = append(errs, invalidSetting(prefix+field, value, format, args...))
	}
	positive := func(field string, v int64, shown any) {
		if v <= 0 {
			bad(field, shown, "must be positive")
		}
	}
	positive("MaxBatchSize", int64(c.MaxBatchSize), c.MaxBatchSize)
	positive("ItemCost", int64(c.ItemCost), c.ItemCost)
	positive("MaxBatchCost", int64(c.MaxBatchCost), c.MaxBatchCost)
	positive("MaxQueueDelay", int64(c.MaxQueueDelay), c.MaxQueueDelay)
	positive("MaxQueueSize", int64(c.MaxQueueSize), c.MaxQueueSize)
	positive("QueueTimeout", int64(c.QueueTimeout), c.QueueTimeout)
	positive("LatencyTarget", int64(c.LatencyTarget), c.LatencyTarget)
	positive("MaxInFlightBatches", int64(c.MaxInFlightBatches), c.MaxInFlightBatches)
	if c.PriorityLevels <= 0 || c.PriorityLevels > maxPriorityLevels {
		bad("PriorityLevels", c.PriorityLevels, "want 1 to %d", maxPriorityLevels)
	}
	if c.DefaultPriority <= 0 || c.DefaultPriority > max(c.PriorityLevels, 1) {
		bad("DefaultPriority", c.DefaultPriority, "want 1 to %sPriorityLevels (%d)", prefix, c.PriorityLevels)
	}
	if c.ItemCost > 0 && c.MaxBatchCost > 0 && c.MaxBatchCost < c.ItemCost {
		bad("MaxBatchCost", c.MaxBatchCost, "below %sItemCost %d, so no batch could hold one item", prefix, c.ItemCost)
	}
	for _, p := range c.PreferredBatchSizes {
		if p <= 0 || p > c.MaxBatchSize {
			bad("PreferredBatchSizes", c.PreferredBatchSizes, "each must be 1 to %sMaxBatchSize (%d)", prefix, c.MaxBatchSize)
			break
		}
	}
	switch c.TimeoutAction {
	case TimeoutReject, TimeoutDelay:
	default:
		bad("TimeoutAction", c.TimeoutAction, "want %s or %s", TimeoutReject, TimeoutDelay)
	}
	return errs
}

// invalidSetting is the error of one bad setting: the field, the value
// (quoted if a string), and what is wrong.
func invalidSetting(field string, value any, format string, args ...any) error {
	shown := fmt.Sprint(value)
	switch v := value.(type) {
	case Mode:
		shown = strconv.Quote(string(v))
	case TimeoutAction:
		shown = strconv.Quote(string(v))
	}
	return errclass.Errorf(errclass.Invalid, "%s %s: %s", field, shown, fmt.Sprintf(format, args...))
}

// ParseBatchSizes parses a comma-separated list of batch sizes ("4,8,16");
// the empty string is no sizes.
func ParseBatchSizes(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err != nil {
			return nil, fmt.Errorf("batch size %q: not an integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// model returns the queue configuration of kind.
func (c Config) model(kind model.Kind) ModelConfig {
	if kind == model.Image {
		return c.Image
	}
	return c.Query
}

// itemCost is the cost of one item of kind under c.
func (c ModelConfig) itemCost(kind model.Kind, item []byte) int {
	if kind == model.Query {
		return c.ItemCost + (len(item)+queryBytesPerToken-1)/queryBytesPerToken
	}
	return c.ItemCost
}
