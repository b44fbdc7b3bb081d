//go:build cgo

package gpu

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// h100Node is go-nvml's simulated DGX H100 (8 x H100 80GB) with GPU i
// i*10% busy and holding i GiB. The mock does not implement utilisation,
// so the test supplies it: util[i] is GPU i's percentage, which a test may
// change while Run reads it.
func h100Node(t *testing.T) (node *server.Server, devices []*server.Device, util []atomic.Uint32) {
	t.Helper()
	node = dgxh100.New()
	util = make([]atomic.Uint32, len(node.Devices))
	for i, d := range node.Devices {
		dev := d.(*server.Device)
		util[i].Store(uint32(10 * i))
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: util[i].Load(), Memory: uint32(5 * i)}, nvml.SUCCESS
		}
		dev.MemoryInfo = nvml.Memory{Total: 80 << 30, Used: uint64(i) << 30, Free: (80 - uint64(i)) << 30}
		devices = append(devices, dev)
	}
	return node, devices, util
}

// runNVML runs n until the test ends, checking Run's result.
func runNVML(t *testing.T, n *NVML) {
	t.Helper()
	ctx, cancel := context.WithCancel(testutil.Context(t))
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestNVMLWithDGXH100Mock(t *testing.T) {
	node, devices, util := h100Node(t)
	var shutdowns atomic.Int32
	node.ShutdownFunc = func() nvml.Return { shutdowns.Add(1); return nvml.SUCCESS }
	logger, logs := captureLogger(t)
	n := NewNVML(NVMLConfig{
		Backends: map[string][]int{
			"triton-a:8001": {0, 1},
			"triton-b:8001": {7, 42}, // 42: no such GPU on the node
			"triton-c:8001": nil,     // every GPU
		},
		Interval: 10 * time.Millisecond,
		Library:  node,
	}, logger)
	ctx, cancel := context.WithCancel(testutil.Context(t))
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	eventually(t, "readings", func() bool { return len(n.All()) == 3 })
	if !n.Available() {
		t.Error("Available false while running")
	}
	a, _ := n.Stats("triton-a:8001")
	if a.Source != SourceNVML || a.Reported != FieldGPU || a.GPUs != 2 || a.Utilization != 0.05 ||
		a.MemoryUsed != 1<<30 || a.MemoryTotal != 160<<30 || a.Pending != 0 {
		t.Errorf("a = %+v", a)
	}
	uuid, _ := devices[1].GetUUID()
	if d := a.Devices[1]; d.Index != 1 || d.UUID != uuid || d.Name != "NVIDIA H100 80GB HBM3" ||
		d.Utilization != 0.1 || d.MemoryUsed != 1<<30 || d.MemoryTotal != 80<<30 {
		t.Errorf("a's device 1 = %+v", d)
	}
	if b, _ := n.Stats("triton-b:8001"); b.GPUs != 1 || b.Devices[0].Index != 7 || b.Utilization != 0.7 {
		t.Errorf("b = %+v, want GPU 7 only", b)
	}
	if c, _ := n.Stats("triton-c:8001"); c.GPUs != 8 || c.MemoryUsed != 28<<30 || c.Utilization != 0.35 {
		t.Errorf("c = %+v, want all 8 GPUs", c)
	}
	if recs := logs.records(t, "NVML device index out of range; ignored"); len(recs) != 1 || recs[0]["index"] != float64(42) {
		t.Errorf("out-of-range index log: %v", recs)
	}

	// Figures follow the GPUs.
	util[0].Store(100)
	eventually(t, "a new reading", func() bool { a, _ := n.Stats("triton-a:8001"); return a.Utilization == 0.55 })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if shutdowns.Load() != 1 || n.Available() {
		t.Errorf("after Run: %d shutdowns, Available %v", shutdowns.Load(), n.Available())
	}
}

// readResult is what a faulty device's reads return; tests swap it
// atomically while Run reads.
type readResult struct {
	util, mem nvml.Return
}

func TestNVMLDeviceFaults(t *testing.T) {
	node, devices, _ := h100Node(t)
	var fault atomic.Pointer[readResult]
	fault.Store(&readResult{nvml.SUCCESS, nvml.SUCCESS})
	devices[1].GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		if r := fault.Load().util; r != nvml.SUCCESS {
			return nvml.Utilization{}, r
		}
		return nvml.Utilization{Gpu: 50}, nvml.SUCCESS
	}
	devices[1].GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		return devices[1].MemoryInfo, fault.Load().mem
	}
	clock := &fakeClock{}
	logger, logs := captureLogger(t)
	n := NewNVML(NVMLConfig{Backends: map[string][]int{"b:1": {0, 1}, "c:1": {1}}, Interval: 5 * time.Millisecond, Library: node}, logger)
	n.now = clock.Now
	runNVML(t, n)
	eventually(t, "readings", func() bool { _, ok := n.Stats("b:1"); return ok })

	// Utilisation not supported (a GPU in MIG mode): memory still counts.
	fault.Store(&readResult{nvml.ERROR_NOT_SUPPORTED, nvml.SUCCESS})
	eventually(t, "GPU 1 without utilisation", func() bool {
		b, _ := n.Stats("b:1")
		return len(b.Devices) == 2 && b.Devices[1].Utilization < 0
	})
	b, _ := n.Stats("b:1")
	if b.Utilization != 0 || b.MemoryUsed != 1<<30 || b.GPUs != 2 {
		t.Errorf("b = %+v, want GPU 0's utilisation only, both GPUs' memory", b)
	}

	// GPU 1 fails: b reports GPU 0 alone; c, which has only GPU 1, keeps
	// its last reading until it goes stale. Logged once, not every poll.
	fault.Store(&readResult{nvml.SUCCESS, nvml.ERROR_GPU_IS_LOST})
	eventually(t, "b without GPU 1", func() bool { b, _ := n.Stats("b:1"); return b.GPUs == 1 })
	c, ok := n.Stats("c:1")
	if !ok || c.GPUs != 1 {
		t.Errorf("c = %+v, %v: want its last reading", c, ok)
	}
	clock.Advance(time.Hour)
	eventually(t, "b read again", func() bool { _, ok := n.Stats("b:1"); return ok })
	if _, ok := n.Stats("c:1"); ok {
		t.Error("c's old reading still reported an hour later")
	}
	for range 3 { // several more polls
		at := clock.Now()
		clock.Advance(time.Second)
		eventually(t, "another poll", func() bool { b, _ := n.Stats("b:1"); return b.At.After(at) })
	}
	recs := logs.records(t, "NVML read failed")
	if len(recs) != 1 || !strings.Contains(recs[0]["error"].(string), "nvmlDeviceGetMemoryInfo(1)") {
		t.Errorf("read failure logs: %v", recs)
	}

	fault.Store(&readResult{nvml.SUCCESS, nvml.SUCCESS})
	eventually(t, "c back", func() bool { _, ok := n.Stats("c:1"); return ok })
	if len(logs.records(t, "NVML read recovered")) != 1 {
		t.Error("recovery not logged")
	}
}

// Where Init fails, as on a machine without libnvidia-ml.so.1, Run logs
// one line and returns nil at once; nothing is reported.
func TestNVMLUnavailable(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED} {
		t.Run(ret.Error(), func(t *testing.T) {
			logger, logs := captureLogger(t)
			lib := &mock.Interface{InitFunc: func() nvml.Return { return ret }}
			n := NewNVML(NVMLConfig{Backends: map[string][]int{"b:1": nil}, Library: lib}, logger)
			if err := n.Run(testutil.Context(t)); err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
			recs := logs.records(t, "NVML not available; GPU telemetry from NVML disabled")
			if len(recs) != 1 || !strings.Contains(recs[0]["error"].(string), ret.Error()) || recs[0]["level"] != "WARN" {
				t.Errorf("logs: %v", recs)
			}
			if _, ok := n.Stats("b:1"); ok || n.Available() || len(n.All()) != 0 {
				t.Error("reports something without NVML")
			}
		})
	}
}

// The default library: the real libnvidia-ml.so.1 through dlopen. On the
// development machines and CI there is none.
func TestNVMLDefaultLibrary(t *testing.T) {
	logger, logs := captureLogger(t)
	n := NewNVML(NVMLConfig{Backends: map[string][]int{"b:1": nil}, Interval: 10 * time.Millisecond}, logger)
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		recs := logs.records(t, "NVML not available; GPU telemetry from NVML disabled")
		// Usually "libnvidia-ml.so.1 not found"; a node with the library
		// but no driver loaded fails in nvmlInit instead.
		if len(recs) != 1 || !strings.Contains(recs[0]["error"].(string), "NVML not available: ") {
			t.Errorf("logs: %v", recs)
		}
	case <-time.After(time.Second):
		// A node with a GPU driver: NVML runs.
		eventually(t, "a reading", func() bool { _, ok := n.Stats("b:1"); return ok })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		t.Log("NVML present: read the node's GPUs")
	}
}

func TestNVMLNoBackendsAndErrors(t *testing.T) {
	var inits atomic.Int32
	lib := &mock.Interface{InitFunc: func() nvml.Return { inits.Add(1); return nvml.SUCCESS }}
	if err := NewNVML(NVMLConfig{Library: lib}, nil).Run(testutil.Context(t)); err != nil || inits.Load() != 0 {
		t.Errorf("no backends: Run = %v after %d Inits, want nil without loading NVML", err, inits.Load())
	}
	for _, tc := range []struct {
		cfg  NVMLConfig
		want string
	}{
		{NVMLConfig{Interval: -1}, "NVMLConfig.Interval"},
		{NVMLConfig{Interval: time.Second, Stale: time.Millisecond}, "NVMLConfig.Stale"},
		{NVMLConfig{Backends: map[string][]int{"": nil}}, "empty backend"},
		{NVMLConfig{Backends: map[string][]int{"b:1": {-1}}}, "negative device index"},
	} {
		if err := NewNVML(tc.cfg, nil).Run(testutil.Context(t)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run with %+v = %v, want an error naming %q", tc.cfg, err, tc.want)
		}
	}

	node, _, _ := h100Node(t)
	n := NewNVML(NVMLConfig{Backends: map[string][]int{"b:1": nil}, Library: node}, nil)
	runNVML(t, n)
	eventually(t, "running", n.Available)
	if err := n.Run(testutil.Context(t)); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run = %v", err)
	}
}
