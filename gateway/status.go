package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// errorDomain is the ErrorInfo domain of the reasons this service sends.
const errorDomain = "colpali-gateway"

// statusInterceptor is the edge: the one place where a handler's error
// becomes the status a client sees (and, through grpc-gateway, an HTTP
// status: RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
// CANCELLED 499, ...). It is installed innermost, so handlers return plain
// errors and every other interceptor (logging, metrics) sees the final code.
func statusInterceptor(base *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, toStatus(ctx, base, err)
		}
		return resp, nil
	}
}

// streamStatusInterceptor is statusInterceptor for streaming calls.
func streamStatusInterceptor(base *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := handler(srv, ss); err != nil {
			return toStatus(ss.Context(), base, err)
		}
		return nil
	}
}

// toStatus maps err to a status, in this order:
//   - the call's own end (its context cancelled or past its deadline):
//     CANCELLED or DEADLINE_EXCEEDED, whatever the error says (an internal
//     one's text going to the log, as below);
//   - an error in an errclass class: the class's code, with a BadRequest
//     (*errclass.FieldError), RetryInfo (*errclass.Retry) and ErrorInfo
//     (*errclass.Reason) detail when the error carries one;
//   - an error that already is a gRPC status (from grpc-go itself, such as
//     a message over the size limit): unchanged;
//   - anything else, and class Internal: INTERNAL with a generic message
//     naming the request id. The error itself, which may hold backend
//     addresses or SQL, goes to the log under that id and not to the client.
func toStatus(ctx context.Context, base *slog.Logger, err error) error {
	class := errclass.Of(err)
	if ctx.Err() != nil {
		detail := err.Error()
		if (class == nil || class == errclass.Internal) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			detail = internalError(ctx, base, err)
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return status.Errorf(codes.DeadlineExceeded, "deadline exceeded before the call completed: %s", detail)
		}
		return status.Errorf(codes.Canceled, "call canceled: %s", detail)
	}
	if class == nil {
		if st, ok := status.FromError(err); ok {
			return st.Err()
		}
		class = errclass.Internal
	}
	code := classCodes[class]
	if code == codes.Internal {
		return status.Error(codes.Internal, internalError(ctx, base, err))
	}
	msg := err.Error()
	var fe *errclass.FieldError
	if errors.As(err, &fe) {
		msg = fieldMessage(fe)
	}
	if class == errclass.Overloaded {
		msg += "; retry later with backoff"
	}
	return withDetails(status.New(code, msg), details(err, fe)).Err()
}

// internalError logs err under the call's request id and returns the
// message the client gets instead of err's own text, which may name
// backend addresses or hold SQL.
func internalError(ctx context.Context, base *slog.Logger, err error) string {
	Logger(ctx, base).Error("internal error", "error", err.Error())
	return "internal error; request id " + RequestID(ctx)
}

// classCodes is the code of each class.
var classCodes = map[error]codes.Code{
	errclass.Invalid:       codes.InvalidArgument,
	errclass.NotFound:      codes.NotFound,
	errclass.Conflict:      codes.AlreadyExists,
	errclass.Aborted:       codes.Aborted,
	errclass.Overloaded:    codes.ResourceExhausted,
	errclass.Unavailable:   codes.Unavailable,
	errclass.TimedOut:      codes.DeadlineExceeded,
	errclass.Unimplemented: codes.Unimplemented,
	errclass.Internal:      codes.Internal,

	// Credentials (package auth): HTTP 401 and 403 through grpc-gateway.
	errclass.Unauthenticated:  codes.Unauthenticated,
	errclass.PermissionDenied: codes.PermissionDenied,
}

// details are the error details err carries: a BadRequest for fe, a
// RetryInfo, an ErrorInfo.
func details(err error, fe *errclass.FieldError) []protoadapt.MessageV1 {
	var out []protoadapt.MessageV1
	if fe != nil {
		br := &errdetails.BadRequest{}
		for _, v := range fe.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		out = append(out, br)
	}
	var retry *errclass.Retry
	if errors.As(err, &retry) {
		out = append(out, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry.Delay)})
	}
	var reason *errclass.Reason
	if errors.As(err, &reason) {
		out = append(out, &errdetails.ErrorInfo{Reason: reason.Reason, Domain: errorDomain, Metadata: reason.Metadata})
	}
	return out
}

// withDetails adds ds to st; st alone if they cannot be marshalled (they
// always can: they are well-formed messages).
func withDetails(st *status.Status, ds []protoadapt.MessageV1) *status.Status {
	if len(ds) == 0 {
		return st
	}
	if withDs, err := st.WithDetails(ds...); err == nil {
		return withDs
	}
	return st
}

// fieldMessage lists the first few violations, so that a client without
// detail support still reads what is wrong; the BadRequest detail holds
// them all.
func fieldMessage(fe *errclass.FieldError) string {
	const shown = 3
	parts := make([]string, 0, shown)
	for _, f := range fe.Violations[:min(len(fe.Violations), shown)] {
		parts = append(parts, f.Field+": "+f.Description)
	}
	msg := "invalid request: " + strings.Join(parts, "; ")
	if len(fe.Violations) > shown {
		msg += fmt.Sprintf("; and %d more", len(fe.Violations)-shown)
	}
	return msg
}
