// Package imagecheck proves that an encoded PNG or JPEG is well formed
// without decoding it into a bitmap, so that checking an image costs
// memory independent of its size.
//
// This file runs a little over 400 lines on purpose: the PNG walker
// (chunks, CRCs, the zlib stream, filter bytes) and the JPEG walker
// (markers to EOI) are each one reading of a format's structure, easier
// to check against the specification whole than split.
//
// # What is checked, and why that is enough
//
// The gateway checks images so that a bad one is refused with a message
// naming it, rather than failing in Triton's preprocessing, where it would
// fail the whole batch it shares with other callers. Triton decodes the
// image anyway; the gateway needs only to know that the decode will
// succeed, and the image's size, to refuse decompression bombs before
// anything expands them.
//
//   - The header (image.DecodeConfig) gives the format and dimensions; an
//     image over the pixel limit is refused before anything else is read.
//   - A PNG is then verified as a decoder would read it, but streamed: every
//     chunk's length and CRC, IHDR first, PLTE before IDAT for paletted
//     images, the IDAT chunks consecutive, the zlib stream inflated to the
//     end (which checks its Adler-32) into a counter that is never stored,
//     every row's filter byte in range, exactly the byte count the
//     dimensions, depth, colour type and interlacing imply, and IEND last.
//     Memory: the inflater's window and a small buffer. CPU: one inflate,
//     without the filtering and pixel conversion a decode adds.
//   - A JPEG is walked marker by marker: SOI, every segment's length, a
//     frame header before the first scan, the entropy-coded data of each
//     scan (stuffed bytes and restart markers) and the end-of-image marker.
//     The Huffman data itself is not decoded: decoders (libjpeg, which
//     Pillow uses) accept corrupt entropy data with a warning and fail on
//     truncation, which the walk catches. Decoding it would cost a bitmap
//     of up to 3 bytes a pixel.
//
// What is not checked: a paletted PNG's pixel indexes against the palette's
// length (Go's decoder refuses an index past the palette; libpng and
// Pillow do not), and anything about the pixels' values.
package imagecheck

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	_ "image/jpeg" // registers JPEG for image.DecodeConfig
	_ "image/png"  // registers PNG for image.DecodeConfig
	"io"
)

// Formats, as image.DecodeConfig names them.
const (
	PNG  = "png"
	JPEG = "jpeg"
)

// Info is what the header says.
type Info struct {
	Format        string
	Width, Height int
}

// Pixels is Width x Height.
func (i Info) Pixels() int64 { return int64(i.Width) * int64(i.Height) }

// ErrHeader and ErrData are the two ways an image is refused; use
// errors.Is. The error's text says what is wrong.
var (
	// ErrHeader: not a PNG or JPEG, or a header that cannot be read.
	ErrHeader = errors.New("image header")
	// ErrData: a sound header, but the image data is broken.
	ErrData = errors.New("image data")
)

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8, 0xff}
)

// Header reads the format and dimensions only.
func Header(img []byte) (Info, error) {
	if !bytes.HasPrefix(img, pngMagic) && !bytes.HasPrefix(img, jpegMagic) {
		return Info{}, fmt.Errorf("%w: is not a PNG or JPEG file (unrecognised signature)", ErrHeader)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return Info{}, fmt.Errorf("%w: cannot be read as PNG or JPEG: %w", ErrHeader, err)
	}
	if format != PNG && format != JPEG {
		return Info{}, fmt.Errorf("%w: is %s; want PNG or JPEG", ErrHeader, format)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return Info{}, fmt.Errorf("%w: has empty dimensions %dx%d", ErrHeader, cfg.Width, cfg.Height)
	}
	return Info{Format: format, Width: cfg.Width, Height: cfg.Height}, nil
}

// Verify checks the image data of img, whose header Header read as info.
// Call it only once the dimensions are known to be acceptable: its CPU
// time grows with them (its memory does not).
func Verify(img []byte, info Info) error {
	var err error
	switch info.Format {
	case PNG:
		err = verifyPNG(img)
	case JPEG:
		err = verifyJPEG(img)
	default:
		err = fmt.Errorf("unknown format %q", info.Format)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrData, err)
	}
	return nil
}

// PNG colour types (PNG spec 11.2.2) and the samples per pixel of each.
var pngChannels = map[byte]int{0: 1, 2: 3, 3: 1, 4: 2, 6: 4}

type pngHeader struct {
	width, height uint32
	depth, colour byte
	interlaced    bool
	bitsPerPixel  int
}

// maxChunk is the PNG spec's bound on a chunk's length (2^31-1).
const maxChunk = 1<<31 - 1

// pngChunk is one chunk's type and data, located in the file.
type pngChunk struct {
	typ  string
	data []byte
}

// nextChunk reads the chunk at img[off:], checks its CRC, and returns it
// with the offset of the next one.
func nextChunk(img []byte, off int) (pngChunk, int, error) {
	if len(img)-off < 12 {
		return pngChunk{}, 0, fmt.Errorf("truncated at byte %d: no room for a chunk (is IEND missing?)", off)
	}
	n := binary.BigEndian.Uint32(img[off:])
	if n > maxChunk || int64(n) > int64(len(img)-off-12) {
		return pngChunk{}, 0, fmt.Errorf("chunk at byte %d claims %d bytes; the file has %d left", off, n, len(img)-off-12)
	}
	end := off + 8 + int(n)
	typ, data := img[off+4:off+8], img[off+8:end]
	crc := crc32.NewIEEE()
	_, _ = crc.Write(typ)
	_, _ = crc.Write(data)
	if got, want := crc.Sum32(), binary.BigEndian.Uint32(img[end:]); got != want {
		return pngChunk{}, 0, fmt.Errorf("chunk %q at byte %d has a bad CRC", typ, off)
	}
	return pngChunk{typ: string(typ), data: data}, end + 4, nil
}

func verifyPNG(img []byte) error {
	off := len(pngMagic)
	ihdr, off, err := nextChunk(img, off)
	if err != nil {
		return err
	}
	if ihdr.typ != "IHDR" || len(ihdr.data) != 13 {
		return errors.New("the first chunk is not a 13-byte IHDR")
	}
	h, err := parseIHDR(ihdr.data)
	if err != nil {
		return err
	}
	var sawPLTE bool
	var idatFrom, idatTo int // offsets of the first IDAT chunk and past the last
	for {
		start := off
		c, next, err := nextChunk(img, off)
		if err != nil {
			return err
		}
		off = next
		switch c.typ {
		case "PLTE":
			sawPLTE = true
		case "IDAT":
			switch {
			case idatFrom == 0:
				if h.colour == 3 && !sawPLTE {
					return errors.New("paletted image without a PLTE chunk before its IDAT")
				}
				idatFrom = start
			case idatTo != start:
				return errors.New("IDAT chunks are not consecutive")
			}
			idatTo = next
		case "IEND":
			if idatFrom == 0 {
				return errors.New("no IDAT chunk: the header has no pixels behind it")
			}
			return inflateIDAT(img[idatFrom:idatTo], h)
		case "IHDR":
			return errors.New("a second IHDR chunk")
		}
	}
}

func parseIHDR(d []byte) (pngHeader, error) {
	h := pngHeader{
		width:      binary.BigEndian.Uint32(d[0:]),
		height:     binary.BigEndian.Uint32(d[4:]),
		depth:      d[8],
		colour:     d[9],
		interlaced: d[12] == 1,
	}
	ch, ok := pngChannels[h.colour]
	if !ok {
		return h, fmt.Errorf("unknown colour type %d", h.colour)
	}
	switch h.depth {
	case 1, 2, 4, 8, 16:
	default:
		return h, fmt.Errorf("unknown bit depth %d", h.depth)
	}
	if d[10] != 0 || d[11] != 0 || d[12] > 1 {
		return h, errors.New("unknown compression, filter or interlace method")
	}
	h.bitsPerPixel = ch * int(h.depth)
	return h, nil
}

// rowBytes is the length of a row of w pixels, without its filter byte.
func (h pngHeader) rowBytes(w uint32) int64 { return (int64(w)*int64(h.bitsPerPixel) + 7) / 8 }

// adam7 are the Adam7 passes: x, y offsets and steps (PNG spec 8.2).
var adam7 = [7]struct{ x0, y0, dx, dy uint32 }{
	{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2},
}

// idatReader yields the data of consecutive, already CRC-checked IDAT
// chunks.
type idatReader struct {
	rest []byte // chunks not yet started
	cur  []byte // the current chunk's data not yet read
}

func (r *idatReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if len(r.rest) == 0 {
			return 0, io.EOF
		}
		n := binary.BigEndian.Uint32(r.rest)
		r.cur = r.rest[8 : 8+n]
		r.rest = r.rest[12+n:]
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// inflateIDAT inflates the image data into nothing, checking each row's
// filter byte and that the rows are exactly as many and as long as the
// header implies.
func inflateIDAT(chunks []byte, h pngHeader) error {
	zr, err := zlib.NewReader(&idatReader{rest: chunks})
	if err != nil {
		return fmt.Errorf("image data: %w", err)
	}
	defer zr.Close()
	br := bufio.NewReaderSize(zr, 32<<10)
	row := 0
	readRows := func(w, rows uint32) error {
		if w == 0 || rows == 0 {
			return nil // an empty Adam7 pass has no rows, not even filter bytes
		}
		n := h.rowBytes(w)
		for range rows {
			f, err := br.ReadByte()
			if err != nil {
				return fmt.Errorf("image data ends at row %d: %w", row, unexpected(err))
			}
			if f > 4 {
				return fmt.Errorf("row %d has filter type %d; want 0 to 4", row, f)
			}
			for left := n; left > 0; {
				k, err := br.Discard(int(min(left, 1<<30)))
				left -= int64(k)
				if err != nil {
					return fmt.Errorf("image data ends in row %d: %w", row, unexpected(err))
				}
			}
			row++
		}
		return nil
	}
	if !h.interlaced {
		if err := readRows(h.width, h.height); err != nil {
			return err
		}
	} else {
		for _, p := range adam7 {
			w := (h.width + p.dx - 1 - p.x0) / p.dx
			if h.width <= p.x0 {
				w = 0
			}
			rows := (h.height + p.dy - 1 - p.y0) / p.dy
			if h.height <= p.y0 {
				rows = 0
			}
			if err := readRows(w, rows); err != nil {
				return err
			}
		}
	}
	// The stream must end here: reading on to EOF also checks its Adler-32.
	switch n, err := br.Discard(1); {
	case n > 0:
		return errors.New("more image data than the header's dimensions hold")
	case errors.Is(err, io.EOF):
		return nil
	default:
		return fmt.Errorf("image data: %w", err)
	}
}

// unexpected turns the io.EOF of a stream that ended early into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// isSOF reports whether a JPEG marker starts a frame (ITU T.81 B.1.1.3:
// C0-CF but DHT C4, JPG C8 and DAC CC).
func isSOF(m byte) bool { return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc }

func verifyJPEG(img []byte) error {
	var sawSOF, sawSOS bool
	off := 2 // past SOI
	for {
		if off >= len(img) {
			return errors.New("truncated: no end-of-image marker")
		}
		if img[off] != 0xff {
			return fmt.Errorf("byte %d: want a marker, found 0x%02x", off, img[off])
		}
		for off < len(img) && img[off] == 0xff { // fill bytes before a marker
			off++
		}
		if off >= len(img) {
			return errors.New("truncated: no end-of-image marker")
		}
		m := img[off]
		off++
		switch {
		case m == 0xd9: // EOI; bytes after it are ignored by decoders
			if !sawSOS {
				return errors.New("no scan (SOS) before the end-of-image marker")
			}
			return nil
		case m == 0xd8:
			return fmt.Errorf("byte %d: a second start-of-image marker", off-2)
		case m == 0x01 || (m >= 0xd0 && m <= 0xd7): // TEM, RSTn: no length
			continue
		case m == 0x00:
			return fmt.Errorf("byte %d: a stuffed zero outside scan data", off-2)
		}
		if len(img)-off < 2 {
			return errors.New("truncated inside a marker segment")
		}
		n := int(binary.BigEndian.Uint16(img[off:]))
		if n < 2 || n > len(img)-off {
			return fmt.Errorf("segment 0x%02x at byte %d claims %d bytes; %d are left", m, off-2, n, len(img)-off)
		}
		off += n
		switch {
		case isSOF(m):
			sawSOF = true
		case m == 0xda: // SOS: entropy-coded data follows, up to the next marker
			if !sawSOF {
				return errors.New("a scan (SOS) before the frame header (SOF)")
			}
			sawSOS = true
			off = skipScan(img, off)
		}
	}
}

// skipScan returns the offset of the first marker after the entropy-coded
// data at img[off:] (or len(img)): 0xff followed by a stuffed zero, a
// restart marker or fill is data.
func skipScan(img []byte, off int) int {
	for {
		i := bytes.IndexByte(img[off:], 0xff)
		if i < 0 {
			return len(img)
		}
		off += i
		if off+1 >= len(img) {
			return len(img)
		}
		switch b := img[off+1]; {
		case b == 0x00 || (b >= 0xd0 && b <= 0xd7):
			off += 2
		case b == 0xff:
			off++ // fill: the marker comes after
		default:
			return off
		}
	}
}
