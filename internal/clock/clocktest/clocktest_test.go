package clocktest

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fired reports whether tm's channel holds a value, taking it.
func fired(c <-chan time.Time) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestFake(t *testing.T) {
	start := time.Unix(1000, 0)
	c := New(start)
	tm := c.NewTimer()
	if fired(tm.C()) || c.Armed() != 0 {
		t.Fatal("a new timer is armed or has fired")
	}

	tm.Reset(0)
	if !fired(tm.C()) {
		t.Fatal("Reset(0) did not fire at once")
	}

	tm.Reset(10 * time.Millisecond)
	if at, ok := c.Next(); !ok || !at.Equal(start.Add(10*time.Millisecond)) {
		t.Fatalf("Next = %v, %v; want start+10ms", at, ok)
	}
	c.Advance(9 * time.Millisecond)
	if fired(tm.C()) {
		t.Fatal("fired before it was due")
	}
	c.Advance(time.Millisecond)
	if !fired(tm.C()) || c.Armed() != 0 {
		t.Fatal("did not fire once when due")
	}
	c.Advance(time.Hour)
	if fired(tm.C()) {
		t.Fatal("fired twice")
	}

	// Reset drops a value not yet received; Stop disarms.
	tm.Reset(time.Millisecond)
	c.Advance(time.Millisecond)
	tm.Reset(time.Second)
	if fired(tm.C()) {
		t.Fatal("a stale value survived Reset")
	}
	tm.Stop()
	c.Advance(time.Hour)
	if fired(tm.C()) || c.Armed() != 0 {
		t.Fatal("a stopped timer fired")
	}
	if got := c.Now(); !got.Equal(start.Add(10*time.Millisecond + 2*time.Hour + time.Millisecond)) {
		t.Errorf("Now = %v", got)
	}
}
