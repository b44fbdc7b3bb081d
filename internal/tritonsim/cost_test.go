package tritonsim

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

func TestCurveInterpolatesAndExtrapolates(t *testing.T) {
	ms := time.Millisecond
	c := Curve{{1, 10 * ms}, {4, 16 * ms}, {8, 40 * ms}}
	for n, want := range map[int]time.Duration{1: 10 * ms, 2: 12 * ms, 4: 16 * ms, 6: 28 * ms, 8: 40 * ms, 10: 52 * ms} {
		if got := c.At(n); got != want {
			t.Errorf("At(%d) = %v, want %v", n, got, want)
		}
	}
	if got := (Curve{{4, 7 * ms}}).At(100); got != 7*ms {
		t.Errorf("one point: At(100) = %v, want the constant 7ms", got)
	}
	// Below the first point, extrapolation never goes negative.
	if got := (Curve{{10, ms}, {20, 100 * ms}}).At(1); got != 0 {
		t.Errorf("At(1) = %v, want 0", got)
	}
}

func TestParseCurve(t *testing.T) {
	c, err := ParseCurve("1:12ms, 8:13ms,64:48ms")
	if err != nil || c.String() != "1:12ms,8:13ms,64:48ms" {
		t.Fatalf("ParseCurve = %v, %v", c, err)
	}
	for in, want := range map[string]string{
		"":                "want batch:duration",
		"8":               "want batch:duration",
		"x:1ms":           "not an integer",
		"1:soon":          "not a duration",
		"4:1ms,2:2ms":     "want increasing batch sizes",
		"0:1ms":           "batch size 0",
		"1:-1ms":          "want 0 or more",
		"1:1ms,1:2ms":     "want increasing",
		"1:1ms,99999:1ms": "batch size 99999",
	} {
		if _, err := ParseCurve(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCurve(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

// TestBenchProfileDisagreesWithThePrior holds the benchmark profile to its
// promise: 2x slower than the router's prior at full batches, and not a
// straight line, so a policy that assumes the prior must learn.
func TestBenchProfileDisagreesWithThePrior(t *testing.T) {
	prior, bench := profiles["linear"], profiles["bench-2x"]
	for _, k := range []struct {
		name       string
		prior, got Curve
		full       int
	}{{"query", prior.Query, bench.Query, 64}, {"image", prior.Image, bench.Image, 16}} {
		ratio := float64(k.got.At(k.full)) / float64(k.prior.At(k.full))
		if ratio < 1.9 || ratio > 2.1 {
			t.Errorf("%s: full batch %v vs prior %v: ratio %.2f, want about 2", k.name, k.got.At(k.full), k.prior.At(k.full), ratio)
		}
		// The straight line through the ends misses some batch size by 20%
		// or more.
		worst, at := 0.0, 0
		for n := 2; n < k.full; n++ {
			line := float64(k.got.At(1)) + float64(k.got.At(k.full)-k.got.At(1))*float64(n-1)/float64(k.full-1)
			if off := math.Abs(float64(k.got.At(n))-line) / line; off > worst {
				worst, at = off, n
			}
		}
		if worst < 0.2 {
			t.Errorf("%s: at most %.0f%% (batch %d) from a straight line: not non-linear enough", k.name, worst*100, at)
		}
	}
	for _, p := range Profiles() {
		if p.Description == "" || p.Query.validate() != nil || p.Image.validate() != nil {
			t.Errorf("profile %q is incomplete or invalid", p.Name)
		}
	}
}

func TestJitterAndStallsAreSeededAndMeanPreserving(t *testing.T) {
	cm := &costModel{query: Line(10*time.Millisecond, 0), image: Line(100*time.Millisecond, 0), speed: 1,
		sigma: 0.3, stallP: 0.01, stallDuration: time.Second, seed: 42}
	const n = 20000
	var sum float64
	stalls := 0
	for seq := range uint64(n) {
		d, stalled := cm.duration(model.Query, 1, seq)
		again, _ := cm.duration(model.Query, 1, seq)
		if d != again {
			t.Fatalf("batch %d: %v then %v under one seed", seq, d, again)
		}
		if stalled {
			stalls++
			d -= time.Second
		}
		sum += float64(d)
	}
	if mean := time.Duration(sum / n); mean < 9800*time.Microsecond || mean > 10200*time.Microsecond {
		t.Errorf("mean %v, want about 10ms: jitter must not change the mean", mean)
	}
	if stalls < n/100/2 || stalls > n/100*2 {
		t.Errorf("%d stalls in %d batches, want about 1%%", stalls, n)
	}
	// Another seed, another sequence; the image model has its own stream.
	other := *cm
	other.seed = 43
	a, _ := cm.duration(model.Query, 1, 7)
	b, _ := other.duration(model.Query, 1, 7)
	c, _ := cm.duration(model.Image, 1, 7)
	if a == b || float64(c)/float64(a) == 10 {
		t.Errorf("seeds or models share draws: %v %v %v", a, b, c)
	}
	// No jitter, no stalls: the curve exactly.
	plain := &costModel{query: Line(10*time.Millisecond, time.Millisecond), speed: 2}
	if d, _ := plain.duration(model.Query, 4, 0); d != 7*time.Millisecond {
		t.Errorf("plain duration %v, want (10ms + 4ms) / 2", d)
	}
}
