//go:build !amd64

package store

const (
	hasAVX2FMA = false
	hasF16C    = false
)

func dot4AVX(a *float32, stride int, b *float32, n int, out *[4]float32) { panic("no AVX2") }
func addAVX(dst, src *float32, n int)                                    { panic("no AVX2") }
func toHalfF16C(dst *uint16, src *float32, n int)                        { panic("no F16C") }
