// Package roundrobin is the round-robin balancing policy: each batch goes
// to the next ready backend in turn, whatever their speed or load. It is
// kept as the baseline the other policies are measured against.
package roundrobin

import (
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/router/policy"
)

// Name is the policy's configuration name.
const Name = "round_robin"

// Policy is round robin over the candidates of each pick.
type Policy struct {
	next atomic.Uint64
}

var _ policy.Policy = (*Policy)(nil)

// New returns a round-robin policy.
func New() *Policy { return &Policy{} }

// Name is Name.
func (p *Policy) Name() string { return Name }

// Pick returns the next candidate in turn. When the candidate set changes
// the rotation continues from the same counter, so no backend is favoured.
func (p *Policy) Pick(cands []policy.Candidate, _ policy.Batch) (int, time.Duration) {
	n := p.next.Add(1) - 1
	return int(n % uint64(len(cands))), 0 // #nosec G115 -- the remainder of a division by len(cands) is below it, an int
}
