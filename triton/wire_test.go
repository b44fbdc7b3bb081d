package triton

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestWireCodecMarshalsItemsAsRequest(t *testing.T) {
	codec, wire := NewCodec(model.Config{ModelVersion: "3"}), newWireCodec()
	opt := EmbedOptions{ID: "r1", Timeout: time.Second, Priority: 2}
	big := make([]byte, 300<<10) // a length prefix over one byte, a varint over two
	for i := range big {
		big[i] = byte(i)
	}
	for _, items := range [][][]byte{
		{[]byte("img0"), []byte("im1")},
		{big, {}, []byte("x")}, // an empty item is its prefix alone
		{},
	} {
		data, err := wire.Marshal(&itemsRequest{Codec: &codec, Kind: model.Image, Items: items, Opt: opt})
		if err != nil {
			t.Fatal(err)
		}
		want, err := gproto.MarshalOptions{Deterministic: true}.Marshal(codec.Request(model.Image, items, opt))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data.Materialize(), want) {
			t.Errorf("%d items: the bytes on the wire differ from proto.Marshal's (deterministic)", len(items))
		}
		got := new(inference.ModelInferRequest)
		if err := gproto.Unmarshal(data.Materialize(), got); err != nil {
			t.Fatalf("%d items: unmarshal: %v", len(items), err)
		}
		if diff := cmp.Diff(codec.Request(model.Image, items, opt), got, protocmp.Transform()); diff != "" {
			t.Errorf("%d items: request on the wire (-want +got):\n%s", len(items), diff)
		}
	}
}

// Items over copiedItemsMax in all (page images) are referenced, not
// copied; smaller ones (query texts) are copied after the header, one
// buffer in all.
func TestWireCodecAliasesItems(t *testing.T) {
	item := make([]byte, copiedItemsMax+1)
	data, err := newWireCodec().Marshal(&itemsRequest{Codec: ptr(NewCodec(model.Config{})), Kind: model.Image, Items: [][]byte{item}})
	if err != nil {
		t.Fatal(err)
	}
	last := data[len(data)-1].ReadOnlyData()
	if &last[0] != &item[0] {
		t.Errorf("the item was copied; want it referenced")
	}
	data, err = newWireCodec().Marshal(&itemsRequest{Codec: ptr(NewCodec(model.Config{})), Items: [][]byte{item[:100], item[:copiedItemsMax-108]}})
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 1 {
		t.Errorf("items of %d bytes in all in %d buffers, want 1", copiedItemsMax, len(data))
	}
}

func ptr[T any](v T) *T { return &v }

// Every combination of options, both kinds, a model version or none:
// the bytes are proto.Marshal's (deterministic) of the request Request
// builds; an id that is not UTF-8 is refused, as proto.Marshal refuses it.
func TestWireCodecHeaderMatchesProto(t *testing.T) {
	for _, cfg := range []model.Config{{}, {ModelVersion: "12", QueryModel: "q", QueryInput: "t", EmbeddingsOutput: "e"}} {
		codec := NewCodec(cfg)
		for _, k := range []model.Kind{model.Query, model.Image} {
			for _, opt := range []EmbedOptions{
				{}, {ID: "r1"}, {Priority: 1}, {Timeout: time.Nanosecond}, {Timeout: 300 * time.Second},
				{ID: "x", Timeout: 1 << 62, Priority: 1 << 40},
			} {
				for _, n := range []int{0, 1, 200} {
					items := make([][]byte, n)
					data, err := newWireCodec().Marshal(&itemsRequest{Codec: &codec, Kind: k, Items: items, Opt: opt})
					if err != nil {
						t.Fatal(err)
					}
					want, err := gproto.MarshalOptions{Deterministic: true}.Marshal(codec.Request(k, items, opt))
					if err != nil {
						t.Fatal(err)
					}
					if got := data.Materialize(); !bytes.Equal(got, want) {
						t.Errorf("%v %v, %d items, %+v:\n got %x\nwant %x", cfg, k, n, opt, got, want)
					}
				}
			}
		}
	}
	if _, err := newWireCodec().Marshal(&itemsRequest{Codec: ptr(NewCodec(model.Config{})), Items: [][]byte{{}}, Opt: EmbedOptions{ID: "\xff"}}); err == nil {
		t.Error("an id that is not UTF-8 marshalled; want an error")
	}
	if _, err := newWireCodec().Marshal(&itemsRequest{Codec: ptr(NewCodec(model.Config{QueryModel: "\xff"})), Items: [][]byte{{}}}); err == nil {
		t.Error("a model name that is not UTF-8 marshalled; want an error")
	}
}

func TestWireCodecPassesOtherMessages(t *testing.T) {
	req := &inference.ModelReadyRequest{Name: "m"}
	data, err := newWireCodec().Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	got := new(inference.ModelReadyRequest)
	if err := newWireCodec().Unmarshal(data, got); err != nil || got.GetName() != "m" {
		t.Errorf("round trip: %v, %v", got, err)
	}
}

// An answer decoded from grpc-go's buffers, in one piece or several, with
// raw_output_contents before, between or after the other fields, is what
// proto.Unmarshal and Decode make of it; the raw contents are not kept.
func TestWireCodecDecodesEmbedResponse(t *testing.T) {
	codec := NewCodec(model.Config{Dimension: 4})
	resp := response(tensor.TypeFP16, 4, 3, []int32{2, 3})
	resp.Id = "r9"
	want, wantErr := codec.Decode(2, resp)
	if wantErr != nil {
		t.Fatal(wantErr)
	}
	raw := resp.RawOutputContents
	rest := gproto.Clone(resp).(*inference.ModelInferResponse)
	rest.RawOutputContents = nil
	head, err := gproto.Marshal(rest)
	if err != nil {
		t.Fatal(err)
	}
	appendRaw := func(dst, v []byte) []byte {
		dst = protowire.AppendTag(dst, rawOutputContentsField, protowire.BytesType)
		return protowire.AppendBytes(dst, v)
	}
	inOrder, err := gproto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	rawFirst := appendRaw(appendRaw(nil, raw[0]), raw[1])
	rawFirst = append(rawFirst, head...)
	// raw[0] after the first field (the model name), raw[1] at the end.
	_, _, n := protowire.ConsumeTag(head)
	m := protowire.ConsumeFieldValue(1, protowire.BytesType, head[n:])
	mixed := append(appendRaw(slices.Clone(head[:n+m]), raw[0]), head[n+m:]...)
	mixed = appendRaw(mixed, raw[1])
	for name, b := range map[string][]byte{"in order": inOrder, "raw first": rawFirst, "mixed": mixed} {
		for _, pieces := range []int{1, 3} {
			var data mem.BufferSlice
			step := (len(b) + pieces - 1) / pieces
			for i := 0; i < len(b); i += step {
				data = append(data, mem.SliceBuffer(b[i:min(i+step, len(b))]))
			}
			got := &embedResponse{Codec: &codec, N: 2}
			if err := newWireCodec().Unmarshal(data, got); err != nil {
				t.Fatalf("%s, %d pieces: %v", name, pieces, err)
			}
			if got.Err != nil || !got.decoded {
				t.Fatalf("%s, %d pieces: decoded %v, %v", name, pieces, got.decoded, got.Err)
			}
			if diff := cmp.Diff(want, got.Out); diff != "" {
				t.Errorf("%s, %d pieces: embeddings (-want +got):\n%s", name, pieces, diff)
			}
			if diff := cmp.Diff(rest, &got.Resp, protocmp.Transform()); diff != "" {
				t.Errorf("%s, %d pieces: the other fields (-want +got):\n%s", name, pieces, diff)
			}
		}
	}

	// An answer that breaks the contract: the call succeeded, Err says why.
	bad := &embedResponse{Codec: &codec, N: 3}
	if err := newWireCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(inOrder)}, bad); err != nil || !errors.Is(bad.Err, model.ErrBadResponse) {
		t.Errorf("3 items for 2: Unmarshal %v, Err %v; want nil and ErrBadResponse", err, bad.Err)
	}
	// Bytes that are not a message: the call's error.
	if err := newWireCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(inOrder[:len(inOrder)-1])}, &embedResponse{Codec: &codec, N: 2}); err == nil {
		t.Error("a truncated message unmarshalled; want an error")
	}
}
