package store

import (
	"encoding/binary"
	"math"

	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// The full vectors of a page are stored as little-endian IEEE 754
// binary16, 2 bytes a value: half of fp32, and ColPali's unit-length
// values lose nothing that matters to ranking (relative error 2^-11).

// encodeFP16 packs e's values.
func encodeFP16(e model.Embedding) []byte {
	out := make([]byte, 2*len(e.Values))
	i := 0
	if hasF16C && len(e.Values) >= 8 {
		i = len(e.Values) &^ 7
		toHalfF16C(&halvesOf(out)[0], &e.Values[0], i)
	}
	for ; i < len(e.Values); i++ {
		binary.LittleEndian.PutUint16(out[2*i:], toHalf(e.Values[i]))
	}
	return out
}

// DecodeFP16 unpacks a page's stored vectors (rows x dim, little-endian
// fp16), as the benchmark's exact scan reads them.
func DecodeFP16(b []byte, dim int) model.Embedding {
	n := len(b) / 2
	e := model.Embedding{Rows: n / dim, Dim: dim, Values: make([]float32, n)}
	decodeFP16Into(e.Values, b)
	return e
}

// decodeFP16Into unpacks len(dst) values of b into dst (the same widening
// as Triton's FP16 answers: internal/tensor, F16C where the CPU has it).
func decodeFP16Into(dst []float32, b []byte) {
	_ = tensor.DecodeFloatsInto(dst, b[:2*len(dst)], tensor.TypeFP16) // cannot fail: the lengths match
}

// toHalf rounds to the nearest binary16, ties to even; overflow becomes
// infinity (callers reject non-finite input before this).
func toHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case exp >= 31:
		if b&0x7fffffff > 0x7f800000 { // NaN
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign // underflow to zero
		}
		mant |= 0x800000 // implicit bit
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		if rem := mant & (1<<shift - 1); rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r) // #nosec G115 -- r fits 16 bits after the range checks above
	}
	r := uint32(exp)<<10 | mant>>13
	if rem := mant & 0x1fff; rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is right (up to infinity)
	}
	return sign | uint16(r) // #nosec G115 -- r fits 16 bits after the range checks above
}
