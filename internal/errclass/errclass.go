// Package errclass is the small set of error classes every layer of the
// gateway sorts its failures into: the triton client, the router, the
// batcher, the store and the ingestion pipeline wrap their own errors under
// one of these sentinels with %w, and the gateway's edge (one interceptor
// pair) turns the class into a gRPC code, an HTTP status through
// grpc-gateway, and error details.
//
// Test a class with errors.Is, never with ==: errors are wrapped on their way
// up, often twice ("%w: %w", class, specific).
//
// No type here implements GRPCStatus: a status is made once, at the edge, so
// that a path that forgets to translate cannot leak a backend's own code.
package errclass

//lint:file-ignore ST1012 the classes are read as errclass.Overloaded, errclass.NotFound: an Err prefix would only stutter

import (
	"errors"
	"fmt"
	"time"
)

// The classes. Each names what the caller can do about the failure, not
// where it happened.
var (
	// Invalid: the request itself is wrong; retrying it unchanged fails
	// again (INVALID_ARGUMENT, HTTP 400). Wrap a *FieldError to name the
	// field and the limit.
	Invalid = errors.New("invalid request")
	// NotFound: the named resource does not exist for the caller's tenant
	// (NOT_FOUND, 404).
	NotFound = errors.New("not found")
	// Conflict: the request clashes with what exists, such as an
	// idempotency key reused for a different document (ALREADY_EXISTS, 409).
	Conflict = errors.New("conflict")
	// Aborted: the operation lost a race and may be retried as a whole
	// (ABORTED, 409).
	Aborted = errors.New("aborted")
	// Overloaded: back-pressure; retry later with backoff
	// (RESOURCE_EXHAUSTED, 429). Wrap with RetryAfter to suggest a delay.
	Overloaded = errors.New("overloaded")
	// Unavailable: a dependency (backends, database) or this replica cannot
	// serve now; another try, or another replica, may (UNAVAILABLE, 503).
	Unavailable = errors.New("unavailable")
	// TimedOut: the call ran out of time, in a queue or downstream
	// (DEADLINE_EXCEEDED, 504).
	TimedOut = errors.New("timed out")
	// Internal: the gateway, its backends or its database disagree about a
	// contract; neither cause nor cure is the client's (INTERNAL, 500). The
	// client sees a generic message; the detail goes to the log.
	Internal = errors.New("internal error")
	// Unimplemented: the server does not offer this (UNIMPLEMENTED, 501),
	// such as documents when no database is configured.
	Unimplemented = errors.New("not implemented")
)

// classes lists every class, most specific first, for Of.
var classes = []error{Unauthenticated, PermissionDenied, Invalid, NotFound, Conflict, Aborted, Overloaded, Unavailable, TimedOut, Unimplemented, Internal}

// Of returns err's class, or nil when err belongs to none (callers treat
// that as Internal).
func Of(err error) error {
	for _, c := range classes {
		if errors.Is(err, c) {
			return c
		}
	}
	return nil
}

// Wrap returns err under class: errors.Is(result, class) and
// errors.Is(result, err) both hold. The message is err's alone, so that a
// class does not repeat words the specific error already says.
func Wrap(class, err error) error {
	if err == nil {
		return nil
	}
	return &classed{class: class, err: err}
}

// Errorf formats an error under class, as fmt.Errorf would; %w verbs in
// format wrap as usual.
func Errorf(class error, format string, args ...any) error {
	return Wrap(class, fmt.Errorf(format, args...))
}

type classed struct {
	class, err error
}

func (c *classed) Error() string   { return c.err.Error() }
func (c *classed) Unwrap() []error { return []error{c.class, c.err} }

// FieldViolation names one bad field of a request and why it is bad,
// limits included ("at most 64 queries").
type FieldViolation struct {
	Field       string
	Description string
}

// FieldError is a bad request naming its fields; it is in class Invalid.
// The edge turns it into INVALID_ARGUMENT with a BadRequest detail holding
// every violation.
type FieldError struct {
	Violations []FieldViolation
}

// Field returns a FieldError for one field.
func Field(field, format string, args ...any) error {
	return &FieldError{Violations: []FieldViolation{{Field: field, Description: fmt.Sprintf(format, args...)}}}
}

func (e *FieldError) Error() string {
	msg := "invalid request"
	for i, v := range e.Violations {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		msg += sep + v.Field + ": " + v.Description
	}
	return msg
}

// Is makes every FieldError a member of Invalid.
func (e *FieldError) Is(target error) bool { return target == Invalid }

// Retry is a suggestion to retry after Delay; the edge sends it as a
// RetryInfo detail. It keeps the class of the error it wraps.
type Retry struct {
	Delay time.Duration
	Err   error
}

// RetryAfter wraps err with a suggested retry delay.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &Retry{Delay: d, Err: err}
}

func (r *Retry) Error() string { return r.Err.Error() }
func (r *Retry) Unwrap() error { return r.Err }

// Reason is a machine-readable reason for a failure, sent as an ErrorInfo
// detail (reason in UPPER_SNAKE_CASE, domain "colpali-gateway") so that
// clients can branch without parsing messages, such as QUEUE_FULL,
// NO_READY_BACKEND or MEMORY_BUDGET. It keeps the class of the error it
// wraps.
type Reason struct {
	Reason string
	// Metadata is sent with the ErrorInfo; keep it free of secrets and
	// internal addresses.
	Metadata map[string]string
	Err      error
}

// WithReason wraps err with a machine-readable reason.
func WithReason(err error, reason string, metadata map[string]string) error {
	if err == nil {
		return nil
	}
	return &Reason{Reason: reason, Metadata: metadata, Err: err}
}

func (r *Reason) Error() string { return r.Err.Error() }
func (r *Reason) Unwrap() error { return r.Err }
