package store

import "unsafe"

// Portable entry points to the vector arithmetic: each uses the SIMD
// kernel of simd_amd64.s when the CPU has it and the shape allows, and a
// plain loop otherwise. Encoding a ColPali page (1030 x 128) is ~250,000
// dot products of 128 dims with fp16 packing; at one scalar multiply-add
// a cycle that is 30-60 ms, against the 5 ms a page the gateway can spend
// to keep up with a GPU. AVX2's 8-wide fused multiply-add and F16C's
// conversions close that gap.

// dots sets out[j] to the dot product of row j of a (rows of len(b)
// values, back to back) with b, for every row of a.
func dots(a, b, out []float32) {
	n := len(b)
	rows := len(out)
	_ = a[rows*n-1]
	j := 0
	if hasAVX2FMA && n > 0 && n%8 == 0 {
		var o [4]float32
		for ; j+4 <= rows; j += 4 {
			dot4AVX(&a[j*n], n, &b[0], n, &o)
			copy(out[j:j+4], o[:])
		}
	}
	for ; j < rows; j++ {
		out[j] = dot(a[j*n:(j+1)*n], b)
	}
}

// addTo adds src to dst, element by element.
func addTo(dst, src []float32) {
	n := len(src)
	dst = dst[:n]
	i := 0
	if hasAVX2FMA && n >= 8 {
		i = n &^ 7
		addAVX(&dst[0], &src[0], i)
	}
	for ; i < n; i++ {
		dst[i] += src[i]
	}
}

// halvesOf views b (2 bytes a value) as binary16 values in the machine's
// order, which the F16C path only uses on little-endian amd64.
func halvesOf(b []byte) []uint16 {
	if len(b) < 2 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2) // #nosec G103 -- b's own memory as uint16s, half its length, used while b is alive
}
