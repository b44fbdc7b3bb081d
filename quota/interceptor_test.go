package quota_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/quota"
)

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stream) Context() context.Context { return s.ctx }

func TestInterceptors(t *testing.T) {
	q := newQuotas(t, quota.Config{Default: quota.Limits{MaxConcurrent: 1}}, quota.Deps{})
	unary := q.UnaryServerInterceptor()
	streamI := q.StreamServerInterceptor()
	a := auth.NewContext(context.Background(), auth.Principal{Tenant: "a"})
	info := &grpc.UnaryServerInfo{FullMethod: "/x/Y"}

	// A stream holds the tenant's one slot while it runs; a unary call of
	// the same tenant is refused meanwhile, one without a principal passes.
	err := streamI(nil, stream{ctx: a}, &grpc.StreamServerInfo{}, func(any, grpc.ServerStream) error {
		_, err := unary(a, nil, info, func(context.Context, any) (any, error) { return nil, nil })
		if !errors.Is(err, errclass.Overloaded) {
			t.Errorf("second call during the stream: %v", err)
		}
		_, err = unary(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, nil })
		if err != nil {
			t.Errorf("call without a principal: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// After the stream, the slot is free again.
	if _, err := unary(a, nil, info, func(context.Context, any) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
}
