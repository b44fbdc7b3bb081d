package batching

import "github.com/morphik-org/colpali-gateway/internal/clock"

// Clock is the batcher's source of time: queue delays, queue timeouts,
// queue durations and the adaptive policy's measurements all read it, so
// that tests drive them with a fake clock. Callers' context deadlines are
// the one exception: they belong to the caller and run on real time. The
// router reads the same kind of clock (package internal/clock).
type Clock = clock.Clock

// Timer is the part of *time.Timer the batcher uses.
type Timer = clock.Timer

// SystemClock is the real clock.
type SystemClock = clock.System
