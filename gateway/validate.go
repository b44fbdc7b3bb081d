package gateway

import (
	"context"
	"fmt"
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
	if levels := s.priorityLevels(kind); p > uint32(levels) { // #nosec G115 -- levels is a configured count of priority levels, positive and small
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

func (s *embeddingService) validateImages(ctx context.Context, req *colpaliv1.EmbedImagesRequest) error {
	var v violations
	budget := s.images.newBudget(ctx)
	validateBatch(&v, "images", "image", req.GetImages(), s.cfg.MaxImages, budget.check)
	s.validateEncoding(&v, req.GetEncoding())
	s.validatePriority(&v, req.GetPriority(), model.Image)
	return budget.done(v)
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
