package gateway

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/morphik-org/colpali-gateway/model"
)

// A REST call reaches the handler as a gRPC call would: the HTTP headers
// grpc-gateway forwards are incoming metadata, nothing is outgoing (so none
// of it travels on to Triton), there is a peer, and the interceptors ran
// (the request id is the caller's).
func TestRESTCallInProcessLooksLikeGRPC(t *testing.T) {
	type seen struct {
		incoming, outgoing metadata.MD
		peer               bool
		requestID          string
	}
	got := make(chan seen, 1)
	emb := &fakeEmbedder{embed: func(ctx context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		in, _ := metadata.FromIncomingContext(ctx)
		out, _ := metadata.FromOutgoingContext(ctx)
		_, hasPeer := peer.FromContext(ctx)
		got <- seen{incoming: in, outgoing: out, peer: hasPeer, requestID: RequestID(ctx)}
		return constantEmbeddings(len(items), 1, 2), nil
	}}
	g := startGateway(t, Config{}, Deps{Embedder: emb})
	code, body, hdr := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`, "X-Request-Id", "rest-1", "Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, body)
	}
	if id := hdr.Get("X-Request-Id"); id != "rest-1" {
		t.Errorf("X-Request-Id = %q, want rest-1", id)
	}
	s := <-got
	if s.requestID != "rest-1" || len(s.incoming.Get(requestIDHeader)) != 1 {
		t.Errorf("handler saw request id %q, incoming metadata %v; want rest-1 from the header", s.requestID, s.incoming)
	}
	if len(s.outgoing) != 0 {
		t.Errorf("handler's outgoing metadata = %v, want none", s.outgoing)
	}
	if !s.peer {
		t.Error("handler saw no peer")
	}
}
