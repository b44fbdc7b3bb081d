package auth_test

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/auth/jwtauth"
	"github.com/morphik-org/colpali-gateway/quota"
)

// How a program puts the pieces together: the authenticator the mode
// asks for, the auth interceptor after the one that maps error classes
// to statuses, and the quota interceptor after auth (it reads the
// principal). Only the parts a mode needs are built: pass an untyped nil
// for the others (a nil *jwtauth.Verifier in an interface is not nil).
func Example_wiring() {
	ctx := context.Background()
	logger := slog.Default()
	var (
		mode         = auth.ModeKeys // from the -auth flag (auth.Mode is a flag.Value)
		databaseURL  = "postgres://..."
		schema       = "public"
		jwtCfg       jwtauth.Config // from jwtCfg.RegisterFlags(fs)
		quotaCfg     quota.Config
		listenAddrs  = []string{"127.0.0.1:50051", "127.0.0.1:8080"}
		edgeUnary    grpc.UnaryServerInterceptor  // the gateway's class -> status mapping
		edgeStream   grpc.StreamServerInterceptor // idem, for streams
		storeCounter quota.Counter                // the document store, once it has CountTenant
	)

	if mode == auth.ModeNone {
		if err := auth.RequireLoopback(listenAddrs...); err != nil {
			logger.Error("refusing to start", "error", err)
			return
		}
		logger.Warn("authentication is off (-auth none): every call acts as tenant \"default\" with every scope; listening on loopback only")
	}
	var keyAuth, jwtAuth auth.Authenticator
	if mode.Keys() {
		keys, err := apikey.Open(ctx, apikey.Config{URL: databaseURL, Schema: schema}, nil, logger)
		if err != nil {
			return
		}
		defer keys.Close()
		a, err := apikey.NewAuthenticator(keys, apikey.CacheConfig{}, nil)
		if err != nil {
			return
		}
		keyAuth = a
	}
	if mode.JWT() {
		v, err := jwtauth.New(jwtCfg, jwtauth.Deps{Logger: logger})
		if err != nil {
			return
		}
		defer v.Close()
		jwtAuth = v
	}
	authn, err := mode.Build(keyAuth, jwtAuth)
	if err != nil {
		return
	}
	quotas, err := quota.New(quotaCfg, quota.Deps{Registerer: prometheus.DefaultRegisterer, Counter: storeCounter})
	if err != nil {
		return
	}
	ic := auth.NewInterceptor(authn, nil)
	_ = grpc.NewServer(
		grpc.ChainUnaryInterceptor(edgeUnary, ic.Unary(), quotas.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(edgeStream, ic.Stream(), quotas.StreamServerInterceptor()),
	)
}
