// Package clocktest is a fake clock.Clock for tests: time moves only when
// the test calls Advance, so timers fire when the test says, however slow
// the machine is.
package clocktest

import (
	"sync"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/clock"
)

// Fake is a clock.Clock that moves only when Advance is called. It is safe
// for concurrent use.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*timer]struct{} // armed timers
}

var _ clock.Clock = (*Fake)(nil)

// New returns a Fake at start. Starting at the real time (time.Now()) keeps
// callers' real deadlines and the fake clock's times comparable.
func New(start time.Time) *Fake {
	return &Fake{now: start, timers: map[*timer]struct{}{}}
}

// Now is the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a stopped timer on c.
func (c *Fake) NewTimer() clock.Timer {
	return &timer{clock: c, ch: make(chan time.Time, 1)}
}

// Advance moves the clock by d and fires every timer that is then due, each
// at most once, as a *time.Timer would (a timer whose channel already holds
// a value keeps that value).
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			c.fireLocked(t)
		}
	}
}

// Next is the time the earliest armed timer fires, and false when no timer
// is armed.
func (c *Fake) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	found := false
	for t := range c.timers {
		if !found || t.at.Before(at) {
			at, found = t.at, true
		}
	}
	return at, found
}

// Armed is the number of armed timers.
func (c *Fake) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *Fake) fireLocked(t *timer) {
	delete(c.timers, t)
	select {
	case t.ch <- c.now:
	default:
	}
}

type timer struct {
	clock *Fake
	ch    chan time.Time
	at    time.Time // when armed
}

func (t *timer) C() <-chan time.Time { return t.ch }

// Reset arms t for d from the fake now, dropping a value not yet received;
// a d of zero or less fires at once.
func (t *timer) Reset(d time.Duration) {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	t.drain()
	t.at = c.now.Add(d)
	c.timers[t] = struct{}{}
	if d <= 0 {
		c.fireLocked(t)
	}
}

func (t *timer) Stop() {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	t.drain()
	delete(c.timers, t)
}

func (t *timer) drain() {
	select {
	case <-t.ch:
	default:
	}
}
