package triton

import (
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	gproto "google.golang.org/protobuf/proto"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// BenchmarkEmbedRequest is what Embed does to one query before the call:
// the request built and marshalled (header, timeout parameter, the item).
func BenchmarkEmbedRequest(b *testing.B) {
	codec, wire := NewCodec(model.Config{}), newWireCodec()
	items := [][]byte{[]byte("what is late interaction?")}
	opt := EmbedOptions{Timeout: 20 * time.Second}
	b.ReportAllocs()
	for b.Loop() {
		data, err := wire.Marshal(&itemsRequest{Codec: &codec, Kind: model.Query, Items: items, Opt: opt})
		if err != nil {
			b.Fatal(err)
		}
		data.Free()
	}
}

// BenchmarkDecode is the decoding of one query's answer: 20 rows of 128
// values, in FP16 (the simulator's and a half-precision model's) and FP32.
func BenchmarkDecode(b *testing.B) {
	codec := NewCodec(model.Config{})
	for _, dt := range []string{tensor.TypeFP16, tensor.TypeFP32} {
		b.Run(dt, func(b *testing.B) {
			resp := response(dt, 128, 20, []int32{20})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := codec.Decode(1, resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkResponse is the answer to one query (20x128 FP16) from grpc-go's
// receive buffer to embeddings: proto.Unmarshal then Decode (the proto
// codec's way), and wireCodec's embedResponse.
func BenchmarkResponse(b *testing.B) {
	codec, wire := NewCodec(model.Config{}), newWireCodec()
	msg, err := gproto.Marshal(response(tensor.TypeFP16, 128, 20, []int32{20}))
	if err != nil {
		b.Fatal(err)
	}
	data := mem.BufferSlice{mem.SliceBuffer(msg)}
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			resp := new(inference.ModelInferResponse)
			if err := wire.CodecV2.Unmarshal(data, resp); err != nil {
				b.Fatal(err)
			}
			if _, err := codec.Decode(1, resp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("embedResponse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := &embedResponse{Codec: &codec, N: 1}
			if err := wire.Unmarshal(data, r); err != nil || r.Err != nil {
				b.Fatal(err, r.Err)
			}
		}
	})
}
