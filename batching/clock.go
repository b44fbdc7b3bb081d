package batching

import "time"

// Clock is the batcher's source of time: queue delays, queue timeouts,
// queue durations and the adaptive policy's measurements all read it, so
// that tests drive them with a fake clock. Callers' context deadlines are
// the one exception: they belong to the caller and run on real time.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped timer; Reset arms it.
	NewTimer() Timer
}

// Timer is the part of *time.Timer the batcher uses.
type Timer interface {
	// C delivers the time when the timer fires.
	C() <-chan time.Time
	// Reset (re)arms the timer to fire after d, dropping any earlier arming
	// (Go 1.23 timer semantics: no stale value is delivered after Reset).
	Reset(d time.Duration)
	// Stop disarms the timer.
	Stop()
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer returns a stopped *time.Timer.
func (SystemClock) NewTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return systemTimer{t}
}

type systemTimer struct{ t *time.Timer }

func (s systemTimer) C() <-chan time.Time   { return s.t.C }
func (s systemTimer) Reset(d time.Duration) { s.t.Reset(d) }
func (s systemTimer) Stop()                 { s.t.Stop() }
