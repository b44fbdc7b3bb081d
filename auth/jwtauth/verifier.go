package jwtauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// MaxTokenBytes bounds a token: parsing is cheap, but not free, and real
// tokens are a few hundred bytes to a few kilobytes.
const MaxTokenBytes = 8 << 10

// Deps are a Verifier's collaborators; all optional.
type Deps struct {
	// HTTPClient fetches the key set. Default: a client with the fetch
	// timeout.
	HTTPClient *http.Client
	// Now is the clock for exp, nbf and iat. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Verifier is an auth.Authenticator for JWTs. Close stops its refreshes.
type Verifier struct {
	cfg    Config
	keys   keyfunc.Keyfunc
	parser *jwt.Parser
	cancel context.CancelFunc
}

var _ auth.Authenticator = (*Verifier)(nil)

// New fetches the key set and returns a Verifier. A provider that cannot
// be reached at start is no error (it is logged, and retried on the
// refresh schedule and on the first token): tokens are refused as
// Unavailable until keys arrive, and API keys keep working meanwhile.
func New(cfg Config, deps Deps) (*Verifier, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "jwtauth")
	client := deps.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.FetchTimeout}
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	noErrorOnFirstFetch := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:                    client,
		HTTPTimeout:               cfg.FetchTimeout,
		NoErrorReturnFirstHTTPReq: &noErrorOnFirstFetch,
		RefreshInterval:           cfg.RefreshInterval,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(cfg.UnknownKIDInterval), 1),
		// A token with an unknown kid waits at most this long for the
		// limiter (and the fetch): when the next refetch is further
		// away it is refused at once instead of queueing.
		RateLimitWaitMax: cfg.FetchTimeout,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				logger.Warn("fetching the JWKS failed", "url", u, "error", err)
			}
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwtauth: %w", err)
	}
	return &Verifier{
		cfg:  cfg,
		keys: kf,
		parser: jwt.NewParser(
			jwt.WithValidMethods(cfg.Algorithms),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(cfg.Leeway),
			jwt.WithTimeFunc(now),
		),
		cancel: cancel,
	}, nil
}

// Close stops the periodic refresh.
func (v *Verifier) Close() { v.cancel() }

// looksLikeJWT: three dot-separated base64url parts (a JWS in compact
// form). Anything else is left to the chain's other authenticators.
func looksLikeJWT(s string) bool {
	if strings.Count(s, ".") != 2 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '.' || c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Authenticate implements auth.Authenticator.
func (v *Verifier) Authenticate(ctx context.Context, bearer string) (auth.Principal, error) {
	if !looksLikeJWT(bearer) {
		return auth.Principal{}, errclass.Wrap(errclass.Unauthenticated, fmt.Errorf("%w: not a JWT", auth.ErrUnrecognized))
	}
	if len(bearer) > MaxTokenBytes {
		return auth.Principal{}, errclass.Errorf(errclass.Unauthenticated, "JWT of %d bytes: at most %d", len(bearer), MaxTokenBytes)
	}
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(bearer, claims, v.keys.KeyfuncCtx(ctx))
	if err != nil {
		return auth.Principal{}, v.reject(ctx, err)
	}
	tenant, _ := claims[v.cfg.TenantClaim].(string)
	if err := auth.ValidateTenant(tenant); err != nil {
		return auth.Principal{}, errclass.Errorf(errclass.Unauthenticated, "JWT claim %q: %v", v.cfg.TenantClaim, err)
	}
	sub, _ := claims["sub"].(string)
	return auth.Principal{Tenant: tenant, Scopes: scopesOf(claims[v.cfg.ScopesClaim]), Subject: sub, Kind: auth.KindJWT}, nil
}

// reject names why a token failed, in the caller's terms.
func (v *Verifier) reject(ctx context.Context, err error) error {
	var reason string
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		reason = "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		reason = "bad signature or an algorithm not accepted (want one of " + strings.Join(v.cfg.Algorithms, ", ") + ")"
	case errors.Is(err, jwt.ErrTokenExpired):
		reason = "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		reason = "not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		reason = "issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		reason = fmt.Sprintf("audience is not %q", v.cfg.Audience)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		reason = fmt.Sprintf("issuer is not %q", v.cfg.Issuer)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		reason = "a required claim (exp) is missing"
	case errors.Is(err, jwkset.ErrKeyNotFound):
		if all, rerr := v.keys.Storage().KeyReadAll(ctx); rerr == nil && len(all) == 0 {
			// Nothing was ever fetched: the provider is down, not the token bad.
			return errclass.Errorf(errclass.Unavailable, "JWT: no signing keys fetched from the JWKS URL yet; retry later")
		}
		reason = "signed by an unknown key (kid)"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		reason = "cannot be verified with the provider's keys"
	default:
		reason = "invalid"
	}
	return errclass.Errorf(errclass.Unauthenticated, "JWT rejected: %s", reason)
}

// scopesOf reads a scopes claim: a string of space- or comma-separated
// names, or an array of strings. Names this gateway does not know (an
// identity provider adds "openid", "profile"...) are dropped.
func scopesOf(claim any) []auth.Scope {
	var names []string
	switch c := claim.(type) {
	case string:
		names = strings.FieldsFunc(c, func(r rune) bool { return r == ' ' || r == ',' })
	case []any:
		for _, x := range c {
			if s, ok := x.(string); ok {
				names = append(names, s)
			}
		}
	}
	var known []string
	for _, n := range names {
		if _, err := auth.ScopesOf([]string{n}); err == nil {
			known = append(known, n)
		}
	}
	scopes, _ := auth.ScopesOf(known)
	return scopes
}
