package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof" // #nosec G108 -- the handlers are mounted on the admin listener's own mux (loopback by default), never on http.DefaultServeMux, which nothing serves
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// The admin listener (Config.AdminAddr, loopback by default) serves what an
// operator needs and a tenant must not reach: /metrics, /debug/pprof/*, and,
// on the same port over HTTP/2, gRPC server reflection, the BackendService
// and gRPC health. The public listeners keep the API, /openapi.json and
// health. It takes the public listeners' TLS when that is on, so that no
// listener is left in clear text.

// adminMux is the admin listener's handler: gRPC (HTTP/2 with a gRPC
// content type) goes to grpcSrv, the rest to the HTTP routes.
func (s *Server) adminHandler(grpcSrv *grpc.Server) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.deps.Registry, promhttp.HandlerOpts{Registry: s.deps.Registry}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			grpcSrv.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// newAdminGRPC is the admin listener's gRPC server. Its reflection
// describes the public server's services (the API a client calls), plus
// its own.
func (s *Server) newAdminGRPC() *grpc.Server {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(loggingInterceptor(s.deps.Logger, s.refusals)),
		grpc.ChainStreamInterceptor(streamLoggingInterceptor(s.deps.Logger, s.refusals)),
	)
	if s.deps.Backends != nil {
		colpaliv1.RegisterBackendServiceServer(srv, &backendService{backends: s.deps.Backends})
	}
	healthpb.RegisterHealthServer(srv, s.health)
	opts := reflection.ServerOptions{Services: s.grpcServer}
	v1reflectiongrpc.RegisterServerReflectionServer(srv, reflection.NewServerV1(opts))
	v1alphareflectiongrpc.RegisterServerReflectionServer(srv, reflection.NewServer(opts))
	return srv
}

// listenAdmin binds the admin listener and builds its servers; it runs
// after the public gRPC server exists (reflection describes it).
func (s *Server) listenAdmin(lc *net.ListenConfig) error {
	lis, err := lc.Listen(context.Background(), "tcp", s.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	s.adminGRPC = s.newAdminGRPC()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if s.deps.TLS != nil {
		lis = tls.NewListener(lis, s.deps.TLS.ServerConfig("h2", "http/1.1"))
		protocols.SetHTTP2(true)
	} else {
		// gRPC in clear text needs HTTP/2 without TLS ("h2c").
		protocols.SetUnencryptedHTTP2(true)
	}
	s.adminLis = lis
	s.adminServer = &http.Server{
		Handler:           s.adminHandler(s.adminGRPC),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: a CPU profile or trace streams for as long as
		// its ?seconds= asks.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(s.deps.Logger.Handler(), slog.LevelWarn),
	}
	return nil
}

// AdminAddr is the bound admin address.
func (s *Server) AdminAddr() string { return s.adminLis.Addr().String() }

// serveAdmin runs the admin server until stopAdmin; a failure is sent on
// errc.
func (s *Server) serveAdmin(errc chan<- error) {
	if err := s.adminServer.Serve(s.adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errc <- fmt.Errorf("admin server: %w", err)
	}
}

// adminStopTimeout bounds the admin listener's own shutdown: a scrape or a
// profile in progress may finish within it.
const adminStopTimeout = 5 * time.Second

// stopAdmin stops the admin listener. It runs after the drain, so that
// metrics and profiles stay available while the calls in flight finish.
func (s *Server) stopAdmin() {
	ctx, cancel := context.WithTimeout(context.Background(), adminStopTimeout)
	defer cancel()
	if err := s.adminServer.Shutdown(ctx); err != nil {
		_ = s.adminServer.Close()
	}
	s.adminGRPC.Stop()
}
