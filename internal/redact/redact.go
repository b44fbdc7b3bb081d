// Package redact keeps secrets out of logs: the password of a database
// URL, and the credentials among request metadata. Whatever is logged
// that may carry one goes through here first.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces a secret in what is logged.
const Mask = "xxxxx"

// dsnPassword matches password=... in a key=value connection string
// (quoted or not).
var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// URL returns a database URL or key=value connection string with its
// password masked: postgres://user:xxxxx@host/db. A URL that cannot be
// parsed is not shown at all, since where its password is cannot be told.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	if !strings.Contains(raw, "://") {
		return dsnPassword.ReplaceAllString(raw, "${1}"+Mask)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that cannot be parsed; not shown)"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), Mask)
	}
	q := u.Query()
	for k := range q {
		if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
			q.Set(k, Mask)
		}
	}
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// credentialKeys are metadata keys (lower case, as gRPC metadata and
// grpc-gateway's forwarded headers have them) that carry credentials.
var credentialKeys = map[string]bool{
	"authorization":       true,
	"proxy-authorization": true,
	"cookie":              true,
	"set-cookie":          true,
	"x-api-key":           true,
	"grpcgateway-cookie":  true,
	// grpc-gateway forwards Authorization as "authorization"; a header it
	// prefixes keeps its name after the prefix.
	"grpcgateway-authorization": true,
}

// IsCredential reports whether a metadata or header key carries a
// credential, and so must never be logged.
func IsCredential(key string) bool { return credentialKeys[strings.ToLower(key)] }

// Metadata returns md without its credential keys, for logging; md itself
// is not changed.
func Metadata(md map[string][]string) map[string][]string {
	out := make(map[string][]string, len(md))
	for k, v := range md {
		if !IsCredential(k) {
			out[k] = v
		}
	}
	return out
}
