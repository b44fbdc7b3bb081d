package tritonsim

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

// inferAsync runs ModelInfer on its own goroutine; the channel gets its
// error (nil on success).
func inferAsync(ctx context.Context, c inference.GRPCInferenceServiceClient, req *inference.ModelInferRequest) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.ModelInfer(ctx, req)
		ch <- err
	}()
	return ch
}

func receive(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(testutil.Timeout):
		t.Fatal("timed out waiting for a ModelInfer call")
		return nil
	}
}

// slowConfig holds every batch for d, so tests control which calls are
// executing and which are queued.
func slowConfig(d time.Duration) Config {
	c := fastConfig()
	c.Faults.ExtraLatency = d
	// One request, one batch: these tests study the queue, not batching.
	c.DisableDynamicBatching = true
	return c
}

func TestQueueFullIsUnavailable(t *testing.T) {
	ctx := testContext(t)
	cfg := slowConfig(time.Minute)
	cfg.MaxQueueSize = 1
	s, c := startServer(t, cfg)

	// Five calls at once on one instance with room for one in the queue:
	// whatever the arrival order, one executes, one waits, three are
	// turned away.
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan error, 5)
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.ModelInfer(callCtx, queryRequest("overload"))
			results <- err
		}()
	}
	for range 3 {
		var err error
		select {
		case err = <-results:
		case <-ctx.Done():
			t.Fatal("timed out waiting for the rejected calls")
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "Exceeds maximum queue size") {
			t.Errorf("got %v, want Unavailable \"Exceeds maximum queue size\"", err)
		}
	}
	if queued, idle := schedState(s, model.DefaultQueryModel); queued != 1 || idle != 0 {
		t.Errorf("queue %d, idle instances %d; want 1 queued behind 1 executing", queued, idle)
	}
	if got := scrape(t, ctx, s)["nv_inference_pending_request_count"][modelLabels(model.DefaultQueryModel)]; got != 1 {
		t.Errorf("nv_inference_pending_request_count = %v, want 1", got)
	}
	cancel()
	wg.Wait()
}

func TestCanceledQueuedCallNeverExecutes(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, slowConfig(time.Second))
	q := model.DefaultQueryModel

	first := inferAsync(ctx, c, queryRequest("first"))
	waitFor(t, "the first call to execute", func() bool { _, idle := schedState(s, q); return idle == 0 })

	secondCtx, cancelSecond := context.WithCancel(ctx)
	second := inferAsync(secondCtx, c, queryRequest("second", "call"))
	waitFor(t, "the second call to queue", func() bool { queued, _ := schedState(s, q); return queued == 1 })
	cancelSecond()
	if err := receive(t, second); status.Code(err) != codes.Canceled {
		t.Errorf("canceled call: %v, want Canceled", err)
	}
	// The server notices the cancellation on its own time.
	waitFor(t, "the canceled call to leave the queue", func() bool {
		queued, _ := schedState(s, q)
		return queued == 0 && statsOf(t, ctx, c, q).GetInferenceStats().GetFail().GetCount() == 1
	})
	if err := receive(t, first); err != nil {
		t.Fatalf("first call: %v", err)
	}

	st := statsOf(t, ctx, c, q)
	if st.GetExecutionCount() != 1 || st.GetInferenceCount() != 1 {
		t.Errorf("execution_count %d inference_count %d; want only the first call (1 item) executed",
			st.GetExecutionCount(), st.GetInferenceCount())
	}
	if got := len(s.Observed()); got != 2 {
		t.Errorf("Observed %d calls, want 2 (both arrived)", got)
	}
	if _, idle := schedState(s, q); idle != 1 {
		t.Errorf("%d idle instances after all calls, want 1: an instance leaked", idle)
	}
}

// TestInstancesAndLayouts checks from the statistics, on a fake clock,
// where a batch waits: one instance queues the second batch in the model's
// queue; two instances on one shared GPU dispatch both at once but the
// second waits for the device (inside compute_infer, as on a real GPU); two
// instances on separate GPUs run in parallel.
func TestInstancesAndLayouts(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name      string
		instances int
		layout    string
		queue     time.Duration // total over both calls
		infer     time.Duration
		steps     []time.Duration // device timers, in order
	}{
		{"one instance", 1, LayoutShared, 11 * ms, 22 * ms, []time.Duration{11 * ms, 11 * ms}},
		{"two instances, shared GPU", 2, LayoutShared, 0, 33 * ms, []time.Duration{11 * ms, 11 * ms}},
		{"two instances, separate GPUs", 2, LayoutSeparate, 0, 22 * ms, []time.Duration{11 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			s, c, clk := fakeServer(t, func(c *Config) {
				c.Instances, c.Layout, c.DisableDynamicBatching = tc.instances, tc.layout, true
			})
			a := inferResp(ctx, c, queryRequest("a"))
			clk.waitTimer(t, 11*ms)
			b := inferResp(ctx, c, queryRequest("b"))
			waitFor(t, "the second call to be queued or dispatched", func() bool {
				queued, idle := schedState(s, model.DefaultQueryModel)
				return queued+tc.instances-idle == 2
			})
			if tc.layout == LayoutSeparate {
				waitFor(t, "both GPUs busy", func() bool { return len(clk.armed()) == 2 })
			}
			for _, d := range tc.steps {
				clk.waitTimer(t, d)
				clk.Advance(d)
			}
			for _, ch := range []<-chan inferResult{a, b} {
				if r := result(t, ch); r.err != nil {
					t.Fatal(r.err)
				}
			}
			is := statsOf(t, ctx, c, model.DefaultQueryModel).GetInferenceStats()
			if is.GetQueue().GetNs() != uint64(tc.queue) || is.GetComputeInfer().GetNs() != uint64(tc.infer) {
				t.Errorf("queue %v, compute %v; want %v and %v", time.Duration(is.GetQueue().GetNs()),
					time.Duration(is.GetComputeInfer().GetNs()), tc.queue, tc.infer)
			}
			if got, want := len(s.devices), map[string]int{LayoutShared: 1, LayoutSeparate: 2 * tc.instances}[tc.layout]; got != want {
				t.Errorf("%d simulated GPUs, want %d", got, want)
			}
		})
	}
}

func TestTimeoutParameterBoundsQueueTime(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, slowConfig(time.Minute))
	q := model.DefaultQueryModel

	holdCtx, cancelHold := context.WithCancel(ctx)
	defer cancelHold()
	hold := inferAsync(holdCtx, c, queryRequest("holds the only instance"))
	waitFor(t, "the first call to execute", func() bool { _, idle := schedState(s, q); return idle == 0 })

	req := defaultCodec.Request(model.Query, [][]byte{[]byte("in a hurry")}, triton.EmbedOptions{ID: "r7", Timeout: 20 * time.Millisecond})
	_, err := c.ModelInfer(ctx, req)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "[request id: r7] Request timeout expired") {
		t.Errorf("got %v, want Triton's Unavailable \"Request timeout expired\"", err)
	}
	if queued, _ := schedState(s, q); queued != 0 {
		t.Errorf("%d calls queued after the timeout, want 0", queued)
	}
	if st := statsOf(t, ctx, c, q); st.GetExecutionCount() != 0 {
		t.Errorf("execution_count %d, want 0: the timed-out call must not execute", st.GetExecutionCount())
	}
	cancelHold()
	if err := receive(t, hold); status.Code(err) != codes.Canceled {
		t.Errorf("held call: %v, want Canceled", err)
	}
}

func TestStopWhileExecutingIsPrompt(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, slowConfig(time.Minute))

	call := inferAsync(ctx, c, imageRequest(t, 2))
	waitFor(t, "the batch to execute", func() bool { _, idle := schedState(s, model.DefaultImageModel); return idle == 0 })
	queued := inferAsync(ctx, c, imageRequest(t, 1))
	waitFor(t, "a call to queue", func() bool { q, _ := schedState(s, model.DefaultImageModel); return q == 1 })

	start := time.Now()
	s.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %v with a batch executing; want prompt", d)
	}
	for _, ch := range []<-chan error{call, queued} {
		if err := receive(t, ch); status.Code(err) != codes.Unavailable {
			t.Errorf("call in flight during Stop: %v, want Unavailable", err)
		}
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done is not closed after Stop")
	}
	s.Stop() // a second Stop is harmless
}

func TestGracefulStopFinishesInFlightCalls(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, slowConfig(100*time.Millisecond))

	call := inferAsync(ctx, c, queryRequest("finish me"))
	waitFor(t, "the batch to execute", func() bool { _, idle := schedState(s, model.DefaultQueryModel); return idle == 0 })
	s.GracefulStop()
	if err := receive(t, call); err != nil {
		t.Errorf("in-flight call during GracefulStop: %v, want success", err)
	}
	if _, err := c.ModelInfer(ctx, queryRequest("too late")); status.Code(err) != codes.Unavailable {
		t.Errorf("call after GracefulStop: %v, want Unavailable", err)
	}
}

func TestStopAfterCrashes(t *testing.T) {
	ctx := testContext(t)
	cfg := fastConfig()
	cfg.StopAfter = 3
	s, c := startServer(t, cfg)

	for i := range 2 {
		if _, err := c.ModelInfer(ctx, queryRequest("fine")); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if _, err := c.ModelInfer(ctx, queryRequest("boom")); status.Code(err) != codes.Unavailable {
		t.Errorf("third call: %v, want Unavailable", err)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("the simulator did not stop after 3 calls")
	}
}
