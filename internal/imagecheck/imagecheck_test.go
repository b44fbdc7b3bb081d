package imagecheck

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chunk encodes one PNG chunk.
func chunk(typ string, data []byte) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.BigEndian, uint32(len(data)))
	b.WriteString(typ)
	b.Write(data)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	return b.Bytes()
}

// rawPNG builds a PNG from its IHDR fields and its uncompressed scanlines
// (filter bytes included), split into IDAT chunks of at most idatSize.
func rawPNG(w, h uint32, depth, colour, interlace byte, raw []byte, idatSize int) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9], ihdr[12] = depth, colour, interlace
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	out := append([]byte{}, pngMagic...)
	out = append(out, chunk("IHDR", ihdr)...)
	if colour == 3 {
		out = append(out, chunk("PLTE", make([]byte, 3*256))...)
	}
	data := z.Bytes()
	for len(data) > 0 {
		n := min(idatSize, len(data))
		out = append(out, chunk("IDAT", data[:n])...)
		data = data[n:]
	}
	return append(out, chunk("IEND", nil)...)
}

// uniformPNG16 is a w x h 16-bit RGBA PNG of one colour, written without
// holding its bitmap: the shape of the small file that decodes
// into a huge bitmap.
func uniformPNG16(w, h uint32) []byte {
	rowLen := 1 + int(w)*8
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, rowLen)
	for range h {
		_, _ = zw.Write(row)
	}
	_ = zw.Close()
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 16, 6
	out := append([]byte{}, pngMagic...)
	out = append(out, chunk("IHDR", ihdr)...)
	out = append(out, chunk("IDAT", z.Bytes())...)
	return append(out, chunk("IEND", nil)...)
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	return img
}

// goodImages are valid files of every shape the checks distinguish.
func goodImages(t testing.TB) map[string][]byte {
	pal := image.NewPaletted(image.Rect(0, 0, 13, 7), color.Palette{color.Black, color.White})
	gray16 := image.NewGray16(image.Rect(0, 0, 9, 5))
	// Interlaced images, some with Adam7 passes left empty by their size.
	ilRaw := func(w, h uint32) []byte {
		var raw []byte
		for _, p := range adam7 {
			if w <= p.x0 || h <= p.y0 {
				continue
			}
			pw := (w + p.dx - 1 - p.x0) / p.dx
			ph := (h + p.dy - 1 - p.y0) / p.dy
			for range ph {
				raw = append(raw, 0)
				raw = append(raw, make([]byte, pw)...)
			}
		}
		return raw
	}
	return map[string][]byte{
		"png rgba":             encodePNG(t, gradient(40, 30)),
		"png paletted":         encodePNG(t, pal),
		"png gray16":           encodePNG(t, gray16),
		"png interlaced 3x3":   rawPNG(3, 3, 8, 0, 1, ilRaw(3, 3), 1<<20),
		"png interlaced 17x9":  rawPNG(17, 9, 8, 0, 1, ilRaw(17, 9), 5),
		"png interlaced 1x1":   rawPNG(1, 1, 8, 0, 1, ilRaw(1, 1), 1<<20),
		"png 1-bit split IDAT": rawPNG(10, 4, 1, 0, 0, bytes.Repeat([]byte{0, 0, 0}, 4), 3),
		"png uniform 16-bit":   uniformPNG16(300, 200),
		"jpeg":                 encodeJPEG(t, gradient(64, 48)),
		"jpeg gray":            encodeJPEG(t, image.NewGray(image.Rect(0, 0, 17, 9))),
	}
}

func check(img []byte) error {
	info, err := Header(img)
	if err != nil {
		return err
	}
	return Verify(img, info)
}

func TestGoodImagesPass(t *testing.T) {
	for name, img := range goodImages(t) {
		if err := check(img); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if _, _, err := image.Decode(bytes.NewReader(img)); err != nil {
			t.Errorf("%s: Go's decoder refuses it too: %v", name, err)
		}
	}
}

func TestBrokenImagesRefused(t *testing.T) {
	good := encodePNG(t, gradient(40, 30))
	jpg := encodeJPEG(t, gradient(64, 48))
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 0x40; return b }
	iendAt := len(good) - 12
	cases := map[string]struct {
		img  []byte
		kind error
		text string
	}{
		"not an image":     {[]byte("%PDF-1.7"), ErrHeader, "signature"},
		"png header only":  {good[:33], ErrData, "IEND"},
		"png truncated":    {good[:len(good)-20], ErrData, ""},
		"png no IEND":      {good[:iendAt], ErrData, "IEND"},
		"png bad CRC":      {flip(good, 40), ErrData, "CRC"},
		"png short rows":   {rawPNG(10, 4, 8, 0, 0, make([]byte, 4*11-1), 1<<20), ErrData, "ends in row 3"},
		"png extra rows":   {rawPNG(10, 4, 8, 0, 0, make([]byte, 5*11), 1<<20), ErrData, "more image data"},
		"png bad filter":   {rawPNG(2, 2, 8, 0, 0, []byte{0, 1, 2, 9, 1, 2}, 1<<20), ErrData, "filter type 9"},
		"png no IDAT":      {append(bytes.Clone(good[:33]), chunk("IEND", nil)...), ErrData, "no IDAT"},
		"jpeg truncated":   {jpg[:len(jpg)-100], ErrData, "end-of-image"},
		"jpeg no EOI":      {jpg[:len(jpg)-2], ErrData, "end-of-image"},
		"jpeg header only": {[]byte{0xff, 0xd8, 0xff, 0xe0, 0x00}, ErrHeader, "cannot be read"},
		"jpeg bad length":  {append(bytes.Clone(jpg[:2]), 0xff, 0xe0, 0xff, 0xff), ErrHeader, ""},
	}
	for name, c := range cases {
		err := check(c.img)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: got %v; want %v containing %q", name, err, c.kind, c.text)
		}
	}
}

// TestBombCostsNoBitmap checks the point of the package: a 16-bit RGBA
// image of 1 Mpx (8 MB as a bitmap) is verified in under 1 MiB (the
// benchmark in benchmarks/imagecheck measures the 10 and 40 Mpx ones).
func TestBombCostsNoBitmap(t *testing.T) {
	img := uniformPNG16(1000, 1000)
	info, err := Header(img)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := Verify(img, info); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if per := after.TotalAlloc - before.TotalAlloc; per > 1<<20 {
		t.Errorf("Verify allocated %d bytes for a %d-byte file of %d pixels; want under 1 MiB", per, len(img), info.Pixels())
	}
}

// FuzzCheck compares the checks with Go's own decoder on every input small
// enough to decode: whatever Go decodes, the checks pass; and a PNG the
// checks pass, Go decodes (but for a palette index past the palette, which
// Go alone refuses). A JPEG the checks pass may still fail Go's decode:
// its entropy-coded data is not decoded (see the package doc).
func FuzzCheck(f *testing.F) {
	for _, img := range goodImages(f) {
		f.Add(img)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		info, err := Header(img)
		if err != nil || info.Pixels() > 1<<20 {
			return
		}
		verr := Verify(img, info)
		_, _, derr := image.Decode(bytes.NewReader(img))
		switch {
		case derr == nil && verr != nil:
			t.Fatalf("Go decodes the %s image but the check refuses it: %v", info.Format, verr)
		case info.Format == PNG && verr == nil && derr != nil && !strings.Contains(derr.Error(), "palette index"):
			t.Fatalf("the check passes a PNG that Go cannot decode: %v", derr)
		}
	})
}
