package gateway

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/quota"
)

// Access control: who is calling (package auth), whether the credential
// allows the method (auth.MethodScopes), and whether its tenant is within
// its quotas (package quota). One interceptor does the three, in that
// order, after logging and recovery and before the deadline: a call
// refused here costs no deadline timer, no validation and no backend
// time, and its log line still carries its code.
//
// The edge (statusInterceptor) stays innermost, where it sees the
// deadline the call was given; this interceptor runs outside it, so it
// maps its own refusals with the same toStatus, and passes the handler's
// statuses through untouched.

// accessUnary is the access interceptor for unary calls.
func (s *Server) accessUnary() grpc.UnaryServerInterceptor {
	check := auth.NewInterceptor(s.deps.Authenticator, nil)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, release, err := s.admit(ctx, check, info.FullMethod)
		if err != nil {
			return nil, toStatus(ctx, s.deps.Logger, err)
		}
		defer release()
		return handler(ctx, req)
	}
}

// accessStream is accessUnary for streaming calls: a stream holds its
// tenant's concurrency slot until it ends.
func (s *Server) accessStream() grpc.StreamServerInterceptor {
	check := auth.NewInterceptor(s.deps.Authenticator, nil)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, release, err := s.admit(ss.Context(), check, info.FullMethod)
		if err != nil {
			return toStatus(ctx, s.deps.Logger, err)
		}
		defer release()
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	}
}

// admit authenticates and authorizes the call in ctx, and admits it under
// its principal's quotas. It returns ctx carrying the principal (and a
// request logger naming it, never the credential), and release, to call
// once the call ends. A method open to all (health) carries no principal
// and draws on no quota.
func (s *Server) admit(ctx context.Context, check *auth.Interceptor, method string) (context.Context, func(), error) {
	ctx, err := check.Check(ctx, method)
	if err != nil {
		return ctx, nil, err
	}
	p, ok := auth.FromContext(ctx)
	if !ok {
		return ctx, func() {}, nil
	}
	addLogAttrs(ctx, slog.String("tenant", p.Tenant), slog.String("subject", p.Subject))
	if s.deps.Quotas == nil {
		return ctx, func() {}, nil
	}
	release, err := s.deps.Quotas.Admit(p)
	if err != nil {
		Logger(ctx, s.deps.Logger).Debug("call refused by quota", "error", err.Error())
		return ctx, nil, err
	}
	return ctx, release, nil
}

// tenantOf is the tenant a call acts for: its principal's, which the
// access interceptor put in ctx. Without one the call did not pass the
// interceptor, a wiring error: it fails (Internal) rather than guess a
// tenant.
func tenantOf(ctx context.Context) (string, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return "", errclass.Errorf(errclass.Internal, "gateway: no principal in the call's context (the access interceptor did not run)")
	}
	return p.Tenant, nil
}

// chargePages counts n pages of the caller against its page rate; with
// no quotas (q nil) nothing is limited.
func chargePages(ctx context.Context, q *quota.Quotas, n int) error {
	if q == nil {
		return nil
	}
	p, ok := auth.FromContext(ctx)
	if !ok {
		return errclass.Errorf(errclass.Internal, "gateway: no principal in the call's context (the access interceptor did not run)")
	}
	return q.Pages(p, n)
}

// storageCheck returns the ingest.Document.Check of an ingestion of pages
// pages for tenant: the tenant's storage quota, checked once the pending
// document is begun and before any page is embedded. Nil without quotas.
func storageCheck(q *quota.Quotas, tenant string, pages int) func(context.Context) error {
	if q == nil {
		return nil
	}
	return func(ctx context.Context) error { return q.CheckStorage(ctx, tenant, 1, int64(pages)) }
}
