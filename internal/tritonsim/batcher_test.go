package tritonsim

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

// Exact costs for the fake-clock tests: a query batch of n takes 10+n ms,
// a page batch of n 100+50n ms.
var (
	testQueryCost = Cost{Base: 10 * time.Millisecond, PerItem: time.Millisecond}
	testImageCost = Cost{Base: 100 * time.Millisecond, PerItem: 50 * time.Millisecond}
)

// fakeServer is a simulator on a fake clock with the exact test costs;
// mutate adjusts its Config.
func fakeServer(t *testing.T, mutate func(*Config)) (*Server, inference.GRPCInferenceServiceClient, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg := Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Clock: clk, QueryCost: testQueryCost, ImageCost: testImageCost}
	if mutate != nil {
		mutate(&cfg)
	}
	s, c := startServer(t, cfg)
	return s, c, clk
}

type inferResult struct {
	resp *inference.ModelInferResponse
	err  error
}

func inferResp(ctx context.Context, c inference.GRPCInferenceServiceClient, req *inference.ModelInferRequest) <-chan inferResult {
	ch := make(chan inferResult, 1)
	go func() {
		resp, err := c.ModelInfer(ctx, req)
		ch <- inferResult{resp, err}
	}()
	return ch
}

func result(t *testing.T, ch <-chan inferResult) inferResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testutil.Timeout):
		t.Fatal("timed out waiting for a ModelInfer call")
		return inferResult{}
	}
}

// waitQueued waits until name's batcher holds n requests.
func waitQueued(t *testing.T, s *Server, name string, n int) {
	t.Helper()
	waitFor(t, "requests to queue", func() bool { q, _ := schedState(s, name); return q == n })
}

func priorityRequest(text string, priority, timeoutMicros int64) *inference.ModelInferRequest {
	return defaultCodec.Request(model.Query, [][]byte{[]byte(text)}, triton.EmbedOptions{Priority: int(priority), Timeout: time.Duration(timeoutMicros) * time.Microsecond})
}

func TestDynamicBatcherMergesQueuedRequests(t *testing.T) {
	ctx := testContext(t)
	s, c, clk := fakeServer(t, nil)
	q := model.DefaultQueryModel
	texts := []string{"one", "a longer second query", "three three three"}
	var calls []<-chan inferResult
	for _, text := range texts {
		calls = append(calls, inferResp(ctx, c, queryRequest(text)))
	}
	waitQueued(t, s, q, 3)
	// Below every preferred size (16, 32, 64): the batch waits for
	// max_queue_delay_microseconds, 2 ms, then runs as one execution.
	clk.waitTimer(t, 2*time.Millisecond)
	clk.Advance(2 * time.Millisecond)
	clk.waitTimer(t, 13*time.Millisecond) // 10ms + 3 x 1ms
	clk.Advance(13 * time.Millisecond)
	for i, call := range calls {
		r := result(t, call)
		if r.err != nil {
			t.Fatal(r.err)
		}
		rows, err := tensor.DecodeInts(r.resp.GetRawOutputContents()[1], tensor.TypeINT32, 1)
		if err != nil || rows[0] != QueryTokens(texts[i]) {
			t.Errorf("call %d got num_tokens %v, %v; want its own query's %d", i, rows, err, QueryTokens(texts[i]))
		}
	}
	st := statsOf(t, ctx, c, q)
	is := st.GetInferenceStats()
	if st.GetExecutionCount() != 1 || st.GetInferenceCount() != 3 || is.GetSuccess().GetCount() != 3 {
		t.Errorf("executions %d, inferences %d, successes %d; want 1, 3, 3", st.GetExecutionCount(), st.GetInferenceCount(), is.GetSuccess().GetCount())
	}
	if len(st.GetBatchStats()) != 1 || st.GetBatchStats()[0].GetBatchSize() != 3 {
		t.Errorf("batch stats %v, want one batch of 3", st.GetBatchStats())
	}
	if is.GetQueue().GetNs() != uint64(3*2*time.Millisecond) || is.GetComputeInfer().GetNs() != uint64(3*13*time.Millisecond) {
		t.Errorf("queue %v ns, compute %v ns; want 3 x 2ms and 3 x 13ms", is.GetQueue().GetNs(), is.GetComputeInfer().GetNs())
	}
}

func TestPreferredSizeAndFullBatchRunAtOnce(t *testing.T) {
	ctx := testContext(t)
	s, c, clk := fakeServer(t, func(c *Config) {
		c.QueryMaxBatchSize = 4
		c.QueryBatching = Batching{PreferredBatchSizes: []int{2}, MaxQueueDelay: time.Hour}
	})
	q := model.DefaultQueryModel
	a := inferResp(ctx, c, queryRequest("a"))
	waitQueued(t, s, q, 1)
	clk.waitTimer(t, time.Hour) // alone, it would wait the whole delay
	b := inferResp(ctx, c, queryRequest("b"))
	clk.waitTimer(t, 12*time.Millisecond) // with b it is a preferred size: runs now
	clk.Advance(12 * time.Millisecond)
	for _, ch := range []<-chan inferResult{a, b} {
		if r := result(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}

	// 3 items wait (no preferred size reached); 2 more do not fit under
	// max_batch_size 4, so the 3 cannot grow and run at once.
	three := inferResp(ctx, c, queryRequest("x", "y", "z"))
	waitQueued(t, s, q, 1)
	two := inferResp(ctx, c, queryRequest("v", "w"))
	clk.waitTimer(t, 13*time.Millisecond)
	waitQueued(t, s, q, 1)
	clk.Advance(13 * time.Millisecond)
	if r := result(t, three); r.err != nil {
		t.Fatal(r.err)
	}
	// The 2 are a preferred size: they run as soon as the instance is free.
	clk.waitTimer(t, 12*time.Millisecond)
	clk.Advance(12 * time.Millisecond)
	if r := result(t, two); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestPriorityLevelsRunHighestFirst(t *testing.T) {
	ctx := testContext(t)
	s, c, clk := fakeServer(t, func(c *Config) {
		c.QueryMaxBatchSize = 1 // one request per batch: the order is visible
		c.QueryBatching = Batching{PriorityLevels: 2}
	})
	q := model.DefaultQueryModel
	first := inferResp(ctx, c, priorityRequest("first", 2, 0))
	clk.waitTimer(t, 11*time.Millisecond)
	low := inferResp(ctx, c, priorityRequest("low", 2, 0))
	waitQueued(t, s, q, 1)
	high := inferResp(ctx, c, priorityRequest("high", 1, 0))
	waitQueued(t, s, q, 2)
	clk.Advance(11 * time.Millisecond)
	if r := result(t, first); r.err != nil {
		t.Fatal(r.err)
	}
	clk.waitTimer(t, 11*time.Millisecond)
	clk.Advance(11 * time.Millisecond)
	if r := result(t, high); r.err != nil {
		t.Fatal(r.err)
	}
	select {
	case r := <-low:
		t.Fatalf("the lower priority ran before the higher one: %v", r.err)
	default:
	}
	clk.waitTimer(t, 11*time.Millisecond)
	clk.Advance(11 * time.Millisecond)
	if r := result(t, low); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestQueuePolicyTimeouts(t *testing.T) {
	ctx := testContext(t)
	s, c, clk := fakeServer(t, func(c *Config) {
		c.QueryMaxBatchSize = 1
		c.QueryBatching = Batching{DefaultQueuePolicy: QueuePolicy{DefaultTimeout: 10 * time.Millisecond, AllowTimeoutOverride: true}}
	})
	q := model.DefaultQueryModel
	busy := inferResp(ctx, c, queryRequest("busy"))
	clk.waitTimer(t, 11*time.Millisecond)

	// A shorter timeout overrides the default; a longer one does not.
	short := inferResp(ctx, c, priorityRequest("short", 0, 3000))
	waitQueued(t, s, q, 1)
	long := inferResp(ctx, c, priorityRequest("long", 0, 50000))
	waitQueued(t, s, q, 2)
	clk.Advance(3 * time.Millisecond)
	r := result(t, short)
	if status.Code(r.err) != codes.Unavailable || !strings.Contains(r.err.Error(), "Request timeout expired") {
		t.Fatalf("short timeout: %v, want Unavailable \"Request timeout expired\"", r.err)
	}
	clk.Advance(7 * time.Millisecond) // 10ms: the default
	if r := result(t, long); status.Code(r.err) != codes.Unavailable {
		t.Fatalf("timeout above the default: %v, want it capped at the default", r.err)
	}
	clk.Advance(time.Millisecond)
	if r := result(t, busy); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestQueuePolicyDelayAndNoDefault(t *testing.T) {
	ctx := testContext(t)
	s, c, clk := fakeServer(t, func(c *Config) {
		c.QueryMaxBatchSize = 1
		c.QueryBatching = Batching{PriorityLevels: 2, PriorityQueuePolicy: map[int]QueuePolicy{
			1: {TimeoutAction: TimeoutDelay, DefaultTimeout: 5 * time.Millisecond, MaxQueueSize: 2},
			// Level 2: no default timeout, so a request's own is ignored.
			2: {AllowTimeoutOverride: true},
		}}
	})
	q := model.DefaultQueryModel
	busy := inferResp(ctx, c, priorityRequest("busy", 2, 0))
	clk.waitTimer(t, 11*time.Millisecond)
	late := inferResp(ctx, c, priorityRequest("late", 1, 0))
	waitQueued(t, s, q, 1)
	ignored := inferResp(ctx, c, priorityRequest("ignored", 2, 1000))
	waitQueued(t, s, q, 2)
	clk.Advance(5 * time.Millisecond) // late times out under DELAY: it stays queued
	clk.Advance(3 * time.Millisecond)
	onTime := inferResp(ctx, c, priorityRequest("on time", 1, 0)) // its deadline is 13ms
	waitQueued(t, s, q, 3)
	// Level 1 holds 2 requests: its max_queue_size.
	full := result(t, inferResp(ctx, c, priorityRequest("full", 1, 0)))
	if status.Code(full.err) != codes.Unavailable || !strings.Contains(full.err.Error(), "Exceeds maximum queue size") {
		t.Fatalf("third request at level 1: %v, want Unavailable \"Exceeds maximum queue size\"", full.err)
	}
	// At 11ms the one that has not timed out goes before the delayed one,
	// and both before level 2, whose timeout parameter was ignored.
	for i, step := range []struct {
		after time.Duration
		call  <-chan inferResult
	}{{3 * time.Millisecond, busy}, {11 * time.Millisecond, onTime}, {11 * time.Millisecond, late}, {11 * time.Millisecond, ignored}} {
		clk.waitTimer(t, step.after)
		clk.Advance(step.after)
		if r := result(t, step.call); r.err != nil {
			t.Fatalf("call %d: %v", i, r.err)
		}
	}
}

func TestDisabledBatchingRunsEachRequestAlone(t *testing.T) {
	ctx := testContext(t)
	s, c, clk := fakeServer(t, func(c *Config) { c.DisableDynamicBatching = true })
	q := model.DefaultQueryModel
	a := inferResp(ctx, c, queryRequest("a", "b"))
	clk.waitTimer(t, 12*time.Millisecond) // no delay: runs at once
	b := inferResp(ctx, c, queryRequest("c"))
	d := inferResp(ctx, c, queryRequest("d"))
	waitQueued(t, s, q, 2)
	clk.Advance(12 * time.Millisecond)
	for range 2 {
		clk.waitTimer(t, 11*time.Millisecond) // one at a time, never merged
		clk.Advance(11 * time.Millisecond)
	}
	for _, ch := range []<-chan inferResult{a, b, d} {
		if r := result(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if st := statsOf(t, ctx, c, q); st.GetExecutionCount() != 3 {
		t.Errorf("%d executions, want 3", st.GetExecutionCount())
	}
}
