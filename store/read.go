package store

// The read side of documents: get, list (with its page tokens) and delete.
// The write side, staged ingestion, is documents.go.

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listing page sizes.
const (
	DefaultListPageSize = 50
	MaxListPageSize     = 1000
)

// GetDocument returns a committed document of tenant, or ErrNotFound.
func (s *Store) GetDocument(ctx context.Context, tenant, id string) (Document, error) {
	if !ValidDocumentID(id) || tenant == "" {
		return Document{}, ErrNotFound
	}
	var doc Document
	err := s.inTx(ctx, readOnly, func(tx pgx.Tx) (err error) {
		doc, err = scanDocument(tx.QueryRow(ctx, s.q(`SELECT `+documentColumns+` FROM {documents}
			WHERE tenant = $1 AND id = $2 AND state = 'committed'`), tenant, id))
		return err
	})
	if err != nil {
		return Document{}, fmt.Errorf("store: get document: %w", err)
	}
	return doc, nil
}

// DeleteDocument deletes a committed document of tenant and, by cascade in
// the same statement, its pages and vectors; ErrNotFound if there is none.
func (s *Store) DeleteDocument(ctx context.Context, tenant, id string) error {
	if !ValidDocumentID(id) || tenant == "" {
		return ErrNotFound
	}
	var deleted int64
	err := s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, s.q(`DELETE FROM {documents} WHERE tenant = $1 AND id = $2 AND state = 'committed'`), tenant, id)
		deleted = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("store: delete document: %w", err)
	}
	if deleted == 0 {
		return ErrNotFound
	}
	return nil
}

// ListDocuments returns tenant's committed documents ordered by creation
// (commit) time, then id, pageSize at a time (0: DefaultListPageSize; at
// most MaxListPageSize). nextPageToken is "" after the last page.
func (s *Store) ListDocuments(ctx context.Context, tenant string, pageSize int, pageToken string) (docs []Document, nextPageToken string, err error) {
	if pageSize <= 0 {
		pageSize = DefaultListPageSize
	}
	pageSize = min(pageSize, MaxListPageSize)
	after, afterID, err := decodePageToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	err = s.inTx(ctx, readOnly, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.q(`SELECT `+documentColumns+` FROM {documents}
			WHERE tenant = $1 AND state = 'committed' AND (created_at, id) > ($2, $3::uuid)
			ORDER BY created_at, id LIMIT $4`), tenant, after, afterID, pageSize+1)
		if err != nil {
			return err
		}
		docs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Document, error) { return scanDocument(r) })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: list documents: %w", err)
	}
	if len(docs) > pageSize {
		docs = docs[:pageSize]
		last := docs[len(docs)-1]
		nextPageToken = encodePageToken(last.CreatedAt, last.ID)
	}
	return docs, nextPageToken, nil
}

// A page token is "v1/<created_at in unix microseconds>/<id>", base64url:
// opaque to clients, stable across gateways.
func encodePageToken(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1/" + strconv.FormatInt(t.UnixMicro(), 10) + "/" + id))
}

func decodePageToken(tok string) (time.Time, string, error) {
	if tok == "" {
		return time.Unix(0, 0), "00000000-0000-0000-0000-000000000000", nil // before every document
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		parts := strings.Split(string(b), "/")
		if len(parts) == 3 && parts[0] == "v1" && ValidDocumentID(parts[2]) {
			if us, err := strconv.ParseInt(parts[1], 10, 64); err == nil {
				return time.UnixMicro(us), parts[2], nil
			}
		}
	}
	return time.Time{}, "", fmt.Errorf("%w: %q", ErrInvalidPageToken, tok)
}
