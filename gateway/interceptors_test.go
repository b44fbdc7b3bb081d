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
