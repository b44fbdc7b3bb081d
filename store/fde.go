package store

import (
	"github.com/jackc/pgx/v5/pgtype"
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/morphik-org/colpali-gateway/model"
)

// The first stage searches one fixed-dimensional encoding (FDE) per page,
// in the spirit of MUVERA: a multi-vector page becomes one vector whose
// similarity with a query's encoding approximates their MaxSim.
//
// Per repetition r of fdeReps: fdeSimHashBits random hyperplanes split the
// 128-d space into 2^fdeSimHashBits buckets, and every vector is projected
// to fdeProjDim dims by a random ±1 matrix. The block of bucket b is the
// mean of the projected vectors that fall in b; an empty bucket takes the
// projection of the vector whose bucket is nearest in Hamming distance, so
// that no block is empty. A page's inner product with a query's encoding
// then sums, over repetitions and query vectors, the query vector against
// the page's vectors that share its bucket: an estimate of MaxSim (the
// Chamfer similarity) whose noise averages out over the repetitions.
//
// The encoding is stored binarised (one sign bit per dimension) as
// bit(fdeDim) and searched by Hamming distance with an HNSW index
// (bit_hamming_ops). Why bits and not halfvec: measured on the embedded
// PGlite (WebAssembly, no fp16 hardware), an HNSW insert of a
// halfvec(3840) cost 50-130 ms against ~1.3 ms for a bit(3840), so
// halfvec made ingestion run at a few pages a second; bits are also 16x
// smaller, and pgvector indexes bit up to 64,000 dims against halfvec's
// 4,000, so the encoding can have more repetitions, which the sign
// quantisation needs: with the same candidate count, binarised FDEs lose
// recall against float ones, and 10,240 bits (80 repetitions x 8
// buckets x 16 dims, Morphik's shape) recover most of it, the rest coming
// from more candidates (see benchmarks/results/store.md). Encoding costs
// 240 hyperplane products of 128 dims and 80 additions of 128 values a
// vector, plus 10,240 products a page (see page); with AVX2 that is
// ~2 ms for a 1030-vector page on one core (BenchmarkEncodePage), and
// encodePages spreads pages over the CPUs. Queries are encoded like pages
// (means and filled buckets), since Hamming distance compares both sides
// alike.
//
// The parameters are part of the schema: pages.fde is bit(fdeDim), and
// stored encodings are only comparable with queries encoded by the same
// matrices, so changing any of these constants needs a migration that
// re-encodes every page.
const (
	fdeReps        = 80
	fdeSimHashBits = 3
	fdeProjDim     = 16
	fdeSeed        = 0x636f6c70616c69                       // "colpali"
	fdeDim         = fdeReps << fdeSimHashBits * fdeProjDim // 10,240 bits = 1,280 bytes
)

// FDEBits is the width of a page's stored first-stage encoding.
const FDEBits = fdeDim

// VectorDim is the only vector width the store accepts (ColPali's 128).
const VectorDim = 128

// fdeEncoder holds the random matrices of one FDE configuration, drawn
// independently per repetition.
type fdeEncoder struct {
	reps        int
	simHashBits int
	buckets     int
	projDim     int
	dim         int
	// planes: reps x simHashBits Gaussian hyperplanes of VectorDim, back
	// to back (repetition r's bit k is row r*simHashBits+k).
	planes []float32
	// proj: reps x projDim rows of ±1/sqrt(projDim), back to back.
	proj []float32
}

// fde is the store's encoder, drawn once from fdeSeed: every process
// draws the same matrices.
var fde = newFDEEncoder(fdeReps, fdeSimHashBits, fdeProjDim, fdeSeed)

func newFDEEncoder(nReps, simHashBits, projDim int, seed uint64) *fdeEncoder {
	rng := rand.New(rand.NewPCG(seed, seed>>1)) // #nosec G404 -- the projections must be reproducible from the configured seed (the index depends on them); they are not secret
	f := &fdeEncoder{reps: nReps, simHashBits: simHashBits, buckets: 1 << simHashBits,
		projDim: projDim, dim: nReps << simHashBits * projDim}
	scale := float32(1 / math.Sqrt(float64(projDim)))
	// The draw order (a repetition's planes, then its projection) is the
	// stored encodings': it must not change without re-encoding.
	for range nReps {
		for range simHashBits {
			for range VectorDim {
				f.planes = append(f.planes, float32(rng.NormFloat64()))
			}
		}
		for range projDim * VectorDim {
			if rng.IntN(2) == 0 {
				f.proj = append(f.proj, scale)
			} else {
				f.proj = append(f.proj, -scale)
			}
		}
	}
	return f
}

// page encodes a page or a query (its vectors must be VectorDim wide).
//
// A block is the mean of its bucket's projected vectors; projection is
// linear, so it is the projection of the bucket's summed vectors: each
// vector costs its reps x simHashBits hyperplane products and reps
// additions of 128 values, and the projections are done once a bucket
// (reps x buckets x projDim products a page, whatever its size) instead
// of once a vector and repetition.
func (f *fdeEncoder) page(e model.Embedding) []float32 {
	nPlanes := f.reps * f.simHashBits
	hv := make([]float32, nPlanes)
	buckets := make([]uint8, e.Rows*f.reps) // vector i's bucket in repetition r: [i*reps+r]
	sums := make([]float32, f.reps*f.buckets*VectorDim)
	counts := make([]int32, f.reps*f.buckets)
	for i := range e.Rows {
		v := e.Vector(i)
		dots(f.planes, v, hv)
		for r := range f.reps {
			// Bit k is set when the product is positive: the sign bit,
			// flipped, without a branch (random signs defeat prediction);
			// an exact zero counts as positive, which Gaussian hyperplanes
			// make immaterial.
			b := 0
			for k, h := range hv[r*f.simHashBits : (r+1)*f.simHashBits] {
				b |= int(math.Float32bits(h)>>31^1) << k
			}
			buckets[i*f.reps+r] = uint8(b)
			rb := r*f.buckets + b
			counts[rb]++
			addTo(sums[rb*VectorDim:(rb+1)*VectorDim], v)
		}
	}
	out := make([]float32, f.dim)
	for r := range f.reps {
		proj := f.proj[r*f.projDim*VectorDim : (r+1)*f.projDim*VectorDim]
		for b := range f.buckets {
			rb := r*f.buckets + b
			blk := out[rb*f.projDim : (rb+1)*f.projDim]
			switch {
			case counts[rb] > 0:
				dots(proj, sums[rb*VectorDim:(rb+1)*VectorDim], blk)
				inv := 1 / float32(counts[rb])
				for k := range blk {
					blk[k] *= inv
				}
			case e.Rows > 0:
				// Empty bucket: the vector whose bucket is nearest in
				// Hamming distance stands in for it.
				best, bestDist := 0, f.simHashBits+1
				for i := range e.Rows {
					if d := bits.OnesCount8(buckets[i*f.reps+r] ^ uint8(b)); d < bestDist {
						best, bestDist = i, d
					}
				}
				dots(proj, e.Vector(best), blk)
			}
		}
	}
	return out
}

// bits binarises an encoding: bit i is set when v[i] > 0 (most
// significant bit of each byte first, as Postgres stores bit strings).
func (f *fdeEncoder) bits(v []float32) pgtype.Bits {
	b := pgtype.Bits{Bytes: make([]byte, (len(v)+7)/8), Len: int32(len(v)), Valid: true} // #nosec G115 -- len(v) is the FDE dimension, a few thousand
	for i, x := range v {
		if x > 0 {
			b.Bytes[i/8] |= 0x80 >> (i % 8)
		}
	}
	return b
}

// MaxSim is the late-interaction score: for each query vector its best dot
// product over the page's vectors, summed. Both must have the same Dim.
func MaxSim(query, page model.Embedding) float32 {
	if page.Rows == 0 || query.Rows == 0 {
		return 0
	}
	best := make([]float32, 2*query.Rows)
	sims := best[query.Rows:]
	best = best[:query.Rows]
	for q := range best {
		best[q] = float32(math.Inf(-1))
	}
	qv := query.Values[:query.Rows*query.Dim]
	for p := range page.Rows {
		dots(qv, page.Vector(p), sims)
		for q, s := range sims {
			if s > best[q] {
				best[q] = s
			}
		}
	}
	var total float32
	for _, b := range best {
		total += b
	}
	return total
}

func dot(a, b []float32) float32 {
	var s0, s1, s2, s3 float32
	n := len(a)
	b = b[:n]
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < n; i++ {
		s0 += a[i] * b[i]
	}
	return s0 + s1 + s2 + s3
}
