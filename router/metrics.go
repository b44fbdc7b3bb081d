package router

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics exposes the router on the gateway's registry. Per-backend figures
// are read from the live pool at scrape time, so a backend that leaves
// leaves no stale series behind.
type metrics struct {
	r               *Router
	retries         *prometheus.CounterVec
	budgetExhausted prometheus.Counter
	panicVec        *prometheus.CounterVec
	panicRouted     [len(kinds)]prometheus.Counter

	state, modelReady, inFlight, inFlightCost, consecutive *prometheus.Desc
	picks, failures, ejections                             *prometheus.Desc
	probeFails, probePasses                                *prometheus.Desc
	latencyPerCost, estimate                               *prometheus.Desc
	gpuUtil, gpuMemUsed, gpuMemTotal, pending, queueTime   *prometheus.Desc
}

func newMetrics(r *Router) *metrics {
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "colpali_router_retries_total",
		Help: "Batches retried on another backend, by reason (unavailable, overloaded).",
	}, []string{"reason"})
	for _, reason := range []string{retryUnavailable, retryOverloaded} {
		retries.WithLabelValues(reason) // exported at 0 before the first retry
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("colpali_router_"+name, help, append([]string{"backend"}, labels...), nil)
	}
	panicVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "colpali_router_panic_routing_total",
		Help: "Batches sent to a backend whose health checks failed, because no backend passed them for the model (panic routing).",
	}, []string{"model"})
	var panicRouted [len(kinds)]prometheus.Counter
	for _, k := range kinds {
		panicRouted[k] = panicVec.WithLabelValues(r.cfg.Models.ModelName(k)) // exported at 0
	}
	return &metrics{
		r:           r,
		retries:     retries,
		panicVec:    panicVec,
		panicRouted: panicRouted,
		budgetExhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "colpali_router_retry_budget_exhausted_total",
			Help: "Retries refused because the retry budget was spent.",
		}),
		state:          desc("backend_state", "1 for the backend's current state (ready, not_ready, ejected, draining, unknown), 0 for the others.", "state"),
		modelReady:     desc("backend_model_ready", "1 when the model is ready on the backend.", "model"),
		inFlight:       desc("backend_in_flight", "Batches this gateway has in flight on the backend."),
		inFlightCost:   desc("backend_in_flight_cost", "Cost units this gateway has in flight on the backend."),
		consecutive:    desc("backend_consecutive_failures", "Failed batches in a row on the backend."),
		picks:          desc("backend_picks_total", "Batches the policy sent to the backend (retries included).", "policy"),
		failures:       desc("backend_failures_total", "Batches that failed through the backend's fault (unavailable or failed)."),
		ejections:      desc("backend_ejections_total", "Times the backend was ejected for consecutive failures."),
		probeFails:     desc("backend_consecutive_check_failures", "Health checks in a row that failed on the backend (one discounted by batches answered since resets it)."),
		probePasses:    desc("backend_consecutive_check_passes", "Health checks in a row that passed on the backend."),
		latencyPerCost: desc("backend_latency_per_cost_seconds", "Learned latency per cost unit (EWMA)."),
		estimate:       desc("backend_estimated_completion_seconds", "Completion time the gpu_aware policy estimated for the last batch it sent there."),
		gpuUtil:        desc("backend_gpu_utilization", "GPU utilisation from telemetry, 0 to 1 (only while fresh)."),
		gpuMemUsed:     desc("backend_gpu_memory_used_bytes", "GPU memory used, from telemetry (only while fresh)."),
		gpuMemTotal:    desc("backend_gpu_memory_total_bytes", "GPU memory total, from telemetry (only while fresh)."),
		pending:        desc("backend_queue_pending", "Requests pending in Triton's queue, from telemetry (only while fresh)."),
		queueTime:      desc("backend_queue_time_seconds", "Mean time a request waited in Triton's queue, from telemetry (only while fresh)."),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.retries.Describe(ch)
	m.budgetExhausted.Describe(ch)
	m.panicVec.Describe(ch)
	for _, d := range []*prometheus.Desc{m.state, m.modelReady, m.inFlight, m.inFlightCost, m.consecutive,
		m.picks, m.failures, m.ejections, m.probeFails, m.probePasses, m.latencyPerCost, m.estimate,
		m.gpuUtil, m.gpuMemUsed, m.gpuMemTotal, m.pending, m.queueTime} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.retries.Collect(ch)
	m.budgetExhausted.Collect(ch)
	m.panicVec.Collect(ch)
	policy := m.r.PolicyName()
	for _, st := range m.r.Backends() {
		a := st.Addr
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{a}, labels...)...)
		}
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{a}, labels...)...)
		}
		for _, s := range states {
			gauge(m.state, boolFloat(st.State == s), s.String())
		}
		for _, mr := range st.Models {
			gauge(m.modelReady, boolFloat(mr.Ready), mr.Name)
		}
		gauge(m.inFlight, float64(st.InFlight))
		gauge(m.inFlightCost, st.InFlightCost)
		gauge(m.consecutive, float64(st.ConsecutiveFailures))
		counter(m.picks, st.Picks, policy)
		counter(m.failures, st.Failures)
		counter(m.ejections, st.Ejections)
		gauge(m.probeFails, float64(st.ConsecutiveCheckFailures))
		gauge(m.probePasses, float64(st.ConsecutiveCheckPasses))
		gauge(m.latencyPerCost, st.LatencyPerCost.Seconds())
		gauge(m.estimate, st.LastEstimate.Seconds())
		if st.GPUFresh {
			gauge(m.gpuUtil, st.GPU.Utilization)
			gauge(m.gpuMemUsed, float64(st.GPU.MemoryUsed))
			gauge(m.gpuMemTotal, float64(st.GPU.MemoryTotal))
			gauge(m.pending, st.GPU.Pending)
			gauge(m.queueTime, st.GPU.QueueTimePerRequest.Seconds())
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
