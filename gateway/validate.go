package gateway

import (
	"bytes"
	"fmt"
	"image"
	_ "image/jpeg" // registers JPEG for image.DecodeConfig
	_ "image/png"  // registers PNG for image.DecodeConfig
	"strings"
	"unicode/utf8"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
)

// violations collects every bad field of one request, so that a client
// fixes them all in one round trip.
type violations []errclass.FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, errclass.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// err is nil when nothing was added, else an *errclass.FieldError, which
// the edge (status.go) sends as INVALID_ARGUMENT with a BadRequest detail.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	return &errclass.FieldError{Violations: v}
}

// maxReportedItems bounds how many bad items of one request are reported.
const maxReportedItems = 10

func (s *embeddingService) validateEncoding(v *violations, e colpaliv1.EmbeddingEncoding) {
	if _, ok := colpaliv1.EmbeddingEncoding_name[int32(e)]; !ok {
		v.add("encoding", "unknown value %d; want one of EMBEDDING_ENCODING_FLOAT32_BYTES, EMBEDDING_ENCODING_FLOAT16_BYTES, EMBEDDING_ENCODING_FLOAT_LIST", int32(e))
	}
}

func (s *embeddingService) validatePriority(v *violations, p uint32, kind model.Kind) {
	if levels := s.priorityLevels(kind); p > uint32(levels) {
		v.add("priority", "is %d; the %s model has priority levels 1 (first) to %d, and 0 means its default", p, kind, levels)
	}
}

func (s *embeddingService) validateQueries(req *colpaliv1.EmbedQueriesRequest) error {
	var v violations
	validateBatch(&v, "queries", "query", req.GetQueries(), s.cfg.MaxQueries, s.cfg.checkQuery)
	s.validateEncoding(&v, req.GetEncoding())
	s.validatePriority(&v, req.GetPriority(), model.Query)
	return v.err()
}

func (s *embeddingService) validateImages(req *colpaliv1.EmbedImagesRequest) error {
	var v violations
	validateBatch(&v, "images", "image", req.GetImages(), s.cfg.MaxImages, s.cfg.checkImage)
	s.validateEncoding(&v, req.GetEncoding())
	s.validatePriority(&v, req.GetPriority(), model.Image)
	return v.err()
}

// validateBatch checks that the repeated field (named in the plural) holds 1
// to limit items, then each item with check, reporting at most
// maxReportedItems bad ones as field[i].
func validateBatch[T any](v *violations, field, singular string, items []T, limit int, check func(T) string) {
	switch n := len(items); {
	case n == 0:
		v.add(field, "must hold at least 1 %s", singular)
	case n > limit:
		v.add(field, "holds %d %s; the limit is %d per request", n, field, limit)
	default:
		bad := 0
		for i, item := range items {
			if msg := check(item); msg != "" {
				v.add(fmt.Sprintf("%s[%d]", field, i), "%s", msg)
				if bad++; bad == maxReportedItems {
					return
				}
			}
		}
	}
}

// checkQuery returns what is wrong with one query, or "".
func (c Config) checkQuery(q string) string {
	switch {
	case strings.TrimSpace(q) == "":
		return "must not be empty or only white space"
	case len(q) > c.MaxQueryBytes:
		return fmt.Sprintf("is %d bytes; the limit is %d bytes", len(q), c.MaxQueryBytes)
	case !utf8.ValidString(q):
		return "is not valid UTF-8"
	}
	return ""
}

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8, 0xff}
)

// checkImage returns what is wrong with one encoded image, or "". It reads
// the header first (image.DecodeConfig), to refuse non-images and
// decompression bombs cheaply, then decodes the pixels once to be sure
// Triton's preprocessing will not choke on the item.
func (c Config) checkImage(img []byte) string {
	switch {
	case len(img) == 0:
		return "is empty; want a PNG or JPEG file"
	case len(img) > c.MaxImageBytes:
		return fmt.Sprintf("is %d bytes; the limit is %d bytes", len(img), c.MaxImageBytes)
	case !bytes.HasPrefix(img, pngMagic) && !bytes.HasPrefix(img, jpegMagic):
		return "is not a PNG or JPEG file (unrecognised signature)"
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return fmt.Sprintf("cannot be read as PNG or JPEG: %v", err)
	}
	if format != "png" && format != "jpeg" {
		return fmt.Sprintf("is %s; want PNG or JPEG", format)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return fmt.Sprintf("has empty dimensions %dx%d", cfg.Width, cfg.Height)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > int64(c.MaxImagePixels) {
		return fmt.Sprintf("is %dx%d = %d pixels; the limit is %d pixels", cfg.Width, cfg.Height, px, c.MaxImagePixels)
	}
	// Only now, with the size known to be bounded, decode the pixels: a file
	// with a sound header but broken or missing image data would otherwise
	// fail in Triton's preprocessing, which fails the whole batch it is in
	// (other callers' items too, once requests are batched) without saying
	// which item was bad.
	if _, _, err := image.Decode(bytes.NewReader(img)); err != nil {
		return fmt.Sprintf("has a valid header but its image data cannot be decoded: %v", err)
	}
	return ""
}
