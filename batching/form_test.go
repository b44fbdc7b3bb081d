package batching

import (
	"container/list"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/morphik-org/colpali-gateway/model"
)

// The batch the policy is shown (view) is the batch take sends when the
// policy sends all of it: random queues, some callers gone, checked
// without a dispatcher so that nothing moves between the two.
func TestViewIsTheBatchTakeSends(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 0xf0))
		cfg := Config{Query: ModelConfig{
			MaxBatchSize:   1 + rng.IntN(8),
			ItemCost:       1 + rng.IntN(4),
			PriorityLevels: 1 + rng.IntN(3),
		}}.WithDefaults().Query
		cfg.MaxBatchCost = cfg.ItemCost + rng.IntN(40)
		m, err := newMetrics(nil)
		if err != nil {
			t.Fatal(err)
		}
		clock := newFakeClock()
		q := &queue{
			laneParams: laneParams{kind: model.Query, name: "m", cfg: cfg, clock: clock, metrics: m.forModel("m")},
			policy:     newStaticPolicy(cfg),
			wake:       make(chan struct{}, 1),
			delayed:    list.New(),
		}
		for range cfg.PriorityLevels {
			q.levels = append(q.levels, list.New())
		}
		gone, cancel := context.WithCancel(context.Background())
		cancel()
		for i := range rng.IntN(12) {
			ctx := context.Background()
			if rng.IntN(4) == 0 {
				ctx = gone
			}
			items := make([][]byte, 1+rng.IntN(6))
			for j := range items {
				items[j] = fmt.Appendf(nil, "r%di%d%s", i, j, make([]byte, rng.IntN(20)))
			}
			if err := q.enqueue(q.newRequest(ctx, items, 1+rng.IntN(cfg.PriorityLevels))); err != nil {
				t.Fatal(err)
			}
		}

		q.mu.Lock()
		now := clock.Now()
		v := q.view(now)
		b := q.take(q.policy.limit(), now)
		left := q.queuedItems()
		q.mu.Unlock()

		if v.items != len(b.items) {
			t.Fatalf("seed %d: view saw %d items, take took %d", seed, v.items, len(b.items))
		}
		if len(b.items) > cfg.MaxBatchSize || (len(b.items) > 1 && b.cost > cfg.MaxBatchCost) {
			t.Fatalf("seed %d: batch of %d items costing %d over %d/%d", seed, len(b.items), b.cost, cfg.MaxBatchSize, cfg.MaxBatchCost)
		}
		if want := left > 0 || len(b.items) == q.policy.limit(); v.full != want {
			t.Fatalf("seed %d: view full %v with %d items left and %d taken", seed, v.full, left, len(b.items))
		}
		for i, p := range b.pieces {
			if p.req.ctx.Err() != nil {
				t.Fatalf("seed %d: a gone caller's items were taken", seed)
			}
			if i > 0 && p.req.level < b.pieces[i-1].req.level {
				t.Fatalf("seed %d: level %d taken after level %d", seed, p.req.level, b.pieces[i-1].req.level)
			}
			if p.req.level+1 < b.priority {
				t.Fatalf("seed %d: batch priority %d, but a member is at %d", seed, b.priority, p.req.level+1)
			}
		}
	}
}
