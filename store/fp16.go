package store

import (
	"encoding/binary"

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
		binary.LittleEndian.PutUint16(out[2*i:], tensor.FP16FromFloat32(e.Values[i]))
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
