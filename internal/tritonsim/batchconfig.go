package tritonsim

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

// Timeout actions of a QueuePolicy, as in Triton's ModelQueuePolicy.
const (
	// TimeoutReject answers a request whose timeout passes while it is
	// queued with Unavailable "Request timeout expired", at once.
	TimeoutReject = "REJECT"
	// TimeoutDelay keeps such a request but schedules it after every
	// request of its priority level that has not timed out.
	TimeoutDelay = "DELAY"
)

// QueuePolicy is Triton's ModelQueuePolicy for one priority level. Its zero
// value is Triton's default: REJECT, no timeout, no override, unbounded.
type QueuePolicy struct {
	// TimeoutAction is TimeoutReject (also for "") or TimeoutDelay.
	TimeoutAction string
	// DefaultTimeout bounds every request's time in the queue; 0 is none.
	DefaultTimeout time.Duration
	// AllowTimeoutOverride lets a request's "timeout" parameter shorten
	// DefaultTimeout, never lengthen it. With DefaultTimeout 0 there is
	// nothing to shorten, so the parameter is ignored.
	AllowTimeoutOverride bool
	// MaxQueueSize bounds the requests (not items) queued at this level; a
	// request beyond it fails at once with Unavailable "Exceeds maximum
	// queue size". 0 is unbounded.
	MaxQueueSize int
}

// timeout is the queue timeout of a request that asked for requested (0:
// it asked for none), under p.
func (p QueuePolicy) timeout(requested time.Duration) time.Duration {
	if p.AllowTimeoutOverride && requested > 0 && requested < p.DefaultTimeout {
		return requested
	}
	return p.DefaultTimeout
}

// Batching is one model's dynamic_batching block of config.pbtxt, as Triton
// reads it: a field left at zero is Triton's default for it. The zero
// Batching as a whole stands for "not set", and Config then takes the block
// of deployments/triton/model_repository (see RepositoryBatching).
type Batching struct {
	// PreferredBatchSizes: a batch that reaches one of these sizes (in
	// items) runs at once, without waiting for the delay; when the delay
	// ends, the batch is cut at the largest one reached, if any.
	PreferredBatchSizes []int
	// MaxQueueDelay is how long the first request of a batch may wait for
	// others to join it. 0: batches run as soon as an instance is free.
	MaxQueueDelay time.Duration
	// PriorityLevels is the number of priority levels (1 is the highest);
	// 0 turns priorities off and the "priority" parameter is ignored.
	PriorityLevels int
	// DefaultPriorityLevel is the level of a request that sends priority 0
	// or one above PriorityLevels, as Triton does. 0 means the lowest
	// level, PriorityLevels.
	DefaultPriorityLevel int
	// DefaultQueuePolicy applies to every level not in PriorityQueuePolicy.
	DefaultQueuePolicy QueuePolicy
	// PriorityQueuePolicy overrides the policy of some levels.
	PriorityQueuePolicy map[int]QueuePolicy
}

// isZero reports whether b was left unset.
func (b Batching) isZero() bool { return reflect.ValueOf(b).IsZero() }

// RepositoryBatching is kind's dynamic_batching block in
// deployments/triton/model_repository/*/config.pbtxt; config_test.go reads
// the files and fails if the two disagree.
func RepositoryBatching(k model.Kind) Batching {
	policy := QueuePolicy{
		TimeoutAction:        TimeoutReject,
		DefaultTimeout:       120 * time.Second,
		AllowTimeoutOverride: true,
		MaxQueueSize:         256,
	}
	if k == model.Image {
		policy.MaxQueueSize = 64
		return Batching{PreferredBatchSizes: []int{4, 8, 16}, MaxQueueDelay: 5 * time.Millisecond, DefaultQueuePolicy: policy}
	}
	return Batching{PreferredBatchSizes: []int{16, 32, 64}, MaxQueueDelay: 2 * time.Millisecond, DefaultQueuePolicy: policy}
}

// levels is the number of queues: one per priority level, at least one.
func (b Batching) levels() int { return max(b.PriorityLevels, 1) }

// defaultLevel is the level, from 1, of a request without a usable priority.
func (b Batching) defaultLevel() int {
	if b.DefaultPriorityLevel >= 1 && b.DefaultPriorityLevel <= b.PriorityLevels {
		return b.DefaultPriorityLevel
	}
	return b.levels()
}

// level maps a request's "priority" parameter to its level, from 1.
func (b Batching) level(priority int64) int {
	if b.PriorityLevels == 0 || priority < 1 || priority > int64(b.PriorityLevels) {
		return b.defaultLevel()
	}
	return int(priority)
}

// policy is level's queue policy.
func (b Batching) policy(level int) QueuePolicy {
	if p, ok := b.PriorityQueuePolicy[level]; ok {
		return p
	}
	return b.DefaultQueuePolicy
}

// validate names every bad field of b, a model with max_batch_size maxBatch.
func (b Batching) validate(maxBatch int) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, n := range b.PreferredBatchSizes {
		if n < 1 || n > maxBatch {
			bad("preferred batch size %d: want 1 to the max batch size, %d", n, maxBatch)
		}
	}
	if b.MaxQueueDelay < 0 {
		bad("max queue delay %v: want 0 or more", b.MaxQueueDelay)
	}
	if b.PriorityLevels < 0 || b.PriorityLevels > maxPriorityLevels {
		bad("priority levels %d: want 0 (off) to %d", b.PriorityLevels, maxPriorityLevels)
	}
	if b.DefaultPriorityLevel < 0 || b.DefaultPriorityLevel > b.PriorityLevels {
		bad("default priority level %d: want 0 (the lowest) to the priority levels, %d", b.DefaultPriorityLevel, b.PriorityLevels)
	}
	check := func(name string, p QueuePolicy) {
		if p.TimeoutAction != "" && p.TimeoutAction != TimeoutReject && p.TimeoutAction != TimeoutDelay {
			bad("%s: timeout action %q: want %s or %s", name, p.TimeoutAction, TimeoutReject, TimeoutDelay)
		}
		if p.DefaultTimeout < 0 {
			bad("%s: default timeout %v: want 0 (none) or more", name, p.DefaultTimeout)
		}
		if p.MaxQueueSize < 0 {
			bad("%s: max queue size %d: want 0 (unbounded) or more", name, p.MaxQueueSize)
		}
	}
	check("default queue policy", b.DefaultQueuePolicy)
	for _, level := range slices.Sorted(maps.Keys(b.PriorityQueuePolicy)) {
		if level < 1 || level > b.PriorityLevels {
			bad("priority queue policy for level %d: want a level from 1 to the priority levels, %d", level, b.PriorityLevels)
		}
		check(fmt.Sprintf("priority queue policy %d", level), b.PriorityQueuePolicy[level])
	}
	return errors.Join(errs...)
}

// maxPriorityLevels bounds PriorityLevels: each level is a queue.
const maxPriorityLevels = 64
