package store

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/morphik-org/colpali-gateway/model"
)

// The middle stage of Search: every page also stores its vectors
// binarised, one sign bit a dimension (128 bits = 16 bytes a vector,
// 16,480 bytes for a ColPali page against 263,680 for its fp16 vectors),
// in pages.codes. Search scores the first stage's candidates by MaxSim in
// Hamming space (for each query vector, its fewest differing bits over
// the page's vectors) with popcounts, and reads the full vectors for
// exact MaxSim of only the best Config.Rerank of them: the query then
// reads 16 KB a candidate, not 264 KB, and its arithmetic is a few
// instructions a vector pair, not 128 multiply-adds.

// codeBytes is one vector's code: VectorDim sign bits.
const codeBytes = VectorDim / 8

// patchCodes binarises e's vectors: bit k of vector i (byte i*16+k/8, bit
// k%8 from the least significant) is set when value k is positive.
func patchCodes(e model.Embedding) []byte {
	out := make([]byte, e.Rows*codeBytes)
	for i, v := range e.Values {
		if v > 0 {
			out[i>>3] |= 1 << (i & 7)
		}
	}
	return out
}

// code is one vector's bits as two words.
type code [2]uint64

func codesOf(b []byte) []code {
	out := make([]code, len(b)/codeBytes)
	for i := range out {
		out[i] = code{binary.LittleEndian.Uint64(b[i*codeBytes:]), binary.LittleEndian.Uint64(b[i*codeBytes+8:])}
	}
	return out
}

// hammingMaxSim scores a page's codes against a query's: for each query
// vector the similarity of the page vector with the fewest differing bits
// (VectorDim - 2 x distance, the dot product of the ±1 vectors), summed.
// Higher is better, as with MaxSim.
func hammingMaxSim(query []code, page []byte) int {
	var best [64]int
	if len(query) > len(best) {
		// Long queries (rare: ColPali's have ~20 vectors) in chunks.
		return hammingMaxSim(query[:len(best)], page) + hammingMaxSim(query[len(best):], page)
	}
	q := query
	bst := best[:len(q)]
	for i := range bst {
		bst[i] = VectorDim + 1
	}
	for off := 0; off+codeBytes <= len(page); off += codeBytes {
		p0 := binary.LittleEndian.Uint64(page[off:])
		p1 := binary.LittleEndian.Uint64(page[off+8:])
		for j, c := range q {
			if d := bits.OnesCount64(c[0]^p0) + bits.OnesCount64(c[1]^p1); d < bst[j] {
				bst[j] = d
			}
		}
	}
	total := 0
	for _, d := range bst {
		if d <= VectorDim {
			total += VectorDim - 2*d
		}
	}
	return total
}

// asymTables holds, for each query vector, the partial dot products of
// its 8-value slices with every ±1 pattern of 8 bits: the query keeps its
// floats while the page side is binarised (asymmetric), which ranks far
// closer to exact MaxSim than Hamming distance between two sets of bits,
// at 16 table reads a vector pair.
type asymTables [][16][256]float32

func newAsymTables(query model.Embedding) asymTables {
	t := make(asymTables, query.Rows)
	for q := range t {
		v := query.Vector(q)
		for j := range 16 {
			x := v[8*j : 8*j+8]
			var base float32
			for _, y := range x {
				base -= y
			}
			tab := &t[q][j]
			tab[0] = base
			for b := 1; b < 256; b++ {
				low := bits.TrailingZeros8(uint8(b))
				tab[b] = tab[b&(b-1)] + 2*x[low]
			}
		}
	}
	return t
}

// maxSim scores a page's codes: for each query vector its best dot
// product with the page's ±1 vectors, summed.
func (t asymTables) maxSim(page []byte) float32 {
	n := len(page) / codeBytes
	var total float32
	for q := range t {
		tab := &t[q]
		best := float32(math.Inf(-1))
		for i := range n {
			c := page[i*codeBytes : i*codeBytes+codeBytes : i*codeBytes+codeBytes]
			s := tab[0][c[0]] + tab[1][c[1]] + tab[2][c[2]] + tab[3][c[3]] +
				tab[4][c[4]] + tab[5][c[5]] + tab[6][c[6]] + tab[7][c[7]] +
				tab[8][c[8]] + tab[9][c[9]] + tab[10][c[10]] + tab[11][c[11]] +
				tab[12][c[12]] + tab[13][c[13]] + tab[14][c[14]] + tab[15][c[15]]
			if s > best {
				best = s
			}
		}
		if n > 0 {
			total += best
		}
	}
	return total
}
