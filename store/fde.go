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
// (3 + 16) x 80 dot products of 128 dims a vector, ~25 ms for a
// 256-vector page on one core; encodePages spreads pages over the CPUs. Queries are encoded like pages (means and
// filled buckets), since Hamming distance compares both sides alike.
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

type fdeRep struct {
	planes [][]float32 // simHashBits Gaussian hyperplanes
	proj   [][]float32 // projDim rows of ±1/sqrt(projDim)
}

// fdeEncoder holds the random matrices of one FDE configuration, drawn
// independently per repetition.
type fdeEncoder struct {
	reps        []fdeRep
	simHashBits int
	buckets     int
	projDim     int
	dim         int
}

// fde is the store's encoder, drawn once from fdeSeed: every process
// draws the same matrices.
var fde = newFDEEncoder(fdeReps, fdeSimHashBits, fdeProjDim, fdeSeed)

func newFDEEncoder(nReps, simHashBits, projDim int, seed uint64) *fdeEncoder {
	rng := rand.New(rand.NewPCG(seed, seed>>1)) // #nosec G404 -- the projections must be reproducible from the configured seed (the index depends on them); they are not secret
	f := &fdeEncoder{reps: make([]fdeRep, nReps), simHashBits: simHashBits, buckets: 1 << simHashBits,
		projDim: projDim, dim: nReps << simHashBits * projDim}
	scale := float32(1 / math.Sqrt(float64(projDim)))
	for r := range f.reps {
		for range simHashBits {
			p := make([]float32, VectorDim)
			for j := range p {
				p[j] = float32(rng.NormFloat64())
			}
			f.reps[r].planes = append(f.reps[r].planes, p)
		}
		for range projDim {
			p := make([]float32, VectorDim)
			for j := range p {
				if rng.IntN(2) == 0 {
					p[j] = scale
				} else {
					p[j] = -scale
				}
			}
			f.reps[r].proj = append(f.reps[r].proj, p)
		}
	}
	return f
}

// page encodes a page or a query (its vectors must be VectorDim wide).
func (f *fdeEncoder) page(e model.Embedding) []float32 {
	out := make([]float32, f.dim)
	buckets := make([]int, e.Rows)
	counts := make([]int, f.buckets)
	for r := range f.reps {
		rep := &f.reps[r]
		base := r * f.buckets * f.projDim
		clear(counts)
		for i := range e.Rows {
			v := e.Vector(i)
			b := 0
			for k, p := range rep.planes {
				if dot(p, v) > 0 {
					b |= 1 << k
				}
			}
			buckets[i] = b
			counts[b]++
			blk := out[base+b*f.projDim : base+(b+1)*f.projDim]
			for k, p := range rep.proj {
				blk[k] += dot(p, v)
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
				// Empty bucket: the vector whose bucket is nearest in
				// Hamming distance stands in for it.
				best, bestDist := 0, f.simHashBits+1
				for i, bi := range buckets {
					if d := bits.OnesCount(uint(bi ^ b)); d < bestDist {
						best, bestDist = i, d
					}
				}
				for k, p := range rep.proj {
					blk[k] = dot(p, e.Vector(best))
				}
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
	var total float32
	for q := range query.Rows {
		qv := query.Vector(q)
		best := float32(math.Inf(-1))
		for p := range page.Rows {
			if s := dot(qv, page.Vector(p)); s > best {
				best = s
			}
		}
		if page.Rows > 0 {
			total += best
		}
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
