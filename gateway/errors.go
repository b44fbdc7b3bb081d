package gateway

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/batching"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/store"
	"github.com/morphik-org/colpali-gateway/triton"
)

// toStatus maps an error from the embedding path or the document store to
// the gRPC status the client sees. It is the one place where internal error classes become
// codes; grpc-gateway then maps codes to HTTP (RESOURCE_EXHAUSTED 429,
// UNAVAILABLE 503, DEADLINE_EXCEEDED 504, CANCELLED 499, ...).
func toStatus(ctx context.Context, err error) error {
	var backendErr *triton.Error
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "deadline exceeded before the call completed: %v", err)
	case ctx.Err() != nil:
		return status.Errorf(codes.Canceled, "call canceled: %v", err)
	case errors.Is(err, batching.ErrQueueFull):
		// The gateway's own queue is full: back-pressure, as Triton's.
		return status.Errorf(codes.ResourceExhausted, "%v; retry later with backoff", err)
	case errors.Is(err, batching.ErrQueueTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, batching.ErrClosed):
		// Shutting down: another replica can serve the call.
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, batching.ErrPriority):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, batching.ErrBadDownstream):
		return status.Error(codes.Internal, err.Error())
	case errors.Is(err, triton.ErrOverloaded):
		// Back-pressure: say so, and let the client back off; no retry here.
		return status.Errorf(codes.ResourceExhausted, "%v; retry later with backoff", err)
	case errors.Is(err, triton.ErrTimedOut):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, triton.ErrUnavailable), errors.Is(err, router.ErrNotReady), errors.Is(err, router.ErrNoBackend):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, triton.ErrRejected):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &backendErr):
		return status.Error(backendCode(backendErr.Status.Code()), err.Error())
	case errors.Is(err, model.ErrBadResponse):
		return status.Error(codes.Internal, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		// Nothing was acknowledged; a retry (with the same idempotency key
		// for an ingestion) is safe once the database is back.
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, store.ErrConflict):
		// The key names a different document that exists: a 409, which no
		// retry of the same request will fix.
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, errDiscarded):
		return status.Error(codes.Aborted, err.Error()+"; retry the ingestion")
	case errors.Is(err, store.ErrInvalidFilter):
		return fieldError("filters", err)
	case errors.Is(err, store.ErrInvalidPageToken):
		return fieldError("page_token", err)
	case errors.Is(err, store.ErrInvalidDocument):
		// Embeddings the store cannot take (a vector width other than its
		// schema's, say) mean the gateway, its models and its database
		// disagree: not the client's doing.
		return status.Error(codes.Internal, err.Error())
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// backendCode is the code a client sees for a backend failure outside the
// classes above. A server-side failure keeps its code; Aborted stays
// retryable as Unavailable. Everything else (an unknown model, an
// unimplemented call, a permission or precondition failure, a message over
// a size limit) means the gateway and its backends disagree: a
// misconfiguration that the client can neither cause nor fix, so it must
// not look like a client error (a 404 or a 400): it is Internal, and the
// message names the backend and its answer.
func backendCode(c codes.Code) codes.Code {
	switch c {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return c
	case codes.Aborted:
		return codes.Unavailable
	}
	return codes.Internal
}

// fieldError is INVALID_ARGUMENT naming field, for bad input that only the
// store could recognise (a page token it did not issue, a filter it cannot
// run).
func fieldError(field string, err error) error {
	var v violations
	v.add(field, "%v", err)
	return v.err()
}
