// Package testutil holds the helpers every package's tests share: a
// bounded context and a logger that writes to t.Log.
package testutil

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeout bounds every test context.
const Timeout = 20 * time.Second

// StartTimeout bounds the start of a server a test runs as another process
// (the embedded Postgres: node loading PGlite's WebAssembly), apart from
// Timeout, whose clock should start once the server is up. Measured on a
// 2-core machine: a PGlite start costs node 4.6-5.7 s of CPU and took
// 12-22 s at a load average of 15-21, and 55 s with four busy loops beside
// the tests (load 23); three minutes leave three times the worst.
const StartTimeout = 3 * time.Minute

// Context returns a context that ends after Timeout or when the test ends.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Logger returns a logger writing to t.Log, so that a test's logs show only
// when it fails. Lines logged after the test's cleanups have run are
// dropped: t.Log would panic on them.
func Logger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { // registered first, so it runs last
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Eventually polls cond every few milliseconds until it holds, and fails
// the test, naming what it waited for, if Timeout passes first. Tests wait
// with it instead of sleeping.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx := Context(t)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
