// Package leastoutstanding is the least-outstanding-requests balancing
// policy: each batch goes to the ready backend with the fewest batches this
// gateway has in flight there. It adapts to slow backends (their batches
// stay in flight longer) without measuring anything, but it counts a page
// batch the same as a one-query batch and sees no load from other clients.
package leastoutstanding

import (
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/router/policy"
)

// Name is the policy's configuration name.
const Name = "least_outstanding"

// Policy picks the candidate with the fewest batches in flight.
type Policy struct {
	start atomic.Uint64
}

var _ policy.Policy = (*Policy)(nil)

// New returns a least-outstanding policy.
func New() *Policy { return &Policy{} }

// Name is Name.
func (p *Policy) Name() string { return Name }

// Pick scans every candidate from a rotating start, so that ties (an idle
// pool) are spread instead of always landing on the first backend.
func (p *Policy) Pick(cands []policy.Candidate, _ policy.Batch) (int, time.Duration) {
	n := len(cands)
	start := int(p.start.Add(1) % uint64(n)) // #nosec G115 -- the remainder of a division by n is below n, an int
	best, bestLoad := start, cands[start].InFlight()
	for i := 1; i < n; i++ {
		j := (start + i) % n
		if load := cands[j].InFlight(); load < bestLoad {
			best, bestLoad = j, load
		}
	}
	return best, 0
}
