// Package config is what every component's Config shares: FieldError, which
// names the bad field of a Config by its Go name, and the one rule for zero.
//
// # The rule for zero
//
// A Config built in Go may leave a field zero to take its default: the
// component's New calls WithDefaults, then Validate. Validate itself takes
// the Config as it is: a zero or negative value in a field that has a
// default is refused, naming the field. A command sets every field from a
// flag whose default is the field's default, so a zero on its command line
// can only have been given on purpose, and is refused by the same Validate.
//
// # Field names
//
// Errors name fields by their Go names, dotted through nested Configs
// ("Models.Dimension"). A command renames them to its flag names with
// Rename, so that its user reads "-max-queries 0: must be positive".
package config

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// FieldError is one bad field of a Config. It is in class errclass.Invalid.
type FieldError struct {
	// Field is the field's Go name, dotted through nested Configs
	// ("Query.MaxBatchSize").
	Field string
	// Value is the bad value.
	Value any
	// Reason says why the value is bad and what is wanted. Other fields it
	// names are written in braces, "exceeds {MaxTimeout} (2m0s)", so that
	// Rename reaches them too.
	Reason string
}

// Error renders "Field value: reason", the braces around field names in
// the reason removed.
func (e *FieldError) Error() string {
	v := fmt.Sprintf("%v", e.Value)
	if s, ok := e.Value.(string); ok {
		v = fmt.Sprintf("%q", s)
	}
	return e.Field + " " + v + ": " + braced.ReplaceAllString(e.Reason, "$1")
}

// Is makes every FieldError a member of errclass.Invalid.
func (e *FieldError) Is(target error) bool { return target == errclass.Invalid }

// braced matches a field name written in braces in a Reason.
var braced = regexp.MustCompile(`\{([A-Za-z0-9_.\-]+)\}`)

// Bad returns a FieldError for field, its reason formatted as fmt.Sprintf
// would.
func Bad(field string, value any, format string, args ...any) error {
	return &FieldError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// number is what Positive checks.
type number interface {
	~int | ~int64 | ~float64
}

// Positive refuses a zero, negative or NaN v: a field with a default has
// no meaningful zero (see the package doc).
func Positive[T number](field string, v T) error {
	if !(v > 0) {
		return Bad(field, shown(v), "must be positive")
	}
	return nil
}

// shown keeps a duration printable as "1.5s" through the generic T.
func shown[T number](v T) any {
	if d, ok := any(v).(time.Duration); ok {
		return d
	}
	return v
}

// Errors collects the findings of one Validate.
type Errors struct{ errs []error }

// Add records err unless it is nil.
func (e *Errors) Add(err error) {
	if err != nil {
		e.errs = append(e.errs, err)
	}
}

// Bad records a FieldError (see the function Bad).
func (e *Errors) Bad(field string, value any, format string, args ...any) {
	e.Add(Bad(field, value, format, args...))
}

// Nest records the findings of a nested Config's Validate, its field names
// prefixed with prefix ("Models.").
func (e *Errors) Nest(prefix string, err error) {
	e.Add(Rename(err, func(f string) string { return prefix + f }))
}

// Err is every finding joined, or nil.
func (e *Errors) Err() error { return errors.Join(e.errs...) }

// Rename returns err with the field names of every FieldError in it (and
// the fields their reasons name) passed through name; joined errors are
// walked, other errors kept as they are. A command passes a function from
// field names to its flag names.
func Rename(err error, name func(field string) string) error {
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, x := range e.Unwrap() {
			out = append(out, Rename(x, name))
		}
		return errors.Join(out...)
	case *FieldError:
		return e.rename(name)
	default:
		return err
	}
}

func (fe *FieldError) rename(name func(string) string) *FieldError {
	return &FieldError{
		Field: name(fe.Field),
		Value: fe.Value,
		Reason: braced.ReplaceAllStringFunc(fe.Reason, func(m string) string {
			return "{" + name(m[1:len(m)-1]) + "}"
		}),
	}
}
