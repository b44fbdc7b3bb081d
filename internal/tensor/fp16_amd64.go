package tensor

import "golang.org/x/sys/cpu"

// FP16 tensors are widened by F16C (fp16_amd64.s) where the CPU has it,
// eight values an instruction; tensor.go holds the portable loop.
// store/simd_amd64.s has the same routine for the store's vectors.

var hasF16C = cpu.X86.HasAVX && cpu.X86.HasF16C

// fromHalfF16C widens n little-endian binary16 values at src (n a positive
// multiple of 8) to float32 at dst.
//
//go:noescape
func fromHalfF16C(dst *float32, src *byte, n int)
