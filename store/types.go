package store

import (
	"errors"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Errors of the store; test with errors.Is. Each is a member of an errclass
// class, which the gateway's edge maps to a code.
var (
	// ErrNotFound: no such document in this tenant.
	ErrNotFound = errclass.Wrap(errclass.NotFound, errors.New("document not found"))
	// ErrUnavailable: the database cannot be reached; nothing was written,
	// so a retry (with the same idempotency key for an ingestion) is safe
	// once it is back.
	ErrUnavailable = errclass.Wrap(errclass.Unavailable, errors.New("database unavailable"))
	// ErrConflict: an idempotency key was reused with a different request,
	// which no retry of the same request will fix.
	ErrConflict = errclass.Wrap(errclass.Conflict, errors.New("idempotency key reused with a different document"))
)

// DefaultTenant is the tenant of every call when authentication is off
// (auth.DefaultTenant, the gateway's -auth none), and so of the documents
// stored before authentication existed.
const DefaultTenant = "default"

// Document is a stored document without its vectors.
type Document struct {
	ID             string
	Tenant         string
	IdempotencyKey string
	Metadata       map[string]string
	PageCount      int
	CreatedAt      time.Time
}

// NewDocument is the header of a document to write (BeginDocument); its
// pages follow with AddPages.
type NewDocument struct {
	Tenant         string
	IdempotencyKey string // empty: no idempotency
	Metadata       map[string]string
	// RequestDigest optionally identifies the request as the client sent
	// it (e.g. a SHA-256 of the page images), so that reusing an
	// idempotency key for another request is ErrConflict. The store
	// compares metadata, page count and this digest, not the vectors: a
	// retried request re-embedded on a GPU need not give identical floats.
	RequestDigest []byte
}

// Filter restricts Search to documents whose field matches. Field is
// "document_id" or "metadata.<key>"; Values match exactly, any of them.
type Filter struct {
	Field  string
	Values []string
}

// SearchOptions shape one Search.
type SearchOptions struct {
	TopK    int
	Filters []Filter
}

// Hit is one ranked page.
type Hit struct {
	Document Document
	Page     int // 1-based
	Score    float32
}
