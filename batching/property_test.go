package batching

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
)

// errInjected is the downstream failure the property test injects.
var errInjected = errors.New("injected backend failure")

// scenario is one random run: a random configuration, a downstream with
// random latency and failures, and clients sending random requests with
// random cancellations and deadlines.
type scenario struct {
	cfg      ModelConfig
	mode     Mode
	clients  int
	requests int // per client
	failRate float64
	seed     uint64
}

func randomScenario(seed uint64, mode Mode) scenario {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	levels := 1 + rng.IntN(3)
	cfg := ModelConfig{
		MaxBatchSize:         1 + rng.IntN(8),
		ItemCost:             1 + rng.IntN(4),
		MaxQueueDelay:        time.Duration(50+rng.IntN(2000)) * time.Microsecond,
		PriorityLevels:       levels,
		DefaultPriority:      1 + rng.IntN(levels),
		MaxQueueSize:         1 + rng.IntN(40),
		QueueTimeout:         time.Duration(1+rng.IntN(30)) * time.Millisecond,
		TimeoutAction:        []TimeoutAction{TimeoutReject, TimeoutDelay}[rng.IntN(2)],
		AllowTimeoutOverride: rng.IntN(2) == 0,
		LatencyTarget:        time.Duration(1+rng.IntN(20)) * time.Millisecond,
		MaxInFlightBatches:   1 + rng.IntN(3),
	}
	cfg.MaxBatchCost = cfg.ItemCost + rng.IntN(40)
	if rng.IntN(2) == 0 {
		cfg.PreferredBatchSizes = []int{1 + rng.IntN(cfg.MaxBatchSize)}
	}
	return scenario{cfg: cfg, mode: mode, clients: 4 + rng.IntN(24), requests: 1 + rng.IntN(12), failRate: rng.Float64() * 0.3, seed: seed}
}

// run plays s and checks that every caller got exactly its own rows, in
// order, or an error it may get, and that the batcher ends empty.
func (s scenario) run(t *testing.T) {
	ctx := testutil.Context(t)
	var rngMu sync.Mutex
	rng := rand.New(rand.NewPCG(s.seed, 0xd0))
	random := func(n int) int {
		rngMu.Lock()
		defer rngMu.Unlock()
		return rng.IntN(n)
	}
	down := &fakeDownstream{embed: func(ctx context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		if len(items) > s.cfg.MaxBatchSize {
			return nil, fmt.Errorf("batch of %d over max-batch-size %d", len(items), s.cfg.MaxBatchSize)
		}
		timer := time.NewTimer(time.Duration(random(1000)) * time.Microsecond)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		switch r := random(1000); {
		case float64(r) < s.failRate*1000:
			return nil, fmt.Errorf("batch of %d: %w", len(items), errInjected)
		case r == 999:
			return echoEmbeddings(items[1:]), nil // one row short
		}
		return echoEmbeddings(items), nil
	}}
	b, err := New(Config{Mode: s.mode, Query: s.cfg}, Deps{Downstream: down})
	if err != nil {
		t.Fatalf("config %+v: %v", s.cfg, err)
	}

	var wg sync.WaitGroup
	for c := range s.clients {
		wg.Go(func() {
			for r := range s.requests {
				items := make([][]byte, 1+random(10))
				for i := range items {
					items[i] = fmt.Appendf(nil, "c%dr%di%d%s", c, r, i, make([]byte, random(12)))
				}
				priority := random(s.cfg.PriorityLevels + 1)
				callCtx := ctx
				var cancel context.CancelFunc = func() {}
				switch random(10) {
				case 0, 1, 2: // canceled after a random while
					var cancelNow context.CancelFunc
					callCtx, cancelNow = context.WithCancel(callCtx)
					timer := time.AfterFunc(time.Duration(random(3000))*time.Microsecond, cancelNow)
					cancel = func() { timer.Stop(); cancelNow() }
				case 3, 4: // a short deadline
					callCtx, cancel = context.WithTimeout(callCtx, time.Duration(random(5000))*time.Microsecond)
				}
				embs, err := b.Embed(callCtx, model.Query, items, priority)
				if msg := s.check(callCtx, items, embs, err); msg != "" {
					t.Errorf("seed %d, config %+v: client %d request %d: %s", s.seed, s.cfg, c, r, msg)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	q := queueOf(b, model.Query)
	if q == nil {
		return // ModeNone has no queue to be left in
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.queued != 0 || q.inFlight != 0 || len(q.timeouts) != 0 || q.delayed.Len() != 0 {
		t.Errorf("seed %d: batcher not empty at the end: %d queued, %d in flight, %d timeouts, %d delayed", s.seed, q.queued, q.inFlight, len(q.timeouts), q.delayed.Len())
	}
}

// check returns what is wrong with one call's outcome, or "".
func (s scenario) check(ctx context.Context, items [][]byte, embs []model.Embedding, err error) string {
	if err == nil {
		want := make([]string, len(items))
		for i, it := range items {
			want[i] = string(it)
		}
		if got := decodeEcho(embs); !slices.Equal(got, want) {
			return fmt.Sprintf("got rows of %q, want %q", got, want)
		}
		return ""
	}
	switch {
	case errors.Is(err, context.Canceled):
		if ctx.Err() == nil {
			return fmt.Sprintf("canceled (%v) but its context was not", err)
		}
	case errors.Is(err, context.DeadlineExceeded):
		// Either its own deadline, or that of the batch, which is the
		// latest of its members': past either way.
		if d, ok := ctx.Deadline(); !ok || time.Now().Before(d) {
			return fmt.Sprintf("deadline exceeded (%v) before its deadline", err)
		}
	case errors.Is(err, ErrQueueFull), errors.Is(err, errInjected), errors.Is(err, ErrBadDownstream):
	case errors.Is(err, ErrQueueTimeout):
		if s.cfg.TimeoutAction == TimeoutDelay {
			return fmt.Sprintf("queue timeout (%v) under timeout-action delay", err)
		}
	default:
		return fmt.Sprintf("unexpected error %v", err)
	}
	if embs != nil {
		return "rows returned with an error"
	}
	return ""
}

func TestPropertyRandomTraffic(t *testing.T) {
	seeds := 8
	if testing.Short() {
		seeds = 3
	}
	for _, mode := range []Mode{ModeAdaptive, ModeStatic, ModeNone} {
		for seed := range uint64(seeds) {
			t.Run(fmt.Sprintf("%s/seed=%d", mode, seed), func(t *testing.T) {
				randomScenario(seed, mode).run(t)
			})
		}
	}
}

// FuzzBatcher explores more scenarios with `go test -fuzz FuzzBatcher
// ./batching`; its seeds run with every go test.
func FuzzBatcher(f *testing.F) {
	f.Add(uint64(100), uint8(0))
	f.Add(uint64(101), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, mode uint8) {
		randomScenario(seed, []Mode{ModeAdaptive, ModeStatic, ModeNone}[int(mode)%3]).run(t)
	})
}
