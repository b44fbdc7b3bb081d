package tritonsim

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

func TestMetricsAfterRequests(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, fastConfig())
	q, img := model.DefaultQueryModel, model.DefaultImageModel

	for _, texts := range [][]string{{"a", "b", "c"}, {"d", "e"}} {
		if _, err := c.ModelInfer(ctx, queryRequest(texts...)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.ModelInfer(ctx, queryRequest("")); err == nil {
		t.Fatal("an empty query succeeded")
	}
	if _, err := c.ModelInfer(ctx, imageRequest(t, 2)); err != nil {
		t.Fatal(err)
	}

	m := scrape(t, ctx, s)
	ql, il := modelLabels(q), modelLabels(img)
	for _, tc := range []struct {
		metric string
		labels string
		want   float64
	}{
		{"nv_inference_request_success", ql, 2},
		{"nv_inference_request_failure", ql, 1},
		{"nv_inference_count", ql, 5}, // items
		{"nv_inference_exec_count", ql, 2},
		{"nv_inference_pending_request_count", ql, 0},
		{"nv_inference_request_success", il, 1},
		{"nv_inference_request_failure", il, 0},
		{"nv_inference_count", il, 2},
		{"nv_inference_exec_count", il, 1}, // one batch of 2
	} {
		got, ok := m[tc.metric][tc.labels]
		if !ok {
			t.Errorf("%s{%s} is missing", tc.metric, tc.labels)
		} else if got != tc.want {
			t.Errorf("%s{%s} = %v, want %v", tc.metric, tc.labels, got, tc.want)
		}
	}
	// Cumulative microseconds: the image batch costs (15ms + 2 x 25ms) / 100.
	minImageUs := float64(Config{Speed: 100}.BatchDuration(model.Image, 2).Microseconds())
	if got := m["nv_inference_compute_infer_duration_us"][il]; got < minImageUs {
		t.Errorf("image compute_infer %v us, want at least the cost model's %v", got, minImageUs)
	}
	for _, name := range []string{
		"nv_inference_request_duration_us", "nv_inference_queue_duration_us",
		"nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
		"nv_inference_compute_output_duration_us",
	} {
		v, ok := m[name][ql]
		if !ok || v < 0 {
			t.Errorf("%s{%s} = %v (present %v), want a non-negative counter", name, ql, v, ok)
		}
	}
	if req, infer := m["nv_inference_request_duration_us"][ql], m["nv_inference_compute_infer_duration_us"][ql]; req < infer || infer <= 0 {
		t.Errorf("request duration %v us < compute infer %v us: the end-to-end time must include execution", req, infer)
	}

	// One simulated GPU, named after the simulator.
	total := m["nv_gpu_memory_total_bytes"]
	if len(total) != 1 {
		t.Fatalf("nv_gpu_memory_total_bytes has %d series, want one GPU", len(total))
	}
	var gpuLabels string
	for l, v := range total {
		gpuLabels = l
		if v != 80<<30 {
			t.Errorf("total memory %v, want 80 GiB", v)
		}
	}
	if !regexp.MustCompile(`^gpu_uuid=GPU-sim-[0-9a-f]{8}$`).MatchString(gpuLabels) {
		t.Errorf("GPU labels %q, want gpu_uuid=GPU-sim-<8 hex>", gpuLabels)
	}
	if used := m["nv_gpu_memory_used_bytes"][gpuLabels]; used != gpuWeightsMemory {
		t.Errorf("idle GPU uses %v bytes, want the weights' %v", used, gpuWeightsMemory)
	}
	if u, ok := m["nv_gpu_utilization"][gpuLabels]; !ok || u < 0 || u > 1 {
		t.Errorf("nv_gpu_utilization = %v (present %v), want within 0..1", u, ok)
	}
	if p := m["nv_gpu_power_usage"][gpuLabels]; p < gpuIdlePowerWatts || p > gpuPowerLimitWatts {
		t.Errorf("nv_gpu_power_usage = %v, want within idle and limit", p)
	}
}

func TestGPUGaugesWhileBusy(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, slowConfig(time.Minute))
	uuid := "gpu_uuid=" + gpuUUID(s.GRPCAddr(), 0)

	call := inferAsync(ctx, c, imageRequest(t, 4))
	waitFor(t, "the batch to execute", func() bool { _, idle := schedState(s, model.DefaultImageModel); return idle == 0 })
	// The gauge follows the batch onto the device a moment after the
	// scheduler marks it taken: wait for it rather than read it once.
	waitFor(t, "memory used while 4 pages execute to be the weights + 4 pages' activations", func() bool {
		return scrape(t, ctx, s)["nv_gpu_memory_used_bytes"][uuid] == gpuWeightsMemory+4*gpuImageItemMemory
	})
	waitFor(t, "nv_gpu_utilization to rise", func() bool {
		return scrape(t, ctx, s)["nv_gpu_utilization"][uuid] > 0.2
	})
	s.Stop()
	<-call
}

func TestGPUUtilizationWindow(t *testing.T) {
	m := newMetrics()
	start := time.Now()
	g := newGPU(m, "GPU-sim-test", start)
	at := func(d time.Duration) time.Time { return start.Add(d) }

	g.begin(at(0), 1)
	g.tick(at(utilTick)) // busy the whole tick
	g.end(at(utilTick+utilTick/2), 1)
	g.tick(at(2 * utilTick)) // busy half of it
	want := (1 + 0.5) / 2
	if got := gaugeValue(t, m, "nv_gpu_utilization"); got != want {
		t.Errorf("utilization %v, want %v", got, want)
	}
	for i := range utilSamples {
		g.tick(at(time.Duration(3+i) * utilTick)) // idle ticks push busy ones out of the window
	}
	if got := gaugeValue(t, m, "nv_gpu_utilization"); got != 0 {
		t.Errorf("utilization after an idle window %v, want 0", got)
	}
	if got := gaugeValue(t, m, "nv_gpu_power_usage"); got != gpuIdlePowerWatts {
		t.Errorf("idle power %v, want %v", got, gpuIdlePowerWatts)
	}
}

func gaugeValue(t *testing.T, m *metrics, name string) float64 {
	t.Helper()
	fams, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestMetricsEndpointHonesty(t *testing.T) {
	ctx := testContext(t)
	s, _ := startServer(t, fastConfig())
	body, code := httpDo(t, ctx, http.MethodGet, "http://"+s.MetricsAddr()+"/", "")
	if code != http.StatusOK || !strings.Contains(body, "not Triton") {
		t.Errorf("GET / = %d %q, want a page that says it is a simulator", code, body)
	}
	if _, code := httpDo(t, ctx, http.MethodGet, "http://"+s.MetricsAddr()+"/nothing", ""); code != http.StatusNotFound {
		t.Errorf("GET /nothing = %d, want 404", code)
	}
}

func TestSummaryLatenciesOnDemand(t *testing.T) {
	ctx := testContext(t)
	s, c, clk := fakeServer(t, func(c *Config) { c.SummaryLatencies = true })
	call := inferResp(ctx, c, queryRequest("quantiles"))
	clk.waitTimer(t, 2*time.Millisecond)
	clk.Advance(2 * time.Millisecond)
	clk.waitTimer(t, 11*time.Millisecond)
	clk.Advance(11 * time.Millisecond)
	if r := result(t, call); r.err != nil {
		t.Fatal(r.err)
	}
	body, _ := httpDo(t, ctx, http.MethodGet, "http://"+s.MetricsAddr()+"/metrics", "")
	for _, want := range []string{
		`nv_inference_queue_summary_us{model="colpali_query",version="1",quantile="0.99"} 2000`,
		`nv_inference_compute_infer_summary_us{model="colpali_query",version="1",quantile="0.5"} 11000`,
		`nv_inference_request_summary_us_count{model="colpali_query",version="1"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Off by default, as in Triton.
	plain, _ := startServer(t, fastConfig())
	if body, _ := httpDo(t, ctx, http.MethodGet, "http://"+plain.MetricsAddr()+"/metrics", ""); strings.Contains(body, "_summary_us") {
		t.Error("summaries exported without SummaryLatencies")
	}
}
