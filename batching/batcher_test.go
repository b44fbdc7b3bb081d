package batching

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	itestutil "github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestBatchesFormWhileTheSlotIsBusy(t *testing.T) {
	for _, mode := range []Mode{ModeStatic, ModeAdaptive} {
		t.Run(string(mode), func(t *testing.T) {
			ctx := itestutil.Context(t)
			g := newGate()
			down := &fakeDownstream{embed: g.embed}
			// A real clock and a tiny delay: a lone request leaves at once
			// in both modes; the others queue while the slot is busy.
			cfg := Config{Mode: mode, Query: ModelConfig{MaxInFlightBatches: 1, MaxQueueDelay: time.Microsecond}}
			b := newTestBatcher(t, cfg, down, SystemClock{})

			first := embedAsync(ctx, b, model.Query, "a")
			g.waitEntered(t)
			var rest []<-chan result
			for i, items := range [][]string{{"b"}, {"c", "d"}, {"e"}} {
				rest = append(rest, embedAsync(ctx, b, model.Query, items...))
				waitQueued(t, b, model.Query, i+1)
			}
			g.release <- struct{}{}
			if r := await(t, first); r.err != nil || !cmp.Equal(r.items, []string{"a"}) {
				t.Fatalf("first call: %v, %v", r.items, r.err)
			}
			g.waitEntered(t)
			g.release <- struct{}{}
			want := [][]string{{"b"}, {"c", "d"}, {"e"}}
			for i, ch := range rest {
				if r := await(t, ch); r.err != nil || !cmp.Equal(r.items, want[i]) {
					t.Errorf("call %d: %v, %v; want %v", i, r.items, r.err, want[i])
				}
			}
			wantBatches := [][]string{{"a"}, {"b", "c", "d", "e"}}
			if got := down.Batches(); !cmp.Equal(got, wantBatches) {
				t.Errorf("batches %v, want %v", got, wantBatches)
			}
		})
	}
}

func TestStaticWaitsMaxQueueDelayThenSends(t *testing.T) {
	ctx := itestutil.Context(t)
	clock := newFakeClock()
	down := &fakeDownstream{}
	b := newTestBatcher(t, Config{Mode: ModeStatic, Query: ModelConfig{MaxQueueDelay: 10 * time.Millisecond}}, down, clock)
	start := clock.Now()
	r1 := embedAsync(ctx, b, model.Query, "x")
	clock.waitArmed(t, start.Add(10*time.Millisecond))
	r2 := embedAsync(ctx, b, model.Query, "y")
	waitQueued(t, b, model.Query, 2)
	clock.Advance(9 * time.Millisecond)
	time.Sleep(5 * time.Millisecond) // the dispatcher would have sent by now, were it wrong
	if n := len(down.Batches()); n != 0 {
		t.Fatalf("%d batches sent before max-queue-delay", n)
	}
	clock.Advance(time.Millisecond)
	for _, ch := range []<-chan result{r1, r2} {
		if r := await(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if got := down.Batches(); !cmp.Equal(got, [][]string{{"x", "y"}}) {
		t.Fatalf("batches %v, want one of x and y", got)
	}
}

func TestStaticSendsPreferredSizeWithoutWaiting(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	cfg := Config{Mode: ModeStatic, Query: ModelConfig{MaxInFlightBatches: 1, MaxQueueDelay: time.Hour, PreferredBatchSizes: []int{2, 4}}}
	b := newTestBatcher(t, cfg, down, newFakeClock())
	blocker := embedAsync(ctx, b, model.Query, "0", "1", "2", "3") // a preferred size: leaves at once
	g.waitEntered(t)
	var calls []<-chan result
	for _, s := range []string{"a", "b", "c"} {
		calls = append(calls, embedAsync(ctx, b, model.Query, s))
		waitQueued(t, b, model.Query, len(calls))
	}
	g.release <- struct{}{}
	await(t, blocker)
	g.waitEntered(t)
	g.release <- struct{}{}
	await(t, calls[0])
	await(t, calls[1])
	// Three wait: the largest preferred size they fill is 2; the third
	// waits for more or for the delay.
	if got := down.Batches(); !cmp.Equal(got, [][]string{{"0", "1", "2", "3"}, {"a", "b"}}) {
		t.Fatalf("batches %v", got)
	}
	if queued(b, model.Query) != 1 {
		t.Fatalf("%d queued, want c still waiting", queued(b, model.Query))
	}
	g.release <- struct{}{} // for Close's flush of c
}

func TestLargeRequestIsSplitAndReassembledInOrder(t *testing.T) {
	ctx := itestutil.Context(t)
	down := &fakeDownstream{}
	b := newTestBatcher(t, Config{Query: ModelConfig{MaxBatchSize: 3, MaxInFlightBatches: 2}}, down, newFakeClock())
	items := []string{"i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7"}
	r := await(t, embedAsync(ctx, b, model.Query, items...))
	if r.err != nil || !cmp.Equal(r.items, items) {
		t.Fatalf("got %v, %v", r.items, r.err)
	}
	var sizes []int
	for _, batch := range down.Batches() {
		sizes = append(sizes, len(batch))
	}
	slices.Sort(sizes) // two batches in flight reach downstream in any order
	if !cmp.Equal(sizes, []int{2, 3, 3}) {
		t.Fatalf("batch sizes %v, want 3, 3 and 2", sizes)
	}
}

func TestBatchCostBudget(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	// A query costs 1 + ceil(bytes/4): "abcd" costs 2, 16 bytes cost 5.
	cfg := Config{Mode: ModeAdaptive, Query: ModelConfig{ItemCost: 1, MaxBatchCost: 8, MaxInFlightBatches: 1}}
	b := newTestBatcher(t, cfg, down, newFakeClock())
	blocker := embedAsync(ctx, b, model.Query, "x")
	g.waitEntered(t)
	long := strings.Repeat("L", 16)
	calls := []<-chan result{
		embedAsync(ctx, b, model.Query, "abcd", "abcd", "abcd"),
	}
	waitQueued(t, b, model.Query, 1)
	calls = append(calls, embedAsync(ctx, b, model.Query, long, long))
	waitQueued(t, b, model.Query, 2)
	for range 4 {
		g.release <- struct{}{}
	}
	await(t, blocker)
	for _, ch := range calls {
		if r := await(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	want := [][]string{{"x"}, {"abcd", "abcd", "abcd"}, {long}, {long}}
	if got := down.Batches(); !cmp.Equal(got, want) {
		t.Fatalf("batches %v, want %v (6 + 5 > 8, 5 + 5 > 8)", got, want)
	}
}

func TestOversizedItemGoesAlone(t *testing.T) {
	ctx := itestutil.Context(t)
	down := &fakeDownstream{}
	b := newTestBatcher(t, Config{Query: ModelConfig{ItemCost: 1, MaxBatchCost: 2}}, down, newFakeClock())
	huge := strings.Repeat("h", 100)
	if r := await(t, embedAsync(ctx, b, model.Query, huge)); r.err != nil || r.items[0] != huge {
		t.Fatalf("got %v", r.err)
	}
}

func TestQueueFullAnswersAtOnce(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	reg := prometheus.NewRegistry()
	b, err := New(Config{Mode: ModeStatic, Query: ModelConfig{MaxQueueSize: 2, MaxInFlightBatches: 1, MaxQueueDelay: time.Hour, PreferredBatchSizes: []int{1}}},
		Deps{Downstream: &fakeDownstream{embed: g.embed}, Clock: newFakeClock(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	w1, w2 := embedAsync(ctx, b, model.Query, "1"), embedAsync(ctx, b, model.Query, "2")
	waitQueued(t, b, model.Query, 2)
	_, err = b.Embed(ctx, model.Query, [][]byte{[]byte("3")}, 0)
	if !errors.Is(err, ErrQueueFull) || !strings.Contains(err.Error(), "max-queue-size") {
		t.Fatalf("Embed on a full queue: %v, want ErrQueueFull naming max-queue-size", err)
	}
	if v := rejections(t, reg, "fake_query", reasonQueueFull); v != 1 {
		t.Errorf("queue_full rejections %v, want 1", v)
	}
	for range 3 {
		g.release <- struct{}{}
	}
	for _, ch := range []<-chan result{blocker, w1, w2} {
		if r := await(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
}

func TestQueueTimeoutRejects(t *testing.T) {
	ctx := itestutil.Context(t)
	clock := newFakeClock()
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	b := newTestBatcher(t, Config{Query: ModelConfig{QueueTimeout: time.Second, MaxInFlightBatches: 1}}, down, clock)
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	start := clock.Now()
	waiting := embedAsync(ctx, b, model.Query, "late")
	clock.waitArmed(t, start.Add(time.Second))
	clock.Advance(time.Second)
	if r := await(t, waiting); !errors.Is(r.err, ErrQueueTimeout) {
		t.Fatalf("got %v, want ErrQueueTimeout", r.err)
	}
	g.release <- struct{}{}
	await(t, blocker)
	time.Sleep(5 * time.Millisecond)
	if got := down.Batches(); len(got) != 1 {
		t.Fatalf("batches %v: the timed-out request was sent", got)
	}
}

func TestQueueTimeoutDelayMovesBehind(t *testing.T) {
	ctx := itestutil.Context(t)
	clock := newFakeClock()
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	cfg := Config{Query: ModelConfig{QueueTimeout: time.Second, TimeoutAction: TimeoutDelay, MaxInFlightBatches: 1, MaxBatchSize: 1}}
	b := newTestBatcher(t, cfg, down, clock)
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	start := clock.Now()
	early := embedAsyncAt(ctx, b, model.Query, 1, "early")
	clock.waitArmed(t, start.Add(time.Second))
	clock.Advance(time.Second) // early times out: delayed behind everyone
	waitFor(t, "the delayed list", func() bool {
		q := queueOf(b, model.Query)
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.delayed.Len() == 1
	})
	later := embedAsyncAt(ctx, b, model.Query, 3, "later")
	waitQueued(t, b, model.Query, 2)
	for range 3 {
		g.release <- struct{}{}
	}
	for _, ch := range []<-chan result{blocker, early, later} {
		if r := await(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if got := down.Batches(); !cmp.Equal(got, [][]string{{"busy"}, {"later"}, {"early"}}) {
		t.Fatalf("batches %v: the timed-out request should go last", got)
	}
}

func TestPriorityOrder(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	b := newTestBatcher(t, Config{Query: ModelConfig{MaxInFlightBatches: 1, MaxBatchSize: 1}}, down, newFakeClock())
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	var calls []<-chan result
	for i, p := range []int{3, 0, 1, 2, 1} { // 0 is the default, 2
		calls = append(calls, embedAsyncAt(ctx, b, model.Query, p, []string{"p3", "d", "p1a", "p2", "p1b"}[i]))
		waitQueued(t, b, model.Query, i+1)
	}
	for range 6 {
		g.release <- struct{}{}
	}
	await(t, blocker)
	for _, ch := range calls {
		await(t, ch)
	}
	want := [][]string{{"busy"}, {"p1a"}, {"p1b"}, {"d"}, {"p2"}, {"p3"}}
	if got := down.Batches(); !cmp.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	if got := down.Priorities(); !cmp.Equal(got, []int{2, 1, 1, 2, 2, 3}) {
		t.Fatalf("downstream priorities %v, want each batch's level", got)
	}
}

// A batch that mixes levels goes downstream at its most urgent member's.
func TestBatchPriorityIsItsMostUrgentMembers(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	cfg := Config{Mode: ModeStatic, Query: ModelConfig{MaxInFlightBatches: 1, MaxQueueDelay: time.Hour, PreferredBatchSizes: []int{2}}}
	b := newTestBatcher(t, cfg, down, newFakeClock())
	blocker := embedAsyncAt(ctx, b, model.Query, 3, "busy", "busy")
	g.waitEntered(t)
	low := embedAsyncAt(ctx, b, model.Query, 3, "low")
	waitQueued(t, b, model.Query, 1)
	normal := embedAsync(ctx, b, model.Query, "normal")
	waitQueued(t, b, model.Query, 2)
	g.release <- struct{}{}
	g.release <- struct{}{}
	for _, ch := range []<-chan result{blocker, low, normal} {
		if r := await(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if got := down.Batches(); !cmp.Equal(got, [][]string{{"busy", "busy"}, {"normal", "low"}}) {
		t.Fatalf("batches %v", got)
	}
	if got := down.Priorities(); !cmp.Equal(got, []int{3, 2}) {
		t.Fatalf("downstream priorities %v, want 3 then 2 (the default level of normal)", got)
	}
}

// ModeNone sends each call at its own level, the default applied.
func TestNoBatchingPassesThePriority(t *testing.T) {
	down := &fakeDownstream{}
	b := newTestBatcher(t, Config{Mode: ModeNone}, down, newFakeClock())
	for _, p := range []int{3, 0, 1} {
		if _, err := b.Embed(itestutil.Context(t), model.Image, [][]byte{[]byte("p")}, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := down.Priorities(); !cmp.Equal(got, []int{3, 2, 1}) {
		t.Fatalf("downstream priorities %v, want 3, 2, 1", got)
	}
	if queueOf(b, model.Image) != nil {
		t.Fatal("ModeNone built a queue")
	}
}

func TestPriorityOutOfRange(t *testing.T) {
	b := newTestBatcher(t, Config{}, &fakeDownstream{}, newFakeClock())
	_, err := b.Embed(itestutil.Context(t), model.Query, [][]byte{[]byte("q")}, 4)
	if !errors.Is(err, ErrPriority) || !strings.Contains(err.Error(), "1 to 3") {
		t.Fatalf("got %v, want ErrPriority naming the levels", err)
	}
	if b.PriorityLevels(model.Image) != DefaultPriorityLevels {
		t.Fatalf("PriorityLevels %d", b.PriorityLevels(model.Image))
	}
}

func TestCallerThatLeavesIsNeverSent(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	reg := prometheus.NewRegistry()
	b, err := New(Config{Query: ModelConfig{MaxInFlightBatches: 1}}, Deps{Downstream: down, Clock: newFakeClock(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	leaveCtx, cancel := context.WithCancel(ctx)
	leaving := embedAsync(leaveCtx, b, model.Query, "gone")
	// A deadline that passes when the test says so, not on a real timer
	// that a loaded machine may reach before all three are queued.
	shortCtx := newExpiringContext(ctx)
	expiring := embedAsync(shortCtx, b, model.Query, "expired")
	staying := embedAsync(ctx, b, model.Query, "stays")
	waitQueued(t, b, model.Query, 3)
	cancel()
	shortCtx.expire()
	if r := await(t, leaving); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("canceled caller got %v", r.err)
	}
	if r := await(t, expiring); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("expired caller got %v", r.err)
	}
	waitQueued(t, b, model.Query, 1)
	g.release <- struct{}{}
	g.release <- struct{}{}
	await(t, blocker)
	if r := await(t, staying); r.err != nil {
		t.Fatal(r.err)
	}
	if got := down.Batches(); !cmp.Equal(got, [][]string{{"busy"}, {"stays"}}) {
		t.Fatalf("batches %v: a caller that left was sent", got)
	}
	for reason, want := range map[string]float64{reasonCanceled: 1, reasonDeadline: 1} {
		if v := rejections(t, reg, "fake_query", reason); v != want {
			t.Errorf("rejections{reason=%q} = %v, want %v", reason, v, want)
		}
	}
}

// expiringContext is a caller's context whose deadline passes when the
// test calls expire: then Done closes and Err is DeadlineExceeded. Values
// and Deadline (far away) come from its parent, whose end it ignores.
type expiringContext struct {
	context.Context
	done chan struct{}
}

func newExpiringContext(parent context.Context) *expiringContext {
	return &expiringContext{Context: parent, done: make(chan struct{})}
}

func (c *expiringContext) Done() <-chan struct{} { return c.done }

func (c *expiringContext) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *expiringContext) expire() { close(c.done) }

// TestCallerGoneBeforeItLeavesIsNeverSent: a caller's context can end
// before the caller takes the queue's lock to leave; the dispatcher must
// not put it in a batch, nor count it when sizing one. The requests whose
// contexts have ended are queued here without a caller, as if their
// callers had not run yet: deterministic, with no race to win.
func TestCallerGoneBeforeItLeavesIsNeverSent(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	reg := prometheus.NewRegistry()
	// Static, preferred size 2, no max-queue-delay to speak of: a batch
	// leaves only once two live items wait.
	cfg := Config{Mode: ModeStatic, Query: ModelConfig{MaxInFlightBatches: 1, MaxQueueDelay: time.Hour, PreferredBatchSizes: []int{2}}}
	b, err := New(cfg, Deps{Downstream: down, Clock: newFakeClock(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	q := queueOf(b, model.Query)
	blocker := embedAsync(ctx, b, model.Query, "busy", "busy")
	g.waitEntered(t)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancelExpired := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancelExpired()
	level := cfg.WithDefaults().Query.DefaultPriority
	goneFirst := q.newRequest(canceled, [][]byte{[]byte("gone")}, level)
	if err := q.enqueue(goneFirst); err != nil {
		t.Fatal(err)
	}
	live := embedAsync(ctx, b, model.Query, "a")
	waitQueued(t, b, model.Query, 2)
	goneLast := q.newRequest(expired, [][]byte{[]byte("expired")}, level)
	if err := q.enqueue(goneLast); err != nil {
		t.Fatal(err)
	}

	g.release <- struct{}{}
	await(t, blocker)
	for _, r := range []struct {
		req  *request
		want error
	}{{goneFirst, context.Canceled}, {goneLast, context.DeadlineExceeded}} {
		select {
		case <-r.req.done:
		case <-time.After(5 * time.Second):
			t.Fatal("a request whose context ended was not finished")
		}
		if !errors.Is(r.req.err, r.want) || r.req.out != nil {
			t.Errorf("request whose context ended: %v, %v; want %v", r.req.out, r.req.err, r.want)
		}
	}
	// The dispatcher finished them while sizing the next batch, under the
	// lock; once it has let go, it must have counted one live item only,
	// too few for the preferred size: nothing sent, "a" still waiting.
	q.mu.Lock()
	inFlight, waiting := q.inFlight, q.queued
	q.mu.Unlock()
	if inFlight != 0 || waiting != 1 {
		t.Fatalf("%d batches in flight, %d queued; want none in flight and a waiting (the gone were counted)", inFlight, waiting)
	}

	second := embedAsync(ctx, b, model.Query, "b")
	g.waitEntered(t)
	g.release <- struct{}{}
	for _, ch := range []<-chan result{live, second} {
		if r := await(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if got := down.Batches(); !cmp.Equal(got, [][]string{{"busy", "busy"}, {"a", "b"}}) {
		t.Fatalf("batches %v: a caller that had left was sent", got)
	}
	for reason, want := range map[string]float64{reasonCanceled: 1, reasonDeadline: 1} {
		if v := rejections(t, reg, "fake_query", reason); v != want {
			t.Errorf("rejections{reason=%q} = %v, want %v", reason, v, want)
		}
	}
}

// TestBatchIsCanceledOnceEveryMemberLeaves: a batch whose members have all
// left is canceled downstream, and counts as canceled: no backend error,
// and no sample for the adaptive policy, unless the last member left
// because its deadline passed (the batch ran out of time). While one
// member still waits, the batch goes on (and see
// TestLeavingMemberDoesNotCancelItsBatch).
func TestBatchIsCanceledOnceEveryMemberLeaves(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leave  func(ctx context.Context) (context.Context, func())
		want   error
		reason string
		sample bool
	}{
		{"canceled", func(ctx context.Context) (context.Context, func()) {
			return context.WithCancel(ctx)
		}, context.Canceled, reasonCanceled, false},
		{"deadline", func(ctx context.Context) (context.Context, func()) {
			c := newExpiringContext(ctx)
			return c, c.expire
		}, context.DeadlineExceeded, reasonDeadline, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := itestutil.Context(t)
			g := newGate()
			var batchCtx context.Context
			down := &fakeDownstream{embed: func(ctx context.Context, k model.Kind, items [][]byte) ([]model.Embedding, error) {
				if len(items) == 2 {
					batchCtx = ctx // read after g.entered: no race
				}
				return g.embed(ctx, k, items)
			}}
			reg := prometheus.NewRegistry()
			b, err := New(Config{Mode: ModeAdaptive, Query: ModelConfig{MaxInFlightBatches: 1}}, Deps{Downstream: down, Clock: newFakeClock(), Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close(ctx)
			q := queueOf(b, model.Query)
			samples := func() float64 {
				q.mu.Lock()
				defer q.mu.Unlock()
				return q.policy.(*adaptivePolicy).latency.w
			}
			blocker := embedAsync(ctx, b, model.Query, "busy")
			g.waitEntered(t)
			first, leaveFirst := tc.leave(ctx)
			second, leaveSecond := tc.leave(ctx)
			r1 := embedAsync(first, b, model.Query, "a")
			waitQueued(t, b, model.Query, 1)
			r2 := embedAsync(second, b, model.Query, "b")
			waitQueued(t, b, model.Query, 2)
			g.release <- struct{}{}
			await(t, blocker)
			g.waitEntered(t)
			before := samples() // the blocker's batch was one

			leaveFirst()
			if r := await(t, r1); !errors.Is(r.err, tc.want) {
				t.Fatalf("first member got %v, want %v", r.err, tc.want)
			}
			if batchCtx.Err() != nil {
				t.Fatalf("the batch was canceled while a member still waits: %v", context.Cause(batchCtx))
			}
			leaveSecond()
			if r := await(t, r2); !errors.Is(r.err, tc.want) {
				t.Fatalf("second member got %v, want %v", r.err, tc.want)
			}
			// The last member counted itself off the batch before its Embed
			// returned, under the lock: the batch is canceled by now.
			if batchCtx.Err() == nil || !errors.Is(context.Cause(batchCtx), errAbandoned) {
				t.Fatalf("batch context after every member left: %v (cause %v), want canceled as abandoned", batchCtx.Err(), context.Cause(batchCtx))
			}
			waitFor(t, "the abandoned batch to come back", func() bool {
				q.mu.Lock()
				defer q.mu.Unlock()
				return q.inFlight == 0
			})
			if sampled := samples() != before; sampled != tc.sample {
				t.Errorf("the adaptive policy took a sample of the abandoned batch: %v, want %v", sampled, tc.sample)
			}
			for reason, want := range map[string]float64{tc.reason: 2, reasonBackendError: 0} {
				if v := rejections(t, reg, "fake_query", reason); v != want {
					t.Errorf("rejections{reason=%q} = %v, want %v", reason, v, want)
				}
			}
			next := embedAsync(ctx, b, model.Query, "c")
			g.waitEntered(t)
			g.release <- struct{}{}
			if r := await(t, next); r.err != nil || !cmp.Equal(r.items, []string{"c"}) {
				t.Fatalf("call after the abandoned batch: %v, %v", r.items, r.err)
			}
		})
	}
}

// TestFailedPieceCancelsTheRestOfItsRequest: a request split across two
// batches fails with the first; the second, carrying only the rest of that
// request, has nobody waiting and is canceled.
func TestFailedPieceCancelsTheRestOfItsRequest(t *testing.T) {
	ctx := itestutil.Context(t)
	backendErr := errors.New("backend exploded")
	fail := make(chan struct{})
	restCtx := make(chan context.Context, 1)
	down := &fakeDownstream{embed: func(ctx context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		if string(items[0]) == "x0" {
			<-fail
			return nil, backendErr
		}
		restCtx <- ctx
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	reg := prometheus.NewRegistry()
	b, err := New(Config{Query: ModelConfig{MaxBatchSize: 1, MaxInFlightBatches: 2}}, Deps{Downstream: down, Clock: newFakeClock(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	call := embedAsync(ctx, b, model.Query, "x0", "x1")
	var rest context.Context
	select {
	case rest = <-restCtx:
	case <-time.After(5 * time.Second):
		t.Fatal("the second piece was not sent")
	}
	if rest.Err() != nil {
		t.Fatalf("the second piece's batch ended early: %v", rest.Err())
	}
	close(fail)
	if r := await(t, call); !errors.Is(r.err, backendErr) {
		t.Fatalf("split request got %v, want the first batch's error", r.err)
	}
	select {
	case <-rest.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the batch of a failed request's rest was not canceled")
	}
	if !errors.Is(context.Cause(rest), errAbandoned) {
		t.Fatalf("cause %v, want errAbandoned", context.Cause(rest))
	}
	q := queueOf(b, model.Query)
	waitFor(t, "both batches back", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.inFlight == 0
	})
	if v := rejections(t, reg, "fake_query", reasonBackendError); v != 1 {
		t.Errorf("backend_error rejections %v, want 1 (the request, once)", v)
	}
}

func TestLeavingMemberDoesNotCancelItsBatch(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	var batchCtx context.Context
	down := &fakeDownstream{embed: func(ctx context.Context, k model.Kind, items [][]byte) ([]model.Embedding, error) {
		if len(items) == 2 {
			batchCtx = ctx
		}
		return g.embed(ctx, k, items)
	}}
	b := newTestBatcher(t, Config{Query: ModelConfig{MaxInFlightBatches: 1}}, down, newFakeClock())
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	early, cancelEarly := context.WithTimeout(ctx, time.Minute)
	defer cancelEarly()
	late, cancelLate := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelLate()
	leaving := embedAsync(early, b, model.Query, "leaves")
	staying := embedAsync(late, b, model.Query, "stays")
	waitQueued(t, b, model.Query, 2)
	g.release <- struct{}{}
	await(t, blocker)
	g.waitEntered(t)
	lateDeadline, _ := late.Deadline()
	if d, ok := batchCtx.Deadline(); !ok || !d.Equal(lateDeadline) {
		t.Fatalf("batch deadline %v, want the latest member's %v", d, lateDeadline)
	}
	cancelEarly()
	if r := await(t, leaving); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("leaving member got %v", r.err)
	}
	if batchCtx.Err() != nil {
		t.Fatalf("the batch's context ended with a member: %v", batchCtx.Err())
	}
	g.release <- struct{}{}
	if r := await(t, staying); r.err != nil || !cmp.Equal(r.items, []string{"stays"}) {
		t.Fatalf("staying member got %v, %v", r.items, r.err)
	}
}

func TestBackendErrorFailsOnlyItsBatch(t *testing.T) {
	ctx := itestutil.Context(t)
	backendErr := errors.New("backend exploded")
	g := newGate()
	calls := 0
	down := &fakeDownstream{embed: func(ctx context.Context, k model.Kind, items [][]byte) ([]model.Embedding, error) {
		calls++ // one batch at a time: no race
		if calls == 2 {
			return nil, backendErr
		}
		return g.embed(ctx, k, items)
	}}
	b := newTestBatcher(t, Config{Query: ModelConfig{MaxInFlightBatches: 1, MaxBatchSize: 2}}, down, newFakeClock())
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	a, bb := embedAsync(ctx, b, model.Query, "a"), embedAsync(ctx, b, model.Query, "b")
	waitQueued(t, b, model.Query, 2)
	c := embedAsync(ctx, b, model.Query, "c")
	waitQueued(t, b, model.Query, 3)
	g.release <- struct{}{}
	g.release <- struct{}{}
	await(t, blocker)
	for _, ch := range []<-chan result{a, bb} {
		if r := await(t, ch); !errors.Is(r.err, backendErr) {
			t.Errorf("member of the failed batch got %v, want the backend's error", r.err)
		}
	}
	if r := await(t, c); r.err != nil || r.items[0] != "c" {
		t.Errorf("request of the next batch got %v, %v", r.items, r.err)
	}
}

func TestWrongNumberOfEmbeddingsIsAnError(t *testing.T) {
	down := &fakeDownstream{embed: func(context.Context, model.Kind, [][]byte) ([]model.Embedding, error) {
		return echoEmbeddings(nil), nil
	}}
	for _, mode := range []Mode{ModeAdaptive, ModeNone} {
		b := newTestBatcher(t, Config{Mode: mode}, down, newFakeClock())
		if _, err := b.Embed(itestutil.Context(t), model.Image, [][]byte{[]byte("p")}, 0); !errors.Is(err, ErrBadDownstream) {
			t.Fatalf("%s: got %v, want ErrBadDownstream", mode, err)
		}
	}
}

func TestCloseFlushesWithoutWaiting(t *testing.T) {
	ctx := itestutil.Context(t)
	down := &fakeDownstream{}
	b, err := New(Config{Mode: ModeStatic, Image: ModelConfig{MaxQueueDelay: time.Hour}}, Deps{Downstream: down, Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	r := embedAsync(ctx, b, model.Image, "page")
	waitQueued(t, b, model.Image, 1)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := await(t, r); got.err != nil || got.items[0] != "page" {
		t.Fatalf("queued request on Close: %v, %v", got.items, got.err)
	}
	if _, err := b.Embed(ctx, model.Image, [][]byte{[]byte("p")}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Embed after Close: %v, want ErrClosed", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseGivesUpWhenItsContextEnds(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	b, err := New(Config{Query: ModelConfig{MaxInFlightBatches: 1}}, Deps{Downstream: &fakeDownstream{embed: g.embed}, Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	inFlight := embedAsync(ctx, b, model.Query, "stuck")
	g.waitEntered(t)
	queuedCall := embedAsync(ctx, b, model.Query, "waiting")
	waitQueued(t, b, model.Query, 1)
	closeCtx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.Close(closeCtx); err == nil || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("Close: %v, want the flush abandoned", err)
	}
	if r := await(t, queuedCall); !errors.Is(r.err, ErrClosed) {
		t.Errorf("queued call: %v, want ErrClosed", r.err)
	}
	if r := await(t, inFlight); !errors.Is(r.err, ErrClosed) || !errors.Is(r.err, context.Canceled) {
		t.Errorf("call in flight: %v, want ErrClosed wrapping its batch's cancellation", r.err)
	}
}

func TestModeNonePassesEachCallThrough(t *testing.T) {
	ctx := itestutil.Context(t)
	down := &fakeDownstream{}
	b := newTestBatcher(t, Config{Mode: ModeNone}, down, newFakeClock())
	r1, r2 := embedAsync(ctx, b, model.Query, "a", "b"), embedAsync(ctx, b, model.Query, "c")
	if r := await(t, r1); r.err != nil || !cmp.Equal(r.items, []string{"a", "b"}) {
		t.Fatal(r)
	}
	await(t, r2)
	if n := len(down.Batches()); n != 2 {
		t.Fatalf("%d downstream calls, want 2", n)
	}
}

func TestEmbedWithEndedContextIsNotQueued(t *testing.T) {
	down := &fakeDownstream{}
	b := newTestBatcher(t, Config{}, down, newFakeClock())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Embed(ctx, model.Query, [][]byte{[]byte("q")}, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if _, err := b.Embed(itestutil.Context(t), model.Kind(7), nil, 0); err == nil {
		t.Fatal("an unknown kind was accepted")
	}
	if len(down.Batches()) != 0 {
		t.Fatal("sent downstream")
	}
}

func TestMetrics(t *testing.T) {
	ctx := itestutil.Context(t)
	reg := prometheus.NewRegistry()
	b, err := New(Config{Query: ModelConfig{MaxBatchSize: 2}}, Deps{Downstream: &fakeDownstream{}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if _, err := b.Embed(ctx, model.Query, [][]byte{[]byte("a"), []byte("b"), []byte("c")}, 0); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == "fake_query" {
					got[f.GetName()] = true
				}
			}
		}
	}
	for _, name := range []string{"colpali_batcher_batch_size", "colpali_batcher_batch_cost", "colpali_batcher_queue_duration_seconds",
		"colpali_batcher_queue_length", "colpali_batcher_rejections_total", "colpali_batcher_in_flight_batches", "colpali_batcher_backend_duration_seconds"} {
		if !got[name] {
			t.Errorf("no %s{model=\"fake_query\"}", name)
		}
	}
	for _, f := range families {
		if f.GetName() == "colpali_batcher_batch_size" {
			if n := len(f.GetMetric()); n != 2 {
				t.Errorf("batch_size series %d, want one per model", n)
			}
			for _, m := range f.GetMetric() {
				if m.GetLabel()[0].GetValue() == "fake_query" && m.GetHistogram().GetSampleCount() != 2 {
					t.Errorf("query batches %d, want 2 (3 items, max-batch-size 2)", m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	if _, err := New(Config{}, Deps{Downstream: &fakeDownstream{}, Registry: reg}); err == nil {
		t.Error("a second batcher on the same registry was accepted")
	}
}

// rejections reads colpali_batcher_rejections_total{model, reason} from reg.
func rejections(t *testing.T, reg *prometheus.Registry, modelName, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "colpali_batcher_rejections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == modelName && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no rejections{model=%q, reason=%q}", modelName, reason)
	return 0
}

// TestCancellationStormLeavesNothing: hundreds of callers give up while the
// backend is stuck; afterwards the queue holds nothing of them (no request,
// no timeout entry) and none of them was sent.
func TestCancellationStormLeavesNothing(t *testing.T) {
	ctx := itestutil.Context(t)
	g := newGate()
	down := &fakeDownstream{embed: g.embed}
	b := newTestBatcher(t, Config{Query: ModelConfig{MaxInFlightBatches: 1}}, down, SystemClock{})
	blocker := embedAsync(ctx, b, model.Query, "busy")
	g.waitEntered(t)
	const callers = 500
	storm, cancel := context.WithCancel(ctx)
	results := make([]<-chan result, callers)
	for i := range results {
		results[i] = embedAsync(storm, b, model.Query, "gone", "too")
	}
	waitFor(t, "some callers queued", func() bool { return queued(b, model.Query) > callers/10 })
	cancel()
	for i, ch := range results {
		if r := await(t, ch); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("caller %d: %v, want Canceled", i, r.err)
		}
	}
	q := queueOf(b, model.Query)
	q.mu.Lock()
	left := q.queued + len(q.timeouts)
	for _, l := range q.lists() {
		left += l.Len()
	}
	q.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d queue entries left after every caller gave up", left)
	}
	g.release <- struct{}{}
	await(t, blocker)
	if got := down.Batches(); len(got) != 1 {
		t.Fatalf("%d batches sent, want only the blocker's", len(got))
	}
}

// TestInFlightScalesWithBackends: the in-flight limit is per ready backend,
// so three backends take three batches at once where one takes one.
func TestInFlightScalesWithBackends(t *testing.T) {
	for _, backends := range []int{1, 3} {
		t.Run(fmt.Sprint(backends, "backends"), func(t *testing.T) {
			g := newGate()
			down := &fakeDownstream{embed: g.embed}
			// Batches of one leave at once under the static policy, so
			// only the in-flight limit holds calls back.
			cfg := Config{Mode: ModeStatic}
			cfg.Query.MaxBatchSize = 1
			cfg.Query.MaxInFlightBatches = 1
			b, err := New(cfg, Deps{Downstream: down, Logger: itestutil.Logger(t),
				Backends: func(model.Kind) int { return backends }})
			if err != nil {
				t.Fatal(err)
			}
			ctx := itestutil.Context(t)
			var calls []<-chan result
			for i := range 4 {
				calls = append(calls, embedAsync(ctx, b, model.Query, fmt.Sprint("q", i)))
			}
			for range backends {
				g.waitEntered(t)
			}
			waitQueued(t, b, model.Query, 4-backends)
			if got := len(down.Batches()); got != backends {
				t.Errorf("batches in flight = %d, want %d", got, backends)
			}
			for range 4 {
				g.release <- struct{}{}
			}
			for _, c := range calls {
				if r := await(t, c); r.err != nil {
					t.Error(r.err)
				}
			}
			if err := b.Close(ctx); err != nil {
				t.Error(err)
			}
		})
	}
}
