package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Scope is a permission a credential grants.
type Scope string

// The scopes a credential can hold.
const (
	// ScopeEmbed: EmbedQueries and EmbedImages.
	ScopeEmbed Scope = "embed"
	// ScopeDocumentsRead: GetDocument, ListDocuments and Search.
	ScopeDocumentsRead Scope = "documents:read"
	// ScopeDocumentsWrite: IngestDocument, IngestDocumentStream and
	// DeleteDocument.
	ScopeDocumentsWrite Scope = "documents:write"
	// ScopeAdmin: ListBackends, reflection, key management, metrics and
	// the debug endpoints.
	ScopeAdmin Scope = "admin"
)

// AllScopes lists every scope a credential can hold, in a fixed order.
var AllScopes = []Scope{ScopeEmbed, ScopeDocumentsRead, ScopeDocumentsWrite, ScopeAdmin}

// ParseScopes parses a comma- or space-separated list of scopes ("embed,
// documents:read"). Unknown scopes are an error naming them; duplicates are
// dropped; the result is in AllScopes order.
func ParseScopes(s string) ([]Scope, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	return ScopesOf(fields)
}

// ScopesOf turns names into scopes; unknown names are an error naming them.
func ScopesOf(names []string) ([]Scope, error) {
	var unknown []string
	have := map[Scope]bool{}
	for _, n := range names {
		sc := Scope(strings.TrimSpace(n))
		if !slices.Contains(AllScopes, sc) {
			unknown = append(unknown, n)
			continue
		}
		have[sc] = true
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown scopes %q: want some of %v", unknown, AllScopes)
	}
	var out []Scope
	for _, sc := range AllScopes {
		if have[sc] {
			out = append(out, sc)
		}
	}
	return out, nil
}

// Kind says how a principal was authenticated.
type Kind string

// The kinds of principal.
const (
	KindAPIKey Kind = "api_key"
	KindJWT    Kind = "jwt"
	// KindNone: auth is off (Mode "none").
	KindNone Kind = "none"
)

// Principal is the authenticated caller.
type Principal struct {
	// Tenant owns every resource the call reads or writes.
	Tenant string
	// Scopes are what the credential allows.
	Scopes []Scope
	// Subject names the credential for logs and audit, never the secret:
	// an API key's prefix, or a JWT's "sub" claim.
	Subject string
	Kind    Kind
}

// Has reports whether p holds scope.
func (p Principal) Has(scope Scope) bool { return slices.Contains(p.Scopes, scope) }

// DefaultTenant is the tenant of every call in Mode "none".
const DefaultTenant = "default"

// MaxTenantLen bounds a tenant name.
const MaxTenantLen = 64

// ValidateTenant checks a tenant name: 1 to MaxTenantLen characters of
// [A-Za-z0-9._-], starting with a letter or digit. Tenant names end up in
// logs, metrics labels and database keys, so they are kept plain.
func ValidateTenant(t string) error {
	if t == "" || len(t) > MaxTenantLen {
		return fmt.Errorf("tenant: want 1 to %d characters, got %d", MaxTenantLen, len(t))
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("tenant %q: want [A-Za-z0-9._-] starting with a letter or digit", t)
		}
	}
	return nil
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the interceptors put in ctx. ok is
// false when there is none: a handler reached without the interceptors,
// which should fail rather than guess a tenant.
func FromContext(ctx context.Context) (p Principal, ok bool) {
	p, ok = ctx.Value(principalKey{}).(Principal)
	return p, ok
}
