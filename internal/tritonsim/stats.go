package tritonsim

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/morphik-org/colpali-gateway/gen/inference"
)

// duration is a cumulative count and total time, Triton's StatisticDuration.
type duration struct {
	count uint64
	ns    uint64
}

func (d *duration) add(t time.Duration) {
	d.count++
	d.ns += uint64(max(t, 0))
}

func (d duration) proto() *inference.StatisticDuration {
	return &inference.StatisticDuration{Count: d.count, Ns: d.ns}
}

// batchStat is Triton's per batch size statistic.
type batchStat struct {
	input, infer, output duration
}

// modelStats is one model's ModelStatistics, kept as Triton keeps them
// (core/src/infer_stats.cc): success, queue and compute durations count
// successful requests; fail counts every failed request that named the
// model.
type modelStats struct {
	mu             sync.Mutex
	lastInference  time.Time
	inferenceCount uint64 // items
	executionCount uint64 // batches
	success, fail  duration
	queue          duration
	input, infer   duration
	output         duration
	batches        map[int]*batchStat
}

// timings are the phases of one successful request.
type timings struct {
	total, queue, input, infer, output time.Duration
}

// recordSuccess counts a successful request.
func (s *modelStats) recordSuccess(t timings) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.success.add(t.total)
	s.queue.add(t.queue)
	s.input.add(t.input)
	s.infer.add(t.infer)
	s.output.add(t.output)
}

// recordExecution counts one execution of a batch of n items that ended at
// now after infer on the device. Triton's batch statistics are per
// execution; the simulator copies no batch input or output, so their
// compute_input and compute_output count executions at zero time.
func (s *modelStats) recordExecution(now time.Time, n int, infer time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastInference = now
	s.inferenceCount += uint64(n) // #nosec G115 -- n is a batch size, non-negative
	s.executionCount++
	if s.batches == nil {
		s.batches = map[int]*batchStat{}
	}
	b := s.batches[n]
	if b == nil {
		b = &batchStat{}
		s.batches[n] = b
	}
	b.input.add(0)
	b.infer.add(infer)
	b.output.add(0)
}

// recordFailure counts a failed request. Like Triton, it leaves
// last_inference alone: that is the time of the last execution.
func (s *modelStats) recordFailure(total time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail.add(total)
}

// proto is a snapshot of the statistics as Triton's ModelStatistics.
func (s *modelStats) proto(name string) *inference.ModelStatistics {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last uint64
	if !s.lastInference.IsZero() {
		last = uint64(s.lastInference.UnixMilli())
	}
	out := &inference.ModelStatistics{
		Name:           name,
		Version:        modelVersion,
		LastInference:  last,
		InferenceCount: s.inferenceCount,
		ExecutionCount: s.executionCount,
		InferenceStats: &inference.InferStatistics{
			Success:       s.success.proto(),
			Fail:          s.fail.proto(),
			Queue:         s.queue.proto(),
			ComputeInput:  s.input.proto(),
			ComputeInfer:  s.infer.proto(),
			ComputeOutput: s.output.proto(),
			CacheHit:      duration{}.proto(),
			CacheMiss:     duration{}.proto(),
		},
	}
	for _, n := range slices.Sorted(maps.Keys(s.batches)) {
		b := s.batches[n]
		out.BatchStats = append(out.BatchStats, &inference.InferBatchStatistics{
			BatchSize:     uint64(n), // #nosec G115 -- n is a batch size, non-negative
			ComputeInput:  b.input.proto(),
			ComputeInfer:  b.infer.proto(),
			ComputeOutput: b.output.proto(),
		})
	}
	return out
}
