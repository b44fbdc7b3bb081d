package tritonsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/model"
)

// Name is the server name that ServerMetadata reports, so that nobody
// mistakes the simulator for Triton.
const Name = "colpali-gateway-tritonsim (a Triton simulator, not Triton)"

// maxMessageSize is the gRPC receive and send limit. A batch of 16 FP32
// pages is ~8.4 MB of embeddings, past grpc-go's 4 MiB default; Triton has
// no small limit, so neither does its stand-in.
const maxMessageSize = 256 << 20

// httpShutdownTimeout bounds GracefulStop's wait for HTTP requests; they are
// short (a scrape, a health check), so waiting longer means a stuck client.
const httpShutdownTimeout = 5 * time.Second

// Server is a running simulator. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	logger *slog.Logger

	grpcServer *grpc.Server
	httpServer *http.Server
	grpcAddr   string
	httpAddr   string

	models  map[string]*modelState
	order   []*modelState // query model, then image model
	metrics *metrics
	clock   Clock
	cost    *costModel
	devices []*device // one per simulated GPU; see Config.Layout
	obs     observations
	faults  atomic.Pointer[Faults]
	calls   atomic.Int64 // ModelInfer arrivals, for StopAfter

	stop     chan struct{} // closed when stopping hard: aborts queue waits and executions
	stopOnce sync.Once
	wg       sync.WaitGroup // the serve goroutines, the ticker, the batchers and the devices
	done     chan struct{}  // closed when fully stopped
	doneOnce sync.Once
}

// modelState is one served model.
type modelState struct {
	kind     model.Kind
	name     string
	input    string
	maxBatch int
	batching Batching
	batcher  *batcher
	devices  []*device // instance i runs on devices[i]
	stats    modelStats
	metrics  modelMetrics
}

// Start validates cfg, listens on both addresses and serves gRPC and HTTP
// on goroutines until Stop or GracefulStop. ctx bounds only the start: it
// does not stop the server. A nil logger discards logs.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tritonsim: invalid config: %w", err)
	}
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "tritonsim")

	var lc net.ListenConfig
	grpcLis, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("tritonsim: listen for gRPC: %w", err)
	}
	httpLis, err := lc.Listen(ctx, "tcp", cfg.MetricsAddr)
	if err != nil {
		_ = grpcLis.Close()
		return nil, fmt.Errorf("tritonsim: listen for metrics: %w", err)
	}

	s := &Server{
		cfg:      cfg,
		logger:   logger,
		grpcAddr: grpcLis.Addr().String(),
		httpAddr: httpLis.Addr().String(),
		models:   map[string]*modelState{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.metrics = newMetrics()
	if cfg.SummaryLatencies {
		s.metrics.summaries = newSummaries(s.metrics.registry)
	}
	s.clock = cfg.Clock
	s.cost = cfg.costModel()
	faults := cfg.Faults.sanitized()
	s.faults.Store(&faults)
	newDev := func() *device {
		meter := newGPU(s.metrics, gpuUUID(s.grpcAddr, len(s.devices)), s.clock.Now())
		d := newDevice(meter, s.clock, s.batchDuration, s.finishBatch)
		s.devices = append(s.devices, d)
		return d
	}
	if cfg.Layout == LayoutShared {
		newDev()
	}
	for _, k := range []model.Kind{model.Query, model.Image} {
		name := cfg.Model.ModelName(k)
		mm := s.metrics.forModel(name)
		m := &modelState{
			kind:     k,
			name:     name,
			input:    cfg.Model.InputName(k),
			maxBatch: cfg.maxBatchSize(k),
			batching: cfg.batching(k),
			metrics:  mm,
		}
		for range cfg.Instances {
			if cfg.Layout == LayoutShared {
				m.devices = append(m.devices, s.devices[0])
			} else {
				m.devices = append(m.devices, newDev())
			}
		}
		m.batcher = newBatcher(k, m.batching, m.maxBatch, cfg.Instances, !cfg.DisableDynamicBatching, s.clock, mm.pending,
			func(bt *batch, instance int) { m.devices[instance].submit(bt, instance) })
		s.models[name] = m
		s.order = append(s.order, m)
	}

	var creds []grpc.ServerOption
	if cfg.TLS != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.grpcServer = grpc.NewServer(append(creds,
		grpc.MaxRecvMsgSize(maxMessageSize),
		grpc.MaxSendMsgSize(maxMessageSize),
		// Stop must not return while a handler still runs: Stop's promise
		// is that no goroutine of the simulator outlives it.
		grpc.WaitForHandlers(true),
	)...)
	inference.RegisterGRPCInferenceServiceServer(s.grpcServer, &service{s: s})
	s.httpServer = &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	s.wg.Add(3 + len(s.order) + len(s.devices))
	for _, m := range s.order {
		go func() {
			defer s.wg.Done()
			m.batcher.run(s.stop)
		}()
	}
	for _, d := range s.devices {
		go func() {
			defer s.wg.Done()
			d.run(s.stop)
		}()
	}
	go func() {
		defer s.wg.Done()
		if err := s.grpcServer.Serve(grpcLis); err != nil {
			logger.Error("tritonsim gRPC server failed", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.httpServer.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("tritonsim HTTP server failed", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.runTicker()
	}()

	logger.Info("tritonsim listening (a Triton simulator, not Triton)",
		"grpc_addr", s.grpcAddr, "metrics_addr", s.httpAddr,
		"query_model", cfg.Model.QueryModel, "image_model", cfg.Model.ImageModel,
		"output_datatype", cfg.OutputDatatype, "instances", cfg.Instances, "layout", cfg.Layout,
		"gpus", len(s.devices), "dynamic_batching", !cfg.DisableDynamicBatching, "profile", cfg.Profile,
		"speed", cfg.Speed, "jitter_sigma", cfg.JitterSigma, "stall_probability", cfg.StallProbability,
		"stall_duration", cfg.StallDuration.String(), "seed", cfg.Seed)
	return s, nil
}

// runTicker updates the GPU utilisation gauges until the server stops. It
// ticks on real time but reads the simulator's clock, which the busy
// periods are measured on.
func (s *Server) runTicker() {
	t := time.NewTicker(utilTick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			now := s.clock.Now()
			for _, d := range s.devices {
				d.meter.tick(now)
			}
		}
	}
}

// GRPCAddr is the host:port the gRPC server listens on.
func (s *Server) GRPCAddr() string { return s.grpcAddr }

// MetricsAddr is the host:port the HTTP server (/metrics, health, faults)
// listens on.
func (s *Server) MetricsAddr() string { return s.httpAddr }

// Faults returns the faults in force.
func (s *Server) Faults() Faults {
	f := *s.faults.Load()
	f.NotReady = append([]string(nil), f.NotReady...)
	return f
}

// SetFaults replaces the faults in force. Out-of-range values are clamped
// (ErrorRate to 0..1, a negative ExtraLatency to 0); calls already
// executing keep the latency they started with.
func (s *Server) SetFaults(f Faults) {
	f = f.sanitized()
	s.faults.Store(&f)
	s.logger.Info("tritonsim faults set", "extra_latency", f.ExtraLatency.String(), "error_rate", f.ErrorRate, "not_ready", f.NotReady)
}

// Observed returns the last 1024 ModelInfer calls received, oldest first.
func (s *Server) Observed() []Observation { return s.obs.list() }

// Done is closed once the server has stopped, by Stop, GracefulStop or a
// Config.StopAfter crash.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop stops the server at once, as a crash would: it closes the listeners
// and every connection, fails the calls in flight (their clients see
// Unavailable) and returns when every goroutine of the server has exited.
func (s *Server) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.grpcServer.Stop()
	_ = s.httpServer.Close()
	s.finish("stopped")
}

// GracefulStop stops accepting calls, lets the calls in flight (queued or
// executing) finish, then stops as Stop does.
func (s *Server) GracefulStop() {
	s.grpcServer.GracefulStop()
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := s.httpServer.Shutdown(ctx); err != nil {
		_ = s.httpServer.Close()
	}
	s.stopOnce.Do(func() { close(s.stop) })
	s.finish("stopped gracefully")
}

// finish waits for the server's goroutines and marks it done, once.
func (s *Server) finish(how string) {
	s.wg.Wait()
	s.doneOnce.Do(func() {
		s.logger.Info("tritonsim "+how, "grpc_addr", s.grpcAddr, "metrics_addr", s.httpAddr)
		close(s.done)
	})
}

// crash is the StopAfter fault: a hard Stop from inside a handler. Stop
// waits for handlers, so it must run on its own goroutine.
func (s *Server) crash(n int64) {
	s.logger.Warn("tritonsim crashing on purpose (stop after)", "calls", n)
	go s.Stop()
}

// ready reports whether the named model is served and ready.
func (s *Server) ready(name, version string) bool {
	m, ok := s.models[name]
	if !ok || (version != "" && version != modelVersion) {
		return false
	}
	return !s.faults.Load().isNotReady(m.name)
}

// serverReady is true while at least one model is ready.
func (s *Server) serverReady() bool {
	for _, m := range s.order {
		if s.ready(m.name, "") {
			return true
		}
	}
	return false
}
