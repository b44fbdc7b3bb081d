// Package clock is the source of time the batcher and the router read for
// their timers and schedules, so that tests drive them with a fake clock
// (package clocktest) instead of real sleeps. Callers' context deadlines
// are not on it: they belong to the caller and run on real time.
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped timer; Reset arms it.
	NewTimer() Timer
}

// Timer is the part of *time.Timer the batcher and the router use.
type Timer interface {
	// C delivers the time when the timer fires.
	C() <-chan time.Time
	// Reset (re)arms the timer to fire after d, dropping any earlier arming
	// (Go 1.23 timer semantics: no stale value is delivered after Reset).
	Reset(d time.Duration)
	// Stop disarms the timer.
	Stop()
}

// System is the real clock.
type System struct{}

// Now is time.Now.
func (System) Now() time.Time { return time.Now() }

// NewTimer returns a stopped *time.Timer.
func (System) NewTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return systemTimer{t}
}

type systemTimer struct{ t *time.Timer }

func (s systemTimer) C() <-chan time.Time   { return s.t.C }
func (s systemTimer) Reset(d time.Duration) { s.t.Reset(d) }
func (s systemTimer) Stop()                 { s.t.Stop() }
