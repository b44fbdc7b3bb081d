package batching

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons, the values of the reason label of
// colpali_batcher_rejections_total.
const (
	reasonQueueFull    = "queue_full"
	reasonQueueTimeout = "queue_timeout"
	reasonCanceled     = "canceled"
	reasonDeadline     = "deadline_exceeded"
	reasonClosed       = "closed"
	reasonBackendError = "backend_error"
)

// metrics are the batcher's Prometheus collectors, labelled by model.
type metrics struct {
	batchSize       *prometheus.HistogramVec
	batchCost       *prometheus.HistogramVec
	queueDuration   *prometheus.HistogramVec
	backendDuration *prometheus.HistogramVec
	queueLength     *prometheus.GaugeVec
	inFlight        *prometheus.GaugeVec
	batchLimit      *prometheus.GaugeVec
	rejections      *prometheus.CounterVec
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "colpali_batcher_batch_size",
			Help:    "Items per batch sent to the backend.",
			Buckets: []float64{1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256},
		}, []string{"model"}),
		batchCost: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "colpali_batcher_batch_cost",
			Help:    "Cost (estimated tokens) per batch sent to the backend.",
			Buckets: prometheus.ExponentialBuckets(8, 2, 15),
		}, []string{"model"}),
		queueDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "colpali_batcher_queue_duration_seconds",
			Help:    "Time a request waited in the batcher's queue, until its last item left in a batch.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		backendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "colpali_batcher_backend_duration_seconds",
			Help:    "Time a batch took downstream, from sending to the answer.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		queueLength: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "colpali_batcher_queue_length",
			Help: "Requests waiting in the batcher's queue.",
		}, []string{"model"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "colpali_batcher_in_flight_batches",
			Help: "Batches sent to the backend and not yet answered.",
		}, []string{"model"}),
		batchLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "colpali_batcher_batch_size_limit",
			Help: "Current batch size limit: max-batch-size, or the adaptive policy's limit.",
		}, []string{"model"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "colpali_batcher_rejections_total",
			Help: "Requests that left the batcher without embeddings, by reason: queue_full, queue_timeout, canceled, deadline_exceeded, closed, backend_error.",
		}, []string{"model", "reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.batchSize, m.batchCost, m.queueDuration, m.backendDuration, m.queueLength, m.inFlight, m.batchLimit, m.rejections} {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(errors.New("batching: registering metrics"), err)
		}
	}
	return m, nil
}

// modelMetrics are the collectors curried with one model's label.
type modelMetrics struct {
	batchSize, batchCost, queueDuration, backendDuration prometheus.Observer
	queueLength, inFlight, batchLimit                    prometheus.Gauge
	rejections                                           *prometheus.CounterVec
}

func (m *metrics) forModel(name string) *modelMetrics {
	l := prometheus.Labels{"model": name}
	mm := &modelMetrics{
		batchSize:       m.batchSize.With(l),
		batchCost:       m.batchCost.With(l),
		queueDuration:   m.queueDuration.With(l),
		backendDuration: m.backendDuration.With(l),
		queueLength:     m.queueLength.With(l),
		inFlight:        m.inFlight.With(l),
		batchLimit:      m.batchLimit.With(l),
		rejections:      m.rejections.MustCurryWith(l),
	}
	// Every reason shows from the start, at zero, so that rate() works
	// before the first rejection.
	for _, r := range []string{reasonQueueFull, reasonQueueTimeout, reasonCanceled, reasonDeadline, reasonClosed, reasonBackendError} {
		mm.rejections.WithLabelValues(r)
	}
	return mm
}

func (m *modelMetrics) reject(reason string) { m.rejections.WithLabelValues(reason).Inc() }
