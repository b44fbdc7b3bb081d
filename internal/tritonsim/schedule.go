package tritonsim

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"
)

// Scheduling errors; use errors.Is. grpcError maps them to Triton's codes
// and texts, which clients match on.
var (
	// errQueueFull: the model's queue is at max_queue_size. Overload, not a
	// dead server.
	errQueueFull = errors.New("queue full")
	// errQueueTimeout: the request's "timeout" passed while it was queued.
	errQueueTimeout = errors.New("queue timeout")
	// errStopped: the simulator is stopping.
	errStopped = errors.New("the simulator is stopping")
)

// adder is the part of a Prometheus gauge the scheduler uses to publish its
// queue length.
type adder interface{ Add(float64) }

// scheduler is one model's FIFO queue in front of its instances. It has no
// goroutine: release hands a freed instance straight to the oldest waiter,
// which keeps arrival order without a dispatcher.
type scheduler struct {
	maxQueue int   // 0: unbounded
	pending  adder // queued requests, for nv_inference_pending_request_count

	mu      sync.Mutex
	idle    int       // instances not executing
	waiters list.List // of *waiter, oldest first
}

// waiter is one queued request.
type waiter struct {
	granted chan struct{} // closed when an instance is handed over
	handed  bool          // an instance was handed over; guarded by scheduler.mu
	elem    *list.Element
}

func newScheduler(instances, maxQueue int, pending adder) *scheduler {
	return &scheduler{maxQueue: maxQueue, pending: pending, idle: instances}
}

// acquire waits, in arrival order, for a free instance, and returns how long
// it waited. It fails at once with errQueueFull when the queue is full, and
// while waiting with errQueueTimeout after timeout (if positive), with
// ctx's error if the caller gives up, or with errStopped when stop closes.
// A request that fails here has left the queue and never executes. On
// success the caller owns an instance and must call release.
func (s *scheduler) acquire(ctx context.Context, timeout time.Duration, stop <-chan struct{}) (time.Duration, error) {
	start := time.Now()
	s.mu.Lock()
	if s.idle > 0 && s.waiters.Len() == 0 {
		s.idle--
		s.mu.Unlock()
		return 0, nil
	}
	if s.maxQueue > 0 && s.waiters.Len() >= s.maxQueue {
		s.mu.Unlock()
		return 0, errQueueFull
	}
	w := &waiter{granted: make(chan struct{})}
	w.elem = s.waiters.PushBack(w)
	s.pending.Add(1)
	s.mu.Unlock()

	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var err error
	select {
	case <-w.granted:
		return time.Since(start), nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = errQueueTimeout
	case <-stop:
		err = errStopped
	}

	s.mu.Lock()
	if w.handed {
		// An instance was handed over just as we gave up: pass it on, so
		// that it is not lost.
		s.mu.Unlock()
		s.release()
		return time.Since(start), err
	}
	s.waiters.Remove(w.elem)
	s.pending.Add(-1)
	s.mu.Unlock()
	return time.Since(start), err
}

// release frees the caller's instance: it goes to the oldest waiter, or
// back to the idle pool.
func (s *scheduler) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	front := s.waiters.Front()
	if front == nil {
		s.idle++
		return
	}
	w := s.waiters.Remove(front).(*waiter)
	w.handed = true
	s.pending.Add(-1)
	close(w.granted)
}

// state returns the number of queued requests and of idle instances.
func (s *scheduler) state() (queued, idle int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiters.Len(), s.idle
}
