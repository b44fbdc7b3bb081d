package triton

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/model"
)

// Field numbers of ModelInferRequest and the messages inside it.
const (
	idField                protowire.Number = 3 // ModelInferRequest.id
	parametersField        protowire.Number = 4 // ModelInferRequest.parameters
	inputsField            protowire.Number = 5 // ModelInferRequest.inputs
	rawInputContentsField  protowire.Number = 7 // ModelInferRequest.raw_input_contents
	rawOutputContentsField protowire.Number = 6 // ModelInferResponse.raw_output_contents
	shapeField             protowire.Number = 3 // InferInputTensor.shape
	int64ParamField        protowire.Number = 2 // InferParameter.int64_param
	mapKeyField            protowire.Number = 1 // a map entry's key
	mapValueField          protowire.Number = 2 // a map entry's value
)

// itemsRequest is the ModelInferRequest that Codec.Request(Kind, Items,
// Opt) builds, marshalled by wireCodec without being built: the fields no
// call changes come from the codec's requestHead, the call's (id,
// parameters, shape) are written after them, then raw_input_contents as
// the items' length prefixes interleaved with buffers that alias the
// items. A call's page images, megabytes each, are then held once (by the
// caller), not three times (by the caller, in the tensor, and in grpc-go's
// send buffer), and a query's call allocates no message. Items of at most
// copiedItemsMax bytes in all are copied after the header instead.
type itemsRequest struct {
	Codec *Codec
	Kind  model.Kind
	Items [][]byte
	Opt   EmbedOptions
}

// copiedItemsMax is the size of raw_input_contents up to which the items
// are copied after the header rather than referenced: a query's texts
// (64 of 2 KiB at most) cost less to copy than the three buffers that
// reference them.
const copiedItemsMax = 16 << 10

// requestHead is what a kind's ModelInferRequest holds whatever the call,
// marshalled once by proto.Marshal.
type requestHead struct {
	lead  []byte // model_name and model_version
	input []byte // inside the input tensor: its name and datatype
	tail  []byte // outputs
	err   error  // a marshalling failure (a name that is not UTF-8), answered to every call
}

// newRequestHead marshals the fields of kind's requests that no call
// changes.
func (c Codec) newRequestHead(k model.Kind) requestHead {
	req := c.header(k, 0, EmbedOptions{})
	lead, err1 := gproto.Marshal(&inference.ModelInferRequest{ModelName: req.ModelName, ModelVersion: req.ModelVersion})
	in := req.Inputs[0]
	input, err2 := gproto.Marshal(&inference.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.Datatype})
	tail, err3 := gproto.Marshal(&inference.ModelInferRequest{Outputs: req.Outputs})
	if err := errors.Join(err1, err2, err3); err != nil {
		return requestHead{err: fmt.Errorf("triton: marshal request: %w", err)}
	}
	return requestHead{lead: lead, input: input, tail: tail}
}

// appendHeader appends the fields of Request(k, n items, opt) but
// raw_input_contents to dst, as proto.Marshal writes them (in field
// order, map keys sorted, as with Deterministic).
func (c Codec) appendHeader(dst []byte, k model.Kind, n int, opt EmbedOptions) ([]byte, error) {
	h := &c.heads[k]
	if h.err != nil {
		return nil, h.err
	}
	dst = append(dst, h.lead...)
	if opt.ID != "" {
		if !utf8.ValidString(opt.ID) {
			return nil, fmt.Errorf("triton: marshal request: id %q is not valid UTF-8", opt.ID)
		}
		dst = protowire.AppendTag(dst, idField, protowire.BytesType)
		dst = protowire.AppendString(dst, opt.ID)
	}
	// parameters, by key: "priority" before "timeout".
	if opt.Priority > 0 {
		dst = appendInt64Param(dst, "priority", int64(opt.Priority))
	}
	if opt.Timeout > 0 {
		dst = appendInt64Param(dst, "timeout", max(opt.Timeout.Microseconds(), 1))
	}
	// The input tensor: its name and datatype, then its shape [n, 1], packed.
	shape := protowire.SizeVarint(uint64(n)) + protowire.SizeVarint(1) // #nosec G115 -- n is a count of items
	dst = protowire.AppendTag(dst, inputsField, protowire.BytesType)
	dst = appendLen(dst, len(h.input)+protowire.SizeTag(shapeField)+protowire.SizeBytes(shape))
	dst = append(dst, h.input...)
	dst = protowire.AppendTag(dst, shapeField, protowire.BytesType)
	dst = appendLen(dst, shape)
	dst = protowire.AppendVarint(dst, uint64(n)) // #nosec G115 -- n is a count of items
	dst = protowire.AppendVarint(dst, 1)
	return append(dst, h.tail...), nil
}

// appendLen appends a length-delimited field's length.
func appendLen(dst []byte, n int) []byte {
	return protowire.AppendVarint(dst, uint64(n)) // #nosec G115 -- a length, never negative
}

// appendInt64Param appends a parameters entry: key, InferParameter{int64_param: v}.
func appendInt64Param(dst []byte, key string, v int64) []byte {
	value := protowire.SizeTag(int64ParamField) + protowire.SizeVarint(uint64(v)) // #nosec G115 -- int64 fields travel as their two's complement
	dst = protowire.AppendTag(dst, parametersField, protowire.BytesType)
	dst = appendLen(dst, protowire.SizeTag(mapKeyField)+protowire.SizeBytes(len(key))+protowire.SizeTag(mapValueField)+protowire.SizeBytes(value))
	dst = protowire.AppendTag(dst, mapKeyField, protowire.BytesType)
	dst = protowire.AppendString(dst, key)
	dst = protowire.AppendTag(dst, mapValueField, protowire.BytesType)
	dst = appendLen(dst, value)
	dst = protowire.AppendTag(dst, int64ParamField, protowire.VarintType)
	return protowire.AppendVarint(dst, uint64(v)) // #nosec G115 -- as above
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
	size := 0
	for _, it := range r.Items {
		size += 4 + len(it)
	}
	h := &r.Codec.heads[r.Kind]
	// The header's fixed fields and the id, and 96 bytes for the rest:
	// the parameters (at most 60), the shape and raw_input_contents' tag
	// and length.
	capacity := len(h.lead) + len(h.input) + len(h.tail) + len(r.Opt.ID) + 8 + 96
	if size <= copiedItemsMax {
		capacity += size
	}
	head, err := r.Codec.appendHeader(make([]byte, 0, capacity), r.Kind, len(r.Items), r.Opt)
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, rawInputContentsField, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(size))
	if size <= copiedItemsMax {
		// Query texts: copied after the header, one buffer in all.
		for i, it := range r.Items {
			if uint64(len(it)) > math.MaxUint32 {
				return nil, fmt.Errorf("triton: marshal request: item %d is %d bytes, over a BYTES element's 4 GiB", i, len(it))
			}
			head = binary.LittleEndian.AppendUint32(head, uint32(len(it))) // #nosec G115 -- checked just above
			head = append(head, it...)
		}
		return mem.BufferSlice{mem.SliceBuffer(head)}, nil
	}
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

// embedResponse is the answer to an itemsRequest of N items, decoded by
// wireCodec straight from grpc-go's receive buffer: proto.Unmarshal would
// copy raw_output_contents (a query's embeddings, kilobytes) only for
// Codec.Decode to convert them into new slices at once. Resp holds every
// other field; Out and Err are Decode's answer (Err, an answer that breaks
// the contract, is not the call's error: the call succeeded).
type embedResponse struct {
	Codec   *Codec
	N       int
	Resp    inference.ModelInferResponse
	Out     []model.Embedding
	Err     error
	decoded bool
}

// Unmarshal decodes an *embedResponse as described there, and anything
// else as the proto codec does.
func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*embedResponse)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		b = buf.ReadOnlyData()
	}
	// Every field but raw_output_contents goes to proto.Unmarshal (with
	// Merge, which is what a message split between fields means), in
	// runs of adjacent fields: one run when Triton writes them in order.
	// The raw contents alias b, which lives until Unmarshal returns.
	var raw [][]byte
	start := 0 // of the current run of other fields
	flush := func(end int) error {
		if end == start {
			return nil
		}
		return gproto.UnmarshalOptions{Merge: true}.Unmarshal(b[start:end], &r.Resp)
	}
	for i := 0; i < len(b); {
		num, typ, n := protowire.ConsumeTag(b[i:])
		if n < 0 {
			return fmt.Errorf("triton: unmarshal response: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[i+n:])
		if m < 0 {
			return fmt.Errorf("triton: unmarshal response: %w", protowire.ParseError(m))
		}
		if num == rawOutputContentsField && typ == protowire.BytesType {
			if err := flush(i); err != nil {
				return err
			}
			v, _ := protowire.ConsumeBytes(b[i+n:])
			raw = append(raw, v)
			start = i + n + m
		}
		i += n + m
	}
	if err := flush(len(b)); err != nil {
		return err
	}
	r.Resp.RawOutputContents = raw
	r.Out, r.Err = r.Codec.Decode(r.N, &r.Resp)
	r.Resp.RawOutputContents = nil // they alias grpc-go's buffer
	r.decoded = true
	return nil
}
