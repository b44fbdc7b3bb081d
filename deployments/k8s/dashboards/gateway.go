package dashboards

//lint:file-ignore SA1019 the classic dashboard model on purpose: see dashboards.go

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// gateway is the gateway's dashboard: calls, latency by RPC and code, the
// latency SLO, batch sizes and delays, the queue and what it sheds.
func gateway() *dashboard.DashboardBuilder {
	return newDashboard("colpali-gateway", "colpali / Gateway",
		"colpali-gateway: calls, latency, the batcher's queue and batches, shedding.").
		WithRow(dashboard.NewRowBuilder("Calls")).
		WithPanel(graph("Calls by RPC and code", "Completed calls per second, gRPC and REST (REST passes through the same handlers).", "reqps",
			query(rateBy("grpc_server_handled_total", apiSel, "grpc_method, grpc_code"), "{{grpc_method}} {{grpc_code}}"))).
		WithPanel(graph("Error ratio", "Share of calls ending Unknown, Internal, Unavailable, DataLoss or DeadlineExceeded (recording rule). ColpaliHighErrorRatio fires above 1%.", "percentunit",
			query(`colpali:api_error_ratio:rate5m{namespace="$namespace"}`, "errors"))).
		WithPanel(graph("p95 latency by RPC", "95th percentile of call duration. The SLO: EmbedQueries and Search p95 within 100 ms.", "s",
			query(quantile(0.95, "grpc_server_handling_seconds", apiSel, "grpc_method"), "{{grpc_method}}"))).
		WithPanel(graph("p99 latency by RPC and code", "99th percentile of call duration, split by status: slow failures (deadlines) show here.", "s",
			query(quantile(0.99, "grpc_server_handling_seconds", apiSel, "grpc_method, grpc_code"), "{{grpc_method}} {{grpc_code}}"))).
		WithPanel(graph("Latency SLO: calls over 100 ms", "Share of EmbedQueries and Search calls slower than 100 ms (recording rules). The budget is 5%; the burn-rate alerts fire at 14.4x (1h and 5m) and 6x (6h and 30m).", "percentunit",
			query(`colpali:slo_slow_ratio:rate5m{namespace="$namespace"}`, "5m"),
			query(`colpali:slo_slow_ratio:rate1h{namespace="$namespace"}`, "1h"),
			query(`colpali:slo_slow_ratio:rate6h{namespace="$namespace"}`, "6h"))).
		WithPanel(graph("REST requests by route and code", "REST calls per second by route and HTTP status.", "reqps",
			query(rateBy("colpali_http_requests_total", gatewaySel, "route, code"), "{{route}} {{code}}"))).
		WithRow(dashboard.NewRowBuilder("Batching")).
		WithPanel(graph("Batch size", "Items per batch sent to Triton: median and p95, by model.", "short",
			query(quantile(0.5, "colpali_batcher_batch_size", gatewaySel, "model"), "{{model}} p50"),
			query(quantile(0.95, "colpali_batcher_batch_size", gatewaySel, "model"), "{{model}} p95"))).
		WithPanel(graph("Batch size limit", "The largest batch each gateway may send now: -max-batch-size, or the adaptive policy's current limit.", "short",
			query(`max by (model) (colpali_batcher_batch_size_limit{`+gatewaySel+`})`, "{{model}} max"),
			query(`min by (model) (colpali_batcher_batch_size_limit{`+gatewaySel+`})`, "{{model}} min"))).
		WithPanel(graph("Queue wait", "Time a request waits in the batch queue until its last item leaves in a batch (p95).", "s",
			query(quantile(0.95, "colpali_batcher_queue_duration_seconds", gatewaySel, "model"), "{{model}} p95"))).
		WithPanel(graph("Backend time", "Time a batch takes in Triton, from sending to the answer (p50 and p95).", "s",
			query(quantile(0.5, "colpali_batcher_backend_duration_seconds", gatewaySel, "model"), "{{model}} p50"),
			query(quantile(0.95, "colpali_batcher_backend_duration_seconds", gatewaySel, "model"), "{{model}} p95"))).
		WithPanel(graph("Queue length", "Requests waiting in the batch queues, all gateways. Triton's autoscaler follows this sum.", "short",
			query(`sum by (model) (colpali_batcher_queue_length{`+gatewaySel+`})`, "{{model}}"))).
		WithPanel(graph("Batches in flight", "Batches sent to Triton and not yet answered, all gateways.", "short",
			query(`sum by (model) (colpali_batcher_in_flight_batches{`+gatewaySel+`})`, "{{model}}"))).
		WithPanel(graph("Shedding", "Requests that left the queue without embeddings, by reason: queue_full and queue_timeout are load shed; canceled and deadline_exceeded are callers giving up.", "reqps",
			query(rateBy("colpali_batcher_rejections_total", gatewaySel, "model, reason"), "{{model}} {{reason}}"))).
		WithPanel(graph("Batch cost", "Estimated tokens per batch (p95): the cost budget the batcher fills.", "short",
			query(quantile(0.95, "colpali_batcher_batch_cost", gatewaySel, "model"), "{{model}} p95"))).
		WithRow(dashboard.NewRowBuilder("Pods")).
		WithPanel(graph("CPU", "CPU seconds per second, per gateway pod; the gateway's autoscaler targets 70% of the request.", "short",
			query(rateBy("process_cpu_seconds_total", gatewaySel, "pod"), "{{pod}}"))).
		WithPanel(graph("Memory", "Resident memory per gateway pod; GOMEMLIMIT is the memory request.", "bytes",
			query(`sum by (pod) (process_resident_memory_bytes{`+gatewaySel+`})`, "{{pod}}"))).
		WithPanel(graph("Goroutines", "Goroutines per gateway pod.", "short",
			query(`sum by (pod) (go_goroutines{`+gatewaySel+`})`, "{{pod}}")))
}
