package tensor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

func TestBytesRoundTrip(t *testing.T) {
	in := [][]byte{[]byte("what is colpali"), {}, []byte("héllo"), bytes.Repeat([]byte{0xff}, 300)}
	raw := EncodeBytes(in)
	if got, want := len(raw), 4*4+15+0+6+300; got != want {
		t.Fatalf("encoded %d bytes, want %d", got, want)
	}
	out, err := DecodeBytes(raw, len(in))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Fatalf("round trip (-in +out):\n%s", diff)
	}
}

func TestDecodeBytesRejectsMalformed(t *testing.T) {
	good := EncodeBytes([][]byte{[]byte("ab"), []byte("c")})
	for name, tc := range map[string]struct {
		raw   []byte
		count int
	}{
		"truncated prefix":  {good[:len(good)-3], 2},
		"truncated payload": {good[:len(good)-1], 2},
		"too few elements":  {good, 3},
		"too many elements": {good, 1},
		"huge length":       {[]byte{0xff, 0xff, 0xff, 0xff, 'a'}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeBytes(tc.raw, tc.count); !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeBytes = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestFP16KnownValues(t *testing.T) {
	for _, tc := range []struct {
		f    float32
		bits uint16
	}{
		{0, 0x0000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.5, 0x3800},
		{65504, 0x7bff},                 // largest half
		{65520, 0x7c00},                 // rounds up to +Inf
		{float32(math.Inf(-1)), 0xfc00}, // -Inf
		{5.960464477539063e-08, 0x0001}, // smallest subnormal
		{6.103515625e-05, 0x0400},       // smallest normal
		{0.0999755859375, 0x2e66},       // 0.1 rounded down
		{1 + 1.0/2048, 0x3c00},          // tie to even (down)
		{1 + 3.0/2048, 0x3c02},          // tie to even (up)
		{1e-9, 0x0000},                  // underflow to zero
		{float32(-5.960464477539063e-08), 0x8001},
	} {
		if got := FP16FromFloat32(tc.f); got != tc.bits {
			t.Errorf("FP16FromFloat32(%g) = %#04x, want %#04x", tc.f, got, tc.bits)
		}
	}
	if got := FP16FromFloat32(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("FP16FromFloat32(NaN) = %#04x, not a NaN", got)
	}
}

func TestFP16EveryHalfRoundTrips(t *testing.T) {
	for h := 0; h <= 0xffff; h++ {
		f := Float32FromFP16(uint16(h))
		if f != f { // NaN has many encodings
			continue
		}
		if back := FP16FromFloat32(f); back != uint16(h) {
			t.Fatalf("half %#04x -> %g -> %#04x", h, f, back)
		}
	}
}

func TestDecodeFloats(t *testing.T) {
	values := []float32{0.25, -1, 3.5}
	for _, dt := range []string{TypeFP32, TypeFP16} {
		var raw []byte
		if dt == TypeFP32 {
			raw = AppendFP32(nil, values)
		} else {
			raw = AppendFP16(nil, values)
		}
		got, err := DecodeFloats(raw, dt, 3)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(values, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", dt, diff)
		}
		if _, err := DecodeFloats(raw, dt, 4); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with wrong count: %v, want ErrMalformed", dt, err)
		}
	}
	if _, err := DecodeFloats(nil, TypeBytes, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("BYTES as floats: %v, want ErrMalformed", err)
	}
}

func TestDecodeInts(t *testing.T) {
	raw := AppendINT32(nil, []int32{7, -1, 1030})
	got, err := DecodeInts(raw, TypeINT32, 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{7, -1, 1030}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := DecodeInts(raw[:5], TypeINT32, 3); !errors.Is(err, ErrMalformed) {
		t.Errorf("short INT32: %v, want ErrMalformed", err)
	}
}

func TestElementCount(t *testing.T) {
	if n, err := ElementCount([]int64{4, 1030, 128}); err != nil || n != 4*1030*128 {
		t.Fatalf("ElementCount = %d, %v", n, err)
	}
	if _, err := ElementCount([]int64{-1, 128}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("negative dim: %v", err)
	}
	if _, err := ElementCount([]int64{1 << 20, 1 << 20}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("overflow: %v", err)
	}
}

func FuzzDecodeBytes(f *testing.F) {
	f.Add(EncodeBytes([][]byte{[]byte("a"), []byte("bc")}), 2)
	f.Add([]byte{1, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, raw []byte, count int) {
		if count < 0 || count > 1<<16 {
			return
		}
		out, err := DecodeBytes(raw, count)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeBytes(out), raw) {
			t.Fatalf("decoded %d elements do not re-encode to the input", len(out))
		}
	})
}

// The appenders keep what dst holds, and DecodeFloatsInto reads back what
// they wrote, by whichever path the host takes (a byte copy on
// little-endian hosts).
func TestAppendAfterPrefixAndDecodeInto(t *testing.T) {
	values := []float32{0, 1, -2.5, 65504, float32(math.Inf(-1)), 1e-3}
	prefix := []byte("abc")
	for _, tc := range []struct {
		datatype string
		appendTo func([]byte, []float32) []byte
	}{{TypeFP32, AppendFP32}, {TypeFP16, AppendFP16}} {
		raw := tc.appendTo(slices.Clone(prefix), values)
		if string(raw[:3]) != "abc" || len(raw) != 3+ElementSize(tc.datatype)*len(values) {
			t.Fatalf("%s: appended %d bytes after %q, want the prefix kept and %d more", tc.datatype, len(raw), raw[:3], ElementSize(tc.datatype)*len(values))
		}
		got := make([]float32, len(values))
		if err := DecodeFloatsInto(got, raw[3:], tc.datatype); err != nil {
			t.Fatal(err)
		}
		want, err := DecodeFloats(raw[3:], tc.datatype, len(values))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: DecodeFloatsInto = %v, DecodeFloats = %v", tc.datatype, got, want)
		}
		if tc.datatype == TypeFP32 && !slices.Equal(got, values) {
			t.Errorf("FP32 round trip = %v, want %v", got, values)
		}
		if err := DecodeFloatsInto(got[:2], raw[3:], tc.datatype); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeFloatsInto with a short dst = %v, want ErrMalformed", tc.datatype, err)
		}
	}
	if got := AppendBytes([]byte("x"), [][]byte{[]byte("ab")}); string(got) != "x\x02\x00\x00\x00ab" {
		t.Errorf("AppendBytes = %q", got)
	}
}

// FP32Bytes is what AppendFP32 writes; on a little-endian host it is the
// values' own memory.
func TestFP32Bytes(t *testing.T) {
	values := []float32{0, 1, -2.5, 65504, float32(math.Inf(-1)), 1e-3}
	got := FP32Bytes(values)
	if want := AppendFP32(nil, values); !bytes.Equal(got, want) {
		t.Fatalf("FP32Bytes = %v, want %v", got, want)
	}
	if littleEndian && &got[0] != (*byte)(unsafe.Pointer(&values[0])) { // #nosec G103 -- compares addresses only
		t.Error("FP32Bytes copied the values on a little-endian host")
	}
}

// float32FromFP16Ref is the conversion by cases, as IEEE 754 defines it:
// Float32FromFP16 must agree with it on every half, bit for bit.
func float32FromFP16Ref(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / (1 << 24) // a subnormal half is mant x 2^-24
		if sign != 0 {
			return -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// Float32FromFP16 agrees with the by-cases conversion on every half, bit
// for bit; DecodeFloats too (by F16C for whole groups of eight where the
// CPU has it, by Float32FromFP16 for the rest), but for signalling NaNs,
// which F16C makes quiet: still NaNs of the same sign and payload.
func TestFloat32FromFP16EveryHalf(t *testing.T) {
	raw := make([]byte, 0, 2<<16)
	for h := range 1 << 16 {
		raw = binary.LittleEndian.AppendUint16(raw, uint16(h))
	}
	for _, n := range []int{1 << 16, 1<<16 - 3, 7} { // a tail after the groups of eight; none
		got, err := DecodeFloats(raw[:2*n], TypeFP16, n)
		if err != nil {
			t.Fatal(err)
		}
		for h := range n {
			want := math.Float32bits(float32FromFP16Ref(uint16(h)))
			if n == 1<<16 {
				if b := math.Float32bits(Float32FromFP16(uint16(h))); b != want {
					t.Errorf("Float32FromFP16(%#04x) = %#08x, want %#08x", h, b, want)
				}
			}
			b := math.Float32bits(got[h])
			if signalling := h&0x7c00 == 0x7c00 && h&0x3ff != 0 && h&0x200 == 0; signalling {
				want |= 1 << 22 // quiet
				b |= 1 << 22
			}
			if b != want {
				t.Errorf("DecodeFloats of %d halves: %#04x = %#08x, want %#08x", n, h, b, want)
			}
		}
	}
}

func BenchmarkDecodeFP16(b *testing.B) {
	// One query's answer: 20 rows of 128 values of unit-length vectors.
	values := make([]float32, 20*128)
	for i := range values {
		values[i] = float32(math.Sin(float64(i))) / 8
	}
	raw := AppendFP16(nil, values)
	out := make([]float32, len(values))
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		_ = DecodeFloatsInto(out, raw, TypeFP16)
	}
}
