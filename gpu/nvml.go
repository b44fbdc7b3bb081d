package gpu

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/config"
)

// Defaults of NVMLConfig.
const (
	DefaultNVMLInterval = 2 * time.Second
)

// ErrNVMLUnavailable wraps the reason NVML could not be used: no
// libnvidia-ml.so.1 on the node (the development machines), a gateway
// built without cgo, or nvmlInit failing. Use errors.Is.
var ErrNVMLUnavailable = errors.New("gpu: NVML not available")

// NVMLConfig configures an NVML source. In a Config built in Go a zero
// field takes its default (NewNVML calls WithDefaults); Validate refuses a
// zero Interval (see package internal/config: one rule for zero).
type NVMLConfig struct {
	// Backends maps each backend (gRPC address) whose GPUs are on this
	// node to the NVML indexes of its GPUs; an empty list means every GPU
	// of the node. Empty: NVML reports nothing.
	Backends map[string][]int
	// Interval is the time between two readings. Default 2s.
	Interval time.Duration
	// Stale is the age beyond which a reading is not reported. At least
	// Interval. Default 3 x Interval.
	Stale time.Duration
	// Library is the NVML library to use, e.g. a go-nvml mock in tests.
	// Default: the node's libnvidia-ml.so.1, loaded with dlopen when Run
	// starts. Without cgo NVML cannot be used and this is ignored.
	Library NVMLLibrary
}

// WithDefaults returns c with every zero field set to its default.
func (c NVMLConfig) WithDefaults() NVMLConfig {
	c.Interval = cmp.Or(c.Interval, DefaultNVMLInterval)
	c.Stale = cmp.Or(c.Stale, DefaultStaleIntervals*c.Interval)
	return c
}

// Validate names every bad field of c by its Go name. It takes c as it is:
// a zero Interval is refused, not defaulted (NewNVML calls WithDefaults); a
// zero Stale means 3 x Interval, derived.
func (c NVMLConfig) Validate() error {
	var errs config.Errors
	errs.Add(config.Positive("Interval", c.Interval))
	if c.Stale < 0 || (c.Stale > 0 && c.Stale < c.Interval) {
		errs.Bad("Stale", c.Stale, "want at least {Interval} %v (or 0: 3 x Interval)", c.Interval)
	}
	for _, backend := range slices.Sorted(maps.Keys(c.Backends)) {
		if backend == "" {
			errs.Bad("Backends", backend, "empty backend address")
		}
		for _, i := range c.Backends[backend] {
			if i < 0 {
				errs.Bad("Backends", backend, "negative device index %d", i)
			}
		}
	}
	return errs.Err()
}

// ParseNVMLBackends parses NVMLConfig.Backends from a flag's text:
// backends separated by ";", each "address" (every GPU of the node) or
// "address=i,j" (those NVML indexes), e.g.
// "127.0.0.1:8001=0,1;127.0.0.1:9001=2,3". Empty text is no backend.
func ParseNVMLBackends(text string) (map[string][]int, error) {
	out := make(map[string][]int)
	for entry := range strings.SplitSeq(text, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		addr, list, hasList := strings.Cut(entry, "=")
		addr = strings.TrimSpace(addr)
		if addr == "" {
			return nil, fmt.Errorf("gpu: NVML backends %q: entry %q has no address", text, entry)
		}
		if _, dup := out[addr]; dup {
			return nil, fmt.Errorf("gpu: NVML backends %q: %s listed twice", text, addr)
		}
		indexes := []int{}
		if hasList {
			for field := range strings.SplitSeq(list, ",") {
				i, err := strconv.Atoi(strings.TrimSpace(field))
				if err != nil || i < 0 {
					return nil, fmt.Errorf("gpu: NVML backends %q: %s: device index %q is not a non-negative integer", text, addr, field)
				}
				indexes = append(indexes, i)
			}
		}
		out[addr] = indexes
	}
	return out, nil
}

// NVML is a Source of utilisation and memory of the GPUs on the gateway's
// own node, read through NVML, for the backends that NVMLConfig.Backends
// places there. Where NVML cannot be loaded it logs that once and reports
// nothing. Its methods are safe for concurrent use; Stats and All read a
// snapshot.
type NVML struct {
	cfg    NVMLConfig
	logger *slog.Logger
	now    func() time.Time

	running   atomic.Bool
	available atomic.Bool
	snap      atomic.Pointer[map[string]Stats]
}

var _ Source = (*NVML)(nil)

// NewNVML returns an NVML source; nothing is loaded until Run. Run reports
// a bad cfg. A nil logger discards.
func NewNVML(cfg NVMLConfig, logger *slog.Logger) *NVML {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	cfg.Backends = maps.Clone(cfg.Backends)
	n := &NVML{cfg: cfg, logger: logger, now: time.Now}
	n.snap.Store(&map[string]Stats{})
	return n
}

// Available reports whether Run has loaded NVML and is reading it.
func (n *NVML) Available() bool { return n.available.Load() }

// Stats returns the last reading of backend's GPUs; ok is false when
// backend is not on this node, NVML is unavailable, or the reading is
// older than Stale.
func (n *NVML) Stats(backend string) (Stats, bool) {
	st, ok := (*n.snap.Load())[backend]
	if !ok || n.now().Sub(st.At) > n.cfg.Stale {
		return Stats{}, false
	}
	return st, true
}

// All returns the Stats of every backend that Stats would report now.
func (n *NVML) All() map[string]Stats {
	out := make(map[string]Stats)
	for backend, st := range *n.snap.Load() {
		if n.now().Sub(st.At) <= n.cfg.Stale {
			out[backend] = st
		}
	}
	return out
}

// nvmlDevices reads the node's GPUs; nvml_cgo.go implements it over
// go-nvml.
type nvmlDevices interface {
	// count is the number of GPUs on the node.
	count() int
	// read reads GPU i; Utilization is negative where the GPU cannot
	// report it (e.g. in MIG mode).
	read(i int) (Device, error)
	// close shuts NVML down.
	close()
}

// Run loads NVML and reads the configured GPUs every Interval until ctx
// ends, then returns nil. Where NVML is not available it logs one line
// saying so and returns nil at once: the gateway runs without it. It
// returns an error at once if the config is invalid or Run is already
// running.
func (n *NVML) Run(ctx context.Context) error {
	if err := n.cfg.Validate(); err != nil {
		return fmt.Errorf("gpu: %w", config.Rename(err, func(f string) string { return "NVMLConfig." + f }))
	}
	if !n.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer n.running.Store(false)
	if len(n.cfg.Backends) == 0 {
		n.logger.Debug("NVML not used: no backend's GPUs are on this node")
		return nil
	}
	devs, err := openNVML(n.cfg.Library)
	if err != nil {
		n.logger.Warn("NVML not available; GPU telemetry from NVML disabled", "error", err)
		return nil
	}
	defer devs.close()
	backends := n.resolve(devs.count())
	n.available.Store(true)
	defer n.available.Store(false)
	n.logger.Info("NVML GPU telemetry started", "gpus", devs.count(), "backends", len(backends))

	failing := make(map[int]bool) // devices whose last read failed, to log changes only
	ticker := time.NewTicker(n.cfg.Interval)
	defer ticker.Stop()
	for {
		n.poll(devs, backends, failing)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// resolve maps each backend to its device indexes, dropping (with an
// error logged) those the node does not have.
func (n *NVML) resolve(count int) map[string][]int {
	out := make(map[string][]int, len(n.cfg.Backends))
	for backend, indexes := range n.cfg.Backends {
		if len(indexes) == 0 {
			for i := range count {
				indexes = append(indexes, i)
			}
		}
		var valid []int
		for _, i := range indexes {
			if i >= count {
				n.logger.Error("NVML device index out of range; ignored", "backend", backend, "index", i, "gpus", count)
				continue
			}
			valid = append(valid, i)
		}
		if len(valid) > 0 {
			out[backend] = valid
		}
	}
	return out
}

// poll reads every device in use once and publishes per-backend Stats. A
// backend none of whose devices could be read keeps its last Stats, which
// go stale.
func (n *NVML) poll(devs nvmlDevices, backends map[string][]int, failing map[int]bool) {
	readings := make(map[int]Device)
	tried := make(map[int]bool) // a GPU shared by backends is read once
	for _, indexes := range backends {
		for _, i := range indexes {
			if tried[i] {
				continue
			}
			tried[i] = true
			d, err := devs.read(i)
			if err != nil {
				if !failing[i] {
					n.logger.Warn("NVML read failed", "index", i, "error", err)
				}
				failing[i] = true
				continue
			}
			if failing[i] {
				n.logger.Info("NVML read recovered", "index", i)
				delete(failing, i)
			}
			readings[i] = d
		}
	}
	now := n.now()
	old := *n.snap.Load()
	next := make(map[string]Stats, len(backends))
	for backend, indexes := range backends {
		var devices []Device
		for _, i := range indexes {
			if d, ok := readings[i]; ok {
				devices = append(devices, d)
			}
		}
		if len(devices) == 0 {
			if st, ok := old[backend]; ok {
				next[backend] = st
			}
			continue
		}
		st := Stats{At: now, Source: SourceNVML, Reported: FieldGPU, Devices: devices, GPUs: len(devices),
			Utilization: meanUtilization(devices)}
		for _, d := range devices {
			st.MemoryUsed += d.MemoryUsed
			st.MemoryTotal += d.MemoryTotal
		}
		next[backend] = st
	}
	n.snap.Store(&next)
}
