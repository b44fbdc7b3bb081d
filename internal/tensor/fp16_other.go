//go:build !amd64

package tensor

const hasF16C = false

func fromHalfF16C(dst *float32, src *byte, n int) { panic("no F16C") }
