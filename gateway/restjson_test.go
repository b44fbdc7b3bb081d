package gateway

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// The direct path must parse to the same JSON as protojson's, whatever the
// fields hold.
func TestRESTMarshalerMatchesProtoJSON(t *testing.T) {
	data := make([]byte, 301) // not a multiple of 3: base64 padding
	for i := range data {
		data[i] = byte(i * 7)
	}
	for name, msg := range map[string]proto.Message{
		"queries": &colpaliv1.EmbedQueriesResponse{Model: "colpali_query", Embeddings: []*colpaliv1.MultiVector{
			{VectorCount: 3, Dimension: 4, DataType: colpaliv1.DataType_DATA_TYPE_FLOAT32, Data: data[:48]},
			{VectorCount: 1, Dimension: 2, DataType: colpaliv1.DataType_DATA_TYPE_FLOAT16, Data: data},
		}},
		"images":          &colpaliv1.EmbedImagesResponse{Model: `odd "name"\n<&>`, Embeddings: []*colpaliv1.MultiVector{{VectorCount: 1, Data: data[:1]}}},
		"zero fields":     &colpaliv1.EmbedQueriesResponse{Embeddings: []*colpaliv1.MultiVector{{}}},
		"empty":           &colpaliv1.EmbedQueriesResponse{},
		"unknown enum":    &colpaliv1.EmbedImagesResponse{Embeddings: []*colpaliv1.MultiVector{{DataType: 99}}},
		"float list":      &colpaliv1.EmbedQueriesResponse{Model: "m", Embeddings: []*colpaliv1.MultiVector{{VectorCount: 1, Dimension: 2, Vectors: []*colpaliv1.Vector{{Values: []float32{0.5, -1e-9}}}}}},
		"other message":   &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}},
		"negative counts": &colpaliv1.EmbedQueriesResponse{Embeddings: []*colpaliv1.MultiVector{{VectorCount: -1, Dimension: -2}}},
		"status empty":    &spb.Status{},
		"status overloaded": statusWith(t, codes.ResourceExhausted, `limit "reached" <now>`,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(50 * time.Millisecond)},
			&errdetails.ErrorInfo{Reason: "CONCURRENCY_LIMIT", Domain: "colpali.v1", Metadata: map[string]string{"limit": "181", "class": "query", "é": "\n"}}),
		"status delays": statusWith(t, codes.ResourceExhausted, "",
			&errdetails.RetryInfo{RetryDelay: durationpb.New(5 * time.Second)}, &errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Nanosecond)}, &errdetails.RetryInfo{RetryDelay: durationpb.New(-1234 * time.Microsecond)},
			&errdetails.RetryInfo{}, &errdetails.ErrorInfo{}),
		"status bad request": statusWith(t, codes.InvalidArgument, "bad",
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "queries[0]", Description: "empty"}, {Description: "no field"}, {Field: "only field"}, {}}}),
		"status violation reason": statusWith(t, codes.InvalidArgument, "bad",
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "f", Reason: "R"}}}),
		"status other detail": statusWith(t, codes.Internal, "x", &errdetails.DebugInfo{Detail: "d"}),
	} {
		t.Run(name, func(t *testing.T) {
			want, err := (&runtime.JSONPb{}).Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := restMarshaler{&runtime.JSONPb{}}.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("%s is not JSON: %v", got, err)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// statusWith is the status proto of code and msg with details ds.
func statusWith(t *testing.T, code codes.Code, msg string, ds ...protoadapt.MessageV1) *spb.Status {
	st, err := status.New(code, msg).WithDetails(ds...)
	if err != nil {
		t.Fatal(err)
	}
	return st.Proto()
}

func BenchmarkRESTMarshal(b *testing.B) {
	resp := &colpaliv1.EmbedQueriesResponse{Model: "colpali_query", Embeddings: []*colpaliv1.MultiVector{
		{VectorCount: 17, Dimension: 128, DataType: colpaliv1.DataType_DATA_TYPE_FLOAT32, Data: make([]byte, 17*128*4)},
	}}
	for name, m := range map[string]runtime.Marshaler{"protojson": &runtime.JSONPb{}, "direct": restMarshaler{&runtime.JSONPb{}}} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Marshal(resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRESTStatusMarshal(b *testing.B) {
	st, err := status.New(codes.ResourceExhausted, "the query concurrency limit is reached: 158 calls in flight, 158 allowed at priority 2 (limit 181); retry later with backoff").WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(50 * time.Millisecond)},
		&errdetails.ErrorInfo{Reason: "CONCURRENCY_LIMIT", Domain: "colpali.v1", Metadata: map[string]string{"limit": "181", "class": "query"}})
	if err != nil {
		b.Fatal(err)
	}
	for name, m := range map[string]runtime.Marshaler{"protojson": &runtime.JSONPb{}, "direct": restMarshaler{&runtime.JSONPb{}}} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Marshal(st.Proto()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// appendJSONString must read back, as JSON, as the string encoding/json
// writes does: the same text, invalid UTF-8 replaced alike.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `quote " and \ back`, "nl\n cr\r tab\t nul\x00 bell\x07 \x1f", "é 日本 \u2028", "bad \xff utf8 \xe6\x97", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var got, want string
		if err := json.Unmarshal(appendJSONString(nil, s), &got); err != nil {
			t.Fatalf("%q: %v", appendJSONString(nil, s), err)
		}
		w, _ := json.Marshal(s)
		if err := json.Unmarshal(w, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%q reads back as %q, want %q", s, got, want)
		}
	})
}
