package tritonsim

import (
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

// TestSharedGPUDelaysQueries runs a mixed load on a fake clock: a 4-page
// batch occupies the one shared GPU, so the query batch dispatched behind
// it waits for the device. /metrics shows the queueing per model and the
// GPU's busy time; with separate GPUs the query does not wait.
func TestSharedGPUDelaysQueries(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		layout     string
		queryInfer time.Duration // the query's compute_infer
	}{
		{LayoutShared, 298*ms + 11*ms}, // dispatched at 2ms, behind the 4 pages (100 + 4 x 50ms)
		{LayoutSeparate, 11 * ms},
	} {
		t.Run(tc.layout, func(t *testing.T) {
			ctx := testContext(t)
			s, c, clk := fakeServer(t, func(c *Config) { c.Layout = tc.layout })
			img, q := model.DefaultImageModel, model.DefaultQueryModel

			// 4 pages: a preferred size, so they run at once.
			pages := inferResp(ctx, c, imageRequest(t, 4))
			clk.waitTimer(t, 300*ms)
			// Two more image calls queue behind the running batch (one
			// image instance), and a query arrives.
			more := []<-chan inferResult{inferResp(ctx, c, imageRequest(t, 1)), inferResp(ctx, c, imageRequest(t, 1))}
			waitQueued(t, s, img, 2)
			query := inferResp(ctx, c, queryRequest("what is on page 3"))
			waitQueued(t, s, q, 1)

			m := scrape(t, ctx, s)
			if got := m["nv_inference_pending_request_count"][modelLabels(img)]; got != 2 {
				t.Errorf("image pending %v, want 2", got)
			}
			if got := m["nv_inference_pending_request_count"][modelLabels(q)]; got != 1 {
				t.Errorf("query pending %v, want 1", got)
			}

			clk.waitTimer(t, 2*ms) // the query batcher's max_queue_delay
			clk.Advance(2 * ms)
			if tc.layout == LayoutShared {
				waitFor(t, "the query batch to wait for the GPU", func() bool { return s.devices[0].queued() == 1 })
				clk.Advance(298 * ms) // the pages finish; the query starts
				clk.waitTimer(t, 11*ms)
				clk.Advance(11 * ms)
			} else {
				clk.waitTimer(t, 11*ms) // on its own GPU at once
				clk.Advance(11 * ms)
			}
			if r := result(t, query); r.err != nil {
				t.Fatal(r.err)
			}
			if tc.layout == LayoutSeparate {
				clk.Advance(287 * ms) // the pages finish
			}
			// The two single pages merge into one batch of 2 once the
			// image instance is free, after its 5ms delay at most.
			clk.waitTimer(t, 200*ms)
			clk.Advance(200 * ms)
			for _, ch := range append(more, pages) {
				if r := result(t, ch); r.err != nil {
					t.Fatal(r.err)
				}
			}

			qs := statsOf(t, ctx, c, q).GetInferenceStats()
			if got := time.Duration(qs.GetComputeInfer().GetNs()); got != tc.queryInfer {
				t.Errorf("query compute_infer %v, want %v", got, tc.queryInfer)
			}
			m = scrape(t, ctx, s)
			if got := m["nv_inference_queue_duration_us"][modelLabels(q)]; got != 2000 {
				t.Errorf("query queue duration %vus, want 2000 (its batching delay)", got)
			}
			if got := m["nv_inference_exec_count"][modelLabels(img)]; got != 2 {
				t.Errorf("image executions %v, want 2 (4 pages, then 2 merged)", got)
			}
			var busy float64
			for _, v := range m["tritonsim_gpu_busy_seconds_total"] {
				busy += v
			}
			if want := (300*ms + 200*ms + 11*ms).Seconds(); busy < want-1e-9 || busy > want+1e-9 {
				t.Errorf("GPU busy %vs over all GPUs, want %vs", busy, want)
			}
		})
	}
}
