package triton

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/morphik-org/colpali-gateway/gen/inference"
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
