package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/morphik-org/colpali-gateway/admission"
	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/gen/openapiv2"
	"github.com/morphik-org/colpali-gateway/internal/clock"
	"github.com/morphik-org/colpali-gateway/internal/protoutf8"
	"github.com/morphik-org/colpali-gateway/internal/telemetry"
	"github.com/morphik-org/colpali-gateway/quota"
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
	// Flush, when set, is called once the drain on shutdown has finished
	// the calls in flight, with what is left of Config.ShutdownTimeout: it
	// sends whatever is still queued (the batcher's Close). Default: none.
	Flush func(context.Context) error
	// Clock times the drain delay (Config.Drain.Delay). Default:
	// clock.System.
	Clock clock.Clock
	// Authenticator checks the credential of every call but health checks
	// (package auth; see access.go). Required: auth.None() for a gateway
	// without authentication, on loopback listeners only.
	Authenticator auth.Authenticator
	// Quotas, when set, keep each tenant within its call and page rates,
	// concurrency and storage (package quota). Default: no quotas.
	Quotas *quota.Quotas
	// TLS, when set, puts TLS (and mutual TLS, if it holds a client CA) on
	// every listener; see transport.go. Default: clear text.
	TLS TLS
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
	images            *imageChecker // shared by the services: one bound on decodes
	refusals          *refusalLog   // the summary of refused calls, gRPC and REST

	grpcLis, httpLis net.Listener
	grpcServer       *grpc.Server
	httpServer       *http.Server
	// rest is the REST side's connection to the services (restconn.go).
	rest *inprocConn

	stopping    chan struct{} // closed when the drain stops taking calls (drain.go)
	adminLis    net.Listener  // see admin.go
	adminServer *http.Server
	adminGRPC   *grpc.Server

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
	if deps.Authenticator == nil {
		errs = append(errs, errors.New("gateway: Deps.Authenticator is required (auth.None() for no authentication)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
		deps.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if deps.Clock == nil {
		deps.Clock = clock.System{}
	}
	images := newImageChecker(cfg)
	registerDocuments, err := documentRegistration(cfg, deps, images)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, deps: deps, images: images, registerDocuments: registerDocuments,
		refusals: newRefusalLog(deps.Logger, deps.Clock),
		health:   health.NewServer(), stopping: make(chan struct{}), ready: errors.New("no readiness check has run yet"),
	}, nil
}

// Listen binds the listeners (gRPC, HTTP, admin) and wires the servers;
// afterwards GRPCAddr, HTTPAddr and AdminAddr report the bound addresses
// (useful with port 0).
func (s *Server) Listen() error {
	var lc net.ListenConfig
	grpcLis, err := lc.Listen(context.Background(), "tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	httpLis, err := lc.Listen(context.Background(), "tcp", s.cfg.HTTPAddr)
	if err != nil {
		_ = grpcLis.Close()
		return fmt.Errorf("HTTP listener: %w", err)
	}
	s.grpcLis, s.httpLis = s.secureListeners(grpcLis, httpLis)
	s.grpcServer = s.newGRPCServer()
	err = s.newHTTPServer()
	if err == nil {
		err = s.listenAdmin(&lc)
	}
	if err != nil {
		// Stop ends the server's stream workers, started with it.
		s.grpcServer.Stop()
		_ = grpcLis.Close()
		_ = httpLis.Close()
		return err
	}
	return nil
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

func (s *Server) newGRPCServer() *grpc.Server {
	metrics := newServerMetrics([]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30})
	s.deps.Registry.MustRegister(metrics)
	panicHandler := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		Logger(ctx, s.deps.Logger).Error("panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error")
	})
	admitUnary, admitStream := s.admissionInterceptors()
	unary := []grpc.UnaryServerInterceptor{
		metrics.unaryInterceptor(),
		loggingInterceptor(s.deps.Logger, s.refusals),
		recovery.UnaryServerInterceptor(panicHandler),
		s.accessUnary(), // auth, scopes, quotas: access.go
		deadlineInterceptor(s.cfg.DefaultTimeout, s.cfg.MaxTimeout),
		statusInterceptor(s.deps.Logger), // sees the call's deadline
		admitUnary,                       // inside the edge, which must see its refusals
	}
	// REST calls pass the same interceptors, in process: the same
	// credential check, scopes and quotas as gRPC.
	s.rest = newInprocConn(unary...)
	s.registerServices(s.rest)
	opts := []grpc.ServerOption{
		// Invalid UTF-8 in a request string: INVALID_ARGUMENT naming the
		// field (from validation), not grpc-go's INTERNAL parse error.
		grpc.ForceServerCodecV2(protoutf8.NewServerCodec()),
		grpc.StatsHandler(telemetry.GRPCServerHandler()),
		grpc.MaxRecvMsgSize(s.cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(s.cfg.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(uint32(min(s.cfg.MaxConcurrentStreams, math.MaxUint32))), // #nosec G115 -- clamped to MaxUint32 by min
		streamWorkers(),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(s.keepaliveParams()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(
			metrics.streamInterceptor(),
			streamLoggingInterceptor(s.deps.Logger, s.refusals),
			recovery.StreamServerInterceptor(panicHandler),
			s.accessStream(),
			streamDeadlineInterceptor(s.cfg.StreamTimeout),
			streamStatusInterceptor(s.deps.Logger),
			admitStream,
		),
	}
	srv := grpc.NewServer(opts...)
	s.registerServices(srv)
	// Reflection is served on the admin listener only (admin.go).
	metrics.initialize(srv)
	s.setServing(false, false)
	return srv
}

// registerServices registers the API's services and health on srv.
func (s *Server) registerServices(srv grpc.ServiceRegistrar) {
	colpaliv1.RegisterEmbeddingServiceServer(srv, &embeddingService{cfg: s.cfg, embedder: s.deps.Embedder, quotas: s.deps.Quotas, images: s.images})
	if s.deps.Backends != nil {
		colpaliv1.RegisterBackendServiceServer(srv, &backendService{backends: s.deps.Backends})
	}
	s.registerDocuments(srv)
	healthpb.RegisterHealthServer(srv, s.healthService()) // drain.go
}

// newHTTPServer builds the REST side: grpc-gateway's mux over a client
// connection to our own gRPC services, so that REST calls pass the same
// interceptors (the in-process RegisterXHandlerServer would skip them). The
// connection calls the handlers in process (restconn.go).
func (s *Server) newHTTPServer() error {
	conn := s.rest

	mux := runtime.NewServeMux(
		runtime.WithMiddlewares(restMiddleware(newRESTLimits(s.cfg)), s.restAdmission()),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, restMarshaler{&runtime.JSONPb{
			// Unknown JSON fields are refused, so a misspelt field is a 400
			// naming it rather than a silently ignored option.
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
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
		colpaliv1.RegisterEmbeddingServiceHandlerClient(context.Background(), mux, colpaliv1.NewEmbeddingServiceClient(conn)),
		colpaliv1.RegisterDocumentServiceHandlerClient(context.Background(), mux, colpaliv1.NewDocumentServiceClient(conn)),
	); err != nil {
		return fmt.Errorf("REST handlers: %w", err)
	}
	if s.deps.Backends != nil {
		if err := colpaliv1.RegisterBackendServiceHandlerClient(context.Background(), mux, colpaliv1.NewBackendServiceClient(conn)); err != nil {
			return fmt.Errorf("REST handlers: %w", err)
		}
	}

	root := http.NewServeMux()
	root.Handle("/v1/", instrumentREST(mux, s.deps.Registry))
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
		Handler:           telemetry.HTTPHandler(root, "colpali-gateway"),
		ReadHeaderTimeout: 10 * time.Second,
		// A body must arrive within the longest deadline a call may have,
		// so a slow client cannot hold a connection and its memory longer.
		ReadTimeout: s.cfg.MaxTimeout,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(s.deps.Logger.Handler(), slog.LevelWarn),
	}
	return nil
}

// Serve runs until ctx ends or a server fails, then drains (see drain in
// drain.go): health turns NOT_SERVING, the gateway serves on for
// Config.Drain.Delay, then the HTTP server and the gRPC server finish the
// calls in flight within Config.ShutdownTimeout, and are then stopped hard.
func (s *Server) Serve(ctx context.Context) error {
	if s.grpcServer == nil {
		return errors.New("gateway: Serve called before Listen")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
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
	wg.Go(func() { s.serveAdmin(errc) })
	wg.Go(func() { s.watchReadiness(ctx) })
	s.deps.Logger.Info("gateway serving", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr(), "admin_addr", s.AdminAddr(), "tls", s.deps.TLS != nil)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	cancel()
	s.drain(ctx, serveErr == nil) // drain.go
	s.stopAdmin()
	wg.Wait()
	s.deps.Logger.Info("gateway stopped")
	return serveErr
}
