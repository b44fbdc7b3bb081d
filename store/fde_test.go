package store

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/morphik-org/colpali-gateway/model"
)

// referenceFDE is the encoding as first written (and stored by every
// gateway since): each vector projected in every repetition, blocks the
// means of the projections. page must agree with it, or stored pages and
// new queries would not be comparable.
func referenceFDE(f *fdeEncoder, e model.Embedding) []float32 {
	out := make([]float32, f.dim)
	buckets := make([]int, e.Rows)
	counts := make([]int, f.buckets)
	plane := func(r, k int) []float32 {
		i := (r*f.simHashBits + k) * VectorDim
		return f.planes[i : i+VectorDim]
	}
	proj := func(r, k int) []float32 {
		i := (r*f.projDim + k) * VectorDim
		return f.proj[i : i+VectorDim]
	}
	for r := range f.reps {
		base := r * f.buckets * f.projDim
		clear(counts)
		for i := range e.Rows {
			v := e.Vector(i)
			b := 0
			for k := range f.simHashBits {
				if dot(plane(r, k), v) > 0 {
					b |= 1 << k
				}
			}
			buckets[i] = b
			counts[b]++
			blk := out[base+b*f.projDim : base+(b+1)*f.projDim]
			for k := range f.projDim {
				blk[k] += dot(proj(r, k), v)
			}
		}
		for b := range f.buckets {
			blk := out[base+b*f.projDim : base+(b+1)*f.projDim]
			switch {
			case counts[b] > 0:
				inv := 1 / float32(counts[b])
				for k := range blk {
					blk[k] *= inv
				}
			case e.Rows > 0:
				best, bestDist := 0, f.simHashBits+1
				for i, bi := range buckets {
					if d := bits.OnesCount(uint(bi ^ b)); d < bestDist {
						best, bestDist = i, d
					}
				}
				for k := range f.projDim {
					blk[k] = dot(proj(r, k), e.Vector(best))
				}
			}
		}
	}
	return out
}

func TestFDEMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, rows := range []int{1, 3, 20, 1030} {
		p := randomPage(rng, rows)
		got, want := fde.page(p), referenceFDE(fde, p)
		var maxDiff float64
		for i := range got {
			maxDiff = max(maxDiff, math.Abs(float64(got[i]-want[i])))
		}
		gb, wb := fde.bits(got), fde.bits(want)
		differ := 0
		for i := range gb.Bytes {
			differ += bits.OnesCount8(gb.Bytes[i] ^ wb.Bytes[i])
		}
		// Only rounding differs (sums before or after the projection, fused
		// multiply-adds): a bit flips only where a value is ~0.
		if maxDiff > 1e-4 || differ > FDEBits/1000 {
			t.Errorf("%d rows: max difference %g, %d of %d bits differ from the reference encoding", rows, maxDiff, differ, FDEBits)
		}
	}
}

func TestDotsAndAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 7, 8, 16, 128, 131} {
		for _, rows := range []int{1, 4, 5, 9} {
			a := make([]float32, rows*n)
			b := make([]float32, n)
			for i := range a {
				a[i] = float32(rng.NormFloat64())
			}
			for i := range b {
				b[i] = float32(rng.NormFloat64())
			}
			out := make([]float32, rows)
			dots(a, b, out)
			for j := range rows {
				var want float64
				for i := range n {
					want += float64(a[j*n+i]) * float64(b[i])
				}
				if math.Abs(float64(out[j])-want) > 1e-4*math.Sqrt(float64(n)) {
					t.Errorf("dots n=%d rows=%d row %d: %v, want %v", n, rows, j, out[j], want)
				}
			}
			dst := append([]float32(nil), a[:n]...)
			addTo(dst, b)
			for i := range n {
				if dst[i] != a[i]+b[i] {
					t.Fatalf("addTo n=%d: [%d] = %v, want %v", n, i, dst[i], a[i]+b[i])
				}
			}
		}
	}
}

// The asymmetric code score is the dot product of the query with the
// page's vectors binarised to ±1.
func TestAsymMaxSim(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	q, p := randomPage(rng, 5), randomPage(rng, 40)
	signs := model.Embedding{Rows: p.Rows, Dim: p.Dim, Values: make([]float32, len(p.Values))}
	for i, v := range p.Values {
		signs.Values[i] = -1
		if v > 0 {
			signs.Values[i] = 1
		}
	}
	got, want := newAsymTables(q).maxSim(patchCodes(p)), MaxSim(q, signs)
	if math.Abs(float64(got-want)) > 1e-4 {
		t.Errorf("asymmetric MaxSim %v, want %v", got, want)
	}
}
