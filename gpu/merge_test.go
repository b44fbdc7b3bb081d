package gpu

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeSource is a Source whose answers a test sets.
type fakeSource map[string]Stats

func (f fakeSource) Stats(backend string) (Stats, bool) { s, ok := f[backend]; return s, ok }
func (f fakeSource) All() map[string]Stats              { return f }

var _ Source = fakeSource(nil)

func TestMerge(t *testing.T) {
	t0 := clockBase
	nvmlDevices := []Device{{UUID: "GPU-n", Index: 0, Name: "NVIDIA H100 80GB HBM3", Utilization: 0.9, MemoryUsed: 5, MemoryTotal: 80}}
	nvmlSrc := fakeSource{
		"a:1": {At: t0, Source: SourceNVML, Reported: FieldGPU, Utilization: 0.9, MemoryUsed: 5, MemoryTotal: 80, GPUs: 1, Devices: nvmlDevices},
	}
	scrape := fakeSource{
		"a:1": {At: t0.Add(time.Second), Source: SourceTritonMetrics, Reported: FieldAll, Pending: 3,
			QueueTimePerRequest: time.Millisecond, ComputePerExec: 2 * time.Millisecond, RequestTimePerRequest: 4 * time.Millisecond,
			InferencesPerSecond: 80, ExecutionsPerSecond: 10, RequestsPerSecond: 10, FailuresPerSecond: 1,
			Utilization: 0.5, MemoryUsed: 7, MemoryTotal: 80, GPUs: 1},
		"b:1": {At: t0, Source: SourceTritonMetrics, Reported: FieldQueue, Pending: 1},
	}
	legacy := fakeSource{"c:1": {At: t0, Pending: 9, Utilization: 0.25}}
	m := Merge(nvmlSrc, nil, scrape, legacy)

	got, ok := m.Stats("a:1")
	want := Stats{At: t0, Source: "nvml+triton-metrics", Reported: FieldAll, Pending: 3,
		QueueTimePerRequest: time.Millisecond, ComputePerExec: 2 * time.Millisecond, RequestTimePerRequest: 4 * time.Millisecond,
		InferencesPerSecond: 80, ExecutionsPerSecond: 10, RequestsPerSecond: 10, FailuresPerSecond: 1,
		Utilization: 0.9, MemoryUsed: 5, MemoryTotal: 80, GPUs: 1, Devices: nvmlDevices}
	if diff := cmp.Diff(want, got); !ok || diff != "" {
		t.Errorf("a: ok %v, (-want +got):\n%s", ok, diff)
	}

	// Only the scrape knows b, and only its queue.
	if got, ok := m.Stats("b:1"); !ok || got.Reported != FieldQueue || got.Pending != 1 || got.Source != SourceTritonMetrics {
		t.Errorf("b = %+v, %v", got, ok)
	}
	// A source that does not fill Reported in counts as reporting all.
	if got, ok := m.Stats("c:1"); !ok || got.Reported != FieldAll || got.Pending != 9 || got.Utilization != 0.25 || got.Source != "" {
		t.Errorf("c = %+v, %v", got, ok)
	}
	if _, ok := m.Stats("d:1"); ok {
		t.Error("unknown backend ok")
	}
	// NVML stale (not ok): the scrape's GPU figures are used.
	delete(nvmlSrc, "a:1")
	if got, _ := m.Stats("a:1"); got.Utilization != 0.5 || got.MemoryUsed != 7 || got.Source != SourceTritonMetrics || !got.At.Equal(t0.Add(time.Second)) {
		t.Errorf("a without NVML = %+v", got)
	}

	all := m.All()
	if len(all) != 3 || all["b:1"].Pending != 1 {
		t.Errorf("All = %v", all)
	}
	if _, ok := Merge().Stats("a:1"); ok {
		t.Error("empty Merge ok")
	}
}

func TestFieldsString(t *testing.T) {
	for f, want := range map[Fields]string{0: "none", FieldQueue | FieldGPU: "queue|gpu", FieldAll: "queue|rates|gpu"} {
		if got := f.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", f, got, want)
		}
	}
}
