package gpu

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseTritonPage(t *testing.T) {
	f, err := os.Open("testdata/triton_two_gpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := parseTritonMetrics(f, clockBase)
	if err != nil {
		t.Fatal(err)
	}
	st := tritonStats(nil, s)
	want := Stats{
		At:       clockBase,
		Source:   SourceTritonMetrics,
		Reported: FieldQueue | FieldGPU, // one scrape: no rates yet
		Pending:  5,
		Models: map[string]ModelStats{
			"colpali_image": {Reported: FieldQueue, Pending: 3},
			"colpali_query": {Reported: FieldQueue, Pending: 2},
		},
		Utilization: 0.5,
		MemoryUsed:  24 << 30,
		MemoryTotal: 160 << 30,
		GPUs:        2,
		Devices: []Device{
			{UUID: "GPU-5a3e2f10-0000-4000-8000-00000000000a", Index: -1, Utilization: 0.75, MemoryUsed: 16 << 30, MemoryTotal: 80 << 30},
			{UUID: "GPU-5a3e2f10-0000-4000-8000-00000000000b", Index: -1, Utilization: 0.25, MemoryUsed: 8 << 30, MemoryTotal: 80 << 30},
		},
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if got := counterDelta(nil, s.counters[metricFailure]); got != 8 {
		t.Errorf("failures summed over models and reasons = %v, want 8", got)
	}
	if st.MemoryFree() != 136<<30 {
		t.Errorf("MemoryFree = %d", st.MemoryFree())
	}
}

func TestTritonRatesFromTwoScrapes(t *testing.T) {
	gpus := []tritonGPU{{uuid: "GPU-a", util: 0.9, memUsed: 10e9, memTotal: 80e9}}
	first := []tritonModel{
		{name: "colpali_image", success: 100, inferences: 800, executions: 100, requestUs: 9e6, queueUs: 3e6, computeInferUs: 5e6, pending: 4},
		{name: "colpali_query", success: 1000, inferences: 8000, executions: 1000, requestUs: 10e6, queueUs: 1e6, computeInferUs: 8e6},
	}
	second := []tritonModel{
		// image: +20 requests of 8 pages, and 2 rejected.
		{name: "colpali_image", success: 120, failure: 2, inferences: 960, executions: 120, requestUs: 9e6 + 40e6, queueUs: 3e6 + 8e6, computeInferUs: 5e6 + 24e6, pending: 6},
		// query: +80 requests of 8 queries.
		{name: "colpali_query", success: 1080, inferences: 8640, executions: 1080, requestUs: 10e6 + 8e6, queueUs: 1e6 + 2e6, computeInferUs: 8e6 + 0.8e6, pending: 1},
	}
	prev := mustParse(t, tritonPage(first, gpus), clockBase)
	cur := mustParse(t, tritonPage(second, gpus), clockBase.Add(2*time.Second))
	st := tritonStats(prev, cur)
	want := Stats{
		At: clockBase.Add(2 * time.Second), Source: SourceTritonMetrics, Reported: FieldAll,
		Pending:               7,
		QueueTimePerRequest:   100 * time.Millisecond, // (8+2) s / 100 requests
		ComputePerExec:        248 * time.Millisecond, // (24+0.8) s / 100 requests
		RequestTimePerRequest: 480 * time.Millisecond, // (40+8) s / 100 requests
		InferencesPerSecond:   400,                    // (160+640) / 2 s
		ExecutionsPerSecond:   50,
		RequestsPerSecond:     50,
		FailuresPerSecond:     1,
		// Each model's own: the sums above are dominated by the image
		// model's queue, which a query does not wait in.
		Models: map[string]ModelStats{
			"colpali_image": {
				Reported: FieldAll &^ FieldGPU, Pending: 6,
				QueueTimePerRequest:   400 * time.Millisecond,  // 8 s / 20 requests
				ComputePerExec:        1200 * time.Millisecond, // 24 s / 20
				RequestTimePerRequest: 2 * time.Second,         // 40 s / 20
				RequestsPerSecond:     10, FailuresPerSecond: 1, InferencesPerSecond: 80, ExecutionsPerSecond: 10,
			},
			"colpali_query": {
				Reported: FieldAll &^ FieldGPU, Pending: 1,
				QueueTimePerRequest:   25 * time.Millisecond, // 2 s / 80 requests
				ComputePerExec:        10 * time.Millisecond, // 0.8 s / 80
				RequestTimePerRequest: 100 * time.Millisecond,
				RequestsPerSecond:     40, InferencesPerSecond: 320, ExecutionsPerSecond: 40,
			},
		},
		Utilization: 0.9, MemoryUsed: 10e9, MemoryTotal: 80e9, GPUs: 1,
		Devices: []Device{{UUID: "GPU-a", Index: -1, Utilization: 0.9, MemoryUsed: 10e9, MemoryTotal: 80e9}},
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if st.MeanBatchSize() != 8 {
		t.Errorf("MeanBatchSize = %v, want 8", st.MeanBatchSize())
	}
}

// A restart resets every counter; a model reload resets its own series
// only. Neither may give a negative figure, and the growth of the other
// series must still count.
func TestTritonCounterReset(t *testing.T) {
	before := []tritonModel{
		{name: "colpali_image", success: 5000, inferences: 40000, executions: 5000, requestUs: 5e9, queueUs: 1e9, computeInferUs: 3e9},
		{name: "colpali_query", success: 100, inferences: 800, executions: 100, requestUs: 1e6, queueUs: 1e5, computeInferUs: 5e5},
	}
	reloaded := []tritonModel{
		// image reloaded: counts from zero, 10 requests since.
		{name: "colpali_image", success: 10, inferences: 80, executions: 10, requestUs: 1e6, queueUs: 2e5, computeInferUs: 6e5},
		// query kept counting: +10 requests.
		{name: "colpali_query", success: 110, inferences: 880, executions: 110, requestUs: 2e6, queueUs: 3e5, computeInferUs: 9e5},
	}
	prev := mustParse(t, tritonPage(before, nil), clockBase)
	cur := mustParse(t, tritonPage(reloaded, nil), clockBase.Add(time.Second))
	st := tritonStats(prev, cur)
	if st.RequestsPerSecond != 20 || st.InferencesPerSecond != 160 || st.ExecutionsPerSecond != 20 {
		t.Errorf("rates after a model reload: requests %v, inferences %v, executions %v; want 20, 160, 20",
			st.RequestsPerSecond, st.InferencesPerSecond, st.ExecutionsPerSecond)
	}
	if st.QueueTimePerRequest != 20*time.Millisecond { // (0.2 + 0.2) s / 20
		t.Errorf("QueueTimePerRequest = %v, want 20ms", st.QueueTimePerRequest)
	}
	// Per model, a reload resets that model's figures alone.
	if img, q := st.Models["colpali_image"], st.Models["colpali_query"]; img.RequestsPerSecond != 10 || img.QueueTimePerRequest != 20*time.Millisecond ||
		q.RequestsPerSecond != 10 || q.QueueTimePerRequest != 20*time.Millisecond {
		t.Errorf("per-model rates after a model reload: image %+v, query %+v; want 10/s and 20ms each", img, q)
	}

	restarted := mustParse(t, tritonPage([]tritonModel{
		{name: "colpali_image"}, {name: "colpali_query", success: 3, inferences: 3, executions: 1, queueUs: 3000},
	}, nil), clockBase.Add(2*time.Second))
	st = tritonStats(cur, restarted)
	if st.RequestsPerSecond != 3 || st.InferencesPerSecond != 3 || st.ExecutionsPerSecond != 1 ||
		st.QueueTimePerRequest != time.Millisecond || st.FailuresPerSecond != 0 {
		t.Errorf("after a restart: %+v", st)
	}
	for _, v := range []float64{st.RequestsPerSecond, st.InferencesPerSecond, st.ExecutionsPerSecond, st.FailuresPerSecond,
		float64(st.QueueTimePerRequest), float64(st.ComputePerExec), float64(st.RequestTimePerRequest)} {
		if v < 0 {
			t.Fatalf("negative figure after a restart: %+v", st)
		}
	}
}

func TestTritonQuietInterval(t *testing.T) {
	page := tritonPage([]tritonModel{{name: "m", success: 10, inferences: 10, executions: 10, queueUs: 100}}, nil)
	st := tritonStats(mustParse(t, page, clockBase), mustParse(t, page, clockBase.Add(time.Second)))
	if !st.Reported.Has(FieldRates) || st.RequestsPerSecond != 0 || st.QueueTimePerRequest != 0 || st.MeanBatchSize() != 0 {
		t.Errorf("no traffic: %+v, want rates reported as zero", st)
	}
}

func TestParseMalformed(t *testing.T) {
	for name, page := range map[string]string{
		"unclosed labels": "nv_inference_count{model=\"m\" 12\n",
		"bad value":       "nv_inference_count{model=\"m\"} twelve\n",
		"type clash":      "# TYPE nv_inference_count counter\n# TYPE nv_inference_count gauge\nnv_inference_count 1\n",
	} {
		if _, err := parseTritonMetrics(strings.NewReader(page), clockBase); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func mustParse(t *testing.T, page string, at time.Time) *tritonSample {
	t.Helper()
	s, err := parseTritonMetrics(strings.NewReader(page), at)
	if err != nil {
		t.Fatalf("%v\n%s", err, page)
	}
	return s
}
