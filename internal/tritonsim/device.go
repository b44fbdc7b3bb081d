package tritonsim

import (
	"sync"
	"time"
)

// GPU layouts (Config.Layout).
const (
	// LayoutShared puts every instance of both models on one simulated
	// GPU, as instance_group { kind: KIND_GPU count: 1 } does on a one-GPU
	// machine: batches of either model queue for the same device, so a
	// page batch delays the query batches behind it.
	LayoutShared = "shared"
	// LayoutSeparate gives every instance of each model a GPU of its own:
	// the models never contend.
	LayoutSeparate = "separate"
)

// device is one simulated GPU. It runs one batch at a time, in the order
// the batchers hand them over (FIFO across models): a real GPU interleaves
// the kernels of concurrent executions, but the total time is about the
// same and FIFO keeps the model simple and the delays visible.
type device struct {
	meter *gpu
	clock Clock
	// exec computes a batch's duration at its start and finishes it; see
	// Server.batchDuration and Server.finishBatch.
	duration func(*batch) time.Duration
	finish   func(bt *batch, instance int, started, finished time.Time)

	wake chan struct{}

	mu    sync.Mutex
	queue []deviceJob
}

type deviceJob struct {
	bt       *batch
	instance int
}

func newDevice(meter *gpu, clock Clock, duration func(*batch) time.Duration, finish func(*batch, int, time.Time, time.Time)) *device {
	return &device{meter: meter, clock: clock, duration: duration, finish: finish, wake: make(chan struct{}, 1)}
}

// submit queues a batch for the device; it never blocks.
func (d *device) submit(bt *batch, instance int) {
	d.mu.Lock()
	d.queue = append(d.queue, deviceJob{bt, instance})
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// queued is the number of batches waiting for the device.
func (d *device) queued() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queue)
}

// run executes batches until stop closes; then every batch it holds fails
// with errStopped. A batch is never cut short otherwise: a GPU finishes a
// batch whose callers have gone.
func (d *device) run(stop <-chan struct{}) {
	for {
		d.mu.Lock()
		var job deviceJob
		ok := len(d.queue) > 0
		if ok {
			job = d.queue[0]
			d.queue = d.queue[1:]
		}
		d.mu.Unlock()
		if !ok {
			select {
			case <-d.wake:
				continue
			case <-stop:
				return
			}
		}
		if !d.execute(job, stop) {
			d.mu.Lock()
			rest := d.queue
			d.queue = nil
			d.mu.Unlock()
			for _, j := range append(rest, job) {
				for _, p := range j.bt.reqs {
					p.done <- outcome{err: errStopped}
				}
			}
			return
		}
	}
}

// execute occupies the device for the batch's duration and finishes it;
// false if stop closed first.
func (d *device) execute(job deviceJob, stop <-chan struct{}) bool {
	start := d.clock.Now()
	dur := d.duration(job.bt)
	mem := activationMemory(job.bt)
	d.meter.begin(start, mem)
	timer := d.clock.NewTimer(dur)
	select {
	case <-timer.C():
	case <-stop:
		timer.Stop()
		d.meter.end(d.clock.Now(), mem)
		return false
	}
	end := d.clock.Now()
	d.meter.end(end, mem)
	d.finish(job.bt, job.instance, start, end)
	return true
}
