package gateway

import (
	"context"
	"fmt"
	"slices"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/store"
)

// Limits of the DocumentService that are fixed by the API (the proto
// documents them), not configuration.
const (
	maxIdempotencyKeyBytes = 256
	maxFilterValues        = 100
	maxFilterValueBytes    = 1024
)

func (s *documentService) validateIngest(ctx context.Context, req *colpaliv1.IngestDocumentRequest) error {
	var v violations
	budget := s.images.newBudget(ctx)
	pages := req.GetPages()
	switch n := len(pages); {
	case n == 0:
		v.add("pages", "must hold at least 1 page")
	case n > s.cfg.MaxDocumentPages:
		v.add("pages", "holds %d pages; the limit is %d per IngestDocument call (send larger documents with IngestDocumentStream, up to %d pages)", n, s.cfg.MaxDocumentPages, s.cfg.MaxStreamPages)
	default:
		bad := 0
		for i, p := range pages {
			if msg := budget.check(p.GetImage()); msg != "" {
				v.add(fmt.Sprintf("pages[%d].image", i), "%s", msg)
				if bad++; bad == maxReportedItems {
					break
				}
			}
		}
	}
	s.checkMetadata(&v, "metadata", req.GetMetadata())
	checkIdempotencyKey(&v, "idempotency_key", req.GetIdempotencyKey())
	return budget.done(v)
}

// validateHeader checks the first message of a streaming ingestion.
func (s *documentService) validateHeader(msg *colpaliv1.IngestDocumentStreamRequest) error {
	var v violations
	h := msg.GetHeader()
	if h == nil {
		v.add("header", "the first message must carry the header (metadata, idempotency_key, page_count), not a page")
		return v.err()
	}
	switch n := h.GetPageCount(); {
	case n <= 0:
		v.add("header.page_count", "is %d; want 1 to %d", n, s.cfg.MaxStreamPages)
	case int(n) > s.cfg.MaxStreamPages:
		v.add("header.page_count", "is %d; the limit is %d pages per document", n, s.cfg.MaxStreamPages)
	}
	s.checkMetadata(&v, "header.metadata", h.GetMetadata())
	checkIdempotencyKey(&v, "header.idempotency_key", h.GetIdempotencyKey())
	return v.err()
}

// validatePageMessage checks a message after the header: page number n
// (1-based).
func (s *documentService) validatePageMessage(ctx context.Context, msg *colpaliv1.IngestDocumentStreamRequest, n int) error {
	var v violations
	budget := s.images.newBudget(ctx)
	switch {
	case msg.GetHeader() != nil:
		v.add("header", "message %d carries a second header; only the first message may", n+1)
	case msg.GetPage() == nil:
		v.add("page", "message %d carries no page", n+1)
	default:
		if problem := budget.check(msg.GetPage().GetImage()); problem != "" {
			v.add("page.image", "page %d %s", n, problem)
		}
	}
	return budget.done(v)
}

// checkMetadata reports what is wrong with a document's metadata: too many
// entries, too many bytes, or a key or value Postgres text cannot hold (not
// UTF-8, or a NUL character). Keys are reported in sorted order, so the
// message is stable.
func (s *documentService) checkMetadata(v *violations, field string, md map[string]string) {
	if n := len(md); n > s.cfg.MaxMetadataEntries {
		v.add(field, "holds %d entries; the limit is %d", n, s.cfg.MaxMetadataEntries)
	}
	size := 0
	for k, val := range md {
		size += len(k) + len(val)
	}
	if size > s.cfg.MaxMetadataBytes {
		v.add(field, "holds %d bytes of keys and values; the limit is %d bytes", size, s.cfg.MaxMetadataBytes)
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == "" {
			v.add(field, "has an empty key")
			return
		}
		if problem := store.TextProblem(k); problem != "" {
			v.add(field, "key %q %s", k, problem)
			return
		}
		if problem := store.TextProblem(md[k]); problem != "" {
			v.add(field, "value of key %q %s", k, problem)
			return
		}
	}
}

func checkIdempotencyKey(v *violations, field, key string) {
	if len(key) > maxIdempotencyKeyBytes {
		v.add(field, "is %d bytes; the limit is %d bytes", len(key), maxIdempotencyKeyBytes)
	} else if problem := store.TextProblem(key); problem != "" {
		v.add(field, "%s", problem)
	}
}

// checkDocumentID requires a document id: a UUID in its text form.
func checkDocumentID(v *violations, field, id string) {
	switch {
	case id == "":
		v.add(field, "is required")
	case !store.ValidDocumentID(id):
		v.add(field, "%q is not a document id (want a UUID such as 0b6f2c1e-4d2a-4c8e-9f61-3a5d7e9b1c20)", truncate(id, 64))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (s *documentService) validateSearch(req *colpaliv1.SearchRequest) error {
	var v violations
	if problem := s.cfg.checkQuery(req.GetQuery()); problem != "" {
		v.add("query", "%s", problem)
	}
	if k := req.GetTopK(); k < 0 || int(k) > s.cfg.MaxTopK {
		v.add("top_k", "is %d; want 1 to %d (0 means %d)", k, s.cfg.MaxTopK, store.DefaultTopK)
	}
	filters := req.GetFilters()
	if len(filters) > s.cfg.MaxFilters {
		v.add("filters", "holds %d filters; the limit is %d", len(filters), s.cfg.MaxFilters)
		return v.err()
	}
	for i, f := range filters {
		checkFilter(&v, fmt.Sprintf("filters[%d]", i), f)
	}
	return v.err()
}

// checkFilter reports a filter on a field Search does not know, and values
// that cannot match: none, too many, too long, or for document_id not a
// UUID.
func checkFilter(v *violations, field string, f *colpaliv1.Filter) {
	name := f.GetField()
	_, isID, known := store.ParseFilterField(name)
	if !known {
		v.add(field+".field", "unknown field %q; want %q or %q followed by a metadata key", truncate(name, 64), store.FilterDocumentID, store.FilterMetadataPrefix)
	} else if problem := store.TextProblem(name); problem != "" {
		v.add(field+".field", "%s", problem)
	}
	values := f.GetValues()
	switch n := len(values); {
	case n == 0:
		v.add(field+".values", "must hold at least 1 value")
		return
	case n > maxFilterValues:
		v.add(field+".values", "holds %d values; the limit is %d", n, maxFilterValues)
		return
	}
	for j, val := range values {
		vf := fmt.Sprintf("%s.values[%d]", field, j)
		switch {
		case len(val) > maxFilterValueBytes:
			v.add(vf, "is %d bytes; the limit is %d bytes", len(val), maxFilterValueBytes)
		case store.TextProblem(val) != "":
			v.add(vf, "%s", store.TextProblem(val))
		case isID && !store.ValidDocumentID(val):
			v.add(vf, "%q is not a document id (want a UUID)", truncate(val, 64))
		default:
			continue
		}
		return // one bad value per filter is enough to report
	}
}
