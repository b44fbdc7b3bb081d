package router

import (
	"context"
	"net"
	"slices"
	"time"
)

// drainPoll is how often a draining backend's batches in flight are
// counted; draining is rare and slow, so polling is simpler than a signal.
const drainPoll = 10 * time.Millisecond

// discover resolves Config.DNS now and then DNSInterval after each
// answer until ctx ends. A failed lookup keeps the pool as it is: a DNS
// outage must not empty it.
func (r *Router) discover(ctx context.Context) {
	host, port, _ := net.SplitHostPort(r.cfg.DNS) // validated
	timer := r.clock.NewTimer()
	defer timer.Stop()
	for {
		r.resolve(ctx, host, port)
		timer.Reset(r.cfg.DNSInterval)
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		}
	}
}

func (r *Router) resolve(ctx context.Context, host, port string) {
	lookupCtx, cancel := context.WithTimeout(ctx, min(r.cfg.DNSInterval, 10*time.Second))
	defer cancel()
	addrs, err := r.deps.Resolver.LookupHost(lookupCtx, host)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("DNS lookup failed; keeping the pool as it is", "name", host, "err", err)
		}
		return
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	eps := make([]Endpoint, 0, len(addrs))
	for _, a := range addrs {
		eps = append(eps, Endpoint{Addr: net.JoinHostPort(a, port), MetricsURL: metricsURL(a, r.cfg.MetricsPort)})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Equal(eps, r.dns) {
		r.logger.Info("DNS answer changed", "name", host, "backends", len(eps))
		r.dns = eps
		r.syncMembersLocked()
	}
}

// syncMembersLocked makes the pool the union of Config.Static and the last
// DNS answer: new endpoints join (checked before any batch goes there),
// gone ones drain. Caller holds mu.
func (r *Router) syncMembersLocked() {
	want := map[string]Endpoint{}
	for _, e := range r.dns {
		want[e.Addr] = e
	}
	for _, e := range r.cfg.Static { // configuration wins over DNS
		want[e.Addr] = e
	}
	for addr, e := range want {
		if b, ok := r.members[addr]; ok {
			if b.health.draining {
				b.health.draining = false // back before its drain ended
				r.logger.Info("backend rejoined while draining", "backend", addr)
			}
			continue
		}
		client, err := r.deps.Dial(addr)
		if err != nil {
			r.logger.Error("backend connection", "backend", addr, "err", err)
			continue
		}
		prober, err := r.deps.Dial(addr) // see Deps.Dial: checks on their own connection
		if err != nil {
			r.logger.Error("backend health check connection", "backend", addr, "err", err)
			_ = client.Close()
			continue
		}
		b := newBackend(e, client, prober, r.deps.GPU, r.cfg.TelemetryMaxAge)
		r.members[addr] = b
		r.logger.Info("backend joined", "backend", addr, "metrics_url", e.MetricsURL)
		if r.runCtx != nil {
			r.startHealthLocked(r.runCtx, b)
		}
	}
	for addr, b := range r.members {
		if _, ok := want[addr]; !ok && !b.health.draining {
			b.health.draining = true
			b.health.drains++
			r.logger.Info("backend leaving; draining", "backend", addr, "in_flight", b.InFlight())
			if r.runCtx != nil {
				ctx, drains := r.runCtx, b.health.drains
				r.wg.Go(func() { r.drain(ctx, b, drains) })
			}
		}
	}
	r.rebuildLocked() // before any drain counts batches in flight: see pick
	r.setTargetsLocked()
}

// drain waits until b has no batch in flight, DrainTimeout passes or ctx
// ends, then removes b and closes its connection, unless b rejoined since
// this drain began (drains tells: b may have rejoined and left again, and
// then only the later drain, started after the snapshot without b was
// published, may trust its count of batches in flight).
func (r *Router) drain(ctx context.Context, b *backend, drains int) {
	timeout := r.clock.NewTimer()
	timeout.Reset(r.cfg.DrainTimeout)
	defer timeout.Stop()
	poll := r.clock.NewTimer()
	defer poll.Stop()
	for b.InFlight() > 0 {
		poll.Reset(drainPoll)
		select {
		case <-ctx.Done():
			return // Run closes everything
		case <-timeout.C():
			r.logger.Warn("backend drain timed out; closing with batches in flight", "backend", b.Addr(), "in_flight", b.InFlight())
		case <-poll.C():
			continue
		}
		break
	}
	r.mu.Lock()
	if !b.health.draining || b.health.drains != drains || r.members[b.Addr()] != b {
		r.mu.Unlock()
		return
	}
	delete(r.members, b.Addr())
	close(b.stop)
	r.rebuildLocked()
	r.setTargetsLocked()
	r.mu.Unlock()
	if err := b.close(); err != nil {
		r.logger.Debug("closing backend", "backend", b.Addr(), "err", err)
	}
	r.logger.Info("backend left", "backend", b.Addr())
}

// setTargetsLocked tells Deps.Targets the metrics URL of every member.
// Caller holds mu.
func (r *Router) setTargetsLocked() {
	if r.deps.Targets == nil {
		return
	}
	targets := map[string]string{}
	for addr, b := range r.members {
		if b.endpoint.MetricsURL != "" {
			targets[addr] = b.endpoint.MetricsURL
		}
	}
	r.deps.Targets.SetTargets(targets)
}
