package store

import (
	"strings"
	"unicode/utf8"
)

// The rules below are what the store accepts; the gateway's validation
// calls them too, so that a request the gateway lets through is one the
// store takes, and the two cannot disagree.

// DefaultTopK is a Search's TopK when the options (or the API request)
// leave it 0.
const DefaultTopK = 10

// The fields a Search filter may name: the document id, or one metadata
// entry as FilterMetadataPrefix + key.
const (
	FilterDocumentID     = "document_id"
	FilterMetadataPrefix = "metadata."
)

// ParseFilterField sorts a filter's field: the document id (isID), a
// metadata entry (its key), or neither (known false).
func ParseFilterField(field string) (metadataKey string, isID, known bool) {
	if field == FilterDocumentID {
		return "", true, true
	}
	key, ok := strings.CutPrefix(field, FilterMetadataPrefix)
	if !ok || key == "" {
		return "", false, false
	}
	return key, false, true
}

// ValidDocumentID reports whether s is a document id: a UUID in its
// 8-4-4-4-12 hex text form. Other ids cannot name a document, so the store
// answers them not found rather than sending them to the database.
func ValidDocumentID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// TextProblem says why s cannot be stored as Postgres text (metadata keys
// and values, idempotency keys, filter values), or "".
func TextProblem(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL character"
	}
	return ""
}
