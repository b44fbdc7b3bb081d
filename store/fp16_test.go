package store

import (
	"math"
	"testing"

	"github.com/morphik-org/colpali-gateway/model"
)

func TestHalfConversion(t *testing.T) {
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{0, 0x0000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.5, 0x3800},
		{65504, 0x7bff},                  // largest finite half
		{1 + 1.0/2048, 0x3c00},           // tie between 1 and 1+2^-10: to even (1)
		{1 + 3.0/2048, 0x3c02},           // tie between 1+2^-10 and 1+2^-9: to even
		{float32(math.Pow(2, -24)), 1},   // smallest subnormal
		{float32(math.Pow(2, -26)), 0},   // underflow
		{float32(math.Inf(1)), 0x7c00},   // infinity
		{float32(6.1035156e-05), 0x0400}, // smallest normal
	} {
		if got := toHalf(tc.in); got != tc.want {
			t.Errorf("toHalf(%v) = %#04x, want %#04x", tc.in, got, tc.want)
		}
		if tc.want != 0x7c00 && !math.IsInf(float64(tc.in), 0) {
			back := fromHalf(tc.want)
			if rel := math.Abs(float64(back-tc.in)) / math.Max(math.Abs(float64(tc.in)), 1e-7); tc.in != 0 && tc.want != 0 && rel > 1.0/1024 {
				t.Errorf("fromHalf(%#04x) = %v, want about %v", tc.want, back, tc.in)
			}
		}
	}
	// Every finite half survives fromHalf then toHalf.
	for h := range uint16(0x7c00) {
		for _, s := range []uint16{0, 0x8000} {
			if got := toHalf(fromHalf(h | s)); got != h|s && h != 0 {
				t.Fatalf("round trip of %#04x gave %#04x", h|s, got)
			}
		}
	}
}

func TestEncodeDecodeFP16(t *testing.T) {
	e := model.Embedding{Rows: 2, Dim: 3, Values: []float32{0.25, -1, 0.333, 2, 0, -0.125}}
	got := DecodeFP16(encodeFP16(e), 3)
	if got.Rows != 2 || got.Dim != 3 {
		t.Fatalf("decoded %d x %d, want 2 x 3", got.Rows, got.Dim)
	}
	for i, v := range e.Values {
		if math.Abs(float64(got.Values[i]-v)) > 1e-3 {
			t.Errorf("value %d: %v, want %v", i, got.Values[i], v)
		}
	}
}
