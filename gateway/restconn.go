package gateway

import (
	"context"
	"net"
	"sync"
)

// The REST side reaches the gRPC services through a connection of its own,
// in memory: grpc-gateway's mux is a gRPC client of a second grpc.Server
// that has the public server's services and interceptors (newGRPCServer)
// but listens on a memListener. The call still passes every interceptor
// (docs/decisions/0004), without a TCP round trip through the kernel, and
// without the public listener's transport security: the hop never leaves
// the process.

// memTarget is the gRPC target of the in-memory connection; the passthrough
// resolver hands it, unresolved, to memListener.DialContext.
const memTarget = "passthrough:///colpali-gateway-rest"

// memListener is a net.Listener whose connections are in-process pipes,
// made by its DialContext.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	close sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next DialContext.
func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and DialContext; connections made stay open.
func (l *memListener) Close() error {
	l.close.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

// DialContext connects to the listener: it hands one end of a pipe to
// Accept and returns the other.
func (l *memListener) DialContext(ctx context.Context, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

// memAddr is the address of a memListener and its connections.
type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "colpali-gateway-rest" }
