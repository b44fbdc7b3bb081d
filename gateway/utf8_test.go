package gateway

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// The public API is proto3, so its strings must be valid UTF-8 on the wire,
// and grpc-go would refuse anything else while parsing, as INTERNAL, before
// validation. Generated clients do not send it (Go's refuses to marshal it);
// a client that sends the bytes anyway still gets INVALID_ARGUMENT naming
// the field, through internal/protoutf8's server codec. Over REST, protojson
// refuses a JSON body, and invalid bytes in a path or query parameter are
// refused naming the field by internal/protoutf8's interceptor on the
// loopback connection. docs/decisions/0009-proto3-for-the-public-api.md.

// rawCodec sends and receives already-encoded protobuf bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = b
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestInvalidUTF8OverGRPC(t *testing.T) {
	g := startDocGateway(t, Config{}, nil)
	for _, tc := range []struct {
		name, method string
		req          proto.Message
		field, text  string
	}{
		{"query", "/colpali.v1.EmbeddingService/EmbedQueries",
			&colpaliv1.EmbedQueriesRequest{Queries: []string{"ok", "café"}}, "queries[1]", "not valid UTF-8"},
		{"metadata value", "/colpali.v1.DocumentService/IngestDocument",
			&colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 1), Metadata: map[string]string{"k": "café"}}, "metadata", `value of key "k" is not valid UTF-8`},
		{"idempotency key", "/colpali.v1.DocumentService/IngestDocument",
			&colpaliv1.IngestDocumentRequest{Pages: pages(t, 1, 1), IdempotencyKey: "café"}, "idempotency_key", "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp []byte
			err := g.conn.Invoke(testContext(t), tc.method, spoilUTF8(t, tc.req), &resp, grpc.ForceCodec(rawCodec{}))
			checkInvalidArgument(t, err, []string{tc.field}, tc.text)
		})
	}
	if n, calls := g.emb.Calls(), g.store.Calls(); n != 0 || len(calls) != 0 {
		t.Errorf("invalid requests reached the embedder (%d calls) or the store (%v)", n, calls)
	}
}

// spoilUTF8 encodes m, which spells "é" as "caf\u00e9", with every
// "caf\xc3\xa9" turned into "caf\xe9\xe9": the same length, so the message
// stays well formed, but not UTF-8.
func spoilUTF8(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b, []byte("caf\u00e9"), []byte("caf\xe9\xe9"))
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
