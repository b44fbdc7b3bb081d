package gpu

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Triton's metric names (docs/user_guide/metrics.md of the Triton server).
const (
	metricPending        = "nv_inference_pending_request_count"
	metricSuccess        = "nv_inference_request_success"
	metricFailure        = "nv_inference_request_failure"
	metricInferences     = "nv_inference_count"
	metricExecutions     = "nv_inference_exec_count"
	metricRequestUs      = "nv_inference_request_duration_us"
	metricQueueUs        = "nv_inference_queue_duration_us"
	metricComputeInferUs = "nv_inference_compute_infer_duration_us"
	metricGPUUtilization = "nv_gpu_utilization"
	metricGPUMemoryUsed  = "nv_gpu_memory_used_bytes"
	metricGPUMemoryTotal = "nv_gpu_memory_total_bytes"

	// labelGPUUUID names the GPU of an nv_gpu_* series.
	labelGPUUUID = "gpu_uuid"
	// labelModel names the model of an nv_inference_* series.
	labelModel = "model"
)

// tritonCounters are the cumulative counters Stats' rates come from.
var tritonCounters = []string{
	metricSuccess, metricFailure, metricInferences, metricExecutions,
	metricRequestUs, metricQueueUs, metricComputeInferUs,
}

// tritonSample is one scrape of a Triton metrics endpoint, reduced to what
// Stats needs.
type tritonSample struct {
	at         time.Time
	hasPending bool
	pending    float64
	// modelPending is pending per model label.
	modelPending map[string]float64
	// counters maps a counter's name to its series (keyed by their label
	// set) and their values, so that a reset is found per series: one
	// model reloading must not look like the whole server restarting.
	counters map[string]map[string]float64
	// modelOf maps a series' label set to its model label, so that the
	// rates can be told apart per model as well as summed.
	modelOf map[string]string
	devices []Device
}

// parseTritonMetrics reads Prometheus text exposition format with the
// Prometheus project's own parser.
func parseTritonMetrics(r io.Reader, at time.Time) (*tritonSample, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	s := &tritonSample{
		at: at, counters: make(map[string]map[string]float64),
		modelPending: make(map[string]float64), modelOf: make(map[string]string),
	}
	if fam, ok := families[metricPending]; ok {
		for _, m := range fam.GetMetric() {
			if v, ok := metricValue(m); ok {
				s.pending += v
				s.hasPending = true
				s.modelPending[labelValue(m, labelModel)] += v
			}
		}
	}
	for _, name := range tritonCounters {
		fam, ok := families[name]
		if !ok {
			continue
		}
		series := make(map[string]float64, len(fam.GetMetric()))
		for _, m := range fam.GetMetric() {
			if v, ok := metricValue(m); ok && v >= 0 {
				key := labelKey(m)
				series[key] += v
				s.modelOf[key] = labelValue(m, labelModel)
			}
		}
		s.counters[name] = series
	}
	s.devices = tritonDevices(families)
	return s, nil
}

// tritonDevices gathers the nv_gpu_* gauges per GPU, ordered by UUID.
func tritonDevices(families map[string]*dto.MetricFamily) []Device {
	byGPU := make(map[string]*Device)
	device := func(m *dto.Metric) *Device {
		id := labelValue(m, labelGPUUUID)
		if id == "" {
			id = labelKey(m)
		}
		d, ok := byGPU[id]
		if !ok {
			d = &Device{UUID: labelValue(m, labelGPUUUID), Index: -1, Utilization: -1}
			byGPU[id] = d
		}
		return d
	}
	for _, g := range []struct {
		name string
		set  func(d *Device, v float64)
	}{
		{metricGPUUtilization, func(d *Device, v float64) { d.Utilization = min(max(v, 0), 1) }},
		{metricGPUMemoryUsed, func(d *Device, v float64) { d.MemoryUsed = toBytes(v) }},
		{metricGPUMemoryTotal, func(d *Device, v float64) { d.MemoryTotal = toBytes(v) }},
	} {
		for _, m := range families[g.name].GetMetric() {
			if v, ok := metricValue(m); ok {
				g.set(device(m), v)
			}
		}
	}
	devices := make([]Device, 0, len(byGPU))
	for _, d := range byGPU {
		devices = append(devices, *d)
	}
	slices.SortFunc(devices, func(a, b Device) int { return cmp.Compare(a.UUID, b.UUID) })
	return devices
}

// tritonStats makes Stats from the latest sample and, when there is one,
// the sample before it from the same server: the figures summed over
// models, and each model's own (Stats.Models).
func tritonStats(prev, cur *tritonSample) Stats {
	st := Stats{At: cur.at, Source: SourceTritonMetrics}
	models := make(map[string]ModelStats)
	if cur.hasPending {
		st.Pending = cur.pending
		st.Reported |= FieldQueue
		for name, v := range cur.modelPending {
			models[name] = ModelStats{Reported: FieldQueue, Pending: v}
		}
	}
	if prev != nil && len(cur.counters) > 0 {
		if dt := cur.at.Sub(prev.at).Seconds(); dt > 0 {
			delta := func(name string) map[string]float64 {
				return counterDeltaByModel(prev.counters[name], cur.counters[name], cur.modelOf)
			}
			d := make(map[string]map[string]float64, len(tritonCounters))
			for _, name := range tritonCounters {
				d[name] = delta(name)
			}
			// total is the all-models figure; each model's goes to models.
			total := func(name string) float64 {
				var sum float64
				for _, v := range d[name] {
					sum += v
				}
				return sum
			}
			all := rates(dt, total)
			st.QueueTimePerRequest, st.ComputePerExec, st.RequestTimePerRequest = all.QueueTimePerRequest, all.ComputePerExec, all.RequestTimePerRequest
			st.RequestsPerSecond, st.FailuresPerSecond = all.RequestsPerSecond, all.FailuresPerSecond
			st.InferencesPerSecond, st.ExecutionsPerSecond = all.InferencesPerSecond, all.ExecutionsPerSecond
			st.Reported |= FieldRates
			names := make(map[string]bool)
			for _, name := range tritonCounters {
				for m := range d[name] {
					names[m] = true
				}
			}
			for m := range names {
				ms := rates(dt, func(name string) float64 { return d[name][m] })
				ms.Pending = models[m].Pending
				ms.Reported |= models[m].Reported
				models[m] = ms
			}
		}
	}
	if len(models) > 0 {
		st.Models = models
	}
	if len(cur.devices) > 0 {
		st.Devices = cur.devices
		st.GPUs = len(cur.devices)
		st.Utilization = meanUtilization(cur.devices)
		for _, d := range cur.devices {
			st.MemoryUsed += d.MemoryUsed
			st.MemoryTotal += d.MemoryTotal
		}
		st.Reported |= FieldGPU
	}
	return st
}

// rates computes the rate figures over dt seconds from delta, the growth
// of a counter over the interval (for all models or one).
func rates(dt float64, delta func(name string) float64) ModelStats {
	success := delta(metricSuccess)
	r := ModelStats{
		Reported:            FieldRates,
		RequestsPerSecond:   success / dt,
		FailuresPerSecond:   delta(metricFailure) / dt,
		InferencesPerSecond: delta(metricInferences) / dt,
		ExecutionsPerSecond: delta(metricExecutions) / dt,
	}
	if success > 0 {
		r.QueueTimePerRequest = microseconds(delta(metricQueueUs) / success)
		r.ComputePerExec = microseconds(delta(metricComputeInferUs) / success)
		r.RequestTimePerRequest = microseconds(delta(metricRequestUs) / success)
	}
	return r
}

// counterDelta is how much a counter's series grew between two samples.
// A series that went down was reset (Triton restarted or the model was
// reloaded) and counted up from zero since, so its growth is its current
// value, as Prometheus' rate() takes it; a series new since prev grew by
// all of its value; a series gone since prev contributes nothing.
func counterDelta(prev, cur map[string]float64) float64 {
	var sum float64
	for key, c := range cur {
		p, ok := prev[key]
		switch {
		case !ok || c < p:
			sum += c
		default:
			sum += c - p
		}
	}
	return sum
}

// counterDeltaByModel is counterDelta per model label (modelOf maps a
// series' label set to it).
func counterDeltaByModel(prev, cur map[string]float64, modelOf map[string]string) map[string]float64 {
	out := make(map[string]float64)
	for key, c := range cur {
		p, ok := prev[key]
		m := modelOf[key]
		switch {
		case !ok || c < p:
			out[m] += c
		default:
			out[m] += c - p
		}
	}
	return out
}

// meanUtilization is the mean over the devices whose utilisation is known.
func meanUtilization(devices []Device) float64 {
	var sum float64
	var n int
	for _, d := range devices {
		if d.Utilization >= 0 {
			sum += d.Utilization
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// metricValue is a sample's value whatever its declared type; ok is false
// for histograms, summaries and values that are not finite.
func metricValue(m *dto.Metric) (float64, bool) {
	var v float64
	switch {
	case m.Counter != nil:
		v = m.GetCounter().GetValue()
	case m.Gauge != nil:
		v = m.GetGauge().GetValue()
	case m.Untyped != nil:
		v = m.GetUntyped().GetValue()
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// labelKey identifies a series within its family by its label set.
func labelKey(m *dto.Metric) string {
	pairs := make([]string, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		pairs = append(pairs, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	slices.Sort(pairs)
	return strings.Join(pairs, ",")
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func toBytes(v float64) uint64 {
	if v <= 0 {
		return 0
	}
	return uint64(v)
}

func microseconds(us float64) time.Duration {
	return time.Duration(us * float64(time.Microsecond))
}
