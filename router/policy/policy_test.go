package policy_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router/policy"
	"github.com/morphik-org/colpali-gateway/router/policy/gpuaware"
	"github.com/morphik-org/colpali-gateway/router/policy/leastoutstanding"
	"github.com/morphik-org/colpali-gateway/router/policy/roundrobin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fake is a Candidate with fixed figures: inFlight, cost, spc and at are
// the query model's, image the page model's when set.
type fake struct {
	addr     string
	inFlight int64
	cost     float64
	spc      float64
	image    *policy.Load
	gpu      *gpu.Stats
	at       time.Time
}

var _ policy.Candidate = (*fake)(nil)

func (f *fake) Addr() string { return f.addr }
func (f *fake) InFlight() int64 {
	if f.image != nil {
		return f.inFlight + f.image.InFlight
	}
	return f.inFlight
}

func (f *fake) Load(k model.Kind) policy.Load {
	if k == model.Image {
		if f.image == nil {
			return policy.Load{}
		}
		l := *f.image
		if l.MeasuredAt.IsZero() && l.SecondsPerCost > 0 {
			l.MeasuredAt = time.Now()
		}
		return l
	}
	at := f.at
	if at.IsZero() && f.spc > 0 {
		at = time.Now()
	}
	return policy.Load{InFlight: f.inFlight, InFlightCost: f.cost, SecondsPerCost: f.spc, MeasuredAt: at}
}

func (f *fake) GPU() (gpu.Stats, bool) {
	if f.gpu == nil {
		return gpu.Stats{}, false
	}
	return *f.gpu, true
}

var batch = policy.Batch{Kind: model.Query, Model: "colpali_query", Cost: 5}

// queueStats is telemetry with the query model's queue figures.
func queueStats(pending float64, queue time.Duration) *gpu.Stats {
	return &gpu.Stats{Pending: pending, QueueTimePerRequest: queue, Models: map[string]gpu.ModelStats{
		"colpali_query": {Reported: gpu.FieldQueue | gpu.FieldRates, Pending: pending, QueueTimePerRequest: queue},
	}}
}

func TestRoundRobinRotates(t *testing.T) {
	p := roundrobin.New()
	cands := []policy.Candidate{&fake{addr: "a"}, &fake{addr: "b"}, &fake{addr: "c"}}
	counts := map[int]int{}
	for range 30 {
		i, est := p.Pick(cands, batch)
		counts[i]++
		if est != 0 {
			t.Fatalf("round robin estimated %v", est)
		}
	}
	if counts[0] != 10 || counts[1] != 10 || counts[2] != 10 {
		t.Errorf("picks %v, want 10 each", counts)
	}
	if p.Name() != "round_robin" {
		t.Errorf("name %q", p.Name())
	}
}

func TestLeastOutstanding(t *testing.T) {
	p := leastoutstanding.New()
	cands := []policy.Candidate{&fake{inFlight: 3}, &fake{inFlight: 1}, &fake{inFlight: 2}}
	for range 5 {
		if i, _ := p.Pick(cands, batch); i != 1 {
			t.Fatalf("picked %d, want 1 (fewest in flight)", i)
		}
	}
	// Ties are spread.
	tied := []policy.Candidate{&fake{}, &fake{}}
	seen := map[int]bool{}
	for range 4 {
		i, _ := p.Pick(tied, batch)
		seen[i] = true
	}
	if len(seen) != 2 {
		t.Errorf("ties always went to %v", seen)
	}
}

func TestGPUAwareEstimates(t *testing.T) {
	p, err := gpuaware.New(gpuaware.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cands []policy.Candidate
		want  int
		est   time.Duration
	}{
		{
			// 3 ms/unit x (0+5) = 15 ms against 1 ms/unit x (5+5) = 10 ms.
			name:  "a fast busy backend beats a slow idle one",
			cands: []policy.Candidate{&fake{spc: 0.003}, &fake{spc: 0.001, inFlight: 1, cost: 5}},
			want:  1, est: 10 * time.Millisecond,
		},
		{
			// 1 ms x (15+5) = 20 ms against 3 ms x 5 = 15 ms.
			name:  "until it is busy enough",
			cands: []policy.Candidate{&fake{spc: 0.003}, &fake{spc: 0.001, inFlight: 3, cost: 15}},
			want:  0, est: 15 * time.Millisecond,
		},
		{
			// The unmeasured one borrows the mean, 2 ms: 10 ms against 15.
			name:  "an unmeasured backend is assumed average",
			cands: []policy.Candidate{&fake{spc: 0.003}, &fake{}, &fake{spc: 0.001, inFlight: 1, cost: 10}},
			want:  1, est: 10 * time.Millisecond,
		},
		{
			// Its 3 ms/unit is old: it is taken as the mean, 2 ms: 10 ms
			// against 1 ms x (6+5) = 11 ms.
			name:  "an old figure is remeasured",
			cands: []policy.Candidate{&fake{spc: 0.003, at: time.Now().Add(-time.Minute)}, &fake{spc: 0.001, inFlight: 1, cost: 6}},
			want:  0, est: 10 * time.Millisecond,
		},
		{
			// Others' queue: all 10 pending are foreign, 50 ms each.
			name: "foreign queue time counts",
			cands: []policy.Candidate{
				&fake{spc: 0.001, gpu: queueStats(10, 50*time.Millisecond)},
				&fake{spc: 0.003},
			},
			want: 1, est: 15 * time.Millisecond,
		},
		{
			// Our own 10 in flight explain the 10 pending: no foreign wait.
			name: "our own queue is not counted twice",
			cands: []policy.Candidate{
				&fake{spc: 0.001, inFlight: 10, cost: 5, gpu: queueStats(10, 50*time.Millisecond)},
				&fake{spc: 0.003},
			},
			want: 0, est: 10 * time.Millisecond,
		},
		{
			// u = 0.9 adds 5 ms x 9; the other is 3x slower but idle.
			name: "utilisation stands in when no queue figure exists",
			cands: []policy.Candidate{
				&fake{spc: 0.001, gpu: &gpu.Stats{Utilization: 0.95}},
				&fake{spc: 0.003, gpu: &gpu.Stats{Utilization: 0}},
			},
			want: 1, est: 15 * time.Millisecond,
		},
		{
			// 1 ms x 5 + 2 ms x 115 of pages ahead on the same GPU = 235 ms,
			// against 3 ms x 5 = 15 ms.
			name: "a backend busy with page batches gets no queries",
			cands: []policy.Candidate{
				&fake{spc: 0.001, image: &policy.Load{InFlight: 1, InFlightCost: 115, SecondsPerCost: 0.002}},
				&fake{spc: 0.003},
			},
			want: 1, est: 15 * time.Millisecond,
		},
		{
			// Summed over models, 10 pending waited 400 ms; the queries
			// alone, 1 pending and 1 ms: 5 + 1 ms against 10 ms.
			name: "the queue figures are the batch's model's",
			cands: []policy.Candidate{
				&fake{spc: 0.001, gpu: &gpu.Stats{Pending: 10, QueueTimePerRequest: 400 * time.Millisecond, Models: map[string]gpu.ModelStats{
					"colpali_query": {Reported: gpu.FieldQueue | gpu.FieldRates, Pending: 1, QueueTimePerRequest: time.Millisecond},
					"colpali_image": {Reported: gpu.FieldQueue | gpu.FieldRates, Pending: 9, QueueTimePerRequest: 450 * time.Millisecond},
				}}},
				&fake{spc: 0.002},
			},
			want: 0, est: 6 * time.Millisecond,
		},
		{
			name: "short of GPU memory is avoided",
			cands: []policy.Candidate{
				&fake{spc: 0.001, gpu: &gpu.Stats{MemoryUsed: 79, MemoryTotal: 80}},
				&fake{spc: 0.003, inFlight: 5, cost: 25, gpu: &gpu.Stats{MemoryUsed: 40, MemoryTotal: 80}},
			},
			want: 1, est: 90 * time.Millisecond,
		},
		{
			name: "unless every backend is",
			cands: []policy.Candidate{
				&fake{spc: 0.001, gpu: &gpu.Stats{MemoryUsed: 79, MemoryTotal: 80}},
				&fake{spc: 0.003, gpu: &gpu.Stats{MemoryUsed: 80, MemoryTotal: 80}},
			},
			want: 0, est: 5 * time.Millisecond,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, est := p.Pick(tc.cands, batch)
			if i != tc.want {
				t.Errorf("picked %d, want %d", i, tc.want)
			}
			if d := est - tc.est; d > time.Microsecond || d < -time.Microsecond {
				t.Errorf("estimate %v, want %v", est, tc.est)
			}
		})
	}
}

// Each model learns its own speed: a backend fast on queries and slow on
// pages gets the queries and not the pages.
func TestGPUAwarePerModelSpeed(t *testing.T) {
	p, err := gpuaware.New(gpuaware.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cands := []policy.Candidate{
		&fake{spc: 0.001, image: &policy.Load{SecondsPerCost: 0.004}},
		&fake{spc: 0.002, image: &policy.Load{SecondsPerCost: 0.002}},
	}
	if i, est := p.Pick(cands, batch); i != 0 || est != 5*time.Millisecond {
		t.Errorf("query batch: picked %d (%v), want 0 (5ms)", i, est)
	}
	pages := policy.Batch{Kind: model.Image, Model: "colpali_image", Items: 4, Cost: 100}
	if i, est := p.Pick(cands, pages); i != 1 || est != 200*time.Millisecond {
		t.Errorf("page batch: picked %d (%v), want 1 (200ms)", i, est)
	}
	// A model nobody has measured borrows the configured prior, not the
	// other model's figures.
	cands = []policy.Candidate{&fake{spc: 0.01}, &fake{spc: 0.01, image: &policy.Load{InFlight: 1, InFlightCost: 10}}}
	if i, est := p.Pick(cands, pages); i != 0 || est != 100*time.Millisecond {
		t.Errorf("unmeasured page model: picked %d (%v), want 0 (100ms at the 1ms prior)", i, est)
	}
}

func TestGPUAwareConfig(t *testing.T) {
	if _, err := gpuaware.New(gpuaware.Config{MinFreeMemoryFraction: 1.5}); err == nil {
		t.Error("accepted a free memory fraction of 1.5")
	}
	if _, err := gpuaware.New(gpuaware.Config{SecondsPerCost: -1}); err == nil {
		t.Error("accepted a negative prior")
	}
}
