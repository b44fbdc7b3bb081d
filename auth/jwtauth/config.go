// Package jwtauth verifies JSON Web Tokens from an identity provider
// against its JWKS endpoint, as an auth.Authenticator: the tenant and the
// scopes come from claims named by configuration.
//
// Only asymmetric algorithms are accepted (RS256, ES256, EdDSA by
// default): "alg": "none" and the HMAC family are refused before any key
// is looked at, so a token signed with HS256 using the provider's public
// key as the secret (the RS/HS confusion) cannot pass. exp is required;
// exp, nbf and iat are checked with a small leeway; iss and aud must
// match. Signing keys are fetched from the JWKS URL at start, refreshed
// periodically, and refetched when a token names an unknown kid (at most
// once per Config.UnknownKIDInterval, so that forged kids cannot make the
// gateway hammer the provider).
package jwtauth

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Config configures a Verifier. Zero fields take the documented defaults.
type Config struct {
	// JWKSURL is the provider's JSON Web Key Set. Required; https, or
	// http to a loopback address (tests, a local provider).
	JWKSURL string
	// Issuer must equal the token's "iss". Required.
	Issuer string
	// Audience must be among the token's "aud". Required: without it a
	// token the provider issued for another service would be accepted.
	Audience string
	// TenantClaim names the claim holding the tenant. Default "tenant".
	TenantClaim string
	// ScopesClaim names the claim holding the scopes: a string of
	// space- or comma-separated names (OAuth's "scope") or an array of
	// strings. Scopes this gateway does not know are ignored. Default
	// "scope".
	ScopesClaim string
	// Algorithms accepted. Default RS256, ES256, EdDSA; only asymmetric
	// ones may be listed.
	Algorithms []string
	// Leeway allowed on exp, nbf and iat for clock skew. Default 30s,
	// at most 5m.
	Leeway time.Duration
	// RefreshInterval: how often the key set is refetched. Default 15m.
	RefreshInterval time.Duration
	// UnknownKIDInterval: the least time between two refetches caused by
	// an unknown kid. Default 1m.
	UnknownKIDInterval time.Duration
	// FetchTimeout bounds one fetch of the key set. Default 5s.
	FetchTimeout time.Duration
}

// asymmetric are the algorithms a Config may list.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.TenantClaim = cmp.Or(c.TenantClaim, "tenant")
	c.ScopesClaim = cmp.Or(c.ScopesClaim, "scope")
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{"RS256", "ES256", "EdDSA"}
	}
	c.Leeway = cmp.Or(c.Leeway, 30*time.Second)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, 15*time.Minute)
	c.UnknownKIDInterval = cmp.Or(c.UnknownKIDInterval, time.Minute)
	c.FetchTimeout = cmp.Or(c.FetchTimeout, 5*time.Second)
	return c
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if err := checkURL(c.JWKSURL); err != nil {
		errs = append(errs, err)
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("jwt issuer: required"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("jwt audience: required (without it a token issued for another service would pass)"))
	}
	for _, a := range c.Algorithms {
		if !slices.Contains(asymmetric, a) {
			errs = append(errs, fmt.Errorf("jwt algorithms: %q: want some of %v (none and HS* are refused)", a, asymmetric))
		}
	}
	if c.Leeway < 0 || c.Leeway > 5*time.Minute {
		errs = append(errs, fmt.Errorf("jwt leeway %v: must be in [0, 5m]", c.Leeway))
	}
	if c.RefreshInterval < time.Second {
		errs = append(errs, fmt.Errorf("jwt refresh interval %v: must be at least 1s", c.RefreshInterval))
	}
	if c.UnknownKIDInterval <= 0 {
		errs = append(errs, fmt.Errorf("jwt unknown-kid interval %v: must be positive", c.UnknownKIDInterval))
	}
	if c.FetchTimeout <= 0 {
		errs = append(errs, fmt.Errorf("jwt fetch timeout %v: must be positive", c.FetchTimeout))
	}
	if c.TenantClaim == "" || c.ScopesClaim == "" {
		errs = append(errs, errors.New("jwt tenant and scopes claims: must be named"))
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	if s == "" {
		return errors.New("jwt jwks url: required")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("jwt jwks url %q: want an absolute http(s) URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("jwt jwks url %q: http only to a loopback host; use https", s)
	}
	return fmt.Errorf("jwt jwks url %q: want https", s)
}

// RegisterFlags adds the -jwt-* flags to fs, writing into c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.JWKSURL, "jwt-jwks-url", c.JWKSURL, "JWKS URL of the identity provider (auth modes jwt and keys+jwt)")
	fs.StringVar(&c.Issuer, "jwt-issuer", c.Issuer, `required "iss" of tokens`)
	fs.StringVar(&c.Audience, "jwt-audience", c.Audience, `required "aud" of tokens`)
	fs.StringVar(&c.TenantClaim, "jwt-tenant-claim", cmp.Or(c.TenantClaim, "tenant"), "claim naming the tenant")
	fs.StringVar(&c.ScopesClaim, "jwt-scopes-claim", cmp.Or(c.ScopesClaim, "scope"), "claim holding the scopes (space-separated string or array)")
	fs.Func("jwt-algorithms", "comma-separated accepted algorithms (default RS256,ES256,EdDSA)", func(s string) error {
		c.Algorithms = strings.Split(s, ",")
		return nil
	})
	fs.DurationVar(&c.Leeway, "jwt-leeway", cmp.Or(c.Leeway, 30*time.Second), "clock skew allowed on exp, nbf, iat")
}
