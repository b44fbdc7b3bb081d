package batching

import (
	"testing"
	"time"
)

func TestLatencyModelFitsBasePlusPerItem(t *testing.T) {
	var m latencyModel
	if m.predict(8) != 0 {
		t.Fatal("an empty model predicted a latency")
	}
	for range 50 {
		for _, n := range []int{1, 8, 32, 64} {
			m.observe(n, 5*time.Millisecond+time.Duration(n)*300*time.Microsecond)
		}
	}
	for _, n := range []int{1, 16, 64, 100} {
		want := 5*time.Millisecond + time.Duration(n)*300*time.Microsecond
		if got := m.predict(n); got < want-50*time.Microsecond || got > want+50*time.Microsecond {
			t.Errorf("predict(%d) = %v, want %v", n, got, want)
		}
	}
	// One batch size only: no slope can be fitted; the mean stands.
	var flat latencyModel
	flat.observe(4, 10*time.Millisecond)
	if got := flat.predict(40); got != 10*time.Millisecond {
		t.Errorf("single-size model predicts %v, want the mean 10ms", got)
	}
}

func TestAdaptiveLimitIsAIMD(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	a := newAdaptivePolicy(ModelConfig{MaxBatchSize: 64, LatencyTarget: ms(50), MaxQueueDelay: ms(5)})
	for _, step := range []struct {
		what                      string
		n                         int
		service, latency, backlog int
		want                      int
	}{
		{"starts at max-batch-size", 0, 0, 0, 0, 64},
		{"over target, mostly the batch: 90% of it", 64, 40, 70, 0, 57},
		{"within target, not at the limit: no change", 10, 10, 20, 0, 57},
		{"within target at the limit: +64/16", 57, 20, 45, 0, 61},
		{"over target, mostly the queue, no full batch waiting: hold", 61, 20, 90, 10, 61},
		{"over target, mostly the queue, a full batch waits: grow", 61, 20, 90, 200, 64},
		{"never past max-batch-size", 64, 20, 90, 200, 64},
		{"a slow batch of 1: down to 1", 1, 1000, 1000, 0, 1},
		{"and up again", 1, 5, 10, 0, 5},
	} {
		if step.n > 0 {
			a.completed(step.n, ms(step.service), ms(step.latency), step.backlog)
		}
		if a.limit() != step.want {
			t.Fatalf("%s: limit %d, want %d", step.what, a.limit(), step.want)
		}
	}
}

func TestAdaptiveDelayOnlyWhenBusy(t *testing.T) {
	cfg := ModelConfig{MaxBatchSize: 64, LatencyTarget: 100 * time.Millisecond, MaxQueueDelay: 5 * time.Millisecond}
	now := time.Unix(1000, 0)
	train := func(a *adaptivePolicy) {
		for range 40 {
			for _, n := range []int{1, 32} {
				a.completed(n, 5*time.Millisecond+time.Duration(n)*300*time.Microsecond, 10*time.Millisecond, 0)
			}
		}
	}

	// 20 items/s: at batch size 2 the backend would be ~6% busy: send now.
	idle := newAdaptivePolicy(cfg)
	train(idle)
	for i := range 10 {
		idle.arrived(now.Add(time.Duration(i)*50*time.Millisecond), 1)
	}
	last := now.Add(450 * time.Millisecond)
	if send, _ := idle.decide(view{now: last, items: 2, oldest: last}); send != 2 {
		t.Fatalf("low load: send %d, want 2 at once", send)
	}
	// The same with a batch in flight: it would wait behind it anyway.
	if send, wait := idle.decide(view{now: last, items: 2, oldest: last, inFlight: 1}); send != 0 || wait != cfg.MaxQueueDelay {
		t.Fatalf("low load, backend busy: send %d wait %v, want to wait %v", send, wait, cfg.MaxQueueDelay)
	}

	// 5000 items/s: one item alone would need the backend 26 times over:
	// wait, but no longer than max-queue-delay.
	busy := newAdaptivePolicy(cfg)
	train(busy)
	for i := range 100 {
		busy.arrived(now.Add(time.Duration(i)*200*time.Microsecond), 1)
	}
	last = now.Add(99 * 200 * time.Microsecond)
	send, wait := busy.decide(view{now: last, items: 1, oldest: last})
	if send != 0 || wait <= 0 || wait > cfg.MaxQueueDelay {
		t.Fatalf("high load: send %d, wait %v; want a wait up to %v", send, wait, cfg.MaxQueueDelay)
	}
	// The oldest has waited the whole max-queue-delay: no more waiting.
	if send, _ := busy.decide(view{now: last, items: 3, oldest: last.Add(-cfg.MaxQueueDelay)}); send != 3 {
		t.Fatalf("after max-queue-delay: send %d, want 3", send)
	}
	// A full batch never waits.
	if send, _ := busy.decide(view{now: last, items: 64, full: true, oldest: last}); send != 64 {
		t.Fatalf("full batch: send %d", send)
	}
	// Nothing measured yet: never hold requests back.
	fresh := newAdaptivePolicy(cfg)
	fresh.arrived(now, 1000)
	if send, _ := fresh.decide(view{now: now, items: 1, oldest: now}); send != 1 {
		t.Fatalf("untrained: send %d, want 1", send)
	}
}

func TestStaticPolicy(t *testing.T) {
	now := time.Unix(1000, 0)
	s := newStaticPolicy(ModelConfig{MaxBatchSize: 16, MaxQueueDelay: 10 * time.Millisecond, PreferredBatchSizes: []int{8, 4, 8}})
	for _, tc := range []struct {
		name string
		v    view
		send int
		wait time.Duration
	}{
		{"waits for more", view{now: now, items: 3, oldest: now.Add(-4 * time.Millisecond)}, 0, 6 * time.Millisecond},
		{"preferred size", view{now: now, items: 5, oldest: now}, 4, 0},
		{"largest preferred size", view{now: now, items: 9, oldest: now}, 8, 0},
		{"delay over", view{now: now, items: 3, oldest: now.Add(-10 * time.Millisecond)}, 3, 0},
		{"full", view{now: now, items: 16, full: true, oldest: now}, 16, 0},
		{"draining", view{now: now, items: 2, draining: true, oldest: now}, 2, 0},
	} {
		send, wait := s.decide(tc.v)
		if send != tc.send || wait != tc.wait {
			t.Errorf("%s: send %d wait %v, want %d %v", tc.name, send, wait, tc.send, tc.wait)
		}
	}
}

func TestServiceTimeExcludesWaitBehindThePreviousBatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	if got := serviceTime(ms(0), ms(30), ms(20)); got != 10*time.Millisecond {
		t.Errorf("pipelined: %v, want 10ms since the previous answer", got)
	}
	if got := serviceTime(ms(10), ms(30), ms(5)); got != 20*time.Millisecond {
		t.Errorf("alone: %v, want the whole 20ms latency", got)
	}
}
