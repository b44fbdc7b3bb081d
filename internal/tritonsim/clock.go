package tritonsim

import "time"

// Clock is the simulator's source of time for everything it schedules: the
// dynamic batcher's queue delays and queue timeouts, the simulated GPU's
// batch durations, and the queue and compute durations it reports. Tests
// drive it with a fake clock so that timing behaviour is checked without
// sleeping. Two things stay on real time: callers' gRPC deadlines (they
// belong to the caller) and the nv_gpu_utilization ticker (a sampling
// window, not a simulated event).
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the simulator uses.
type Timer interface {
	// C delivers the time when the timer fires.
	C() <-chan time.Time
	// Stop disarms the timer; it reports whether it did so before firing.
	Stop() bool
}

// systemClock is the real clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (s systemTimer) C() <-chan time.Time { return s.t.C }
func (s systemTimer) Stop() bool          { return s.t.Stop() }
