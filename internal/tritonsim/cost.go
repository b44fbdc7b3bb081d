package tritonsim

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

// CurvePoint is the simulated GPU time of one batch of Batch items.
type CurvePoint struct {
	Batch    int
	Duration time.Duration
}

// Curve is a batch cost table: the duration of a batch of n items is
// interpolated linearly between the two points around n, and extrapolated
// along the nearest segment outside them (a single point is a constant).
// Points are sorted by Batch, with distinct sizes. The zero Curve means "not
// set" wherever a Curve is optional.
type Curve []CurvePoint

// Line is the curve of base + n*perItem, the shape of the router's prior.
func Line(base, perItem time.Duration) Curve {
	return Curve{{1, base + perItem}, {2, base + 2*perItem}}
}

// At is the duration of a batch of n items (n >= 1), never negative.
func (c Curve) At(n int) time.Duration {
	if len(c) == 0 {
		return 0
	}
	if len(c) == 1 {
		return c[0].Duration
	}
	i := 1
	for i < len(c)-1 && c[i].Batch < n {
		i++
	}
	a, b := c[i-1], c[i]
	slope := float64(b.Duration-a.Duration) / float64(b.Batch-a.Batch)
	d := float64(a.Duration) + slope*float64(n-a.Batch)
	return time.Duration(max(d, 0))
}

// validate names what is wrong with c.
func (c Curve) validate() error {
	if len(c) == 0 {
		return errors.New("no points")
	}
	for i, p := range c {
		if p.Batch < 1 || p.Batch > maxBatchSizeCap {
			return fmt.Errorf("point %d: batch size %d: want 1 to %d", i+1, p.Batch, maxBatchSizeCap)
		}
		if p.Duration < 0 {
			return fmt.Errorf("point %d: duration %v: want 0 or more", i+1, p.Duration)
		}
		if i > 0 && p.Batch <= c[i-1].Batch {
			return fmt.Errorf("point %d: batch size %d after %d: want increasing batch sizes", i+1, p.Batch, c[i-1].Batch)
		}
	}
	return nil
}

// String formats c as ParseCurve reads it: "1:12ms,8:13ms".
func (c Curve) String() string {
	parts := make([]string, len(c))
	for i, p := range c {
		parts[i] = strconv.Itoa(p.Batch) + ":" + p.Duration.String()
	}
	return strings.Join(parts, ",")
}

// ParseCurve reads a curve written as comma-separated batch:duration
// points, e.g. "1:12ms,8:13ms,64:48ms".
func ParseCurve(s string) (Curve, error) {
	var c Curve
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		size, dur, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("point %q: want batch:duration, e.g. 8:13ms", part)
		}
		n, err := strconv.Atoi(size)
		if err != nil {
			return nil, fmt.Errorf("point %q: batch size is not an integer", part)
		}
		d, err := time.ParseDuration(dur)
		if err != nil {
			return nil, fmt.Errorf("point %q: not a duration such as 13ms", part)
		}
		c = append(c, CurvePoint{n, d})
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Profile is a simulated GPU: the cost curves of the two models on it.
type Profile struct {
	Name        string
	Description string
	Query       Curve
	Image       Curve
}

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

// profiles are the GPU profiles a Config may name. Two are anchored to
// published figures, one is the router's prior, one is built to disagree
// with it. Every shape beyond the cited figures is an assumption, and says
// so.
var profiles = map[string]Profile{
	// The router's default cost prior, 5 ms + 0.3 ms per query and 15 ms +
	// 25 ms per page: an assumption, not a measurement, kept so that older
	// results can be reproduced. A simulator on this profile agrees exactly
	// with the policies it is meant to test, so benchmarks must not use it.
	"linear": {
		Name:        "linear",
		Description: "the router's prior (5ms + 0.3ms/query, 15ms + 25ms/page); an assumption, kept for old results",
		Query:       Line(5*time.Millisecond, 300*time.Microsecond),
		Image:       Line(15*time.Millisecond, 25*time.Millisecond),
	},
	// NVIDIA L4. Batch 1 is from the ColPali paper (Faysse et al. 2024,
	// "ColPali: Efficient Document Retrieval with Vision Language Models",
	// arXiv:2407.01449, latency comparison): about 0.39 s to encode a page
	// and about 30 ms to encode a query on one L4. The batching gains are an
	// assumption: a page is ~1030 tokens through a 3B model, so the L4 is
	// compute-bound from the first page and batching saves little (~12 %);
	// a query is ~20 tokens, so query batches are nearly free up to 16.
	"l4": {
		Name:        "l4",
		Description: "NVIDIA L4: batch 1 from the ColPali paper (0.39 s/page, ~30 ms/query); batching gains assumed",
		Query:       Curve{{1, ms(30)}, {8, ms(32)}, {16, ms(36)}, {32, ms(48)}, {64, ms(75)}},
		Image:       Curve{{1, ms(390)}, {2, ms(720)}, {4, ms(1400)}, {8, ms(2760)}, {16, ms(5500)}},
	},
	// NVIDIA H100 SXM, an estimate and labelled as one: the L4 figures above
	// scaled by the dense BF16 peak ratio of the two data sheets (~989 vs
	// ~121 TFLOPS, about 8x) for pages, which are compute-bound, and by
	// about 2.5x for queries, which are bound by launches and memory at
	// this size. Batching gains are larger than on the L4 because one page
	// does not fill an H100.
	"h100": {
		Name:        "h100",
		Description: "NVIDIA H100 estimate: the l4 profile scaled by the BF16 peak ratio (~8x pages, ~2.5x queries); an assumption",
		Query:       Curve{{1, ms(12)}, {8, ms(13)}, {16, ms(15)}, {32, ms(19)}, {64, ms(28)}},
		Image:       Curve{{1, ms(48)}, {2, ms(80)}, {4, ms(140)}, {8, ms(255)}, {16, ms(480)}},
	},
	// For benchmarks of learning policies: an assumption built to differ
	// from the router's prior in scale (2x slower at full batches: 48 ms vs
	// 24.2 ms for 64 queries, 830 ms vs 415 ms for 16 pages) and in shape
	// (non-linear: adding items is cheap at first, then costs a constant
	// amount each), so that a policy calibrated to the prior is wrong until
	// it learns.
	"bench-2x": {
		Name:        "bench-2x",
		Description: "benchmark profile: 2x slower than the router's prior at full batches and non-linear (cheap small batches, then linear); an assumption",
		Query:       Curve{{1, ms(12)}, {8, ms(12.5)}, {16, ms(16)}, {32, ms(26)}, {64, ms(48)}},
		Image:       Curve{{1, ms(80)}, {2, ms(95)}, {4, ms(160)}, {8, ms(370)}, {16, ms(830)}},
	},
}

// DefaultProfile is the profile of the zero Config.
const DefaultProfile = "h100"

// Profiles returns the known profiles, sorted by name.
func Profiles() []Profile {
	var out []Profile
	for _, name := range slices.Sorted(maps.Keys(profiles)) {
		out = append(out, profiles[name])
	}
	return out
}

// ProfileNames lists the known profile names, sorted.
func ProfileNames() []string { return slices.Sorted(maps.Keys(profiles)) }

// costModel turns a batch into its simulated duration: the curve, divided
// by the speed, times lognormal jitter, plus a rare stall. The random draws
// of a batch depend only on the seed, the model and the batch's sequence
// number within its model, so a run is reproducible whatever the
// interleaving of the two models' batches.
type costModel struct {
	query, image  Curve
	speed         float64
	sigma         float64
	stallP        float64
	stallDuration time.Duration
	seed          uint64
}

// duration is the simulated time of the seq-th batch (from 0) of n items of
// kind, and whether it stalled.
func (c *costModel) duration(k model.Kind, n int, seq uint64) (time.Duration, bool) {
	curve := c.query
	stream := uint64(0)
	if k == model.Image {
		curve = c.image
		stream = 1
	}
	d := float64(curve.At(n)) / c.speed
	if c.sigma == 0 && c.stallP == 0 {
		return time.Duration(d), false
	}
	r := rand.New(rand.NewPCG(splitMix(c.seed^stream), splitMix(seq))) // #nosec G404 -- simulated cost jitter, reproducible from a seed; no secret
	if c.sigma > 0 {
		// Mean-preserving: E[exp(sigma*Z - sigma^2/2)] = 1, so jitter widens
		// the distribution without changing the throughput.
		d *= math.Exp(c.sigma*r.NormFloat64() - c.sigma*c.sigma/2)
	}
	stalled := c.stallP > 0 && r.Float64() < c.stallP
	if stalled {
		d += float64(c.stallDuration)
	}
	return time.Duration(d), stalled
}
