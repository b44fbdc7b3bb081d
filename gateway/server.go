package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/morphik-org/colpali-gateway/admission"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/gen/openapiv2"
	"github.com/morphik-org/colpali-gateway/internal/protoutf8"
)

// ReadinessFunc reports nil when the gateway can serve, or why not.
type ReadinessFunc func(ctx context.Context) error

// Deps are the gateway's collaborators.
type Deps struct {
	// Logger receives every log line. Required.
	Logger *slog.Logger
	// Embedder computes embeddings. Required.
	Embedder Embedder
	// Ready is the readiness check run every Config.HealthInterval.
	// Required.
	Ready ReadinessFunc
	// Backends, when set, is served read-only as colpali.v1.BackendService
	// (gRPC, and GET /v1/backends). Default: the service is not served.
	Backends Backends
	// Registry receives the gateway's metrics and is served on /metrics.
	// Default: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Documents stores documents for the DocumentService. Optional: without
	// it the DocumentService answers UNIMPLEMENTED, and the
	// EmbeddingService works as ever. The EmbeddingService never depends on
	// it, so embeddings are served while the database is down.
	Documents DocumentStore
	// Admission, when set, refuses embeddings, searches and ingestions
	// beyond its concurrency limits and memory budget (gateway/admission.go).
	// Default: every call is admitted.
	Admission *admission.Controller
}

// Server is the gateway: a gRPC server and an HTTP server in front of it.
type Server struct {
	cfg    Config
	deps   Deps
	health *health.Server
	// registerDocuments registers the DocumentService, real or not.
	registerDocuments func(grpc.ServiceRegistrar)

	grpcLis, httpLis net.Listener
	grpcServer       *grpc.Server
	httpServer       *http.Server
	loopback         *grpc.ClientConn

	mu       sync.Mutex
	ready    error // last readiness result; guarded by mu
	draining bool  // set once on shutdown; readiness stays false; guarded by mu
}

// The services whose health status the gateway reports, besides the
// overall "" (which follows the Embedder alone, like /readyz): the
// EmbeddingService and the BackendService follow the Embedder, the
// DocumentService needs the database too.
var (
	embeddingServiceName = colpaliv1.EmbeddingService_ServiceDesc.ServiceName
	backendServiceName   = colpaliv1.BackendService_ServiceDesc.ServiceName
	documentServiceName  = colpaliv1.DocumentService_ServiceDesc.ServiceName
)

// New validates cfg (after defaults) and builds the gateway. Nothing
// listens until Listen.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.WithDefaults()
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if deps.Logger == nil {
		errs = append(errs, errors.New("gateway: Deps.Logger is required"))
	}
	if deps.Embedder == nil {
		errs = append(errs, errors.New("gateway: Deps.Embedder is required"))
	}
	if deps.Ready == nil {
		errs = append(errs, errors.New("gateway: Deps.Ready is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
		deps.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	registerDocuments, err := documentRegistration(cfg, deps)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, deps: deps, registerDocuments: registerDocuments, health: health.NewServer(), ready: errors.New("no readiness check has run yet")}, nil
}

// Listen binds both listeners and wires the servers; afterwards GRPCAddr and
// HTTPAddr report the bound addresses (useful with port 0).
func (s *Server) Listen() error {
	var lc net.ListenConfig
	grpcLis, err := lc.Listen(context.Background(), "tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	httpLis, err := lc.Listen(context.Background(), "tcp", s.cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("HTTP listener: %w", err)
	}
	s.grpcLis, s.httpLis = grpcLis, httpLis
	s.grpcServer = s.newGRPCServer()
	if err := s.newHTTPServer(); err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	return nil
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

func (s *Server) newGRPCServer() *grpc.Server {
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
	))
	s.deps.Registry.MustRegister(metrics)
	panicHandler := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		Logger(ctx, s.deps.Logger).Error("panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error")
	})
	admitUnary, admitStream := s.admissionInterceptors()
	srv := grpc.NewServer(
		// Invalid UTF-8 in a request string: INVALID_ARGUMENT naming the
		// field (from validation), not grpc-go's INTERNAL parse error.
		grpc.ForceServerCodecV2(protoutf8.NewServerCodec()),
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.MaxRecvMsgSize(s.cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(s.cfg.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(uint32(s.cfg.MaxConcurrentStreams)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(
			metrics.UnaryServerInterceptor(),
			loggingInterceptor(s.deps.Logger),
			recovery.UnaryServerInterceptor(panicHandler),
			deadlineInterceptor(s.cfg.DefaultTimeout, s.cfg.MaxTimeout),
			statusInterceptor(s.deps.Logger), // sees the call's deadline
			admitUnary,                       // inside the edge, which must see its refusals
		),
		grpc.ChainStreamInterceptor(
			metrics.StreamServerInterceptor(),
			streamLoggingInterceptor(s.deps.Logger),
			recovery.StreamServerInterceptor(panicHandler),
			streamDeadlineInterceptor(s.cfg.StreamTimeout),
			streamStatusInterceptor(s.deps.Logger),
			admitStream,
		),
	)
	colpaliv1.RegisterEmbeddingServiceServer(srv, &embeddingService{cfg: s.cfg, embedder: s.deps.Embedder})
	if s.deps.Backends != nil {
		colpaliv1.RegisterBackendServiceServer(srv, &backendService{backends: s.deps.Backends})
	}
	s.registerDocuments(srv)
	healthpb.RegisterHealthServer(srv, s.health)
	reflection.Register(srv)
	metrics.InitializeMetrics(srv)
	s.setServing(false, false)
	return srv
}

// newHTTPServer builds the REST side: grpc-gateway's mux over a loopback
// client connection to our own gRPC server, so that REST calls pass the
// same interceptors (the in-process RegisterXHandlerServer would skip them).
func (s *Server) newHTTPServer() error {
	target := s.grpcLis.Addr().String()
	if host, port, err := net.SplitHostPort(target); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			target = net.JoinHostPort("127.0.0.1", port)
		}
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		// Invalid UTF-8 in a path or query parameter: INVALID_ARGUMENT naming
		// the field, not grpc-go's INTERNAL marshalling error.
		grpc.WithUnaryInterceptor(protoutf8.UnaryClientInterceptor()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(s.cfg.MaxRecvMsgSize),
			grpc.MaxCallRecvMsgSize(s.cfg.MaxSendMsgSize),
		),
	)
	if err != nil {
		return fmt.Errorf("loopback gRPC client: %w", err)
	}
	s.loopback = conn

	mux := runtime.NewServeMux(
		runtime.WithMiddlewares(restMiddleware(newRESTLimits(s.cfg)), s.restAdmission()),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			// Unknown JSON fields are refused, so a misspelt field is a 400
			// naming it rather than a silently ignored option.
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			if strings.EqualFold(h, requestIDHeader) {
				return requestIDHeader, true
			}
			return runtime.DefaultHeaderMatcher(h)
		}),
		runtime.WithOutgoingHeaderMatcher(func(h string) (string, bool) {
			// Only the request id leaves as an HTTP header; gRPC's own
			// metadata (content-type: application/grpc) is not the REST
			// client's business.
			if h == requestIDHeader {
				return "X-Request-Id", true
			}
			return "", false
		}),
	)
	if err := errors.Join(
		colpaliv1.RegisterEmbeddingServiceHandler(context.Background(), mux, conn),
		colpaliv1.RegisterDocumentServiceHandler(context.Background(), mux, conn),
	); err != nil {
		conn.Close()
		return fmt.Errorf("REST handlers: %w", err)
	}
	if s.deps.Backends != nil {
		if err := colpaliv1.RegisterBackendServiceHandler(context.Background(), mux, conn); err != nil {
			conn.Close()
			return fmt.Errorf("REST handlers: %w", err)
		}
	}

	root := http.NewServeMux()
	root.Handle("/v1/", instrumentREST(mux, s.deps.Registry))
	root.Handle("GET /metrics", promhttp.HandlerFor(s.deps.Registry, promhttp.HandlerOpts{Registry: s.deps.Registry}))
	root.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapiv2.Document)
	})
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	root.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.readiness(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.httpServer = &http.Server{
		Handler:           otelhttp.NewHandler(root, "colpali-gateway"),
		ReadHeaderTimeout: 10 * time.Second,
		// A body must arrive within the longest deadline a call may have,
		// so a slow client cannot hold a connection and its memory longer.
		ReadTimeout: s.cfg.MaxTimeout,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(s.deps.Logger.Handler(), slog.LevelWarn),
	}
	return nil
}

// Serve runs until ctx ends or a server fails, then drains: health turns
// NOT_SERVING, the HTTP server and then the gRPC server finish the calls in
// flight within Config.ShutdownTimeout, and are then stopped hard.
func (s *Server) Serve(ctx context.Context) error {
	if s.grpcServer == nil {
		return errors.New("gateway: Serve called before Listen")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.grpcServer.Serve(s.grpcLis); err != nil {
			errc <- fmt.Errorf("gRPC server: %w", err)
		}
	})
	wg.Go(func() {
		if err := s.httpServer.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("HTTP server: %w", err)
		}
	})
	wg.Go(func() { s.watchReadiness(ctx) })
	s.deps.Logger.Info("gateway serving", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	cancel()
	s.health.Shutdown()
	s.mu.Lock()
	s.draining = true
	s.ready = errors.New("shutting down")
	s.mu.Unlock()
	s.deps.Logger.Info("gateway draining", "timeout", s.cfg.ShutdownTimeout)
	drainCtx, drainCancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer drainCancel()
	if err := s.httpServer.Shutdown(drainCtx); err != nil {
		s.httpServer.Close()
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
	s.loopback.Close()
	wg.Wait()
	s.deps.Logger.Info("gateway stopped")
	return serveErr
}

// watchReadiness runs the readiness check now and on every interval until
// ctx ends, and publishes the result to gRPC health and /readyz.
func (s *Server) watchReadiness(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.HealthInterval)
	defer ticker.Stop()
	var docWas error = errors.New("not checked yet")
	for {
		checkTimeout := min(s.cfg.HealthInterval, 5*time.Second)
		checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
		err := s.deps.Ready(checkCtx)
		cancel()
		docErr := errors.New("document storage is not configured")
		if s.deps.Documents != nil {
			// A check of its own, so that a slow backend check does not
			// eat the database's time.
			checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
			docErr = s.deps.Documents.Ping(checkCtx)
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		if s.draining { // a check that ends after the drain began must not undo it
			s.mu.Unlock()
			return
		}
		was := s.ready
		s.ready = err
		s.mu.Unlock()
		switch {
		case err == nil && was != nil:
			s.deps.Logger.Info("gateway ready")
		case err != nil && (was == nil || was.Error() != err.Error()):
			s.deps.Logger.Warn("gateway not ready", "reason", err.Error())
		}
		switch {
		case s.deps.Documents == nil:
		case docErr == nil && docWas != nil:
			s.deps.Logger.Info("document storage ready")
		case docErr != nil && (docWas == nil || docWas.Error() != docErr.Error()):
			s.deps.Logger.Warn("document storage not ready; embeddings are still served", "reason", docErr.Error())
		}
		docWas = docErr
		s.setServing(err == nil, err == nil && docErr == nil)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (s *Server) readiness() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// setServing publishes health: embeddings (the overall status and the
// EmbeddingService's) and documents (the DocumentService's) separately, so
// that a database outage does not take the embedding API out of rotation.
func (s *Server) setServing(embeddings, documents bool) {
	st := func(ok bool) healthpb.HealthCheckResponse_ServingStatus {
		if ok {
			return healthpb.HealthCheckResponse_SERVING
		}
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", st(embeddings))
	s.health.SetServingStatus(embeddingServiceName, st(embeddings))
	if s.deps.Backends != nil {
		s.health.SetServingStatus(backendServiceName, st(embeddings))
	}
	s.health.SetServingStatus(documentServiceName, st(documents))
}
