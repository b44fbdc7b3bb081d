package heapfloor

import (
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
)

// gcCycles is the collector's completed cycles so far.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// rss is the process's resident memory in bytes (VmRSS), or skips the
// test where /proc is not available.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

var sink []byte

// churn allocates n bytes of garbage in 16 KiB pieces.
func churn(n int) {
	for range n / (16 << 10) {
		sink = make([]byte, 16<<10)
	}
}

func TestFloorSpacesCyclesWithoutResidentMemory(t *testing.T) {
	const floor = 64 << 20
	defer Set(0)

	runtime.GC()
	before := gcCycles()
	churn(32 << 20)
	without := gcCycles() - before

	runtime.GC()
	rssBefore := rss(t)
	Set(floor)
	if got := Floor(); got != floor {
		t.Fatalf("Floor() = %d after Set(%d)", got, floor)
	}
	runtime.GC() // the ballast is now live heap
	if grew := rss(t) - rssBefore; grew > floor/4 && !raceEnabled {
		t.Errorf("resident memory grew by %d bytes with a floor of %d; want the ballast untouched", grew, floor)
	}
	before = gcCycles()
	churn(32 << 20)
	with := gcCycles() - before

	t.Logf("collections while allocating 32 MiB: %d without a floor, %d with %d MiB", without, with, floor>>20)
	if without < 4 {
		t.Skipf("only %d collections without a floor; the heap is not small here", without)
	}
	if with > 1 {
		t.Errorf("%d collections while allocating 32 MiB over a 64 MiB floor; want at most 1", with)
	}
}
