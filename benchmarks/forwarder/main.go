// Command forwarder is the floor of one Go gRPC hop on the machine at hand,
// for benchmarks/overhead.sh: a gRPC server that forwards every unary call,
// whatever its method, to one upstream over one client connection, passing
// the message bytes through undecoded. No interceptors, no stats handlers,
// no logging, no metrics. The gateway's CPU per call is measured beside
// this one's, in front of the same simulator.
//
// Usage:
//
//	forwarder -listen 127.0.0.1:0 -upstream 127.0.0.1:8001
//
// It prints "forwarder listening on ADDR" once serving, and stops on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("forwarder", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to serve on")
	upstream := fs.String("upstream", "", "upstream gRPC `address` (host:port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *upstream == "" {
		return fmt.Errorf("-upstream is required")
	}
	conn, err := grpc.NewClient(*upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(256<<20),
		grpc.MaxSendMsgSize(256<<20),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			method, _ := grpc.MethodFromServerStream(stream)
			var in, out []byte
			if err := stream.RecvMsg(&in); err != nil {
				return err
			}
			// The caller's deadline travels on (grpc-timeout); an
			// upstream error's status goes back as it is.
			if err := conn.Invoke(stream.Context(), method, &in, &out); err != nil {
				return err
			}
			return stream.SendMsg(&out)
		}),
	)
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	fmt.Printf("forwarder listening on %s\n", lis.Addr())
	return srv.Serve(lis)
}

// rawCodec passes message bytes through: a message is a *[]byte.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	// grpc-go may reuse data's buffer once Unmarshal returns.
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
