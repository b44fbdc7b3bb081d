package store

import (
	"math"
	"testing"

	"github.com/morphik-org/colpali-gateway/internal/tensor"
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
		if got := tensor.FP16FromFloat32(tc.in); got != tc.want {
			t.Errorf("tensor.FP16FromFloat32(%v) = %#04x, want %#04x", tc.in, got, tc.want)
		}
		if tc.want != 0x7c00 && !math.IsInf(float64(tc.in), 0) {
			back := tensor.Float32FromFP16(tc.want)
			if rel := math.Abs(float64(back-tc.in)) / math.Max(math.Abs(float64(tc.in)), 1e-7); tc.in != 0 && tc.want != 0 && rel > 1.0/1024 {
				t.Errorf("tensor.Float32FromFP16(%#04x) = %v, want about %v", tc.want, back, tc.in)
			}
		}
	}
	// Every finite half survives widening then narrowing (internal/tensor).
	for h := range uint16(0x7c00) {
		for _, s := range []uint16{0, 0x8000} {
			if got := tensor.FP16FromFloat32(tensor.Float32FromFP16(h | s)); got != h|s && h != 0 {
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

// The F16C path (encodeFP16, DecodeFP16) agrees with the portable
// conversion on every half value and on random floats, subnormals and
// overflow included.
func TestFP16FastPathMatchesPortable(t *testing.T) {
	var vals []float32
	for h := range 1 << 16 {
		if f := tensor.Float32FromFP16(uint16(h)); !math.IsNaN(float64(f)) {
			vals = append(vals, f, math.Nextafter32(f, 0), math.Nextafter32(f, float32(math.Inf(1))))
		}
	}
	vals = append(vals, 1e-8, -3e-6, 65519, 65520, -70000, 5.960464477539063e-08, 2.980232238769531e-08)
	b := encodeFP16(model.Embedding{Rows: 1, Dim: len(vals), Values: vals})
	for i, v := range vals {
		if got, want := uint16(b[2*i])|uint16(b[2*i+1])<<8, tensor.FP16FromFloat32(v); got != want {
			t.Fatalf("encodeFP16(%g) = %#04x, FP16FromFloat32 %#04x", v, got, want)
		}
	}
	e := DecodeFP16(b, len(vals))
	for i := range vals {
		h := uint16(b[2*i]) | uint16(b[2*i+1])<<8
		if want := tensor.Float32FromFP16(h); e.Values[i] != want && !(math.IsNaN(float64(want)) && math.IsNaN(float64(e.Values[i]))) {
			t.Fatalf("DecodeFP16(%#04x) = %g, want %g", h, e.Values[i], want)
		}
	}
}
