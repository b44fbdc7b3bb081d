package gateway

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router"
	"github.com/morphik-org/colpali-gateway/triton"
)

// toStatus maps an error from the embedding path to the gRPC status the
// client sees. It is the one place where internal error classes become
// codes; grpc-gateway then maps codes to HTTP (RESOURCE_EXHAUSTED 429,
// UNAVAILABLE 503, DEADLINE_EXCEEDED 504, CANCELLED 499, ...).
func toStatus(ctx context.Context, err error) error {
	var backendErr *triton.Error
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "deadline exceeded before the embeddings were ready: %v", err)
	case ctx.Err() != nil:
		return status.Errorf(codes.Canceled, "call canceled: %v", err)
	case errors.Is(err, triton.ErrOverloaded):
		// Back-pressure: say so, and let the client back off; no retry here.
		return status.Errorf(codes.ResourceExhausted, "%v; retry later with backoff", err)
	case errors.Is(err, triton.ErrUnavailable), errors.Is(err, router.ErrNotReady):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, triton.ErrRejected):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &backendErr):
		// Any other backend failure keeps the backend's own code.
		return status.Error(backendErr.Status.Code(), err.Error())
	case errors.Is(err, model.ErrBadResponse):
		return status.Error(codes.Internal, err.Error())
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}
