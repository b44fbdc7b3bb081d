package errclass

import (
	"fmt"
	"testing"
)

func TestAuthClasses(t *testing.T) {
	for _, c := range []error{Unauthenticated, PermissionDenied} {
		err := fmt.Errorf("interceptor: %w", Errorf(c, "no credential"))
		if Of(err) != c {
			t.Errorf("Of(%v) = %v, want %v", err, Of(err), c)
		}
	}
}
