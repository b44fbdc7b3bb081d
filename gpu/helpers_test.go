package gpu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct{ ns atomic.Int64 }

var clockBase = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func (c *fakeClock) Now() time.Time          { return clockBase.Add(time.Duration(c.ns.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// logCapture is a JSON slog handler's output, kept for assertions and also
// sent to t.Log.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// records returns the logged records whose message is msg.
func (c *logCapture) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(c.buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// captureLogger logs to both a logCapture and the test's log.
func captureLogger(t *testing.T) (*slog.Logger, *logCapture) {
	c := &logCapture{}
	testLog := testutil.Logger(t).Handler()
	jsonLog := slog.NewJSONHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(teeHandler{jsonLog, testLog}), c
}

type teeHandler []slog.Handler

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, x := range h {
		if err := x.Handle(ctx, r.Clone()); err != nil {
			return err
		}
	}
	return nil
}
func (h teeHandler) WithAttrs(a []slog.Attr) slog.Handler {
	out := make(teeHandler, len(h))
	for i, x := range h {
		out[i] = x.WithAttrs(a)
	}
	return out
}
func (h teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(h))
	for i, x := range h {
		out[i] = x.WithGroup(name)
	}
	return out
}

// eventually waits for cond; see testutil.Eventually.
var eventually = testutil.Eventually

// tritonModel is one model's counters in a generated metrics page.
type tritonModel struct {
	name                                        string
	success, failure, inferences, executions    float64
	requestUs, queueUs, computeInferUs, pending float64
}

// tritonGPU is one GPU's gauges in a generated metrics page.
type tritonGPU struct {
	uuid              string
	util              float64
	memUsed, memTotal float64
}

// tritonPage renders a metrics page as Triton 2.x writes it: HELP and TYPE
// lines, model and version labels, a reason label on failures, families
// the scraper ignores (CPU, power, the other compute phases).
func tritonPage(models []tritonModel, gpus []tritonGPU) string {
	var b strings.Builder
	family := func(name, typ, help string, value func(m tritonModel) float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, m := range models {
			if name == metricFailure {
				fmt.Fprintf(&b, "%s{model=%q,reason=\"REJECTED\",version=\"1\"} %g\n", name, m.name, value(m))
				fmt.Fprintf(&b, "%s{model=%q,reason=\"BACKEND\",version=\"1\"} 0\n", name, m.name)
				continue
			}
			fmt.Fprintf(&b, "%s{model=%q,version=\"1\"} %g\n", name, m.name, value(m))
		}
	}
	family(metricSuccess, "counter", "Number of successful inference requests, all batch sizes", func(m tritonModel) float64 { return m.success })
	family(metricFailure, "counter", "Number of failed inference requests, all batch sizes", func(m tritonModel) float64 { return m.failure })
	family(metricInferences, "counter", "Number of inferences performed (does not include cached requests)", func(m tritonModel) float64 { return m.inferences })
	family(metricExecutions, "counter", "Number of model executions performed (does not include cached requests)", func(m tritonModel) float64 { return m.executions })
	family("nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests awaiting execution per-model.", func(m tritonModel) float64 { return m.pending })
	family(metricRequestUs, "counter", "Cumulative inference request duration in microseconds (includes cached requests)", func(m tritonModel) float64 { return m.requestUs })
	family(metricQueueUs, "counter", "Cumulative inference queuing duration in microseconds (includes cached requests)", func(m tritonModel) float64 { return m.queueUs })
	family("nv_inference_compute_input_duration_us", "counter", "Cumulative compute input duration in microseconds (does not include cached requests)", func(m tritonModel) float64 { return m.computeInferUs / 20 })
	family(metricComputeInferUs, "counter", "Cumulative compute inference duration in microseconds (does not include cached requests)", func(m tritonModel) float64 { return m.computeInferUs })
	family("nv_inference_compute_output_duration_us", "counter", "Cumulative inference compute output duration in microseconds (does not include cached requests)", func(m tritonModel) float64 { return m.computeInferUs / 50 })
	gpuFamily := func(name, help string, value func(g tritonGPU) float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		for _, g := range gpus {
			fmt.Fprintf(&b, "%s{gpu_uuid=%q} %g\n", name, g.uuid, value(g))
		}
	}
	gpuFamily("nv_gpu_power_usage", "GPU power usage in watts", func(g tritonGPU) float64 { return 70 + 600*g.util })
	gpuFamily("nv_gpu_power_limit", "GPU power management limit in watts", func(tritonGPU) float64 { return 700 })
	gpuFamily("nv_energy_consumption", "GPU energy consumption in joules since the Triton Server started", func(tritonGPU) float64 { return 123456.5 })
	gpuFamily(metricGPUUtilization, "GPU utilization rate [0.0 - 1.0)", func(g tritonGPU) float64 { return g.util })
	gpuFamily(metricGPUMemoryTotal, "GPU total memory, in bytes", func(g tritonGPU) float64 { return g.memTotal })
	gpuFamily(metricGPUMemoryUsed, "GPU used memory, in bytes", func(g tritonGPU) float64 { return g.memUsed })
	b.WriteString("# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]\n# TYPE nv_cpu_utilization gauge\nnv_cpu_utilization 0.125\n")
	b.WriteString("# HELP nv_cpu_memory_total_bytes CPU total memory (RAM), in bytes\n# TYPE nv_cpu_memory_total_bytes gauge\nnv_cpu_memory_total_bytes 1081649471488\n")
	return b.String()
}
