package dashboards

//lint:file-ignore SA1019 the classic dashboard model on purpose: see dashboards.go

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// routing is the router's view of its backends: picks, estimated
// completion, in-flight work, ejections, retries and the GPU figures it
// routes on. Each series is per backend (a Triton pod's address), summed
// or taken over every gateway.
func routing() *dashboard.DashboardBuilder {
	return newDashboard("colpali-routing", "colpali / Routing",
		"The gateways' router: per backend picks, estimated completion, in-flight work, state, ejections, retries and GPU telemetry.").
		WithRow(dashboard.NewRowBuilder("Balancing")).
		WithPanel(graph("Picks per backend", "Batches the policy sent to each backend per second (retries included), all gateways.", "ops",
			query(rateBy("colpali_router_backend_picks_total", gatewaySel, "backend, policy"), "{{backend}} {{policy}}"))).
		WithPanel(graph("Estimated completion", "The gpu_aware policy's estimate for the last batch it sent to each backend (highest over gateways).", "s",
			query(`max by (backend) (colpali_router_backend_estimated_completion_seconds{`+gatewaySel+`})`, "{{backend}}"))).
		WithPanel(graph("Batches in flight per backend", "Batches the gateways have in flight on each backend.", "short",
			query(`sum by (backend) (colpali_router_backend_in_flight{`+gatewaySel+`})`, "{{backend}}"))).
		WithPanel(graph("Cost in flight per backend", "Cost units (estimated tokens) in flight on each backend.", "short",
			query(`sum by (backend) (colpali_router_backend_in_flight_cost{`+gatewaySel+`})`, "{{backend}}"))).
		WithPanel(graph("Learned latency per cost unit", "The router's moving average of seconds per cost unit on each backend.", "s",
			query(`max by (backend) (colpali_router_backend_latency_per_cost_seconds{`+gatewaySel+`})`, "{{backend}}"))).
		WithRow(dashboard.NewRowBuilder("Health")).
		WithPanel(graph("Backends by state", "How many gateways see each backend in each state (ready, not_ready, ejected, draining, unknown).", "short",
			query(`sum by (backend, state) (colpali_router_backend_state{`+gatewaySel+`}) > 0`, "{{backend}} {{state}}"))).
		WithPanel(graph("Ready backends per model", "Backends ready for each model, as the least-informed gateway sees them. Zero fires ColpaliNoReadyBackend.", "short",
			query(`min by (model) (sum by (pod, model) (colpali_router_backend_model_ready{`+gatewaySel+`}))`, "{{model}}"))).
		WithPanel(graph("Ejections", "Backends ejected for consecutive failed batches.", "short",
			query(`sum by (backend) (increase(colpali_router_backend_ejections_total{`+gatewaySel+`}[$__rate_interval]))`, "{{backend}}"))).
		WithPanel(graph("Failed batches per backend", "Batches that failed through the backend's fault (unavailable or failed), per second.", "ops",
			query(rateBy("colpali_router_backend_failures_total", gatewaySel, "backend"), "{{backend}}"))).
		WithPanel(graph("Retries", "Batches retried on another backend, by reason, and retries refused by the retry budget.", "ops",
			query(rateBy("colpali_router_retries_total", gatewaySel, "reason"), "{{reason}}"),
			query(`sum(rate(colpali_router_retry_budget_exhausted_total{`+gatewaySel+`}[$__rate_interval]))`, "budget exhausted"))).
		WithRow(dashboard.NewRowBuilder("GPU telemetry (as the router sees it)")).
		WithPanel(graph("GPU utilisation", "Per backend, from Triton's metrics or NVML, while fresh.", "percentunit",
			query(`max by (backend) (colpali_router_backend_gpu_utilization{`+gatewaySel+`})`, "{{backend}}"))).
		WithPanel(graph("GPU memory used", "Share of GPU memory in use per backend.", "percentunit",
			query(`max by (backend) (colpali_router_backend_gpu_memory_used_bytes{`+gatewaySel+`}) / max by (backend) (colpali_router_backend_gpu_memory_total_bytes{`+gatewaySel+`})`, "{{backend}}"))).
		WithPanel(graph("Triton queue per backend", "Requests pending in each backend's Triton queue, from its metrics.", "short",
			query(`max by (backend) (colpali_router_backend_queue_pending{`+gatewaySel+`})`, "{{backend}}"))).
		WithPanel(graph("Triton queue time per backend", "Mean time a request waited in each backend's Triton queue.", "s",
			query(`max by (backend) (colpali_router_backend_queue_time_seconds{`+gatewaySel+`})`, "{{backend}}")))
}
