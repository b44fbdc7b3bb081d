package gateway

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/internal/clock/clocktest"
)

// Refusals are summed up: the first at once, then one line per interval
// with the count since the last line, whatever the number of callers.
func TestRefusalLogSumsUp(t *testing.T) {
	var buf bytes.Buffer // read once the callers are done
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	clk := clocktest.New(time.Unix(1000, 0))
	l := newRefusalLog(base, clk)
	refuse := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				l.note(context.Background(), "/m", status.Error(codes.ResourceExhausted, "limit reached"))
			})
		}
		wg.Wait()
	}
	lines := func() []string {
		return strings.Split(strings.TrimSpace(buf.String()), "\n")
	}

	refuse(1)
	if got := lines(); len(got) != 1 || !strings.Contains(got[0], "refused=1 ") || !strings.Contains(got[0], `last_error="limit reached"`) {
		t.Fatalf("after the first refusal: %q", got)
	}
	refuse(500)
	clk.Advance(refusalLogInterval - time.Nanosecond)
	refuse(10)
	if got := lines(); len(got) != 1 {
		t.Fatalf("within the interval: %d lines, want 1: %q", len(got), got)
	}
	clk.Advance(time.Nanosecond)
	refuse(1)
	if got := lines(); len(got) != 2 || !strings.Contains(got[1], "refused=511 ") {
		t.Fatalf("after the interval: %q, want a second line with refused=511", got)
	}
}

// Each refusal is a debug line of its own, and never a warn line: the
// summary is the warn line.
func TestLogOutcomeRefusalAtDebug(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
		refusals := newRefusalLog(base, clocktest.New(time.Unix(1000, 0)))
		refusals.note(context.Background(), "/m", status.Error(codes.ResourceExhausted, "first")) // the summary's first line
		buf.Reset()
		for range 3 {
			call := &callInfo{id: "r1", method: "/colpali.v1.EmbeddingService/EmbedQueries", base: base}
			logOutcome(context.Background(), call, time.Now(), status.Error(codes.ResourceExhausted, "limit reached"), refusals)
		}
		got := buf.String()
		if n := strings.Count(got, "level=DEBUG msg=rpc"); level == slog.LevelDebug && n != 3 || level == slog.LevelInfo && got != "" {
			t.Errorf("at %v: log %q", level, got)
		}
		if strings.Contains(got, "WARN") {
			t.Errorf("at %v: a refusal logged at warn: %q", level, got)
		}
	}
}
