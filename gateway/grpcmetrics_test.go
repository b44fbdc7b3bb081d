package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// The gRPC server metrics keep go-grpc-middleware's names and labels, count
// REST calls (through the in-memory hop) as gRPC calls, and have every
// code's series from the start.
func TestGRPCServerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := startGateway(t, Config{}, Deps{Registry: reg})
	ctx := testContext(t)
	if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no queries: %v, want InvalidArgument", err)
	}
	if code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`); code != 200 {
		t.Fatalf("REST: HTTP %d %s", code, body)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
		metrics:
			for _, m := range f.GetMetric() {
				got := map[string]string{}
				for _, l := range m.GetLabel() {
					got[l.GetName()] = l.GetValue()
				}
				for k, v := range labels {
					if got[k] != v {
						continue metrics
					}
				}
				return metricValue(m), true
			}
		}
		return 0, false
	}
	embed := map[string]string{"grpc_type": "unary", "grpc_service": "colpali.v1.EmbeddingService", "grpc_method": "EmbedQueries"}
	with := func(k, v string) map[string]string {
		l := map[string]string{k: v}
		for k, v := range embed {
			l[k] = v
		}
		return l
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"grpc_server_started_total", embed, 3},
		{"grpc_server_msg_received_total", embed, 3},
		{"grpc_server_msg_sent_total", embed, 2},
		{"grpc_server_handled_total", with("grpc_code", "OK"), 2},
		{"grpc_server_handled_total", with("grpc_code", "InvalidArgument"), 1},
		{"grpc_server_handled_total", with("grpc_code", "Unavailable"), 0},
		{"grpc_server_handling_seconds", embed, 3},
		{"grpc_server_handled_total", map[string]string{"grpc_type": "unary", "grpc_service": "colpali.v1.EmbeddingService", "grpc_method": "EmbedImages", "grpc_code": "OK"}, 0},
	} {
		got, ok := value(c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

// metricValue is a counter's value or a histogram's count.
func metricValue(m *dto.Metric) float64 {
	if h := m.GetHistogram(); h != nil {
		return float64(h.GetSampleCount())
	}
	return m.GetCounter().GetValue()
}
