package gateway

import (
	"context"
	"crypto/tls"
	"net"

	"google.golang.org/grpc/test/bufconn"
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
// The TLS layer sits under the servers rather than in grpc.Creds: the
// in-process hop of the REST side (see inProcess) then reaches the same
// grpc.Server without TLS, which a server-wide credential would refuse.
// The handshake runs on the connection's own goroutine, on its first read,
// within grpc-go's connection timeout and http.Server's ReadHeaderTimeout.
func (s *Server) secureListeners(grpcLis, httpLis net.Listener) (net.Listener, net.Listener) {
	if s.deps.TLS == nil {
		return grpcLis, httpLis
	}
	return tls.NewListener(grpcLis, s.deps.TLS.ServerConfig("h2")),
		tls.NewListener(httpLis, s.deps.TLS.ServerConfig("h2", "http/1.1"))
}

// inProcessBuffer is the in-process connection's buffer per direction.
const inProcessBuffer = 1 << 20

// inProcessTarget is the REST side's dial target; the dialer ignores it.
const inProcessTarget = "passthrough:///in-process"

// inProcess is the listener of the REST side's hop to the gRPC server: an
// in-memory connection (bufconn) rather than a dial to the public gRPC
// port. It works whatever the public port asks of its clients (TLS, a
// client certificate, an address that is not reachable from the host
// itself), costs no TCP stack, and cannot be reached from outside the
// process, so it opens no door past TLS. Every REST call still passes the
// gRPC server's interceptors (auth included: grpc-gateway forwards the
// Authorization header as metadata).
func newInProcess() *bufconn.Listener { return bufconn.Listen(inProcessBuffer) }

// dialInProcess is the grpc.WithContextDialer function of the hop.
func (s *Server) dialInProcess(ctx context.Context, _ string) (net.Conn, error) {
	return s.inproc.DialContext(ctx)
}
