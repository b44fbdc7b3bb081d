package admission

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Sizing of the default memory budget.
const (
	// containerShare of the container's memory limit is the budget: the
	// budget is the whole process's memory (ApplyMemoryLimit holds the
	// runtime to it), and the rest is margin for what neither counts (the
	// kernel's page cache charged to the container, a cgo library) before
	// the OOM killer steps in. GOMEMLIMIT, the operator's own statement of
	// what the Go runtime may use, is the budget whole.
	containerShare = 0.9
	// machineShare of the machine's memory is the budget of a process
	// under no limit at all, up to maxUnlimitedBudget.
	machineShare = 0.5
	// fallbackBudget applies when no limit is known: neither a cgroup
	// memory limit nor GOMEMLIMIT, nor /proc/meminfo.
	fallbackBudget = 1 << 30
	// maxUnlimitedBudget caps the budget of a process under no limit at
	// all: half of a large machine's memory is not this process's to take.
	maxUnlimitedBudget = 4 << 30
	// unlimited is what cgroup v1 reports for "no limit" (a page-rounded
	// MaxInt64); anything at least this large means none.
	unlimited = 1 << 62
	// runtimeShare of the budget is the Go runtime's soft memory limit
	// (ApplyMemoryLimit). The limit counts the runtime's own memory (heap,
	// stacks, its metadata) but not what else the kernel counts as
	// resident (the program's text and data: about 16 MiB of the
	// gateway's), and the collector passes it briefly while it marks.
	runtimeShare = 0.9
)

// The files DefaultMemoryBudget reads and the runtime's memory limit;
// variables so that tests can point them at fixtures and fakes.
var (
	cgroupV2File = "/sys/fs/cgroup/memory.max"
	cgroupV1File = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	meminfoFile  = "/proc/meminfo"
	// goMemLimit is GOMEMLIMIT as the runtime held it when the program
	// started (math.MaxInt64: none), before ApplyMemoryLimit lowered it:
	// a budget derived again in the same process must not be halved again.
	goMemLimit = func() int64 { return startMemLimit }
	// setMemoryLimit is debug.SetMemoryLimit.
	setMemoryLimit = debug.SetMemoryLimit
)

// startMemLimit is the runtime's memory limit at package initialization.
var startMemLimit = debug.SetMemoryLimit(-1)

// ApplyMemoryLimit sets the Go runtime's soft memory limit
// (debug.SetMemoryLimit) to 90% of budget (the rest is memory the runtime
// does not count), or to GOMEMLIMIT where that is lower: it never raises
// the limit the operator set. Without it the heap grows to
// about twice its live data between collections (GOGC=100), up to
// GOMEMLIMIT if one is set, so that calls holding a budget's worth of live
// data would take the process to twice the budget. With it the collector
// runs as the heap nears the budget and the scavenger returns freed pages
// to the system: the resident set stays about within the budget as long as
// the live data does (Config.CallMemoryShare keeps the calls' reservations
// below it). limit is the limit in force afterwards; lowered says whether
// it is below GOMEMLIMIT.
func ApplyMemoryLimit(budget int64) (limit int64, lowered bool) {
	limit = goMemLimit()
	if want := int64(float64(budget) * runtimeShare); want > 0 && want < limit {
		limit, lowered = want, true
	}
	setMemoryLimit(limit)
	return limit, lowered
}

// DefaultMemoryBudget is the memory the process may use by default:
// GOMEMLIMIT (as debug.SetMemoryLimit(-1) reported it at start) when set
// and below the container's limit, else 90% of the container's limit
// (cgroup v2 memory.max, else cgroup v1 memory.limit_in_bytes); with
// neither, half of the machine's memory up to 4 GiB (1 GiB if unknown).
// source says where the figure came from, for the log.
func DefaultMemoryBudget() (budget int64, source string) {
	container, source := int64(math.MaxInt64), ""
	if v, ok := readLimit(cgroupV2File); ok {
		container, source = v, cgroupV2File
	} else if v, ok := readLimit(cgroupV1File); ok {
		container, source = v, cgroupV1File
	}
	if v := goMemLimit(); v > 0 && v < unlimited && v < container {
		return v, fmt.Sprintf("GOMEMLIMIT (%d bytes)", v)
	}
	if container < unlimited {
		return max(1, int64(float64(container)*containerShare)), fmt.Sprintf("%.0f%% of %d bytes (%s)", containerShare*100, container, source)
	}
	if total, ok := memTotal(); ok {
		return min(maxUnlimitedBudget, int64(float64(total)*machineShare)), "no memory limit set; half of MemTotal up to 4 GiB"
	}
	return fallbackBudget, "no memory limit set; 1 GiB"
}

// readLimit reads a cgroup limit file: a byte count, or "max" (none).
func readLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path) // #nosec G304 -- path is one of the fixed cgroup and /proc files above
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v >= unlimited {
		return 0, false
	}
	return v, true
}

// memTotal is /proc/meminfo's MemTotal in bytes.
func memTotal() (int64, bool) {
	b, err := os.ReadFile(meminfoFile)
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err == nil && kb > 0
		}
	}
	return 0, false
}
