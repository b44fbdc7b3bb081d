// Package tensor encodes and decodes the raw tensor bytes of the KServe v2
// inference protocol: row-major, little-endian elements with no padding,
// where a BYTES element is a 4-byte little-endian length followed by its
// bytes. Both the gateway and the Triton simulator use it, so the two sides
// of the wire share one definition of the format.
package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"
)

// Triton's names for the data types the gateway uses.
const (
	TypeBytes = "BYTES"
	TypeFP32  = "FP32"
	TypeFP16  = "FP16"
	TypeINT32 = "INT32"
	TypeINT64 = "INT64"
)

// littleEndian is true on hosts whose float32 memory layout is the wire's
// (amd64, arm64): there FP32 tensors are copied as bytes, a memmove rather
// than an element-by-element conversion.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1 // #nosec G103 -- reads the first byte of a local uint16: the host's byte order
}()

// floatBytes is the memory of f as bytes (no copy).
func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f)) // #nosec G103 -- the float32s' own memory, same length in bytes, used while f is alive
}

// ErrMalformed is the class of every decoding error; use errors.Is.
var ErrMalformed = errors.New("malformed tensor")

// ElementSize is the byte size of one element of a fixed-size data type, or
// 0 for BYTES and unknown types.
func ElementSize(datatype string) int {
	switch datatype {
	case TypeFP32, TypeINT32:
		return 4
	case TypeFP16:
		return 2
	case TypeINT64:
		return 8
	}
	return 0
}

// ElementCount is the product of shape's dimensions. It fails on a negative
// dimension or an overflowing product.
func ElementCount(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension in shape %v", ErrMalformed, shape)
		}
		if d != 0 && n > math.MaxInt32/d {
			return 0, fmt.Errorf("%w: shape %v is too large", ErrMalformed, shape)
		}
		n *= d
	}
	return n, nil
}

// EncodeBytes packs elements as a BYTES tensor.
func EncodeBytes(elements [][]byte) []byte { return AppendBytes(nil, elements) }

// AppendBytes appends elements packed as a BYTES tensor to dst, which may
// be a buffer kept for reuse (dst[:0]).
func AppendBytes(dst []byte, elements [][]byte) []byte {
	size := 0
	for _, e := range elements {
		size += 4 + len(e)
	}
	dst = slices.Grow(dst, size)
	for _, e := range elements {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(e))) // #nosec G115 -- a BYTES element is bounded by the message size limit, far below 4 GiB
		dst = append(dst, e...)
	}
	return dst
}

// DecodeBytes unpacks a BYTES tensor that must hold exactly count elements.
// The returned slices alias raw.
func DecodeBytes(raw []byte, count int) ([][]byte, error) {
	out := make([][]byte, 0, count)
	for len(raw) > 0 {
		if len(raw) < 4 {
			return nil, fmt.Errorf("%w: BYTES element %d has a truncated length prefix", ErrMalformed, len(out))
		}
		n := binary.LittleEndian.Uint32(raw)
		raw = raw[4:]
		if uint64(n) > uint64(len(raw)) {
			return nil, fmt.Errorf("%w: BYTES element %d claims %d bytes, %d remain", ErrMalformed, len(out), n, len(raw))
		}
		if len(out) == count {
			return nil, fmt.Errorf("%w: BYTES tensor holds more than the %d elements of its shape", ErrMalformed, count)
		}
		out = append(out, raw[:n:n])
		raw = raw[n:]
	}
	if len(out) != count {
		return nil, fmt.Errorf("%w: BYTES tensor holds %d elements, its shape says %d", ErrMalformed, len(out), count)
	}
	return out, nil
}

// AppendFP32 appends values as little-endian float32.
func AppendFP32(dst []byte, values []float32) []byte {
	n := len(dst)
	dst = slices.Grow(dst, 4*len(values))[:n+4*len(values)]
	if littleEndian {
		copy(dst[n:], floatBytes(values))
		return dst
	}
	for i, v := range values {
		binary.LittleEndian.PutUint32(dst[n+4*i:], math.Float32bits(v))
	}
	return dst
}

// FP32Bytes is values as little-endian float32 bytes. On little-endian
// hosts (amd64, arm64) it is the values' own memory, not a copy: the bytes
// change with values, so a caller shares them only while values are no
// longer written (an embedding put in a response). Elsewhere it is a copy.
func FP32Bytes(values []float32) []byte {
	if littleEndian {
		return floatBytes(values)
	}
	return AppendFP32(nil, values)
}

// AppendFP16 appends values as little-endian IEEE 754 half-precision floats,
// rounding to nearest even.
func AppendFP16(dst []byte, values []float32) []byte {
	n := len(dst)
	dst = slices.Grow(dst, 2*len(values))[:n+2*len(values)]
	for i, v := range values {
		binary.LittleEndian.PutUint16(dst[n+2*i:], FP16FromFloat32(v))
	}
	return dst
}

// DecodeFloats converts count little-endian FP32 or FP16 elements of raw to
// float32s.
func DecodeFloats(raw []byte, datatype string, count int) ([]float32, error) {
	size := ElementSize(datatype)
	if datatype != TypeFP32 && datatype != TypeFP16 {
		return nil, fmt.Errorf("%w: datatype %q is not FP32 or FP16", ErrMalformed, datatype)
	}
	if len(raw) != size*count {
		return nil, fmt.Errorf("%w: %d bytes for %d %s elements, want %d", ErrMalformed, len(raw), count, datatype, size*count)
	}
	out := make([]float32, count)
	convertFloats(out, raw, datatype)
	return out, nil
}

// DecodeFloatsInto converts the len(dst) little-endian FP32 or FP16
// elements of raw into dst, so that a caller decoding a batch can convert
// each item straight into the slice it keeps.
func DecodeFloatsInto(dst []float32, raw []byte, datatype string) error {
	size := ElementSize(datatype)
	if datatype != TypeFP32 && datatype != TypeFP16 {
		return fmt.Errorf("%w: datatype %q is not FP32 or FP16", ErrMalformed, datatype)
	}
	if len(raw) != size*len(dst) {
		return fmt.Errorf("%w: %d bytes for %d %s elements, want %d", ErrMalformed, len(raw), len(dst), datatype, size*len(dst))
	}
	convertFloats(dst, raw, datatype)
	return nil
}

// convertFloats fills out from raw, whose size has been checked.
func convertFloats(out []float32, raw []byte, datatype string) {
	if datatype == TypeFP32 {
		if littleEndian {
			copy(floatBytes(out), raw)
			return
		}
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return
	}
	i := 0
	if hasF16C && len(out) >= 8 {
		// A signalling NaN comes out quiet (its top mantissa bit set),
		// as F16C converts it; every other half as Float32FromFP16 does.
		i = len(out) &^ 7
		fromHalfF16C(&out[0], &raw[0], i)
	}
	raw = raw[:2*len(out)] // one bounds check for the loop
	for ; i < len(out); i++ {
		out[i] = Float32FromFP16(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
	}
}

// DecodeInts converts count little-endian INT32 or INT64 elements to ints.
func DecodeInts(raw []byte, datatype string, count int) ([]int, error) {
	size := ElementSize(datatype)
	if datatype != TypeINT32 && datatype != TypeINT64 {
		return nil, fmt.Errorf("%w: datatype %q is not INT32 or INT64", ErrMalformed, datatype)
	}
	if len(raw) != size*count {
		return nil, fmt.Errorf("%w: %d bytes for %d %s elements, want %d", ErrMalformed, len(raw), count, datatype, size*count)
	}
	out := make([]int, count)
	for i := range out {
		if datatype == TypeINT32 {
			out[i] = int(int32(binary.LittleEndian.Uint32(raw[4*i:]))) // #nosec G115 -- reinterprets the wire's two's-complement INT32, as intended
		} else {
			out[i] = int(int64(binary.LittleEndian.Uint64(raw[8*i:]))) // #nosec G115 -- reinterprets the wire's two's-complement INT64, as intended
		}
	}
	return out, nil
}

// AppendINT32 appends values as little-endian int32.
func AppendINT32(dst []byte, values []int32) []byte {
	for _, v := range values {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(v)) // #nosec G115 -- writes two's-complement INT32, as the wire has it
	}
	return dst
}

// FP16FromFloat32 converts f to IEEE 754 binary16 bits, rounding to nearest
// even; values beyond the half range become infinities, NaN stays NaN.
func FP16FromFloat32(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int32(bits>>23) & 0xff
	mant := bits & 0x7fffff

	switch {
	case exp == 0xff: // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127+15 >= 0x1f: // overflow
		return sign | 0x7c00
	case exp-127+15 <= 0: // subnormal half or zero
		e := exp - 127 + 15
		if e < -10 {
			return sign
		}
		mant |= 0x800000        // the implicit leading bit
		shift := uint32(14 - e) // #nosec G115 -- e is in [-10, 0] in this branch, so the shift is 14 to 24
		half := mant >> shift
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half) // #nosec G115 -- a subnormal half (at most 0x400 after rounding) fits 16 bits
	}
	e := uint16(exp - 127 + 15) // #nosec G115 -- exp is in the normal half range here, so the biased exponent is 1 to 30
	half := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is the right rounding
	}
	return sign | uint16(half) // #nosec G115 -- half is at most 0x7c00 after the rounding checked above
}

// Float32FromFP16 converts IEEE 754 binary16 bits to a float32 exactly.
// A finite half, normal or subnormal, is its exponent and mantissa bits
// moved into a float32's (a value 2^112 too small) scaled by 2^112, which
// is exact: one multiplication instead of a branch per class.
func Float32FromFP16(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	bits := uint32(h & 0x7fff)
	if bits >= 0x7c00 { // Inf or NaN, its payload kept
		return math.Float32frombits(sign | 0x7f800000 | (bits&0x3ff)<<13)
	}
	f := math.Float32frombits(bits<<13) * 0x1p112
	return math.Float32frombits(math.Float32bits(f) | sign)
}
