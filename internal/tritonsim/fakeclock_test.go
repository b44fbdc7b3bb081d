package tritonsim

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test says so. Tests wait
// for the simulator to arm the timer they expect (waitTimer), then Advance
// past it: no test depends on how fast the machine is.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c     chan time.Time
	at    time.Time
	clock *fakeClock
	armed bool // guarded by clock.mu
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: make(chan time.Time, 1), at: c.now.Add(d), clock: c, armed: true}
	if d <= 0 {
		t.armed = false
		t.c <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.armed
	t.armed = false
	t.clock.timers = slices.DeleteFunc(t.clock.timers, func(x *fakeTimer) bool { return x == t })
	return was
}

// Advance moves the clock by d and fires every timer due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		t.armed = false
		t.c <- c.now
		return true
	})
}

// armed returns how far ahead each armed timer fires, sorted.
func (c *fakeClock) armed() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, t := range c.timers {
		out = append(out, t.at.Sub(c.now))
	}
	slices.Sort(out)
	return out
}

// waitTimer waits until a timer is armed to fire exactly d from now.
func (c *fakeClock) waitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	waitFor(t, "a timer armed for "+d.String(), func() bool { return slices.Contains(c.armed(), d) })
}

var _ Clock = (*fakeClock)(nil)
