package triton

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"

	"github.com/morphik-org/colpali-gateway/gen/inference"
)

// rawInputContentsField is ModelInferRequest.raw_input_contents's field
// number.
const rawInputContentsField protowire.Number = 7

// itemsRequest is a ModelInferRequest whose one input tensor, a BYTES
// tensor of Items, is not assembled in memory: wireCodec sends the
// request's other fields, then raw_input_contents as the items' length
// prefixes interleaved with buffers that alias the items. A call's page
// images, megabytes each, are then held once (by the caller), not three
// times (by the caller, in the tensor, and in grpc-go's send buffer).
// Request must have no RawInputContents of its own.
type itemsRequest struct {
	*inference.ModelInferRequest
	Items [][]byte
}

// wireCodec is grpc-go's proto codec, except that it marshals an
// *itemsRequest without copying its items. Its name is the proto codec's,
// so the content-subtype on the wire is unchanged.
type wireCodec struct{ encoding.CodecV2 }

func newWireCodec() wireCodec { return wireCodec{encoding.GetCodecV2(proto.Name)} }

// Marshal writes an *itemsRequest as the ModelInferRequest it stands for,
// and anything else as the proto codec does.
func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*itemsRequest)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	if len(r.RawInputContents) > 0 {
		return nil, fmt.Errorf("triton: marshal request: raw_input_contents set besides %d items", len(r.Items))
	}
	size := 0
	for _, it := range r.Items {
		size += 4 + len(it)
	}
	head, err := gproto.Marshal(r.ModelInferRequest)
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, rawInputContentsField, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(size))
	// The prefixes share one array; the items are referenced, not copied:
	// they are the callers' request bytes, which outlive the call.
	prefixes := make([]byte, 4*len(r.Items))
	out := make(mem.BufferSlice, 0, 1+2*len(r.Items))
	out = append(out, mem.SliceBuffer(head))
	for i, it := range r.Items {
		if uint64(len(it)) > math.MaxUint32 {
			return nil, fmt.Errorf("triton: marshal request: item %d is %d bytes, over a BYTES element's 4 GiB", i, len(it))
		}
		p := prefixes[4*i : 4*i+4 : 4*i+4]
		binary.LittleEndian.PutUint32(p, uint32(len(it))) // #nosec G115 -- checked just above
		out = append(out, mem.SliceBuffer(p))
		if len(it) > 0 {
			out = append(out, mem.SliceBuffer(it))
		}
	}
	return out, nil
}
