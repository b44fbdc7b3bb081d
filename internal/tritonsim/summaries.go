package tritonsim

import "github.com/prometheus/client_golang/prometheus"

// summaryObjectives are the quantiles Triton's metrics documentation shows
// for its latency summaries, with their allowed errors.
var summaryObjectives = map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.95: 0.005, 0.99: 0.001, 0.999: 0.0001}

// summaries are Triton's optional latency summaries (tritonserver
// --metrics-config summary_latencies=true; Config.SummaryLatencies): the
// quantiles of each phase of a request over a sliding window, per model.
type summaries struct {
	request, queue, input, infer, output *prometheus.SummaryVec
}

func newSummaries(reg *prometheus.Registry) *summaries {
	summary := func(name, help string) *prometheus.SummaryVec {
		return prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: name, Help: help, Objectives: summaryObjectives}, []string{"model", "version"})
	}
	s := &summaries{
		request: summary("nv_inference_request_summary_us", "Summary of inference request duration in microseconds"),
		queue:   summary("nv_inference_queue_summary_us", "Summary of inference queuing duration in microseconds"),
		input:   summary("nv_inference_compute_input_summary_us", "Summary of compute input duration in microseconds"),
		infer:   summary("nv_inference_compute_infer_summary_us", "Summary of compute inference duration in microseconds"),
		output:  summary("nv_inference_compute_output_summary_us", "Summary of compute output duration in microseconds"),
	}
	reg.MustRegister(s.request, s.queue, s.input, s.infer, s.output)
	return s
}

// modelSummaries are one model's summaries; nil when they are off.
type modelSummaries struct {
	request, queue, input, infer, output prometheus.Observer
}

func (s *summaries) forModel(name string) *modelSummaries {
	if s == nil {
		return nil
	}
	return &modelSummaries{
		request: s.request.WithLabelValues(name, modelVersion),
		queue:   s.queue.WithLabelValues(name, modelVersion),
		input:   s.input.WithLabelValues(name, modelVersion),
		infer:   s.infer.WithLabelValues(name, modelVersion),
		output:  s.output.WithLabelValues(name, modelVersion),
	}
}

// observe records a successful request's phases, if summaries are on.
func (m *modelSummaries) observe(t timings) {
	if m == nil {
		return
	}
	m.request.Observe(micros(t.total))
	m.queue.Observe(micros(t.queue))
	m.input.Observe(micros(t.input))
	m.infer.Observe(micros(t.infer))
	m.output.Observe(micros(t.output))
}
