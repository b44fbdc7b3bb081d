package protoutf8

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

func TestViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []errclass.FieldViolation
		want []errclass.FieldViolation
	}{
		{"valid", Violations(&colpaliv1.EmbedQueriesRequest{Queries: []string{"café", ""}}), nil},
		{"path parameter", Violations(&colpaliv1.GetDocumentRequest{DocumentId: "caf\xe9"}),
			[]errclass.FieldViolation{{Field: "document_id", Description: "is not valid UTF-8"}}},
		{"list elements", Violations(&colpaliv1.EmbedQueriesRequest{Queries: []string{"ok", "\xff", "\xfe"}}),
			[]errclass.FieldViolation{{Field: "queries[1]", Description: "is not valid UTF-8"}, {Field: "queries[2]", Description: "is not valid UTF-8"}}},
		{"nested messages", Violations(&colpaliv1.SearchRequest{Query: "q", Filters: []*colpaliv1.Filter{{Field: "document_id"}, {Field: "metadata.k", Values: []string{"a", "\xff"}}}}),
			[]errclass.FieldViolation{{Field: "filters[1].values[1]", Description: "is not valid UTF-8"}}},
		{"map keys and values", Violations(&colpaliv1.IngestDocumentRequest{Metadata: map[string]string{"b": "\xff", "a\xff": "x", "ok": "ok"}, IdempotencyKey: "\xff"}),
			[]errclass.FieldViolation{
				{Field: "metadata", Description: `key "a\xff" is not valid UTF-8; value of key "b" is not valid UTF-8`},
				{Field: "idempotency_key", Description: "is not valid UTF-8"},
			}},
		{"oneof member", Violations(&colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Header{Header: &colpaliv1.IngestDocumentHeader{IdempotencyKey: "\xff"}}}),
			[]errclass.FieldViolation{{Field: "header.idempotency_key", Description: "is not valid UTF-8"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.got); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnaryClientInterceptor(t *testing.T) {
	icpt := UnaryClientInterceptor()
	calls := 0
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		calls++
		return nil
	}
	ctx := context.Background()
	if err := icpt(ctx, "/m", &colpaliv1.ListDocumentsRequest{PageToken: "ok"}, nil, nil, invoker); err != nil || calls != 1 {
		t.Fatalf("valid request: err %v, %d calls; want nil, 1", err, calls)
	}
	err := icpt(ctx, "/m", &colpaliv1.ListDocumentsRequest{PageToken: "\xff"}, nil, nil, invoker)
	if calls != 1 {
		t.Errorf("the invalid request was sent")
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() != "invalid request: page_token: is not valid UTF-8" {
		t.Fatalf("status = %v %q; want InvalidArgument naming page_token", st.Code(), st.Message())
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if diff := cmp.Diff([]string{"page_token"}, fields); diff != "" {
		t.Errorf("BadRequest fields (-want +got):\n%s", diff)
	}
	if err := icpt(ctx, "/m", "not a message", nil, nil, invoker); err != nil || calls != 2 {
		t.Errorf("non-protobuf request: err %v, %d calls; want nil, 2", err, calls)
	}
}
