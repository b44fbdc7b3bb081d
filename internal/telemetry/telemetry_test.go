package telemetry

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSetupWithoutEndpointOnlyPropagates(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	exporting, shutdown, err := Setup(t.Context(), "test", "v0")
	if err != nil || exporting {
		t.Fatalf("Setup = %v, %v; want no export and no error", exporting, err)
	}
	if err := shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	fields := otel.GetTextMapPropagator().Fields()
	if !slices.Contains(fields, "traceparent") || !slices.Contains(fields, "baggage") {
		t.Errorf("propagator fields %v, want W3C trace context and baggage", fields)
	}
}

func TestSetupWithEndpointInstallsProvider(t *testing.T) {
	// Nothing listens there; nothing is exported before a span ends, and
	// shutdown is bounded.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Cleanup(func() {
		otel.SetTracerProvider(sdktrace.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	})
	exporting, shutdown, err := Setup(t.Context(), "test", "v0")
	if err != nil || !exporting {
		t.Fatalf("Setup = %v, %v; want export on", exporting, err)
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); !ok {
		t.Errorf("global tracer provider is %T, want the SDK's", otel.GetTracerProvider())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_ = shutdown(ctx) // may report the unreachable collector; must return
}
