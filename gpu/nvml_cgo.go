//go:build cgo

package gpu

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVMLLibrary is the NVML API as go-nvml defines it: nvml.New() for the
// node's library, or a mock from go-nvml's pkg/nvml/mock.
type NVMLLibrary = nvml.Interface

// goNVML reads GPUs through go-nvml.
type goNVML struct {
	lib     nvml.Interface
	devices []nvml.Device
	uuids   []string
	names   []string
}

// openNVML initialises lib (default: the node's libnvidia-ml.so.1, which
// go-nvml opens with dlopen here, so a node without it fails here and not
// at start-up) and gets a handle on every GPU.
func openNVML(lib NVMLLibrary) (nvmlDevices, error) {
	if lib == nil {
		lib = nvml.New()
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, fmt.Errorf("%w: libnvidia-ml.so.1 not found (%w)", ErrNVMLUnavailable, ret)
		}
		return nil, fmt.Errorf("%w: nvmlInit: %w", ErrNVMLUnavailable, ret)
	}
	g := &goNVML{lib: lib}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("%w: nvmlDeviceGetCount: %w", ErrNVMLUnavailable, ret)
	}
	for i := range count {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			lib.Shutdown()
			return nil, fmt.Errorf("%w: nvmlDeviceGetHandleByIndex(%d): %w", ErrNVMLUnavailable, i, ret)
		}
		// UUID and name are for the operator view only: unreadable is
		// not a reason to stop.
		uuid, _ := d.GetUUID()
		name, _ := d.GetName()
		g.devices = append(g.devices, d)
		g.uuids = append(g.uuids, uuid)
		g.names = append(g.names, name)
	}
	return g, nil
}

func (g *goNVML) count() int { return len(g.devices) }

func (g *goNVML) read(i int) (Device, error) {
	d := g.devices[i]
	out := Device{UUID: g.uuids[i], Index: i, Name: g.names[i], Utilization: -1}
	util, ret := d.GetUtilizationRates()
	switch ret {
	case nvml.SUCCESS:
		out.Utilization = min(float64(util.Gpu)/100, 1)
	case nvml.ERROR_NOT_SUPPORTED:
		// e.g. a GPU in MIG mode: memory is still worth reporting.
	default:
		return Device{}, fmt.Errorf("nvmlDeviceGetUtilizationRates(%d): %w", i, ret)
	}
	mem, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("nvmlDeviceGetMemoryInfo(%d): %w", i, ret)
	}
	out.MemoryUsed, out.MemoryTotal = mem.Used, mem.Total
	return out, nil
}

func (g *goNVML) close() { g.lib.Shutdown() }
