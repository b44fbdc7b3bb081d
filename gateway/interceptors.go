package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// requestIDHeader carries a request id in and out, on gRPC metadata and, via
// grpc-gateway's header matchers, as the X-Request-Id HTTP header.
const requestIDHeader = "x-request-id"

type (
	loggerKey    struct{}
	requestIDKey struct{}
)

// RequestID is the request id the logging interceptor gave the call, or ""
// outside a request.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withRequest stores a call's request id and its logger in ctx.
func withRequest(ctx context.Context, id string, logger *slog.Logger) context.Context {
	return context.WithValue(context.WithValue(ctx, requestIDKey{}, id), loggerKey{}, logger)
}

// Logger returns the request-scoped logger stored by the logging
// interceptor, or fallback outside a request.
func Logger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}

// requestID returns the caller's request id, if it sent a sane one, or a new
// random one.
func requestID(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if ids := md.Get(requestIDHeader); len(ids) > 0 {
			if id := ids[0]; id != "" && len(id) <= 128 && !strings.ContainsAny(id, "\r\n") {
				return id
			}
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// quietMethods are logged at debug level: probes would drown the rest.
var quietMethods = map[string]bool{
	"/grpc.health.v1.Health/Check": true,
	"/grpc.health.v1.Health/Watch": true,
}

// loggingInterceptor gives each call a request id (echoed in the response
// header) and a logger carrying it, and logs the call's outcome once.
func loggingInterceptor(base *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		id := requestID(ctx)
		_ = grpc.SetHeader(ctx, metadata.Pairs(requestIDHeader, id))
		logger := base.With("request_id", id, "method", info.FullMethod)
		start := time.Now()
		resp, err := handler(withRequest(ctx, id, logger), req)
		logOutcome(ctx, logger, info.FullMethod, start, err)
		return resp, err
	}
}

// logOutcome logs a call's code and duration once: errors the server must
// look at (INTERNAL, UNKNOWN, DATA_LOSS) at error level, other failures at
// warn, probes at debug.
func logOutcome(ctx context.Context, logger *slog.Logger, method string, start time.Time, err error) {
	code := status.Code(err)
	level := slog.LevelInfo
	switch {
	case quietMethods[method]:
		level = slog.LevelDebug
	case code == codes.Internal || code == codes.Unknown || code == codes.DataLoss:
		level = slog.LevelError
	case err != nil:
		level = slog.LevelWarn
	}
	attrs := []any{"code", code.String(), "duration_ms", float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		attrs = append(attrs, "error", status.Convert(err).Message())
	}
	logger.Log(ctx, level, "rpc", attrs...)
}

// deadlineInterceptor gives every call a deadline: gRPC sets none by
// default, so without this a hung backend would hold a call forever. The
// caller's deadline is kept when shorter than max, capped at max otherwise,
// and def applies when the caller set none.
func deadlineInterceptor(def, max time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		timeout := def
		if d, ok := ctx.Deadline(); ok {
			if time.Until(d) <= max {
				return handler(ctx, req)
			}
			timeout = max
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return handler(ctx, req)
	}
}

// serverStream replaces a stream's context.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// streamLoggingInterceptor is loggingInterceptor for streaming calls: a
// request id, a logger carrying it, and one log line with the outcome.
func streamLoggingInterceptor(base *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		id := requestID(ctx)
		_ = ss.SetHeader(metadata.Pairs(requestIDHeader, id))
		logger := base.With("request_id", id, "method", info.FullMethod)
		start := time.Now()
		err := handler(srv, &serverStream{ServerStream: ss, ctx: withRequest(ctx, id, logger)})
		logOutcome(ctx, logger, info.FullMethod, start, err)
		return err
	}
}

// streamDeadlineInterceptor caps a streaming call at max: the caller's
// deadline when shorter, else max. Streams get their own, longer cap than
// unary calls (a document of hundreds of pages takes minutes to embed),
// but never none.
func streamDeadlineInterceptor(max time.Duration) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if d, ok := ss.Context().Deadline(); ok && time.Until(d) <= max {
			return handler(srv, ss)
		}
		ctx, cancel := context.WithTimeout(ss.Context(), max)
		defer cancel()
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	}
}
