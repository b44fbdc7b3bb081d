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

// TestOneInstanceSerialisesBatches checks from the statistics, not the
// clock, that one instance runs one batch at a time and two run two.
func TestOneInstanceSerialisesBatches(t *testing.T) {
	for _, tc := range []struct {
		instances int
		queued    bool
	}{{1, true}, {2, false}} {
		ctx := testContext(t)
		cfg := slowConfig(200 * time.Millisecond)
		cfg.Instances = tc.instances
		s, c := startServer(t, cfg)
		q := model.DefaultQueryModel

		a := inferAsync(ctx, c, queryRequest("a"))
		b := inferAsync(ctx, c, queryRequest("b"))
		waitFor(t, "both calls to arrive", func() bool { return len(s.Observed()) == 2 })
		if tc.queued {
			waitFor(t, "one call to queue behind the other", func() bool {
				queued, idle := schedState(s, q)
				return queued == 1 && idle == 0
			})
		}
		for _, ch := range []<-chan error{a, b} {
			if err := receive(t, ch); err != nil {
				t.Fatal(err)
			}
		}
		is := statsOf(t, ctx, c, q).GetInferenceStats()
		if is.GetQueue().GetCount() != 2 {
			t.Fatalf("%d instances: queue count %d, want 2", tc.instances, is.GetQueue().GetCount())
		}
		if waited := is.GetQueue().GetNs() > 0; waited != tc.queued {
			t.Errorf("%d instances: queue time %v ns; want a wait: %v", tc.instances, is.GetQueue().GetNs(), tc.queued)
		}
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

	req := defaultModel.NewInferRequest(model.Query, [][]byte{[]byte("in a hurry")}, model.Request{ID: "r7", TimeoutMicros: 20000})
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

