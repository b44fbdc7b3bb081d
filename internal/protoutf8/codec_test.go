package protoutf8

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// spoil marshals m, which must spell "é" as "caf\u00e9" somewhere, and
// turns every "caf\xc3\xa9" into "caf\xe9\xe9": the same length, so the
// encoding stays well formed, but no longer UTF-8. Go's protobuf library
// refuses to marshal invalid UTF-8 in proto3, so this is how a client that
// does not check would send it.
func spoil(t *testing.T, m proto.Message) mem.BufferSlice {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return mem.BufferSlice{mem.SliceBuffer(bytes.ReplaceAll(b, []byte("caf\u00e9"), []byte("caf\xe9\xe9")))}
}

const bad = "caf\xe9\xe9"

func TestServerCodecAcceptsInvalidUTF8(t *testing.T) {
	codec := NewServerCodec()
	for _, tc := range []struct {
		name      string
		sent, got proto.Message
		want      proto.Message
	}{
		{"repeated string",
			&colpaliv1.EmbedQueriesRequest{Queries: []string{"ok", "café"}, Encoding: colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT_LIST, Priority: 2},
			&colpaliv1.EmbedQueriesRequest{},
			&colpaliv1.EmbedQueriesRequest{Queries: []string{"ok", bad}, Encoding: colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT_LIST, Priority: 2}},
		{"map, bytes and nested messages",
			&colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{Image: []byte{1, 2}}, {Image: []byte{3}}}, Metadata: map[string]string{"k": "café", "café": "v"}, IdempotencyKey: "x"},
			&colpaliv1.IngestDocumentRequest{},
			&colpaliv1.IngestDocumentRequest{Pages: []*colpaliv1.Page{{Image: []byte{1, 2}}, {Image: []byte{3}}}, Metadata: map[string]string{"k": bad, bad: "v"}, IdempotencyKey: "x"}},
		{"oneof",
			&colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Header{Header: &colpaliv1.IngestDocumentHeader{IdempotencyKey: "café", PageCount: 3}}},
			&colpaliv1.IngestDocumentStreamRequest{},
			&colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Header{Header: &colpaliv1.IngestDocumentHeader{IdempotencyKey: bad, PageCount: 3}}}},
		{"imported message type",
			&colpaliv1.Document{DocumentId: "café", CreateTime: timestamppb.New(timestamppb.Now().AsTime()), PageCount: 2},
			&colpaliv1.Document{},
			nil}, // filled below
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == nil {
				d := proto.Clone(tc.sent).(*colpaliv1.Document)
				d.DocumentId = bad
				want = d
			}
			if err := codec.Unmarshal(spoil(t, tc.sent), tc.got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if diff := cmp.Diff(want, tc.got, protocmp.Transform()); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServerCodecKeepsOtherErrors(t *testing.T) {
	codec := NewServerCodec()
	valid, err := proto.Marshal(&colpaliv1.EmbedQueriesRequest{Queries: []string{"café"}})
	if err != nil {
		t.Fatal(err)
	}
	var got colpaliv1.EmbedQueriesRequest
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(valid)}, &got); err != nil || got.GetQueries()[0] != "café" {
		t.Fatalf("valid request: %v, %v", err, got.GetQueries())
	}
	spoilt := spoil(t, &colpaliv1.EmbedQueriesRequest{Queries: []string{"café"}}).Materialize()
	truncated := mem.BufferSlice{mem.SliceBuffer(spoilt[:len(spoilt)-1])}
	if err := codec.Unmarshal(truncated, &colpaliv1.EmbedQueriesRequest{}); err == nil {
		t.Error("a truncated request was accepted")
	}
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff})}, &colpaliv1.EmbedQueriesRequest{}); err == nil {
		t.Error("garbage was accepted")
	}
}
