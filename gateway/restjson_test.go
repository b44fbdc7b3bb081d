package gateway

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"

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
