package gpu

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

// The scraper against the Triton simulator's real /metrics endpoint, while
// inferences queue on its one instance.
func TestScraperAgainstSimulator(t *testing.T) {
	ctx := testutil.Context(t)
	const batchCost = 50 * time.Millisecond // 30ms + 4 x 5ms
	const imageCost = 90 * time.Millisecond // 60ms + 1 x 30ms
	// Triton's batcher off, so that each call is a batch of four and the
	// figures below are exact.
	sim, err := tritonsim.Start(ctx, tritonsim.Config{
		GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Instances: 1, DisableDynamicBatching: true,
		QueryCost: tritonsim.Cost{Base: 30 * time.Millisecond, PerItem: 5 * time.Millisecond},
		ImageCost: tritonsim.Cost{Base: 60 * time.Millisecond, PerItem: 30 * time.Millisecond},
	}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	client, err := triton.New(triton.Config{Addr: sim.GRPCAddr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })

	backend := sim.GRPCAddr()
	s := NewScraper(ScraperConfig{Interval: 40 * time.Millisecond, Timeout: 40 * time.Millisecond}, testutil.Logger(t))
	s.SetTargets(map[string]string{backend: "http://" + sim.MetricsAddr() + "/metrics"})
	runScraper(t, s)

	eventually(t, "idle figures", func() bool { _, ok := s.Stats(backend); return ok })
	idle, _ := s.Stats(backend)
	if idle.Pending != 0 || idle.GPUs != 1 || idle.MemoryTotal != 80<<30 || idle.MemoryUsed == 0 ||
		len(idle.Devices) != 1 || !strings.HasPrefix(idle.Devices[0].UUID, "GPU-sim-") {
		t.Errorf("idle Stats = %+v", idle)
	}

	// Twelve batches of four queries on one instance: about 600 ms of
	// work, most of it queued; and four one-page image calls on the same
	// GPU.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 4 {
		wg.Go(func() {
			img := image.NewGray(image.Rect(0, 0, 8+i, 8))
			var page bytes.Buffer
			if err := png.Encode(&page, img); err != nil {
				errs <- err
				return
			}
			if _, err := client.Infer(ctx, triton.NewCodec(model.Config{}).Request(model.Image, [][]byte{page.Bytes()}, triton.EmbedOptions{})); err != nil {
				errs <- err
			}
		})
	}
	for i := range 12 {
		wg.Go(func() {
			items := [][]byte{}
			for j := range 4 {
				items = append(items, fmt.Appendf(nil, "query %d.%d", i, j))
			}
			if _, err := client.Infer(ctx, triton.NewCodec(model.Config{}).Request(model.Query, items, triton.EmbedOptions{})); err != nil {
				errs <- err
			}
		})
	}
	var maxPending, maxUtil float64
	var sawRates Stats
	var sawImage ModelStats
	sawBatchesOf4 := false
	eventually(t, "queue, utilisation and rates", func() bool {
		st, ok := s.Stats(backend)
		if !ok {
			return false
		}
		maxPending, maxUtil = max(maxPending, st.Pending), max(maxUtil, st.Utilization)
		if st.Reported.Has(FieldRates) && st.ExecutionsPerSecond > 0 && st.QueueTimePerRequest > 0 {
			sawRates = st
			// Counters are read one after the other, so a scrape can
			// fall between an execution's two increments; most cannot.
			q, ok := st.Model("colpali_query")
			sawBatchesOf4 = sawBatchesOf4 || ok && q.ExecutionsPerSecond > 0 && q.InferencesPerSecond == 4*q.ExecutionsPerSecond && q.RequestsPerSecond == q.ExecutionsPerSecond
		}
		if img, ok := st.Model("colpali_image"); ok && img.ExecutionsPerSecond > 0 && img.ComputePerExec > 0 {
			sawImage = img
		}
		return maxPending >= 2 && maxUtil > 0 && sawBatchesOf4 && sawImage.ComputePerExec > 0
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := sawRates
	if st.ComputePerExec < batchCost || st.ComputePerExec > 20*batchCost {
		t.Errorf("ComputePerExec = %v, want at least the simulated %v", st.ComputePerExec, batchCost)
	}
	if st.RequestTimePerRequest < st.QueueTimePerRequest+st.ComputePerExec {
		t.Errorf("request time %v is less than queue %v + compute %v", st.RequestTimePerRequest, st.QueueTimePerRequest, st.ComputePerExec)
	}
	// The image model's own figures, not the mean over both models.
	if sawImage.ComputePerExec < imageCost || sawImage.ComputePerExec > 20*imageCost || sawImage.InferencesPerSecond != sawImage.ExecutionsPerSecond {
		t.Errorf("image model figures %+v, want batches of one page of at least %v", sawImage, imageCost)
	}
	if st.FailuresPerSecond != 0 {
		t.Errorf("FailuresPerSecond = %v", st.FailuresPerSecond)
	}
}
