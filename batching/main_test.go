package batching

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a Clock that moves only when a test calls Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

var _ Clock = (*fakeClock)(nil)

// newFakeClock starts at the real time, so that callers' real deadlines
// and the fake clock's times are comparable.
func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer() Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock by d and fires every timer that is due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if t.armed && !t.at.After(c.now) {
			t.armed = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

// armedAt returns the earliest time a timer is armed for.
func (c *fakeClock) armedAt() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	found := false
	for _, t := range c.timers {
		if t.armed && (!found || t.at.Before(at)) {
			at, found = t.at, true
		}
	}
	return at, found
}

// waitArmed waits until a timer is armed for exactly at.
func (c *fakeClock) waitArmed(t *testing.T, at time.Time) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a timer armed for +%v", at.Sub(c.Now())), func() bool {
		got, ok := c.armedAt()
		return ok && got.Equal(at)
	})
}

type fakeTimer struct {
	clock *fakeClock
	ch    chan time.Time
	at    time.Time
	armed bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Reset(d time.Duration) {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.drain()
	t.at, t.armed = t.clock.now.Add(d), true
}

func (t *fakeTimer) Stop() {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.drain()
	t.armed = false
}

func (t *fakeTimer) drain() {
	select {
	case <-t.ch:
	default:
	}
}

// waitFor waits for cond; see testutil.Eventually.
var waitFor = testutil.Eventually

// fakeDownstream records every batch and its priority and answers with
// embed, or by default with echoEmbeddings.
type fakeDownstream struct {
	embed func(ctx context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error)

	mu         sync.Mutex
	batches    [][]string
	priorities []int
}

var _ Downstream = (*fakeDownstream)(nil)

func (f *fakeDownstream) Embed(ctx context.Context, kind model.Kind, items [][]byte, priority int) ([]model.Embedding, error) {
	f.mu.Lock()
	b := make([]string, len(items))
	for i, it := range items {
		b[i] = string(it)
	}
	f.batches = append(f.batches, b)
	f.priorities = append(f.priorities, priority)
	f.mu.Unlock()
	if f.embed != nil {
		return f.embed(ctx, kind, items)
	}
	return echoEmbeddings(items), nil
}

func (f *fakeDownstream) ModelName(kind model.Kind) string { return "fake_" + kind.String() }

// Batches returns a copy of the batches seen so far.
func (f *fakeDownstream) Batches() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]string, len(f.batches))
	for i, b := range f.batches {
		out[i] = slices.Clone(b)
	}
	return out
}

// Priorities returns the priority of every batch seen so far.
func (f *fakeDownstream) Priorities() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.priorities)
}

// echoEmbeddings returns, for each item, one row whose values are the
// item's bytes: a caller can tell its own rows from anyone else's.
func echoEmbeddings(items [][]byte) []model.Embedding {
	out := make([]model.Embedding, len(items))
	for i, it := range items {
		v := make([]float32, len(it))
		for j, c := range it {
			v[j] = float32(c)
		}
		out[i] = model.Embedding{Rows: 1, Dim: len(it), Values: v}
	}
	return out
}

// decodeEcho turns echoEmbeddings' rows back into the items.
func decodeEcho(embs []model.Embedding) []string {
	out := make([]string, len(embs))
	for i, e := range embs {
		b := make([]byte, len(e.Values))
		for j, v := range e.Values {
			b[j] = byte(v)
		}
		out[i] = string(b)
	}
	return out
}

// gate blocks downstream calls until released, one release per call.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 1024), release: make(chan struct{}, 1024)}
}

// embed blocks until released or ctx ends, then echoes.
func (g *gate) embed(ctx context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
		return echoEmbeddings(items), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gate) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no downstream call arrived")
	}
}

// newTestBatcher starts a batcher over down, closed in t.Cleanup.
func newTestBatcher(t *testing.T, cfg Config, down Downstream, clock Clock) *Batcher {
	t.Helper()
	b, err := New(cfg, Deps{Downstream: down, Clock: clock, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// result is one Embed call's outcome.
type result struct {
	items []string
	err   error
}

// embedAsync calls Embed at the default priority in a goroutine and
// delivers the outcome.
func embedAsync(ctx context.Context, b *Batcher, kind model.Kind, items ...string) <-chan result {
	return embedAsyncAt(ctx, b, kind, 0, items...)
}

// embedAsyncAt is embedAsync at priority.
func embedAsyncAt(ctx context.Context, b *Batcher, kind model.Kind, priority int, items ...string) <-chan result {
	ch := make(chan result, 1)
	raw := make([][]byte, len(items))
	for i, s := range items {
		raw[i] = []byte(s)
	}
	go func() {
		embs, err := b.Embed(ctx, kind, raw, priority)
		ch <- result{items: decodeEcho(embs), err: err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Embed did not return")
		return result{}
	}
}

// queueOf is kind's batching queue; nil in ModeNone, which has none.
func queueOf(b *Batcher, kind model.Kind) *queue {
	q, _ := b.queues[kind].(*queue)
	return q
}

// queued returns how many requests wait in kind's queue.
func queued(b *Batcher, kind model.Kind) int {
	q := queueOf(b, kind)
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued
}

func waitQueued(t *testing.T, b *Batcher, kind model.Kind, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d queued requests", n), func() bool { return queued(b, kind) == n })
}
