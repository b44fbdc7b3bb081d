package telemetry

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

// The instrumentation of the servers and clients. otelgrpc and otelhttp
// cost even when no span is recorded (attributes built, a span started and
// ended per call, response writers wrapped), measured at several percent of
// a call's CPU; so they are installed only when spans are recorded, and
// otherwise a handler that only carries the W3C trace context and baggage
// along (from an incoming call to the calls it makes), so that a caller's
// trace still reaches Triton.

// Tracing reports whether spans are recorded: whether the global tracer
// provider is the SDK's (Setup installs one when it exports; a test may
// too). Call it after Setup: the handlers below decide when built.
func Tracing() bool {
	_, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	return ok
}

// GRPCServerHandler is the stats handler of a gRPC server: otelgrpc's when
// tracing, else one that extracts the propagated context.
func GRPCServerHandler() stats.Handler {
	if Tracing() {
		return otelgrpc.NewServerHandler()
	}
	return propagatingServer{}
}

// GRPCClientHandler is the stats handler of a gRPC client: otelgrpc's when
// tracing, else one that injects the propagated context.
func GRPCClientHandler() stats.Handler {
	if Tracing() {
		return otelgrpc.NewClientHandler()
	}
	return propagatingClient{}
}

// HTTPHandler wraps h: otelhttp's handler named operation when tracing,
// else one that extracts the propagated context from the request headers.
func HTTPHandler(h http.Handler, operation string) http.Handler {
	if Tracing() {
		return otelhttp.NewHandler(h, operation)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		if ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		h.ServeHTTP(w, r)
	})
}

// propagatingServer extracts the trace context and baggage of an incoming
// call into its context, and does nothing else.
type propagatingServer struct{}

func (propagatingServer) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, incomingCarrier{ctx})
}

func (propagatingServer) HandleRPC(context.Context, stats.RPCStats) {}

func (propagatingServer) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (propagatingServer) HandleConn(context.Context, stats.ConnStats) {}

// propagatingClient injects the context's trace context and baggage into
// an outgoing call's metadata, and does nothing else.
type propagatingClient struct{}

func (propagatingClient) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	// A propagator injects what the context carries, a span context or
	// baggage; without either (the common case) there is nothing to do.
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return ctx
	}
	var c outgoingCarrier
	otel.GetTextMapPropagator().Inject(ctx, &c)
	if len(c.pairs) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, c.pairs...)
}

func (propagatingClient) HandleRPC(context.Context, stats.RPCStats) {}

func (propagatingClient) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (propagatingClient) HandleConn(context.Context, stats.ConnStats) {}

// incomingCarrier reads a call's incoming metadata key by key, without
// copying all of it as metadata.FromIncomingContext does.
type incomingCarrier struct{ ctx context.Context }

func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (incomingCarrier) Set(string, string) {}

func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}

// outgoingCarrier collects what a propagator injects, as metadata pairs.
type outgoingCarrier struct{ pairs []string }

func (c *outgoingCarrier) Get(key string) string {
	for i := 0; i+1 < len(c.pairs); i += 2 {
		if c.pairs[i] == key {
			return c.pairs[i+1]
		}
	}
	return ""
}

func (c *outgoingCarrier) Set(key, value string) { c.pairs = append(c.pairs, key, value) }

func (c *outgoingCarrier) Keys() []string {
	keys := make([]string, 0, len(c.pairs)/2)
	for i := 0; i < len(c.pairs); i += 2 {
		keys = append(keys, c.pairs[i])
	}
	return keys
}
