package quota

import (
	"context"

	"google.golang.org/grpc"

	"github.com/morphik-org/colpali-gateway/auth"
)

// UnaryServerInterceptor admits each call of an authenticated principal
// (Admit) and releases it when the handler returns. Install it after the
// auth interceptor; calls without a principal (health checks) pass.
func (q *Quotas) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		p, ok := auth.FromContext(ctx)
		if !ok {
			return handler(ctx, req)
		}
		release, err := q.Admit(p)
		if err != nil {
			return nil, err
		}
		defer release()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams: a stream
// holds its concurrency slot until it ends.
func (q *Quotas) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		p, ok := auth.FromContext(ss.Context())
		if !ok {
			return handler(srv, ss)
		}
		release, err := q.Admit(p)
		if err != nil {
			return err
		}
		defer release()
		return handler(srv, ss)
	}
}
