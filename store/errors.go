package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// More errors of the store (see types.go for the first ones); test with errors.Is.
var (
	// ErrInvalidPageToken: ListDocuments got a token it did not issue.
	ErrInvalidPageToken = errclass.Wrap(errclass.Invalid, errors.New("invalid page token"))
	// ErrInvalidFilter: a Search filter names an unknown field or has no
	// values; the message names the field.
	ErrInvalidFilter = errclass.Wrap(errclass.Invalid, errors.New("invalid filter"))
	// ErrInvalidDocument: pages or a query the store cannot take (wrong
	// vector width, no vectors, non-finite values, page numbers out of
	// order, a commit with missing pages); the message says which. The
	// gateway validates what clients send, so this means the gateway, its
	// models and its database disagree: class Internal.
	ErrInvalidDocument = errclass.Wrap(errclass.Internal, errors.New("invalid document"))
)

// translate turns a driver error into the store's errors; it is the one
// place that knows pgx's and Postgres's error shapes. The caller's own
// cancellation or deadline is returned as such.
func translate(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%w: %w", ctxErr, err)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code[:2] == "08", // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, cannot connect now
			pgErr.Code == "53300": // too many connections
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		case pgErr.Code == "42P01": // undefined table: not migrated yet
			return fmt.Errorf("%w: schema not migrated: %w", ErrUnavailable, err)
		}
		return err
	}
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) || isClosedConn(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// isClosedConn reports pgx's "conn closed" / "conn busy"-style failures
// that carry no typed error.
func isClosedConn(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch e.Error() {
		case "conn closed", "closed pool", "connection closed":
			return true
		}
	}
	return false
}
