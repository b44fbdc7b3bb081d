package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/auth/jwtauth"
	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/quota"
	"github.com/morphik-org/colpali-gateway/store"
)

// accessFlags choose who may call the gateway (-auth, -jwt-*) and how much
// each tenant may do (-quota-*).
type accessFlags struct {
	mode  auth.Mode
	jwt   jwtauth.Config
	quota quota.Config
}

func (a *accessFlags) register(fs *flag.FlagSet) {
	a.mode = auth.ModeKeys
	fs.Var(&a.mode, "auth", `credentials accepted: keys (API keys from "gateway keys create"), jwt (-jwt-*), keys+jwt, or none (no authentication: every call is tenant "default" with every scope; loopback listen addresses only, which are then the default)`)
	a.jwt.RegisterFlags(fs)
	a.quota.RegisterFlags(fs)
}

// Loopback listen addresses of -auth none when -grpc-addr and -http-addr
// are not given.
const (
	loopbackGRPCAddr = "127.0.0.1:9090"
	loopbackHTTPAddr = "127.0.0.1:8080"
)

// resolve validates the access flags once the command line is parsed. In
// mode none the listen addresses not given default to loopback, and any
// other is refused: a gateway without authentication is reachable from
// this machine only.
func (a *accessFlags) resolve(given map[string]bool, g *gateway.Config) error {
	var errs []error
	if a.mode == auth.ModeNone {
		if !given["grpc-addr"] {
			g.GRPCAddr = loopbackGRPCAddr
		}
		if !given["http-addr"] {
			g.HTTPAddr = loopbackHTTPAddr
		}
		if err := auth.RequireLoopback(g.GRPCAddr, g.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("-auth none: %w", err))
		}
	}
	// One rule for every numeric flag (package app's doc): given, it must
	// be positive; unset, it is the default, which for the quotas is
	// "unlimited".
	q := &a.quota.Default
	for _, f := range []struct {
		name  string
		value any
		bad   bool
	}{
		{"quota-calls-per-second", q.CallsPerSecond, !(q.CallsPerSecond > 0)},
		{"quota-call-burst", q.CallBurst, q.CallBurst <= 0},
		{"quota-pages-per-second", q.PagesPerSecond, !(q.PagesPerSecond > 0)},
		{"quota-page-burst", q.PageBurst, q.PageBurst <= 0},
		{"quota-max-concurrent", q.MaxConcurrent, q.MaxConcurrent <= 0},
		{"quota-max-documents", q.MaxDocuments, q.MaxDocuments <= 0},
		{"quota-max-pages", q.MaxPages, q.MaxPages <= 0},
		{"quota-busy-retry-delay", a.quota.BusyRetryDelay, a.quota.BusyRetryDelay <= 0},
		{"jwt-leeway", a.jwt.Leeway, a.jwt.Leeway <= 0},
	} {
		if given[f.name] && f.bad {
			errs = append(errs, fmt.Errorf("-%s %v: must be positive (unset: the default)", f.name, f.value))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // the Configs' own checks would repeat these
	}
	if a.mode.JWT() {
		errs = append(errs, flagErrors("-auth "+a.mode.String()+" (-jwt-*)", a.jwt.WithDefaults().Validate()))
	}
	errs = append(errs, flagErrors("-quota-*", a.quota.WithDefaults().Validate()))
	return errors.Join(errs...)
}

// flagErrors names the flags behind each line of err, a Config's joined
// findings that name its fields.
func flagErrors(flags string, err error) error {
	if err == nil {
		return nil
	}
	var errs []error
	for _, line := range strings.Split(err.Error(), "\n") {
		errs = append(errs, fmt.Errorf("%s: %s", flags, line))
	}
	return errors.Join(errs...)
}

// access is what the gateway gets from the access flags.
type access struct {
	authn  auth.Authenticator
	quotas *quota.Quotas
	// close stops what access started (the key store's pool, the JWKS
	// refresh, the keys hint); call it once the gateway has stopped.
	close func()
}

// buildAccess builds the authenticator the mode asks for and the quotas.
// st is the document store, nil when storage is disabled: API keys live
// in its database, and the storage quota counts its documents.
func buildAccess(ctx context.Context, a accessFlags, st *store.Store, reg prometheus.Registerer, logger *slog.Logger) (access, error) {
	var closers []func()
	out := access{close: func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}}
	fail := func(err error) (access, error) { out.close(); return access{}, err }

	if a.mode == auth.ModeNone {
		logger.Warn("authentication is off (-auth none): every call acts as tenant \"default\" with every scope; listening on loopback only. Use -auth keys (the default) anywhere else")
	}
	// An untyped nil for a part the mode does not use: a nil
	// *jwtauth.Verifier in the interface would not be nil.
	var keyAuth, jwtAuth auth.Authenticator
	if a.mode.Keys() {
		if st == nil {
			return fail(fmt.Errorf("-auth %s: API keys are kept in the database, and document storage is disabled: set -database-url (or DATABASE_URL), or run `make install` for the embedded Postgres; for local use without keys, -auth none", a.mode))
		}
		url, schema := st.Database()
		keys, err := apikey.Open(ctx, apikey.Config{URL: url, Schema: schema}, nil, logger)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, keys.Close)
		ka, err := apikey.NewAuthenticator(keys, apikey.CacheConfig{}, nil)
		if err != nil {
			return fail(err)
		}
		keyAuth = ka
		hintCtx, stopHint := context.WithCancel(context.WithoutCancel(ctx))
		var hint sync.WaitGroup
		hint.Go(func() { hintWithoutKeys(hintCtx, st, keys, logger) })
		closers = append(closers, func() { stopHint(); hint.Wait() })
	}
	if a.mode.JWT() {
		v, err := jwtauth.New(a.jwt, jwtauth.Deps{Logger: logger})
		if err != nil {
			return fail(fmt.Errorf("-auth %s: %w", a.mode, err))
		}
		closers = append(closers, v.Close)
		jwtAuth = v
	}
	authn, err := a.mode.Build(keyAuth, jwtAuth)
	if err != nil {
		return fail(err)
	}
	var counter quota.Counter
	if st != nil {
		counter = st
	}
	q, err := quota.New(a.quota, quota.Deps{Counter: counter, Registerer: reg})
	if err != nil {
		return fail(fmt.Errorf("-quota-*: %w", err))
	}
	out.authn, out.quotas = authn, q
	return out, nil
}

// hintWithoutKeys logs how to create a key when the database holds none:
// a gateway in mode keys without keys refuses every call, which is right,
// but the operator should learn why from the log. The key table exists
// once the store's migrations (run in the background) are done, so the
// check is retried until it answers; only while the database answers
// (st.Ping, which logs nothing), so that a database that is down is
// logged once, by the store, and not again here.
func hintWithoutKeys(ctx context.Context, st *store.Store, keys *apikey.Store, logger *slog.Logger) {
	delay := time.Second
	for {
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := st.Ping(checkCtx)
		var recs []apikey.Record
		if err == nil {
			recs, err = keys.List(checkCtx, "")
		}
		cancel()
		if err == nil {
			if len(recs) == 0 {
				logger.Warn("no API keys yet: every call will be refused with UNAUTHENTICATED; create one with `gateway keys create -tenant NAME` (same -database-url or -data-dir as this gateway), or run with -auth none on loopback for local use")
			}
			return
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, 30*time.Second)
	}
}
