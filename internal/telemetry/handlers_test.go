package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func withPropagator(t *testing.T) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
}

// Without a recording tracer provider, the handlers only carry the trace
// context: from an incoming call's metadata (or an HTTP request's headers)
// to the outgoing calls made in its context, unchanged.
func TestHandlersPropagateWithoutTracing(t *testing.T) {
	withPropagator(t)
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(noop.NewTracerProvider()) // whatever another test left
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	if Tracing() {
		t.Fatalf("Tracing() with the global provider %T, want false", otel.GetTracerProvider())
	}
	srv, cli := GRPCServerHandler(), GRPCClientHandler()
	if _, ok := srv.(propagatingServer); !ok {
		t.Fatalf("server handler %T, want the propagating one", srv)
	}
	in := metadata.NewIncomingContext(t.Context(), metadata.Pairs("traceparent", traceparent, "baggage", "tenant=a"))
	ctx := srv.TagRPC(in, &stats.RPCTagInfo{FullMethodName: "/s/m"})
	if sc := trace.SpanContextFromContext(ctx); sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("extracted span context %v", sc)
	}
	out, _ := metadata.FromOutgoingContext(cli.TagRPC(ctx, &stats.RPCTagInfo{FullMethodName: "/t/m"}))
	if got := out.Get("traceparent"); len(got) != 1 || got[0] != traceparent {
		t.Errorf("outgoing traceparent %v, want %s", got, traceparent)
	}
	if got := out.Get("baggage"); len(got) != 1 || got[0] != "tenant=a" {
		t.Errorf("outgoing baggage %v, want tenant=a", got)
	}

	// Nothing to carry: the context is returned as it is.
	plain := t.Context()
	if got := cli.TagRPC(srv.TagRPC(plain, &stats.RPCTagInfo{}), &stats.RPCTagInfo{}); got != plain {
		t.Error("a call without trace context got a new context")
	}

	var seen trace.SpanContext
	h := HTTPHandler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen = trace.SpanContextFromContext(r.Context())
	}), "test")
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Traceparent", traceparent)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if !seen.IsRemote() || seen.SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("HTTP handler extracted %v", seen)
	}
}

func TestHandlersRecordWithTracing(t *testing.T) {
	prev := otel.GetTracerProvider()
	tp := sdktrace.NewTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = tp.Shutdown(context.Background())
	})
	if !Tracing() {
		t.Fatal("Tracing() = false with the SDK's provider installed")
	}
	if _, ok := GRPCServerHandler().(propagatingServer); ok {
		t.Error("server handler only propagates while tracing")
	}
	if _, ok := GRPCClientHandler().(propagatingClient); ok {
		t.Error("client handler only propagates while tracing")
	}
}
