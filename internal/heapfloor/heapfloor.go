// Package heapfloor keeps the Go garbage collector from running on a tiny
// heap.
//
// The collector starts a cycle when the heap has grown by GOGC percent
// (100) over what the last cycle left live. A gateway serving queries keeps
// little live (about 2 MB) and allocates tens of kilobytes a call, so it
// collected 8 times a second at 400 calls a second and about 70 times at
// saturation, measured on 2 cores. Every cycle takes a quarter of the CPU
// for its marking and stalls the goroutines that allocate meanwhile, which
// is where the slowest calls' added latency came from.
//
// Go has no setting for a smallest heap goal (golang/go#23044, #44309):
// the known way is a ballast, one large allocation that is kept alive but
// never touched. It counts as live heap, so the next cycle waits until the
// heap has grown by as much again. The ballast itself takes no resident
// memory (the kernel maps a page only when it is written, and none is),
// but the garbage the collector now lets build between cycles does: up to
// the floor more, measured 37 MB → 101 MB resident for a gateway serving
// queries with a 64 MiB floor, against 57 → 2 collections in 8 s at 400
// calls a second. The ballast counts toward the runtime's soft memory
// limit (which counts the heap the runtime has mapped, not what is
// resident), so that under a memory limit the floor lowers the resident
// ceiling rather than raising it.
package heapfloor

import (
	"sync"
)

var (
	mu      sync.Mutex
	ballast []byte // kept alive by being a package variable; never written
)

// Set makes the collector's heap goal at least about 2 × floor bytes (with
// GOGC at 100), replacing any floor set before; 0 removes it.
func Set(floor int64) {
	mu.Lock()
	defer mu.Unlock()
	ballast = nil
	if floor > 0 {
		// A large allocation gets fresh pages from the operating system,
		// which are zero already: the runtime does not clear them, so
		// none is touched.
		ballast = make([]byte, floor)
	}
}

// Floor is the floor in force, in bytes.
func Floor() int64 {
	mu.Lock()
	defer mu.Unlock()
	return int64(len(ballast))
}
