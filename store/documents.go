package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
)

// encodedPage is a page ready to insert: its FDE, its vectors' codes
// and its packed vectors.
type encodedPage struct {
	number  int
	patches int
	fde     pgtype.Bits
	codes   []byte
	vectors []byte
}

// checkEmbedding reports why e cannot be stored or searched, naming what.
func checkEmbedding(what string, e model.Embedding) error {
	switch {
	case e.Dim != VectorDim:
		return fmt.Errorf("%w: %s: vectors are %d-dimensional, want %d", ErrInvalidDocument, what, e.Dim, VectorDim)
	case e.Rows < 1:
		return fmt.Errorf("%w: %s: no vectors", ErrInvalidDocument, what)
	case len(e.Values) != e.Rows*e.Dim:
		return fmt.Errorf("%w: %s: %d values for %d x %d", ErrInvalidDocument, what, len(e.Values), e.Rows, e.Dim)
	}
	for _, v := range e.Values {
		// Beyond fp16's range (65504) a value cannot be stored; NaN (which
		// fails both comparisons) and Inf never.
		if !(v >= -65504 && v <= 65504) {
			return fmt.Errorf("%w: %s: value %v is not finite or beyond fp16's range", ErrInvalidDocument, what, v)
		}
	}
	return nil
}

// encodePages checks and encodes pages numbered first, first+1, ...
func encodePages(first int, pages []model.Embedding) ([]encodedPage, error) {
	for i, p := range pages {
		if err := checkEmbedding("page "+strconv.Itoa(first+i), p); err != nil {
			return nil, err
		}
	}
	out := make([]encodedPage, len(pages))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(pages)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(pages); i = int(next.Add(1) - 1) {
				p := pages[i]
				out[i] = encodedPage{number: first + i, patches: p.Rows, fde: fde.bits(fde.page(p)),
					codes: patchCodes(p), vectors: encodeFP16(p)}
			}
		})
	}
	wg.Wait()
	return out, nil
}

// fingerprint identifies a request, so that a retry (same fingerprint) can
// be told from a reuse of its idempotency key (another one): its metadata
// and the caller's RequestDigest (which covers the pages). Not the
// vectors: a retry re-embeds its pages, and a GPU need not give the same
// floats twice. The "pages:-1" prefix is what documents begun before
// pages came later were fingerprinted with; it stays so that stored
// fingerprints keep matching.
func fingerprint(d NewDocument) []byte {
	h := sha256.New()
	fmt.Fprint(h, "pages:-1\x00")
	for _, k := range slices.Sorted(maps.Keys(d.Metadata)) {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(d.Metadata[k]), d.Metadata[k])
	}
	fmt.Fprintf(h, "\x00digest:%x", d.RequestDigest)
	return h.Sum(nil)
}

func checkTenant(tenant string) error {
	if tenant == "" {
		return fmt.Errorf("%w: empty tenant", ErrInvalidDocument)
	}
	return nil
}

const documentColumns = `id::text, tenant, coalesce(idempotency_key, ''), metadata, page_count, created_at`

func scanDocument(row pgx.Row) (Document, error) {
	var d Document
	err := row.Scan(&d.ID, &d.Tenant, &d.IdempotencyKey, &d.Metadata, &d.PageCount, &d.CreatedAt)
	if d.Metadata == nil {
		d.Metadata = map[string]string{}
	}
	return d, err
}

// nullIfEmpty stores "no idempotency key" as NULL.
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// claimKey looks for the document holding key in tenant, inside tx and
// locking it. A committed one with the same fingerprint is returned
// (found=true); with another fingerprint it is ErrConflict; a pending one,
// left by an attempt that did not finish, is deleted so the caller can
// begin afresh.
func (s *Store) claimKey(ctx context.Context, tx pgx.Tx, tenant, key string, fp []byte) (doc Document, found bool, err error) {
	if key == "" {
		return Document{}, false, nil
	}
	var state string
	var oldFP []byte
	row := tx.QueryRow(ctx, s.q(`SELECT `+documentColumns+`, state, fingerprint FROM {documents}
		WHERE tenant = $1 AND idempotency_key = $2 FOR UPDATE`), tenant, key)
	err = row.Scan(&doc.ID, &doc.Tenant, &doc.IdempotencyKey, &doc.Metadata, &doc.PageCount, &doc.CreatedAt, &state, &oldFP)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Document{}, false, nil
	case err != nil:
		return Document{}, false, err
	case state == "committed":
		if string(oldFP) != string(fp) {
			return Document{}, false, fmt.Errorf("%w: key %q names document %s", ErrConflict, key, doc.ID)
		}
		if doc.Metadata == nil {
			doc.Metadata = map[string]string{}
		}
		return doc, true, nil
	}
	_, err = tx.Exec(ctx, s.q(`DELETE FROM {documents} WHERE tenant = $1 AND id = $2`), tenant, doc.ID)
	return Document{}, false, err
}

// isKeyViolation reports a unique violation of the idempotency key.
func isKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "documents_idempotency_key"
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// encodedPage is a page ready to insert: its FDE, its vectors' codes
// and its packed vectors.
// BeginDocument starts a staged document: invisible to Search, Get and
// List until CommitDocument. With an IdempotencyKey a
// committed document of the tenant holds, that document is returned with
// existing=true; a pending one is discarded and begun afresh.
//
// Calls racing with one key (the losers hit the unique index) are
// answered as a retry arriving a moment later would be, except that a
// pending document the winner has just begun is left to it: the
// committed document (existing=true) when the request matches,
// ErrConflict when it differs, and an error of class errclass.Aborted
// ("retry later") while the matching winner is still in flight.
func (s *Store) BeginDocument(ctx context.Context, d NewDocument) (doc Document, existing bool, err error) {
	if err := checkTenant(d.Tenant); err != nil {
		return Document{}, false, err
	}
	fp := fingerprint(d)
	err = s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		found, ok, err := s.claimKey(ctx, tx, d.Tenant, d.IdempotencyKey, fp)
		if err != nil || ok {
			doc, existing = found, ok
			return err
		}
		doc, err = scanDocument(tx.QueryRow(ctx, s.q(`INSERT INTO {documents}
			(tenant, idempotency_key, fingerprint, metadata, state)
			VALUES ($1, $2, $3, $4, 'pending') RETURNING `+documentColumns),
			d.Tenant, nullIfEmpty(d.IdempotencyKey), fp, nonNil(d.Metadata)))
		existing = false
		return err
	})
	if d.IdempotencyKey != "" && isKeyViolation(err) {
		doc, existing, err = s.keyRaced(ctx, d.Tenant, d.IdempotencyKey, fp)
	}
	if err != nil {
		return Document{}, false, fmt.Errorf("store: begin document: %w", err)
	}
	return doc, existing, nil
}

// keyRaced answers a BeginDocument that lost a race for its idempotency
// key: another transaction inserted a document with the key after this
// one looked for it. It reads what the winner left, without taking it
// over.
func (s *Store) keyRaced(ctx context.Context, tenant, key string, fp []byte) (doc Document, existing bool, err error) {
	var state string
	var oldFP []byte
	err = s.inTx(ctx, readOnly, func(tx pgx.Tx) error {
		row := tx.QueryRow(ctx, s.q(`SELECT `+documentColumns+`, state, fingerprint FROM {documents}
			WHERE tenant = $1 AND idempotency_key = $2`), tenant, key)
		return row.Scan(&doc.ID, &doc.Tenant, &doc.IdempotencyKey, &doc.Metadata, &doc.PageCount, &doc.CreatedAt, &state, &oldFP)
	})
	switch {
	case errors.Is(err, ErrNotFound):
		// The winner was itself discarded or swept meanwhile.
		return Document{}, false, errclass.Errorf(errclass.Aborted,
			"idempotency key %q: a concurrent ingestion with this key came and went; retry", key)
	case err != nil:
		return Document{}, false, err
	case string(oldFP) != string(fp):
		return Document{}, false, fmt.Errorf("%w: key %q names document %s", ErrConflict, key, doc.ID)
	case state == "committed":
		if doc.Metadata == nil {
			doc.Metadata = map[string]string{}
		}
		return doc, true, nil
	}
	return Document{}, false, errclass.Errorf(errclass.Aborted,
		"idempotency key %q: a concurrent ingestion with this key is in progress (document %s); retry later", key, doc.ID)
}

// lockPending locks the pending document id of tenant inside tx:
// ErrNotFound if there is none, ErrConflict if it is already committed.
func (s *Store) lockPending(ctx context.Context, tx pgx.Tx, tenant, id string) error {
	var state string
	err := tx.QueryRow(ctx, s.q(`SELECT state FROM {documents} WHERE tenant = $1 AND id = $2 FOR UPDATE`), tenant, id).Scan(&state)
	if err != nil {
		return err // ErrNoRows becomes ErrNotFound
	}
	if state != "pending" {
		return fmt.Errorf("%w: document %s is already committed", ErrConflict, id)
	}
	return nil
}

// AddPages writes pages first, first+1, ... (1-based) of a pending
// document in one transaction. Writing a page again replaces it, so a
// retried call is harmless.
func (s *Store) AddPages(ctx context.Context, tenant, id string, first int, pages []model.Embedding) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	if !ValidDocumentID(id) {
		return ErrNotFound
	}
	if first < 1 {
		return fmt.Errorf("%w: first page %d: pages are numbered from 1", ErrInvalidDocument, first)
	}
	enc, err := encodePages(first, pages)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if err := s.lockPending(ctx, tx, tenant, id); err != nil {
			return err
		}
		if err := s.insertPages(ctx, tx, tenant, id, false, enc); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.q(`UPDATE {documents} SET updated_at = clock_timestamp() WHERE tenant = $1 AND id = $2`), tenant, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: add pages: %w", err)
	}
	return nil
}

// CommitDocument makes a pending document visible, atomically, and returns
// it. Its pages must be 1..n with none missing. Committing a committed
// document returns it unchanged.
func (s *Store) CommitDocument(ctx context.Context, tenant, id string) (Document, error) {
	if err := checkTenant(tenant); err != nil {
		return Document{}, err
	}
	if !ValidDocumentID(id) {
		return Document{}, ErrNotFound
	}
	var doc Document
	err := s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		err := s.lockPending(ctx, tx, tenant, id)
		if errors.Is(err, ErrConflict) {
			doc, err = scanDocument(tx.QueryRow(ctx, s.q(`SELECT `+documentColumns+` FROM {documents} WHERE tenant = $1 AND id = $2`), tenant, id))
			return err
		}
		if err != nil {
			return err
		}
		var count, last int
		if err := tx.QueryRow(ctx, s.q(`SELECT count(*), coalesce(max(page), 0) FROM {pages} WHERE tenant = $1 AND document_id = $2`),
			tenant, id).Scan(&count, &last); err != nil {
			return err
		}
		switch {
		case count == 0:
			return fmt.Errorf("%w: document %s has no pages", ErrInvalidDocument, id)
		case count != last:
			return fmt.Errorf("%w: document %s has %d pages numbered up to %d: some are missing", ErrInvalidDocument, id, count, last)
		}
		if _, err := tx.Exec(ctx, s.q(`UPDATE {pages} SET committed = true WHERE tenant = $1 AND document_id = $2`), tenant, id); err != nil {
			return err
		}
		doc, err = scanDocument(tx.QueryRow(ctx, s.q(`UPDATE {documents}
			SET state = 'committed', page_count = $3, created_at = clock_timestamp(), updated_at = clock_timestamp()
			WHERE tenant = $1 AND id = $2 RETURNING `+documentColumns), tenant, id, count))
		return err
	})
	if err != nil {
		return Document{}, fmt.Errorf("store: commit document: %w", err)
	}
	return doc, nil
}

// AbortDocument deletes a pending document and its pages: ErrNotFound if
// there is none, ErrConflict if it is committed (DeleteDocument removes
// those).
func (s *Store) AbortDocument(ctx context.Context, tenant, id string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	if !ValidDocumentID(id) {
		return ErrNotFound
	}
	err := s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if err := s.lockPending(ctx, tx, tenant, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.q(`DELETE FROM {documents} WHERE tenant = $1 AND id = $2`), tenant, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: abort document: %w", err)
	}
	return nil
}
