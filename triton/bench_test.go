package triton

import (
	"testing"
	"time"

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
