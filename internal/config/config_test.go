package config

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

func TestFieldErrorsRenamedThroughNesting(t *testing.T) {
	var inner Errors
	inner.Add(Positive("Dimension", -1))
	inner.Bad("Name", "a b", "want no spaces")
	var outer Errors
	outer.Add(Positive("Timeout", time.Duration(0)))
	outer.Bad("Default", time.Hour, "exceeds {Max} (%v)", time.Minute)
	outer.Nest("Models.", inner.Err())
	outer.Add(errors.New("not a field"))
	err := outer.Err()
	want := []string{"Timeout 0s: must be positive", "Default 1h0m0s: exceeds Max (1m0s)",
		"Models.Dimension -1: must be positive", `Models.Name "a b": want no spaces`, "not a field"}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q missing from\n%v", w, err)
		}
	}
	flags := map[string]string{"Timeout": "-timeout", "Max": "-max", "Default": "-default", "Models.Dimension": "-dimension"}
	renamed := Rename(err, func(f string) string {
		if n, ok := flags[f]; ok {
			return n
		}
		return f
	})
	for _, w := range []string{"-timeout 0s: must be positive", "-default 1h0m0s: exceeds -max (1m0s)",
		"-dimension -1: must be positive", `Models.Name "a b"`, "not a field"} {
		if !strings.Contains(renamed.Error(), w) {
			t.Errorf("%q missing from\n%v", w, renamed)
		}
	}
	var fe *FieldError
	if !errors.As(renamed, &fe) || !errors.Is(renamed, errclass.Invalid) {
		t.Errorf("renamed error lost its type or class: %v", renamed)
	}
	if Rename(nil, strings.ToUpper) != nil {
		t.Error("Rename(nil) is not nil")
	}
}

func TestPositive(t *testing.T) {
	for _, bad := range []error{Positive("n", 0), Positive("f", math.NaN()), Positive("d", -time.Second)} {
		if bad == nil {
			t.Error("a non-positive value passed")
		}
	}
	if Positive("n", 1) != nil || Positive("d", time.Nanosecond) != nil {
		t.Error("a positive value refused")
	}
}
