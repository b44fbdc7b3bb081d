package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Page-insert batching where COPY cannot be used (the embedded PGlite's
// socket server breaks on a binary COPY): pages go to the server in pgx
// batches of at most this many rows or bytes, one round trip each.
const (
	insertBatchPages = 32
	insertBatchBytes = 8 << 20
)

// insertPages writes pages; an existing page (a retried AddPages) is
// replaced. On a real Postgres it deletes the pages it replaces and
// COPYs the new ones in (binary: a 264 KB page goes as it is, and the
// server parses no statement a row); on PGlite, which cannot take a
// binary COPY, it sends batched INSERTs.
func (s *Store) insertPages(ctx context.Context, tx pgx.Tx, tenant, id string, committed bool, pages []encodedPage) error {
	useCopy, err := s.canCopy(ctx, tx)
	if err != nil {
		return err
	}
	if useCopy {
		return s.copyPages(ctx, tx, tenant, id, committed, pages)
	}
	insert := s.q(`INSERT INTO {pages} (tenant, document_id, page, patches, committed, fde, codes, vectors)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (tenant, document_id, page) DO UPDATE
		SET patches = excluded.patches, fde = excluded.fde, codes = excluded.codes, vectors = excluded.vectors`)
	for len(pages) > 0 {
		var b pgx.Batch
		size := 0
		n := 0
		for n < len(pages) && n < insertBatchPages && (n == 0 || size+len(pages[n].vectors) <= insertBatchBytes) {
			p := pages[n]
			b.Queue(insert, tenant, id, p.number, p.patches, committed, p.fde, p.codes, p.vectors)
			size += len(p.vectors)
			n++
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
		pages = pages[n:]
	}
	return nil
}

// canCopy reports whether the database takes a binary COPY: any Postgres
// but the embedded PGlite. Asked once a Store.
func (s *Store) canCopy(ctx context.Context, tx pgx.Tx) (bool, error) {
	switch s.copyOK.Load() {
	case 1:
		return true, nil
	case 2:
		return false, nil
	}
	var version string
	if err := tx.QueryRow(ctx, `SELECT version()`).Scan(&version); err != nil {
		return false, err
	}
	ok := !strings.Contains(version, "PGlite")
	state := int32(2)
	if ok {
		state = 1
	}
	s.copyOK.Store(state)
	return ok, nil
}

var pageColumns = []string{"tenant", "document_id", "page", "patches", "committed", "fde", "codes", "vectors"}

func (s *Store) copyPages(ctx context.Context, tx pgx.Tx, tenant, id string, committed bool, pages []encodedPage) error {
	numbers := make([]int32, len(pages))
	for i, p := range pages {
		numbers[i] = int32(p.number)
	}
	if _, err := tx.Exec(ctx, s.q(`DELETE FROM {pages} WHERE tenant = $1 AND document_id = $2 AND page = ANY($3)`),
		tenant, id, numbers); err != nil {
		return err
	}
	docID, err := parseUUID(id)
	if err != nil {
		return err
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{s.cfg.Schema, "pages"}, pageColumns,
		pgx.CopyFromSlice(len(pages), func(i int) ([]any, error) {
			p := pages[i]
			return []any{tenant, docID, int32(p.number), int32(p.patches), committed, p.fde, p.codes, p.vectors}, nil
		}))
	return err
}

// parseUUID reads a UUID in its canonical text form (see ValidDocumentID).
func parseUUID(s string) (pgtype.UUID, error) {
	if !ValidDocumentID(s) {
		return pgtype.UUID{}, fmt.Errorf("%w: %q is not a UUID", ErrNotFound, s)
	}
	var u pgtype.UUID
	hex := strings.ReplaceAll(s, "-", "")
	for i := range u.Bytes {
		v, err := strconv.ParseUint(hex[2*i:2*i+2], 16, 8)
		if err != nil {
			return pgtype.UUID{}, err
		}
		u.Bytes[i] = byte(v)
	}
	u.Valid = true
	return u, nil
}
