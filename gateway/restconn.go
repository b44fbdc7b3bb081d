package gateway

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/morphik-org/colpali-gateway/internal/protoutf8"
)

// inprocConn is the REST side's connection to the gRPC services: a
// grpc.ClientConnInterface that calls a registered method's handler in the
// caller's goroutine, through the same unary interceptors as the gRPC
// server's (deadline, request id and logging, metrics, recovery, the error
// edge; docs/decisions/0004). A REST call used to make a second gRPC call
// over loopback TCP: protobuf encoding both ways, HTTP/2 framing, four
// system calls and goroutine hand-offs, measured at a third of a REST
// call's CPU. Here the request and the response are handed over field by
// field (protoreflect, no copy of their bytes), the call's outgoing
// metadata becomes the handler's incoming metadata, and headers the
// handler sets go back through the grpc.Header and grpc.Trailer options
// grpc-gateway passes. The hop never leaves the process, so the public
// listener's transport security has nothing to protect on it.
//
// It implements grpc.ServiceRegistrar so that the services are registered
// on it as on the servers (registerServices). Streaming methods are not
// served: no REST route maps one.
type inprocConn struct {
	unary   grpc.UnaryServerInterceptor
	methods map[string]inprocMethod // by full method name; filled before serving
}

type inprocMethod struct {
	impl    any
	handler grpc.MethodHandler
}

var (
	_ grpc.ClientConnInterface = (*inprocConn)(nil)
	_ grpc.ServiceRegistrar    = (*inprocConn)(nil)
)

// newInprocConn calls handlers through interceptors, the first outermost
// (as grpc.ChainUnaryInterceptor orders them).
func newInprocConn(interceptors ...grpc.UnaryServerInterceptor) *inprocConn {
	return &inprocConn{unary: chainUnary(interceptors), methods: map[string]inprocMethod{}}
}

// RegisterService records desc's unary methods, served by impl.
func (c *inprocConn) RegisterService(desc *grpc.ServiceDesc, impl any) {
	for _, m := range desc.Methods {
		c.methods["/"+desc.ServiceName+"/"+m.MethodName] = inprocMethod{impl: impl, handler: m.Handler}
	}
}

// restUTF8Check refuses invalid UTF-8 in what grpc-gateway parsed from a
// path or query parameter, as the loopback connection's client interceptor
// did before marshalling (proto3 cannot carry it; record 0009).
var restUTF8Check = protoutf8.UnaryClientInterceptor()

// Invoke runs method with args and fills reply.
func (c *inprocConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return restUTF8Check(ctx, method, args, reply, nil, func(ctx context.Context, method string, args, reply any, _ *grpc.ClientConn, opts ...grpc.CallOption) error {
		return c.invoke(ctx, method, args, reply, opts)
	}, opts...)
}

func (c *inprocConn) invoke(ctx context.Context, method string, args, reply any, opts []grpc.CallOption) error {
	m, ok := c.methods[method]
	if !ok {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	in, ok1 := args.(proto.Message)
	out, ok2 := reply.(proto.Message)
	if !ok1 || !ok2 {
		return status.Errorf(codes.Internal, "method %s: %T and %T are not protobuf messages", method, args, reply)
	}
	// The handler sees what a gRPC server's would: the caller's metadata
	// as incoming, none outgoing (grpc-gateway's must not travel on to
	// Triton), a peer, and a stream to set headers on.
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewOutgoingContext(metadata.NewIncomingContext(ctx, md), nil)
	ctx = peer.NewContext(ctx, &peer.Peer{Addr: inprocAddr{}, LocalAddr: inprocAddr{}})
	st := &inprocStream{method: method}
	ctx = grpc.NewContextWithServerTransportStream(ctx, st)

	resp, err := m.handler(m.impl, ctx, func(v any) error {
		dst, ok := v.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "method %s: %T is not a protobuf message", method, v)
		}
		handOver(dst, in)
		return nil
	}, c.unary)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = st.headerMD()
		case grpc.TrailerCallOption:
			*o.TrailerAddr = st.trailerMD()
		}
	}
	if err != nil {
		// As grpc-go's server does with an error that is not a status.
		if _, ok := status.FromError(err); !ok {
			return status.FromContextError(err).Err()
		}
		return err
	}
	if r, ok := resp.(proto.Message); ok && r != nil {
		handOver(out, r)
	}
	return nil
}

// NewStream is not supported: no REST route maps a streaming method.
func (c *inprocConn) NewStream(_ context.Context, _ *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Errorf(codes.Unimplemented, "streaming method %s is not served over REST", method)
}

// handOver sets dst's populated fields to src's values, sharing their
// memory (a list, a map, a message or bytes is not copied): src is not used
// again by the side that hands it over.
func handOver(dst, src proto.Message) {
	d := dst.ProtoReflect()
	src.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		d.Set(fd, v)
		return true
	})
}

// chainUnary composes interceptors into one, the first outermost.
func chainUnary(interceptors []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return chainFrom(interceptors, 0, info, handler)(ctx, req)
	}
}

func chainFrom(interceptors []grpc.UnaryServerInterceptor, i int, info *grpc.UnaryServerInfo, final grpc.UnaryHandler) grpc.UnaryHandler {
	if i == len(interceptors) {
		return final
	}
	return func(ctx context.Context, req any) (any, error) {
		return interceptors[i](ctx, req, info, chainFrom(interceptors, i+1, info, final))
	}
}

// inprocStream is the grpc.ServerTransportStream of an in-process call: it
// keeps the headers and trailers the handler sets.
type inprocStream struct {
	method string
	mu     sync.Mutex
	header metadata.MD
	trail  metadata.MD
}

func (s *inprocStream) Method() string { return s.method }

func (s *inprocStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *inprocStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }

func (s *inprocStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trail = metadata.Join(s.trail, md)
	return nil
}

func (s *inprocStream) headerMD() metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.header
}

func (s *inprocStream) trailerMD() metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trail
}

// inprocAddr is the peer address of an in-process call.
type inprocAddr struct{}

func (inprocAddr) Network() string { return "inproc" }
func (inprocAddr) String() string  { return "colpali-gateway-rest" }
