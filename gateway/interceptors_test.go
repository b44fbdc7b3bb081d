package gateway

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/clock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Attributes added by the interceptors after the logging one (the tenant
// and subject) follow the request id and method on every line of the call,
// however many there are.
func TestAddLogAttrs(t *testing.T) {
	var buf bytes.Buffer
	call := &callInfo{id: "r1", method: "/m", base: slog.New(slog.NewTextHandler(&buf, nil))}
	ctx := context.WithValue(context.Background(), requestKey{}, call)
	addLogAttrs(ctx, slog.String("tenant", "t1"), slog.String("subject", "k1"))
	addLogAttrs(ctx, slog.Int("n", 3))
	addLogAttrs(context.Background(), slog.String("lost", "x")) // outside a call: nothing
	Logger(ctx, nil).Info("one")
	Logger(ctx, nil).Info("two")
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.HasSuffix(line, "request_id=r1 method=/m tenant=t1 subject=k1 n=3") {
			t.Errorf("log line %q lacks the call's attributes in order", line)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Errorf("%d lines, want 2", n)
	}
}

// Successful calls are logged at debug level only; failures always, with
// the request id and method the call's logger carries.
func TestLogOutcomeLevels(t *testing.T) {
	for _, c := range []struct {
		name   string
		level  slog.Level
		method string
		err    error
		want   string // a substring of the log; "" for no line
	}{
		{"success at info", slog.LevelInfo, "/colpali.v1.EmbeddingService/EmbedQueries", nil, ""},
		{"success at debug", slog.LevelDebug, "/colpali.v1.EmbeddingService/EmbedQueries", nil, "level=DEBUG msg=rpc request_id=r1 method=/colpali.v1.EmbeddingService/EmbedQueries code=OK"},
		{"failure at info", slog.LevelInfo, "/colpali.v1.EmbeddingService/EmbedQueries", status.Error(codes.InvalidArgument, "bad"), "level=WARN msg=rpc request_id=r1"},
		{"internal at info", slog.LevelInfo, "/colpali.v1.EmbeddingService/EmbedQueries", status.Error(codes.Internal, "boom"), "level=ERROR"},
		{"failed probe at info", slog.LevelInfo, "/grpc.health.v1.Health/Check", status.Error(codes.Unavailable, "down"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: c.level}))
			call := &callInfo{id: "r1", method: c.method, base: base}
			logOutcome(context.Background(), call, time.Now(), c.err, newRefusalLog(base, clock.System{}))
			got := buf.String()
			if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
				t.Errorf("log %q, want %q", got, c.want)
			}
		})
	}
}
