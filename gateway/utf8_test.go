package gateway

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// The public API is proto3, so its strings must be valid UTF-8 on the wire.
// A gRPC client's own protobuf library refuses to send anything else; one
// that sends the raw bytes anyway is refused by grpc-go while parsing, before
// the gateway's validation (INTERNAL: the code is grpc-go's). Over REST,
// protojson refuses a JSON body, and invalid bytes in a path or query
// parameter are INVALID_ARGUMENT naming the field (internal/protoutf8).
// docs/decisions/0009-proto3-for-the-public-api.md has the history.

// rawCodec sends and receives already-encoded protobuf bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = b
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestInvalidUTF8OverGRPC(t *testing.T) {
	fake := &fakeEmbedder{}
	g := startGateway(t, Config{}, Deps{Embedder: fake})
	// EmbedQueriesRequest{queries: ["caf\xe9"]}, encoded by hand.
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	req = protowire.AppendString(req, "caf\xe9")
	var resp []byte
	err := g.conn.Invoke(testContext(t), "/colpali.v1.EmbeddingService/EmbedQueries", req, &resp, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "invalid UTF-8") {
		t.Errorf("err = %v; want grpc-go's INTERNAL about invalid UTF-8", err)
	}
	if n := fake.Calls(); n != 0 {
		t.Errorf("the embedder was called %d times", n)
	}
}

func TestInvalidUTF8OverREST(t *testing.T) {
	g := startDocGateway(t, Config{}, nil)
	for _, tc := range []struct {
		name, path, field string
	}{
		{"path parameter", "/v1/documents/caf%E9", "document_id"},
		{"query parameter", "/v1/documents?page_token=%FF", "page_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := g.get(t, tc.path)
			e := decodeRESTError(t, body)
			if code != http.StatusBadRequest || codes.Code(e.Code) != codes.InvalidArgument ||
				e.Message != "invalid request: "+tc.field+": is not valid UTF-8" {
				t.Errorf("GET %s = %d %s; want 400 INVALID_ARGUMENT naming %s", tc.path, code, body, tc.field)
			}
		})
	}
	t.Run("JSON body", func(t *testing.T) {
		code, body, _ := g.post(t, "/v1/documents:search", "{\"query\":\"caf\xe9\"}")
		e := decodeRESTError(t, body)
		if code != http.StatusBadRequest || codes.Code(e.Code) != codes.InvalidArgument || !strings.Contains(e.Message, "invalid UTF-8") {
			t.Errorf("POST with invalid UTF-8 = %d %s; want 400 INVALID_ARGUMENT", code, body)
		}
	})
	if n, calls := g.emb.Calls(), g.store.Calls(); n != 0 || len(calls) != 0 {
		t.Errorf("invalid requests reached the embedder (%d calls) or the store (%v)", n, calls)
	}
}
