package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// requestIDHeader carries a request id in and out, on gRPC metadata and, via
// grpc-gateway's header matchers, as the X-Request-Id HTTP header.
const requestIDHeader = "x-request-id"

// requestKey is the context key of a call's *callInfo.
type requestKey struct{}

// callInfo is what the logging interceptor knows of a call. Its logger is
// built on first use: slog's With formats the attributes at once, which a
// successful call, logged at debug level, would pay for nothing.
type callInfo struct {
	id, method string
	base       *slog.Logger
	attrs      []slog.Attr // added by later interceptors (the tenant); see addLogAttrs
	// attrBuf is attrs' first array: the tenant and the subject, added to
	// every call, cost no allocation (slog.Attr holds a string without
	// boxing it, unlike the ...any of Logger.With).
	attrBuf [2]slog.Attr
	once    sync.Once
	logger  *slog.Logger
}

func (c *callInfo) log() *slog.Logger {
	c.once.Do(func() {
		attrs := append([]slog.Attr{slog.String("request_id", c.id), slog.String("method", c.method)}, c.attrs...)
		c.logger = slog.New(c.base.Handler().WithAttrs(attrs)) // what c.base.With does with attributes
	})
	return c.logger
}

// addLogAttrs adds attributes to the call's log lines (its logger is built
// on first use, so an interceptor that runs before the handler logs anything
// reaches every line of the call). Outside a call it does nothing.
func addLogAttrs(ctx context.Context, attrs ...slog.Attr) {
	if c, ok := ctx.Value(requestKey{}).(*callInfo); ok {
		if c.attrs == nil {
			c.attrs = c.attrBuf[:0]
		}
		c.attrs = append(c.attrs, attrs...)
	}
}

// RequestID is the request id the logging interceptor gave the call, or ""
// outside a request.
func RequestID(ctx context.Context) string {
	if c, ok := ctx.Value(requestKey{}).(*callInfo); ok {
		return c.id
	}
	return ""
}

// Logger returns the request-scoped logger of the logging interceptor (with
// the request id and method), or fallback outside a request.
func Logger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if c, ok := ctx.Value(requestKey{}).(*callInfo); ok {
		return c.log()
	}
	return fallback
}

// requestID returns the caller's request id, if it sent a sane one, or a new
// random one.
func requestID(ctx context.Context) string {
	// ValueFromIncomingContext, unlike FromIncomingContext, does not copy
	// every header.
	if ids := metadata.ValueFromIncomingContext(ctx, requestIDHeader); len(ids) > 0 {
		if id := ids[0]; id != "" && len(id) <= 128 && !strings.ContainsAny(id, "\r\n") {
			return id
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// quietMethods are logged at debug level even when they fail: probes would
// drown the rest.
var quietMethods = map[string]bool{
	"/grpc.health.v1.Health/Check": true,
	"/grpc.health.v1.Health/Watch": true,
}

// loggingInterceptor gives each call a request id (echoed in the response
// header) and a logger carrying it, and logs the call's outcome once.
func loggingInterceptor(base *slog.Logger, refusals *refusalLog) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		call := &callInfo{id: requestID(ctx), method: info.FullMethod, base: base}
		_ = grpc.SetHeader(ctx, metadata.Pairs(requestIDHeader, call.id))
		start := time.Now()
		resp, err := handler(context.WithValue(ctx, requestKey{}, call), req)
		logOutcome(ctx, call, start, err, refusals)
		return resp, err
	}
}

// logOutcome logs a call's code and duration once: errors the server must
// look at (INTERNAL, UNKNOWN, DATA_LOSS) at error level, other failures at
// warn, successes and probes at debug. Successes are the bulk of the calls
// and the metrics count and time them already; at info level they cost no
// more than the level check. Refusals of an overloaded gateway
// (RESOURCE_EXHAUSTED) are logged at debug too, and summed up in refusals'
// warn line.
func logOutcome(ctx context.Context, call *callInfo, start time.Time, err error, refusals *refusalLog) {
	code := status.Code(err)
	level := slog.LevelDebug
	switch {
	case err == nil || quietMethods[call.method]:
	case code == codes.ResourceExhausted:
		refusals.note(ctx, call.method, err)
	case code == codes.Internal || code == codes.Unknown || code == codes.DataLoss:
		level = slog.LevelError
	default:
		level = slog.LevelWarn
	}
	if !call.base.Enabled(ctx, level) {
		return
	}
	attrs := []any{"code", code.String(), "duration_ms", float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		attrs = append(attrs, "error", status.Convert(err).Message())
	}
	call.log().Log(ctx, level, "rpc", attrs...)
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
func streamLoggingInterceptor(base *slog.Logger, refusals *refusalLog) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		call := &callInfo{id: requestID(ctx), method: info.FullMethod, base: base}
		_ = ss.SetHeader(metadata.Pairs(requestIDHeader, call.id))
		start := time.Now()
		err := handler(srv, &serverStream{ServerStream: ss, ctx: context.WithValue(ctx, requestKey{}, call)})
		logOutcome(ctx, call, start, err, refusals)
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
