package gateway

import (
	"crypto/tls"
	"net"
)

// TLS is where the public listeners get their certificate and, for mutual
// TLS, their client CA bundle; *tlsreload.Reloader implements it, and
// re-reads the files when they change.
type TLS interface {
	// ServerConfig is the tls.Config of a listener offering nextProtos
	// (ALPN).
	ServerConfig(nextProtos ...string) *tls.Config
}

// secureListeners wraps the public listeners in TLS when Deps.TLS is set.
// The TLS layer sits under the servers rather than in grpc.Creds: one
// reloading tls.Config serves the gRPC, HTTP and admin listeners alike. The
// REST side never dials the public port: it calls the services in process
// (restconn.go), whatever TLS the listeners ask of clients.
// The handshake runs on the connection's own goroutine, on its first read,
// within grpc-go's connection timeout and http.Server's ReadHeaderTimeout.
func (s *Server) secureListeners(grpcLis, httpLis net.Listener) (net.Listener, net.Listener) {
	if s.deps.TLS == nil {
		return grpcLis, httpLis
	}
	return tls.NewListener(grpcLis, s.deps.TLS.ServerConfig("h2")),
		tls.NewListener(httpLis, s.deps.TLS.ServerConfig("h2", "http/1.1"))
}
