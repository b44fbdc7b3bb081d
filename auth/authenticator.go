package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Authenticator turns a bearer token into a principal.
//
// Authenticate returns an error in class errclass.Unauthenticated when the
// token is bad (unknown, revoked, expired, badly signed...), wrapping
// ErrUnrecognized when the token is not of its kind at all (a JWT given to
// the API key authenticator) so that a Chain can try the next one. A
// failure to check (the database or the JWKS endpoint down) is in class
// Unavailable instead: the caller may retry, and must not be told that its
// credential is bad. Messages never contain the token.
type Authenticator interface {
	Authenticate(ctx context.Context, bearer string) (Principal, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, bearer string) (Principal, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, bearer string) (Principal, error) {
	return f(ctx, bearer)
}

// ErrUnrecognized: the token is not of the form this authenticator
// handles. Authenticators return it wrapped in class Unauthenticated.
var ErrUnrecognized = errors.New("credential not recognized")

// Chain tries each authenticator in turn and returns the first answer that
// is not ErrUnrecognized. Because API keys and JWTs have disjoint forms,
// at most one of them claims a token, and its error (a bad signature, an
// expired key) is the one the caller sees.
func Chain(as ...Authenticator) Authenticator {
	return AuthenticatorFunc(func(ctx context.Context, bearer string) (Principal, error) {
		for _, a := range as {
			p, err := a.Authenticate(ctx, bearer)
			if !errors.Is(err, ErrUnrecognized) {
				return p, err
			}
		}
		return Principal{}, errclass.Wrap(errclass.Unauthenticated, fmt.Errorf("%w: the bearer token is not of a form this server accepts", ErrUnrecognized))
	})
}

// None is the authenticator of Mode "none": every call, with or without a
// token, is tenant DefaultTenant with every scope. Use it only on loopback
// listeners (RequireLoopback).
func None() Authenticator { return noneAuth{} }

// Mode says which credentials the gateway accepts. It implements
// flag.Value for an "-auth" flag; the zero value is ModeKeys.
type Mode string

// The modes.
const (
	ModeKeys    Mode = "keys"
	ModeJWT     Mode = "jwt"
	ModeKeysJWT Mode = "keys+jwt"
	// ModeNone: no authentication; loopback listeners only.
	ModeNone Mode = "none"
)

var modes = []Mode{ModeKeys, ModeJWT, ModeKeysJWT, ModeNone}

// ParseMode parses a mode name; "" is ModeKeys.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeKeys, nil
	}
	for _, m := range modes {
		if string(m) == strings.ToLower(strings.TrimSpace(s)) {
			return m, nil
		}
	}
	return "", fmt.Errorf("auth mode %q: want one of %v", s, modes)
}

// String returns the mode's name; the zero value prints as "keys".
func (m Mode) String() string {
	if m == "" {
		return string(ModeKeys)
	}
	return string(m)
}

// Set parses s into m (flag.Value).
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Keys reports whether m accepts API keys.
func (m Mode) Keys() bool { return m == "" || m == ModeKeys || m == ModeKeysJWT }

// JWT reports whether m accepts JWTs.
func (m Mode) JWT() bool { return m == ModeJWT || m == ModeKeysJWT }

// Build returns the authenticator for m: None for ModeNone, otherwise a
// Chain of keys and jwt as the mode accepts them. It is an error to pass
// nil for one the mode needs; the one it does not need is ignored.
func (m Mode) Build(keys, jwt Authenticator) (Authenticator, error) {
	if m == ModeNone {
		return None(), nil
	}
	var chain []Authenticator
	if m.Keys() {
		if keys == nil {
			return nil, fmt.Errorf("auth mode %s: needs the API key store (a database)", m)
		}
		chain = append(chain, keys)
	}
	if m.JWT() {
		if jwt == nil {
			return nil, fmt.Errorf("auth mode %s: needs a JWT verifier (-jwt-jwks-url)", m)
		}
		chain = append(chain, jwt)
	}
	return Chain(chain...), nil
}
