package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

// startHealthLocked starts b's health loop under ctx. Caller holds mu.
func (r *Router) startHealthLocked(ctx context.Context, b *backend) {
	r.wg.Go(func() { r.healthLoop(ctx, b) })
}

// healthLoop checks b at once, then every HealthInterval, at once when a
// call has failed, and when its ejection backoff ends; it returns when ctx
// ends or b leaves the pool.
func (r *Router) healthLoop(ctx context.Context, b *backend) {
	timer := r.clock.NewTimer()
	timer.Reset(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.stop:
			return
		case <-b.wake:
		case <-timer.C():
		}
		res := r.probe(ctx, b)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(r.apply(b, res))
	}
}

// probeResult is one health check's answer.
type probeResult struct {
	live, serverReady bool
	models            [len(kinds)]bool
	err               error
	// answered: the server answered every call and said it is live,
	// whatever it said of its models.
	answered bool
	// dead: the connection failed (refused or dropped: ErrUnavailable)
	// or the server said it is not live. Anything else that fails (a
	// timeout above all) says only that no answer came in time.
	dead bool
}

// ok reports whether the check passed: answered, with a model ready.
func (p probeResult) ok() bool {
	if !p.answered {
		return false
	}
	for _, m := range p.models {
		if m {
			return true
		}
	}
	return false
}

// probe asks b, on its health-check connection, for ServerLive,
// ServerReady and each model's ModelReady. Routability follows ModelReady
// alone: with Triton's default strict readiness, ServerReady is false
// while any one model is not ready, which must not take the backend out
// for the other model.
func (r *Router) probe(ctx context.Context, b *backend) probeResult {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.HealthTimeout)
	defer cancel()
	// Each check is a real attempt: a connection refused a minute ago
	// must not answer for a server that is back now.
	resetBackoff(b.prober)
	var res probeResult
	failed := func(err error) probeResult {
		res.err, res.dead = err, errors.Is(err, triton.ErrUnavailable)
		return res
	}
	live, err := b.prober.ServerLive(ctx)
	if err != nil {
		return failed(err)
	}
	if !live {
		res.err, res.dead = errors.New("server not live"), true
		return res
	}
	res.live = true
	res.serverReady, err = b.prober.ServerReady(ctx)
	if err != nil {
		return failed(err)
	}
	var notReady []string
	for _, k := range kinds {
		name := r.cfg.Models.ModelName(k)
		ok, err := b.prober.ModelReady(ctx, name, r.cfg.Models.ModelVersion)
		if err != nil {
			return failed(err)
		}
		res.models[k] = ok
		if !ok {
			notReady = append(notReady, name)
		}
	}
	res.answered = true
	if len(notReady) == len(kinds) {
		res.err = fmt.Errorf("no model ready (%v)", notReady)
	}
	return res
}

// backoffResetter is a Backend whose connection can be told to reconnect
// now rather than after its backoff; *triton.Client is one.
type backoffResetter interface{ ResetConnectBackoff() }

func resetBackoff(b Backend) {
	if r, ok := b.(backoffResetter); ok {
		r.ResetConnectBackoff()
	}
}

// apply records a check's result, readmits an ejected backend whose backoff
// has passed, republishes the snapshot when routing changes, and returns
// when the next check is due.
//
// An answer counts at once: a refused connection or a server not live
// takes the backend out, and each model's readiness is what the server
// said. A check that got no answer (timed out) counts towards
// UnhealthyThreshold, unless the backend answered batches since the
// previous check: then it is busy, not dead, and the count starts again.
// A backend taken out by its checks (not one merely marked down by a
// failed call) needs HealthyThreshold passes in a row to come back, except
// before it was first ready.
func (r *Router) apply(b *backend, res probeResult) time.Duration {
	now := r.clock.Now()
	answered := b.answered.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &b.health
	before := h.state()
	beforeModels := h.models
	served := answered != h.answeredSeen
	h.answeredSeen = answered
	h.checked, h.lastCheck = true, now
	switch {
	case res.answered:
		if !h.healthy || h.dead || h.down {
			// The batches' connection may still wait out the reconnect
			// backoff of a server that was down: it is back now.
			resetBackoff(b.client)
		}
		h.live, h.serverReady, h.models = true, res.serverReady, res.models
		h.dead = false
		h.probeFails = 0
		h.probePasses++
		if !h.healthy && (!h.wasHealthy || h.probePasses >= r.cfg.HealthyThreshold) {
			h.healthy, h.wasHealthy = true, true
		}
	case res.dead:
		h.live, h.serverReady, h.models = false, false, res.models
		h.dead, h.healthy = true, false
		h.probePasses = 0
		h.probeFails++
	case served:
		// What the backend last said of itself still stands.
		h.probeFails = 0
	default:
		h.probePasses = 0
		h.probeFails++
		if h.probeFails >= r.cfg.UnhealthyThreshold {
			h.healthy = false
		}
	}
	switch {
	case res.err != nil && served && !res.answered && !res.dead:
		h.lastError = res.err.Error() + " (not counted: the backend answered batches since the last check)"
	case res.err != nil:
		h.lastError = res.err.Error()
	case h.ejectedUntil.IsZero():
		h.lastError = "" // an ejected backend keeps the failure that ejected it
	}
	if res.ok() {
		// A passing check ends a mark-down, but leaves the consecutive
		// failures alone: they count batches, which only an answer to a
		// batch resets. A backend that passes its checks yet fails every
		// batch (flapping UNAVAILABLE, or failing ModelInfer alone) is what
		// ejection is for; the last backend ready for a model is never
		// ejected, so this cannot keep a model without one.
		h.down = false
		h.lastReady = res.models
	}
	next := r.cfg.HealthInterval
	if !h.ejectedUntil.IsZero() {
		if wait := h.ejectedUntil.Sub(now); wait > 0 {
			next = min(next, wait)
		} else if res.ok() {
			h.ejectedUntil, h.lastError = time.Time{}, ""
			h.admittedAt = now
			b.consecutiveFailures.Store(0)
			r.logger.Info("backend readmitted after ejection", "backend", b.Addr())
		}
	} else if h.ejectLevel > 0 && now.Sub(h.admittedAt) > r.cfg.EjectBackoffMax {
		h.ejectLevel = 0 // stayed healthy long enough: the next ejection starts short
	}
	after := h.state()
	if after != before || h.models != beforeModels {
		r.logger.Info("backend state", "backend", b.Addr(), "from", before.String(), "to", after.String(),
			"query_model_ready", h.models[0], "image_model_ready", h.models[1],
			"failed_checks_in_a_row", h.probeFails, "passed_checks_in_a_row", h.probePasses, "reason", h.lastError)
		r.rebuildLocked()
	}
	return next
}

// ejectLocked takes b out for a backoff that doubles with each ejection in
// a row, unless b is the last backend ready for one of its models: then a
// failing backend is still better than none (the failures reach the
// callers either way) and it stays. Caller holds mu.
//
// b's models are those its last passing check found ready, not those it is
// routable for now: the failure that led here may have marked it down (an
// UNAVAILABLE call) or a failed check may have cleared its models a moment
// ago, and an ejected backend would then stay out for its backoff after
// its server came back, even with no other backend for the model.
func (r *Router) ejectLocked(b *backend, cause error) {
	h := &b.health
	if h.draining || !h.ejectedUntil.IsZero() {
		return
	}
	for _, k := range kinds {
		if h.lastReady[k] && !r.otherRoutableLocked(b, k) {
			r.logger.Warn("backend failing but is the last one ready for its model; not ejected",
				"backend", b.Addr(), "model", r.cfg.Models.ModelName(k), "err", cause)
			return
		}
	}
	backoff := ejectBackoff(r.cfg.EjectBackoff, r.cfg.EjectBackoffMax, h.ejectLevel)
	h.ejectLevel++
	h.ejectedUntil = r.clock.Now().Add(backoff)
	h.lastError = cause.Error()
	b.ejections.Add(1)
	r.logger.Warn("backend ejected", "backend", b.Addr(), "consecutive_failures", b.consecutiveFailures.Load(),
		"backoff", backoff, "err", cause)
	r.rebuildLocked()
	b.checkNow() // so the health loop re-arms its timer for the backoff's end
}

// otherRoutableLocked reports whether a member other than b is routable for
// kind. Caller holds mu.
func (r *Router) otherRoutableLocked(b *backend, kind model.Kind) bool {
	for _, o := range r.members {
		if o != b && o.health.routable(kind) {
			return true
		}
	}
	return false
}

// ejectBackoff is the backoff of an ejection after level ejections in a
// row: first doubled level times, capped at limit. It doubles step by step
// so that no level overflows (a shift by the level would wrap negative and
// end the ejection at once).
func ejectBackoff(first, limit time.Duration, level int) time.Duration {
	backoff := min(first, limit)
	for range level {
		if backoff > limit/2 {
			return limit
		}
		backoff *= 2
	}
	return backoff
}
