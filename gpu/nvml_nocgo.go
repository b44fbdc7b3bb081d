//go:build !cgo

package gpu

import "fmt"

// NVMLLibrary would be go-nvml's nvml.Interface; go-nvml needs cgo, and
// this build has none, so NVML is never available and Library is ignored.
type NVMLLibrary = any

func openNVML(NVMLLibrary) (nvmlDevices, error) {
	return nil, fmt.Errorf("%w: the gateway was built without cgo (CGO_ENABLED=0)", ErrNVMLUnavailable)
}
