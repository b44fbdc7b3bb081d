package tritonsim

import (
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/morphik-org/colpali-gateway/model"
)

// modelVersion is the one version the simulator serves of each model.
const modelVersion = "1"

// The simulated GPU: an 80 GB H100.
const (
	gpuMemoryTotal = 80 << 30
	// gpuWeightsMemory is resident from start: ColPali's ~3B parameters in
	// bf16 plus the CUDA context and allocator slack.
	gpuWeightsMemory = 6 << 30
	// Activation memory held while a batch executes, per item: rough
	// figures, large enough for memory-aware routing to notice a busy GPU.
	gpuImageItemMemory = 192 << 20
	gpuQueryItemMemory = 4 << 20
	gpuIdlePowerWatts  = 70.0
	gpuPowerLimitWatts = 700.0
	// utilTick is how often nv_gpu_utilization is recomputed;
	// utilSamples ticks make its ~1 s window (Triton samples about once a
	// second).
	utilTick    = 250 * time.Millisecond
	utilSamples = 4
)

// metrics is the simulator's Prometheus registry, with Triton's metric
// names and labels. It is its own registry, not the global one, so that
// several simulators run in one test process.
type metrics struct {
	registry *prometheus.Registry

	success, failure, count, execCount       *prometheus.CounterVec
	requestUs, queueUs                       *prometheus.CounterVec
	computeInputUs, computeInferUs, outputUs *prometheus.CounterVec
	pending                                  *prometheus.GaugeVec

	gpuUtil, gpuMemTotal, gpuMemUsed, gpuPower, gpuPowerLimit *prometheus.GaugeVec
	// summaries are nil unless Config.SummaryLatencies.
	summaries *summaries
	// gpuBusy is the simulator's own series (Triton has none like it): the
	// cumulative busy time of each simulated GPU, so that a benchmark can
	// compute the exact busy fraction between two scrapes rather than read
	// nv_gpu_utilization's one-second window.
	gpuBusy *prometheus.CounterVec
}

func newMetrics() *metrics {
	labels := []string{"model", "version"}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gpuGauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"gpu_uuid"})
	}
	m := &metrics{
		registry:       prometheus.NewRegistry(),
		success:        counter("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
		failure:        counter("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
		count:          counter("nv_inference_count", "Number of inferences performed (a batch of 8 counts 8)"),
		execCount:      counter("nv_inference_exec_count", "Number of model executions performed (a batch of 8 counts 1)"),
		requestUs:      counter("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds"),
		queueUs:        counter("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds"),
		computeInputUs: counter("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds"),
		computeInferUs: counter("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds"),
		outputUs:       counter("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds"),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nv_inference_pending_request_count",
			Help: "Instantaneous number of pending requests awaiting execution per-model.",
		}, labels),
		gpuUtil:       gpuGauge("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0) (simulated)"),
		gpuMemTotal:   gpuGauge("nv_gpu_memory_total_bytes", "GPU total memory, in bytes (simulated)"),
		gpuMemUsed:    gpuGauge("nv_gpu_memory_used_bytes", "GPU used memory, in bytes (simulated)"),
		gpuPower:      gpuGauge("nv_gpu_power_usage", "GPU power usage in watts (simulated)"),
		gpuPowerLimit: gpuGauge("nv_gpu_power_limit", "GPU power management limit in watts (simulated)"),
		gpuBusy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tritonsim_gpu_busy_seconds_total",
			Help: "Cumulative time the simulated GPU spent executing batches, in seconds (simulator only; not a Triton metric)",
		}, []string{"gpu_uuid"}),
	}
	m.registry.MustRegister(m.success, m.failure, m.count, m.execCount, m.requestUs, m.queueUs,
		m.computeInputUs, m.computeInferUs, m.outputUs, m.pending,
		m.gpuUtil, m.gpuMemTotal, m.gpuMemUsed, m.gpuPower, m.gpuPowerLimit, m.gpuBusy)
	return m
}

// modelMetrics are one model's series, resolved once so that the request
// path does no label lookups.
type modelMetrics struct {
	success, failure, count, execCount       prometheus.Counter
	requestUs, queueUs                       prometheus.Counter
	computeInputUs, computeInferUs, outputUs prometheus.Counter
	pending                                  prometheus.Gauge
	summaries                                *modelSummaries // nil: off
}

// forModel creates name's series, so that they are exported (at zero) from
// the start, as Triton's are.
func (m *metrics) forModel(name string) modelMetrics {
	return modelMetrics{
		success:        m.success.WithLabelValues(name, modelVersion),
		failure:        m.failure.WithLabelValues(name, modelVersion),
		count:          m.count.WithLabelValues(name, modelVersion),
		execCount:      m.execCount.WithLabelValues(name, modelVersion),
		requestUs:      m.requestUs.WithLabelValues(name, modelVersion),
		queueUs:        m.queueUs.WithLabelValues(name, modelVersion),
		computeInputUs: m.computeInputUs.WithLabelValues(name, modelVersion),
		computeInferUs: m.computeInferUs.WithLabelValues(name, modelVersion),
		outputUs:       m.outputUs.WithLabelValues(name, modelVersion),
		pending:        m.pending.WithLabelValues(name, modelVersion),
		summaries:      m.summaries.forModel(name),
	}
}

// micros is d in microseconds, the unit of Triton's duration counters.
func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// gpuUUID names the index-th simulated GPU after the simulator's gRPC
// address, so that two simulators on one machine have different GPUs and
// the same simulator keeps its GPUs across restarts on the same port.
func gpuUUID(grpcAddr string, index int) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(grpcAddr))
	if index == 0 {
		return fmt.Sprintf("GPU-sim-%08x", h.Sum32())
	}
	return fmt.Sprintf("GPU-sim-%08x-%d", h.Sum32(), index)
}

// activationMemory is what a batch holds on its GPU while it executes.
func activationMemory(bt *batch) int64 {
	if bt.kind == model.Image {
		return int64(bt.size) * gpuImageItemMemory
	}
	return int64(bt.size) * gpuQueryItemMemory
}

// gpu tracks one simulated GPU's busy time and activation memory and
// publishes them as gauges.
type gpu struct {
	util, memUsed, power prometheus.Gauge
	busyTotal            prometheus.Counter

	mu          sync.Mutex
	active      int           // batches executing
	busySince   time.Time     // when active last went from 0 to 1
	busy        time.Duration // busy time of finished busy periods
	activation  int64         // bytes held by executing batches
	lastTick    time.Time
	lastBusy    time.Duration
	samples     [utilSamples]float64 // busy fraction of the last ticks
	nextSample  int
	haveSamples int
}

func newGPU(m *metrics, uuid string, now time.Time) *gpu {
	g := &gpu{
		util:      m.gpuUtil.WithLabelValues(uuid),
		memUsed:   m.gpuMemUsed.WithLabelValues(uuid),
		power:     m.gpuPower.WithLabelValues(uuid),
		busyTotal: m.gpuBusy.WithLabelValues(uuid),
		lastTick:  now,
	}
	g.util.Set(0)
	m.gpuMemTotal.WithLabelValues(uuid).Set(gpuMemoryTotal)
	g.memUsed.Set(gpuWeightsMemory)
	g.power.Set(gpuIdlePowerWatts)
	m.gpuPowerLimit.WithLabelValues(uuid).Set(gpuPowerLimitWatts)
	return g
}

// begin marks a batch holding bytes of activations as executing.
func (g *gpu) begin(now time.Time, bytes int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.active == 0 {
		g.busySince = now
	}
	g.active++
	g.activation += bytes
	g.memUsed.Set(float64(gpuWeightsMemory + g.activation))
}

// end marks that batch as finished.
func (g *gpu) end(now time.Time, bytes int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.active == 0 {
		period := now.Sub(g.busySince)
		g.busy += period
		g.busyTotal.Add(period.Seconds())
	}
	g.activation -= bytes
	g.memUsed.Set(float64(gpuWeightsMemory + g.activation))
}

// busyTime is the GPU's busy time up to now.
func (g *gpu) busyTime(now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	total := g.busy
	if g.active > 0 {
		total += now.Sub(g.busySince)
	}
	return total
}

// tick records the busy fraction since the last tick and publishes the
// mean of the last utilSamples ticks: a GPU is "utilised" while any batch
// executes, as NVML's utilisation counts time with a kernel running.
func (g *gpu) tick(now time.Time) {
	total := g.busyTime(now)
	g.mu.Lock()
	defer g.mu.Unlock()
	elapsed := now.Sub(g.lastTick)
	if elapsed <= 0 {
		return
	}
	frac := min(max(float64(total-g.lastBusy)/float64(elapsed), 0), 1)
	g.lastTick, g.lastBusy = now, total
	g.samples[g.nextSample] = frac
	g.nextSample = (g.nextSample + 1) % utilSamples
	g.haveSamples = min(g.haveSamples+1, utilSamples)
	var sum float64
	for _, s := range g.samples[:g.haveSamples] {
		sum += s
	}
	u := sum / float64(g.haveSamples)
	g.util.Set(u)
	g.power.Set(gpuIdlePowerWatts + u*(gpuPowerLimitWatts-gpuIdlePowerWatts))
}
