package gateway

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// TestCredentialsNeverLogged sends a bearer credential over gRPC and REST,
// on calls that succeed and calls that fail, at debug level: it appears
// in no log line.
func TestSecretsNeverLogged(t *testing.T) {
	const secret = "sekrit-key-0123456789"
	var logged syncBuffer
	g := startGateway(t, Config{MaxQueries: 1}, Deps{Logger: slog.New(slog.NewJSONHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := metadata.AppendToOutgoingContext(testContext(t), "authorization", "Bearer "+secret, "x-api-key", secret)
	_, _ = g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
	_, _ = g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q", "too many"}})
	for _, body := range []string{`{"queries":["q"]}`, `{"queries":`} {
		if code, _, _ := g.post(t, "/v1/queries:embed", body, "Authorization", "Bearer "+secret, "Cookie", "s="+secret); code == 0 {
			t.Fatal("no answer")
		}
	}
	if code, _ := g.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	out := logged.String()
	if !strings.Contains(out, "EmbedQueries") {
		t.Fatalf("the calls were not logged at all:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("a credential reached the log:\n%s", out)
	}
}
