// Package apikey is the gateway's API keys: their format, their storage in
// Postgres (hashed; only a prefix in clear), and an auth.Authenticator that
// checks them with a small cache in front of the database.
//
// # Format
//
// A key is "cpk_" + an 8-character prefix (lower-case base32, 40 random
// bits) + "_" + 32 random bytes in unpadded base64url: 56 characters, such
// as cpk_k3nq7x2a_Vt0....  The prefix names the key in listings, logs and
// `keys revoke`; it is not secret. The secret part never leaves the
// process that created the key except in the one line that shows it to the
// operator.
//
// # Hashing
//
// The database keeps SHA-256(key), compared in constant time. A slow
// password hash (bcrypt, argon2) protects secrets a person chose, which an
// attacker holding the hashes can enumerate; these keys are 256 random
// bits, which nobody can enumerate whatever the hash costs, so a fast hash
// is as safe and spares each cache miss milliseconds of CPU.
//
// # Revocation
//
// Checks are cached for Config.CacheTTL (default 30s) per gateway: a key
// revoked (or created, after a failed try) takes effect within that time,
// on every gateway, without a restart. Expiry is checked on every call.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"strings"
)

const (
	// Scheme starts every key, so that a key is recognisable (secret
	// scanners, the auth chain) and cannot be mistaken for a JWT.
	Scheme = "cpk_"
	// PrefixLen is the length of the clear prefix.
	PrefixLen = 8
	// secretBytes is the entropy of a key.
	secretBytes = 32
	// KeyLen is the length of a whole key.
	KeyLen = len(Scheme) + PrefixLen + 1 + 43
)

var prefixEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Key is a parsed API key.
type Key struct {
	Prefix string
	// Hash is SHA-256 of the whole key.
	Hash [sha256.Size]byte
}

// generate returns a new key and its parsed form.
func generate() (string, Key, error) {
	var b [5 + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", Key{}, err
	}
	prefix := prefixEncoding.EncodeToString(b[:5])
	plain := Scheme + prefix + "_" + base64.RawURLEncoding.EncodeToString(b[5:])
	return plain, Key{Prefix: prefix, Hash: sha256.Sum256([]byte(plain))}, nil
}

// errNotAKey: the token does not start with Scheme.
var errNotAKey = errors.New("not an API key")

// Parse checks a key's form and returns its prefix and hash. The error
// never contains the key.
func Parse(s string) (Key, error) {
	if !strings.HasPrefix(s, Scheme) {
		return Key{}, errNotAKey
	}
	if len(s) != KeyLen || s[len(Scheme)+PrefixLen] != '_' {
		return Key{}, errors.New("malformed API key: wrong length or layout")
	}
	prefix := s[len(Scheme) : len(Scheme)+PrefixLen]
	if b, err := prefixEncoding.DecodeString(prefix); err != nil || len(b) != 5 {
		return Key{}, errors.New("malformed API key: bad prefix")
	}
	if b, err := base64.RawURLEncoding.DecodeString(s[len(Scheme)+PrefixLen+1:]); err != nil || len(b) != secretBytes {
		return Key{}, errors.New("malformed API key: bad secret")
	}
	return Key{Prefix: prefix, Hash: sha256.Sum256([]byte(s))}, nil
}

// ValidPrefix reports whether s has the form of a key prefix.
func ValidPrefix(s string) bool {
	b, err := prefixEncoding.DecodeString(s)
	return len(s) == PrefixLen && err == nil && len(b) == 5
}
