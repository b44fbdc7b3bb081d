package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// restAuthorization is the second copy of the Authorization header that
// grpc-gateway's default header matcher forwards (besides "authorization").
const restAuthorization = "grpcgateway-authorization"

// Interceptor authenticates and authorizes every call of a gRPC server.
// Install Unary and Stream after the interceptor that maps error classes
// to statuses (so that its errors get their codes) and before anything
// that needs the tenant. Its errors are in class Unauthenticated,
// PermissionDenied or (when a credential could not be checked)
// Unavailable.
type Interceptor struct {
	authn   Authenticator
	methods map[string]Scope
	off     bool // Mode "none": no credential is read
}

// NewInterceptor returns an interceptor checking calls with authn against
// methods (MethodScopes when nil).
func NewInterceptor(authn Authenticator, methods map[string]Scope) *Interceptor {
	if methods == nil {
		methods = MethodScopes
	}
	_, off := authn.(noneAuth)
	return &Interceptor{authn: authn, methods: methods, off: off}
}

// Check authenticates the call in ctx (its incoming metadata) for
// fullMethod and returns ctx carrying the principal, with the
// authorization metadata removed (both the gRPC key and the copy
// grpc-gateway adds for REST calls) so that the token travels no further:
// no handler, logger or outgoing call downstream can see it.
func (i *Interceptor) Check(ctx context.Context, fullMethod string) (context.Context, error) {
	need, ok := Required(i.methods, fullMethod)
	if !ok {
		return ctx, errclass.Errorf(errclass.PermissionDenied, "method %s is not open to any scope", fullMethod)
	}
	if need == Public {
		return ctx, nil
	}
	var p Principal
	if i.off {
		p, _ = i.authn.Authenticate(ctx, "")
	} else {
		bearer, err := bearerToken(metadata.ValueFromIncomingContext(ctx, "authorization"))
		if err != nil {
			return ctx, err
		}
		if p, err = i.authn.Authenticate(ctx, bearer); err != nil {
			return ctx, err
		}
	}
	if err := Authorize(i.methods, fullMethod, p); err != nil {
		return ctx, err
	}
	// The metadata is copied (FromIncomingContext returns a copy) only
	// when there is a token to remove: ValueFromIncomingContext looks keys
	// up without copying the rest, which every call would pay for.
	if len(metadata.ValueFromIncomingContext(ctx, "authorization"))+len(metadata.ValueFromIncomingContext(ctx, restAuthorization)) > 0 {
		md, _ := metadata.FromIncomingContext(ctx)
		delete(md, "authorization")
		delete(md, restAuthorization)
		ctx = metadata.NewIncomingContext(ctx, md)
	}
	return NewContext(ctx, p), nil
}

// Unary is the unary server interceptor.
func (i *Interceptor) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := i.Check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Stream is the stream server interceptor.
func (i *Interceptor) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := i.Check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// bearerToken extracts the token from the values of the authorization
// header; errors are Unauthenticated and never quote the values.
func bearerToken(values []string) (string, error) {
	switch {
	case len(values) == 0:
		return "", errclass.Errorf(errclass.Unauthenticated, "missing credential: send the header \"authorization: Bearer <token>\"")
	case len(values) > 1:
		return "", errclass.Errorf(errclass.Unauthenticated, "%d authorization headers: send exactly one", len(values))
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", errclass.Errorf(errclass.Unauthenticated, "malformed authorization header: want \"Bearer <token>\"")
	}
	return token, nil
}

type noneAuth struct{}

func (noneAuth) Authenticate(context.Context, string) (Principal, error) {
	return Principal{Tenant: DefaultTenant, Scopes: slices.Clone(AllScopes), Subject: "anonymous", Kind: KindNone}, nil
}

// LogValue logs a principal as its tenant, subject and kind; never a secret.
func (p Principal) LogValue() slog.Value {
	return slog.GroupValue(slog.String("tenant", p.Tenant), slog.String("subject", p.Subject), slog.String("kind", string(p.Kind)))
}

// RequireHTTP guards a plain HTTP handler (/metrics, /debug/pprof) with
// the same credentials as the gRPC methods: a missing or bad credential
// gets 401 with "WWW-Authenticate: Bearer", one without scope gets 403, a
// credential that could not be checked 503. The principal is in the
// request's context for next.
func RequireHTTP(authn Authenticator, scope Scope, next http.Handler) http.Handler {
	_, off := authn.(noneAuth)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p Principal
		var err error
		if off {
			p, err = authn.Authenticate(r.Context(), "")
		} else {
			var bearer string
			if bearer, err = bearerToken(r.Header.Values("Authorization")); err == nil {
				p, err = authn.Authenticate(r.Context(), bearer)
			}
		}
		if err == nil && !p.Has(scope) {
			err = errclass.Errorf(errclass.PermissionDenied, "%s needs scope %q", r.URL.Path, scope)
		}
		switch {
		case err == nil:
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), p)))
		case errors.Is(err, errclass.Unauthenticated):
			w.Header().Set("WWW-Authenticate", `Bearer realm="colpali-gateway"`)
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case errors.Is(err, errclass.PermissionDenied):
			http.Error(w, err.Error(), http.StatusForbidden)
		default:
			http.Error(w, "could not check the credential; retry later", http.StatusServiceUnavailable)
		}
	})
}
