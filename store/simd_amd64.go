package store

import "golang.org/x/sys/cpu"

// The arithmetic of encoding and reranking in AVX2/FMA and F16C
// (simd_amd64.s) where the CPU has them; simd.go holds the portable
// loops and the dispatch.

var (
	hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasF16C    = cpu.X86.HasAVX && cpu.X86.HasF16C
)

//go:noescape
func dot4AVX(a *float32, stride int, b *float32, n int, out *[4]float32)

//go:noescape
func addAVX(dst, src *float32, n int)

//go:noescape
func toHalfF16C(dst *uint16, src *float32, n int)
