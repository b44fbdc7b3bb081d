package gateway

// Leaving without failing a call: the drain on shutdown, and the
// connection ages that make clients rebalance while the gateway runs.

import (
	"cmp"
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/morphik-org/colpali-gateway/internal/config"
)

// Defaults of DrainConfig.
const (
	DefaultDrainDelay            = 5 * time.Second
	DefaultMaxConnectionAge      = 2 * time.Minute
	DefaultMaxConnectionAgeGrace = DefaultStreamTimeout
)

// DrainConfig is how the gateway leaves: on shutdown (Config.Drain), and
// connection by connection while it runs.
type DrainConfig struct {
	// Delay is how long the gateway keeps serving after shutdown begins,
	// its health already NOT_SERVING, before it stops taking calls: the
	// time for load balancers, kube-proxy and clients that watch its
	// health to stop sending it new calls. Default 5s, the usual time for
	// an endpoint removal to reach every node of a cluster.
	Delay time.Duration
	// MaxConnectionAge is how long a client connection lives before the
	// gateway asks the client to open a new one (an HTTP/2 GOAWAY; grpc-go
	// adds ±10% jitter), so that clients spread over replicas added since
	// they connected (gRFC A9). Calls in flight are not cut, and new calls
	// go on the new connection without failing. Default 2m: the gateway's
	// autoscaler adds replicas every 30 s while CPU stays high, and new
	// replicas that no connection reaches would keep CPU high and make it
	// overshoot; one reconnection per client every two minutes costs
	// nothing measurable.
	MaxConnectionAge time.Duration
	// MaxConnectionAgeGrace is how long the calls in flight on a connection
	// past MaxConnectionAge may continue before it is closed under them.
	// Default 30m, Config.StreamTimeout's default: no call the gateway
	// allows is cut short by it (unary calls end within Config.MaxTimeout,
	// streams within Config.StreamTimeout); it only bounds a client that
	// holds a stream open past every deadline.
	MaxConnectionAgeGrace time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c DrainConfig) WithDefaults() DrainConfig {
	c.Delay = cmp.Or(c.Delay, DefaultDrainDelay)
	c.MaxConnectionAge = cmp.Or(c.MaxConnectionAge, DefaultMaxConnectionAge)
	c.MaxConnectionAgeGrace = cmp.Or(c.MaxConnectionAgeGrace, DefaultMaxConnectionAgeGrace)
	return c
}

// Validate names every bad field of c. A zero Delay is refused like every
// other zero (package internal/config): a gateway that stops taking calls
// the moment it is told to leave fails the calls its clients send before
// they learn it is leaving. A short delay (1ms) is the way to say "no
// delay" where nothing routes to the gateway, as in tests.
func (c DrainConfig) Validate() error {
	var errs config.Errors
	errs.Add(config.Positive("Delay", c.Delay))
	errs.Add(config.Positive("MaxConnectionAge", c.MaxConnectionAge))
	errs.Add(config.Positive("MaxConnectionAgeGrace", c.MaxConnectionAgeGrace))
	return errs.Err()
}

// keepaliveParams are the gRPC server's connection ages.
func (s *Server) keepaliveParams() keepalive.ServerParameters {
	return keepalive.ServerParameters{
		MaxConnectionAge:      s.cfg.Drain.MaxConnectionAge,
		MaxConnectionAgeGrace: s.cfg.Drain.MaxConnectionAgeGrace,
	}
}

// drain takes the gateway out of service once Serve's context has ended:
//
//  1. health turns NOT_SERVING (gRPC health, every service, and /readyz),
//     so that load balancers and health-checking clients stop picking it;
//  2. it keeps serving for Config.Drain.Delay while they notice (skipped
//     when a server failed: then nothing is served anyway);
//  3. it stops taking calls (and ends health Watch streams) and waits
//     for those in flight, REST first
//     (a REST call in flight still needs the gRPC server behind it), then
//     gRPC's GracefulStop, which sends GOAWAY so that clients move their
//     new calls elsewhere without failing them; the calls in flight
//     include those waiting in the batcher, so their batches are sent and
//     answered;
//  4. Deps.Flush, when set, then sends whatever is still queued;
//
// steps 3 and 4 within Config.ShutdownTimeout, after which the calls still
// in flight are cut (grpc.Server.Stop).
func (s *Server) drain(ctx context.Context, delay bool) {
	s.health.Shutdown()
	s.mu.Lock()
	s.draining = true
	s.ready = errors.New("shutting down")
	s.mu.Unlock()
	if delay {
		s.deps.Logger.Info("gateway draining: still serving while clients notice", "delay", s.cfg.Drain.Delay)
		timer := s.deps.Clock.NewTimer()
		timer.Reset(s.cfg.Drain.Delay)
		<-timer.C()
		timer.Stop()
	}
	s.deps.Logger.Info("gateway draining: no new calls; finishing those in flight", "timeout", s.cfg.ShutdownTimeout)
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	close(s.stopping) // health Watch streams end: see healthService
	if err := s.httpServer.Shutdown(drainCtx); err != nil {
		_ = s.httpServer.Close() // after a failed Shutdown: a hard close, nothing left to report
	}
	stopped := make(chan struct{})
	go func() { s.grpcServer.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-drainCtx.Done():
		s.deps.Logger.Warn("drain timed out; stopping calls in flight")
		s.grpcServer.Stop()
		<-stopped
	}
	if s.deps.Flush != nil {
		if err := s.deps.Flush(drainCtx); err != nil {
			s.deps.Logger.Warn("flushing the batcher", "error", err.Error())
		}
	}
}

// healthService is the gRPC health service: s.health, whose Watch streams
// end when the drain stops taking calls (s.stopping). grpc-go's health
// server keeps a Watch open until its client leaves, and GracefulStop
// waits for every stream, so a watching client would hold the drain until
// Config.ShutdownTimeout; ended, the client sees the server gone, as it is.
func (s *Server) healthService() healthpb.HealthServer {
	return drainingHealth{Server: s.health, stopping: s.stopping}
}

type drainingHealth struct {
	*health.Server
	stopping <-chan struct{}
}

func (h drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(req, watchStream{Health_WatchServer: stream, ctx: ctx})
}

// watchStream is a Watch stream with a context of the drain's making.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }
