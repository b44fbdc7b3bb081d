package app

import (
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/morphik-org/colpali-gateway/admission"
	"github.com/morphik-org/colpali-gateway/internal/heapfloor"
)

// admissionFields prefixes the admission Config's fields in options.flags.
const admissionFields = "admission."

// admissionFlags are the flags of the admission controller (package
// admission): adaptive concurrency limits and the memory budget.
type admissionFlags struct {
	enabled bool
	cfg     admission.Config
	// budgetSource says where the default memory budget came from.
	budgetSource string
	// heapFloor is -gc-heap-floor; heapFloorSet, whether it was given
	// (else it is derived from the memory budget).
	heapFloor    int64
	heapFloorSet bool
}

// register registers the -admission* and -memory-budget flags, their
// defaults taken from admission.Config's.
func (a *admissionFlags) register(b binder) {
	a.enabled = true
	a.cfg = admission.Config{}.WithDefaults()
	a.cfg.MemoryBudget, a.budgetSource = admission.DefaultMemoryBudget()
	ab := b.with(admissionFields)
	b.fs.BoolVar(&a.enabled, "admission", a.enabled, "refuse embeddings, searches and ingestions beyond adaptive concurrency limits and -memory-budget with RESOURCE_EXHAUSTED (HTTP 429) and a retry delay; false admits every call")
	ab.duration(&a.cfg.LatencyTarget, "admission-latency-target", "LatencyTarget", "latency admitted query embeddings and searches keep: the concurrency limit of each shrinks while the -admission-quantile latency of its calls is above it")
	ab.duration(&a.cfg.ImageLatencyTarget, "admission-image-latency-target", "ImageLatencyTarget", "-admission-latency-target of page image embeddings and ingestions (per 16 pages)")
	ab.int(&a.cfg.InitialLimit, "admission-initial-limit", "InitialLimit", "concurrency limit of query embeddings and searches before calls are measured")
	ab.int(&a.cfg.ImageInitialLimit, "admission-image-initial-limit", "ImageInitialLimit", "concurrency limit of page image embeddings and ingestions before calls are measured (low: their calls take seconds, so a limit too high shows only after calls have queued for that long)")
	ab.int(&a.cfg.MinLimit, "admission-min-limit", "MinLimit", "lowest concurrency limit of each model")
	ab.int(&a.cfg.MaxLimit, "admission-max-limit", "MaxLimit", "highest concurrency limit of each model")
	ab.float(&a.cfg.Quantile, "admission-quantile", "Quantile", "quantile of each window's call latencies compared with the latency target, in (0, 1]")
	ab.float(&a.cfg.GrowBelow, "admission-grow-below", "GrowBelow", "share of the latency target under which each limit may grow; between it and the target the limit holds, so that it settles under the target, in (0, 1] (1: no band; the limit then oscillates across the target)")
	ab.float(&a.cfg.PriorityReserve, "admission-priority-reserve", "PriorityReserve", "share of each limit that the least urgent priority level may not use (levels between get less reserved), in (0, 1)")
	b.fs.Var(budgetFlag{a}, "memory-budget", "memory the gateway keeps itself under, e.g. 512MiB: with -admission, the Go runtime's soft memory limit (unless GOMEMLIMIT is lower), of which calls in flight reserve at most -admission-call-memory-share (requests, image checks, embeddings, search candidates) (default: GOMEMLIMIT, or 90% of the cgroup memory limit when smaller; else half the machine's memory up to 4GiB)")
	ab.bind("MemoryBudget", "memory-budget")
	b.fs.Var(heapFloorFlag{a}, "gc-heap-floor", "heap the Go collector lets build before it runs, e.g. 64MiB: fewer collections at high call rates for up to as much more resident garbage (a ballast: it counts toward the runtime's soft memory limit, not the resident memory); 0: none (default: 64MiB, or a 16th of -memory-budget when smaller)")
	ab.float(&a.cfg.CallMemoryShare, "admission-call-memory-share", "CallMemoryShare", "share of -memory-budget that calls in flight may reserve together, in (0, 1); the rest is the gateway's own memory and the garbage collector's headroom")
}

// validate names every bad admission flag; nothing to check when off.
func (a *admissionFlags) validate() error {
	if !a.enabled {
		return nil
	}
	return a.cfg.Validate()
}

// controller builds the admission controller, or nil when -admission is
// false. With admission on it sets the Go runtime's soft memory limit to
// the budget (admission.ApplyMemoryLimit), so that the process keeps to it.
func (a *admissionFlags) controller(logger *slog.Logger, reg prometheus.Registerer) (*admission.Controller, error) {
	if !a.enabled {
		logger.Warn("admission control off: calls beyond capacity queue instead of being refused")
		return nil, nil
	}
	ctl, err := admission.New(a.cfg, admission.Deps{Registerer: reg})
	if err != nil {
		return nil, err
	}
	limit, lowered := admission.ApplyMemoryLimit(a.cfg.MemoryBudget)
	logger.Info("admission control on", "latency_target", a.cfg.LatencyTarget, "memory_budget_bytes", a.cfg.MemoryBudget, "memory_budget_source", a.budgetSource,
		"call_memory_bytes", a.cfg.CallMemory(), "go_memory_limit_bytes", limit, "go_memory_limit_lowered", lowered)
	return ctl, nil
}

// defaultHeapFloor is -gc-heap-floor's most: a gateway serving queries
// keeps about 2 MB live, so at 64 MiB the collector runs about 30 times
// less often, and a 16th of the budget keeps a small budget's room.
const defaultHeapFloor = 64 << 20

// applyHeapFloor sets the collector's heap floor (package heapfloor),
// admission on or off.
func (a *admissionFlags) applyHeapFloor(logger *slog.Logger) {
	floor := a.heapFloor
	if !a.heapFloorSet {
		floor = min(defaultHeapFloor, a.cfg.MemoryBudget/16)
	}
	heapfloor.Set(floor)
	logger.Info("garbage collector heap floor", "gc_heap_floor_bytes", floor)
}

// heapFloorFlag is -gc-heap-floor: a byteSize that also records that it
// was given, since 0 (no floor) is a valid setting.
type heapFloorFlag struct{ a *admissionFlags }

func (f heapFloorFlag) String() string {
	if f.a == nil {
		return "0"
	}
	return (*byteSize)(&f.a.heapFloor).String()
}

func (f heapFloorFlag) Set(s string) error {
	if err := (*byteSize)(&f.a.heapFloor).Set(s); err != nil {
		return err
	}
	f.a.heapFloorSet = true
	return nil
}

// byteSize is a flag.Value for a byte count: a number, optionally with a
// unit (KiB, MiB, GiB, KB, MB, GB).
type byteSize int64

func (b *byteSize) String() string {
	if b == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*b), 10)
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}

func (b *byteSize) Set(s string) error {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v*float64(mult) > 1<<62 {
		return fmt.Errorf("%q: want a byte count such as 536870912 or 512MiB", s)
	}
	*b = byteSize(v * float64(mult))
	return nil
}

var _ flag.Value = (*byteSize)(nil)

// budgetFlag is -memory-budget: a byteSize that also records that the
// budget was given rather than derived.
type budgetFlag struct{ a *admissionFlags }

func (f budgetFlag) String() string {
	if f.a == nil {
		return "0"
	}
	return (*byteSize)(&f.a.cfg.MemoryBudget).String()
}

func (f budgetFlag) Set(s string) error {
	if err := (*byteSize)(&f.a.cfg.MemoryBudget).Set(s); err != nil {
		return err
	}
	f.a.budgetSource = "-memory-budget"
	return nil
}
