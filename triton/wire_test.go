package triton

import (
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
		data, err := wire.Marshal(&itemsRequest{ModelInferRequest: codec.header(model.Image, len(items), opt), Items: items})
		if err != nil {
			t.Fatal(err)
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

func TestWireCodecAliasesItems(t *testing.T) {
	item := []byte("page")
	data, err := newWireCodec().Marshal(&itemsRequest{ModelInferRequest: NewCodec(model.Config{}).header(model.Image, 1, EmbedOptions{}), Items: [][]byte{item}})
	if err != nil {
		t.Fatal(err)
	}
	last := data[len(data)-1].ReadOnlyData()
	if &last[0] != &item[0] {
		t.Errorf("the item was copied; want it referenced")
	}
}

func TestWireCodecRefusesTwoTensors(t *testing.T) {
	req := NewCodec(model.Config{}).Request(model.Image, [][]byte{[]byte("a")}, EmbedOptions{})
	if _, err := newWireCodec().Marshal(&itemsRequest{ModelInferRequest: req, Items: [][]byte{[]byte("b")}}); err == nil {
		t.Error("a request with raw_input_contents and items marshalled; want an error")
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
