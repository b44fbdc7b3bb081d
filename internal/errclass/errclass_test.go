package errclass

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestClassesSurviveWrapping(t *testing.T) {
	specific := errors.New("queue full")
	err := fmt.Errorf("model colpali_query: %w", RetryAfter(WithReason(Wrap(Overloaded, specific), "QUEUE_FULL", nil), time.Second))
	if !errors.Is(err, Overloaded) || !errors.Is(err, specific) {
		t.Fatalf("class or cause lost: %v", err)
	}
	if Of(err) != Overloaded {
		t.Fatalf("Of = %v, want Overloaded", Of(err))
	}
	var r *Retry
	if !errors.As(err, &r) || r.Delay != time.Second {
		t.Fatalf("retry delay lost: %v", err)
	}
	var reason *Reason
	if !errors.As(err, &reason) || reason.Reason != "QUEUE_FULL" {
		t.Fatalf("reason lost: %v", err)
	}
	if err.Error() != "model colpali_query: queue full" {
		t.Fatalf("message %q", err.Error())
	}
}

func TestFieldErrorIsInvalid(t *testing.T) {
	err := fmt.Errorf("x: %w", Field("queries[2]", "at most %d bytes", 2048))
	if Of(err) != Invalid {
		t.Fatalf("Of = %v", Of(err))
	}
	if got, want := err.Error(), "x: invalid request: queries[2]: at most 2048 bytes"; got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
}

func TestUnclassified(t *testing.T) {
	if Of(errors.New("plain")) != nil || Wrap(Internal, nil) != nil {
		t.Fatal("plain errors have no class; nil stays nil")
	}
}
