package dashboards

//lint:file-ignore SA1019 the classic dashboard model on purpose: see dashboards.go

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// triton is Triton's own view, from its metrics port: work done, time in
// its queue and in compute, and the GPUs. Triton's duration metrics are
// cumulative microsecond counters: a rate of one divided by a rate of
// counts is a mean per request (or per execution).
func triton() *dashboard.DashboardBuilder {
	return newDashboard("colpali-triton", "colpali / Triton",
		"Triton Inference Server: requests and executions, queue and compute time, GPU utilisation and memory.").
		WithRow(dashboard.NewRowBuilder("Work")).
		WithPanel(graph("Requests by model", "Successful and failed requests per second.", "reqps",
			query(rateBy("nv_inference_request_success", tritonSel, "model"), "{{model}} ok"),
			query(rateBy("nv_inference_request_failure", tritonSel, "model"), "{{model}} failed"))).
		WithPanel(graph("Items per execution", "Inferences (items) per model execution: the batch size Triton actually ran.", "short",
			query(rateBy("nv_inference_count", tritonSel, "model")+` / `+rateBy("nv_inference_exec_count", tritonSel, "model"), "{{model}}"))).
		WithPanel(graph("Pending requests", "Requests waiting in Triton's queue, per pod and model.", "short",
			query(`sum by (pod, model) (nv_inference_pending_request_count{`+tritonSel+`})`, "{{pod}} {{model}}"))).
		WithPanel(graph("Queue time per request", "Mean time a request waited in Triton's queue.", "µs",
			query(rateBy("nv_inference_queue_duration_us", tritonSel, "model")+` / `+rateBy("nv_inference_request_success", tritonSel, "model"), "{{model}}"))).
		WithPanel(graph("Compute time per execution", "Mean time of one model execution (one batch) in compute: input, inference, output.", "µs",
			query(`(`+rateBy("nv_inference_compute_input_duration_us", tritonSel, "model")+` + `+rateBy("nv_inference_compute_infer_duration_us", tritonSel, "model")+` + `+rateBy("nv_inference_compute_output_duration_us", tritonSel, "model")+`) / `+rateBy("nv_inference_exec_count", tritonSel, "model"), "{{model}}"))).
		WithPanel(graph("Request time", "Mean end-to-end time of a request inside Triton (queue and compute).", "µs",
			query(rateBy("nv_inference_request_duration_us", tritonSel, "model")+` / `+rateBy("nv_inference_request_success", tritonSel, "model"), "{{model}}"))).
		WithRow(dashboard.NewRowBuilder("GPUs")).
		WithPanel(graph("GPU utilisation", "Per pod. ColpaliGPUIdleWhileQueued fires when the average stays under 50% while requests queue in the gateways.", "percentunit",
			query(`avg by (pod) (nv_gpu_utilization{`+tritonSel+`})`, "{{pod}}"))).
		WithPanel(graph("GPU memory", "Used and total per pod.", "bytes",
			query(`sum by (pod) (nv_gpu_memory_used_bytes{`+tritonSel+`})`, "{{pod}} used"),
			query(`sum by (pod) (nv_gpu_memory_total_bytes{`+tritonSel+`})`, "{{pod}} total"))).
		WithPanel(graph("GPU power", "Power draw and limit per pod.", "watt",
			query(`sum by (pod) (nv_gpu_power_usage{`+tritonSel+`})`, "{{pod}} draw"),
			query(`sum by (pod) (nv_gpu_power_limit{`+tritonSel+`})`, "{{pod}} limit")))
}
