package triton

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestCodecRequest(t *testing.T) {
	codec := NewCodec(model.Config{ModelVersion: "3"})
	got := codec.Request(model.Image, [][]byte{[]byte("img0"), []byte("im1")}, EmbedOptions{ID: "r1", Timeout: 1500 * time.Microsecond, Priority: 2})
	int64Param := func(v int64) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: v}}
	}
	want := &inference.ModelInferRequest{
		ModelName:    "colpali_image",
		ModelVersion: "3",
		Id:           "r1",
		Parameters:   map[string]*inference.InferParameter{"timeout": int64Param(1500), "priority": int64Param(2)},
		Inputs: []*inference.ModelInferRequest_InferInputTensor{
			{Name: "image", Datatype: "BYTES", Shape: []int64{2, 1}},
		},
		Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "embeddings"}, {Name: "num_tokens"}},
		RawInputContents: [][]byte{{
			4, 0, 0, 0, 'i', 'm', 'g', '0',
			3, 0, 0, 0, 'i', 'm', '1',
		}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	if q := codec.Request(model.Query, [][]byte{[]byte("q")}, EmbedOptions{}); q.GetModelName() != "colpali_query" ||
		q.GetInputs()[0].GetName() != "text" || q.GetParameters() != nil {
		t.Errorf("query request: %v", q)
	}
}

// response builds a ModelInferResponse of n items padded to maxRows rows,
// where item i has rows[i] rows whose values are all i+1.
func response(dt string, dim, maxRows int, rows []int32) *inference.ModelInferResponse {
	n := len(rows)
	vals := make([]float32, 0, n*maxRows*dim)
	for i := range rows {
		for r := 0; r < maxRows; r++ {
			for d := 0; d < dim; d++ {
				v := float32(0)
				if r < int(rows[i]) {
					v = float32(i + 1)
				}
				vals = append(vals, v)
			}
		}
	}
	var raw []byte
	if dt == tensor.TypeFP16 {
		raw = tensor.AppendFP16(nil, vals)
	} else {
		raw = tensor.AppendFP32(nil, vals)
	}
	return &inference.ModelInferResponse{
		ModelName: "colpali_query",
		Outputs: []*inference.ModelInferResponse_InferOutputTensor{
			{Name: "num_tokens", Datatype: "INT32", Shape: []int64{int64(n), 1}},
			{Name: "embeddings", Datatype: dt, Shape: []int64{int64(n), int64(maxRows), int64(dim)}},
		},
		RawOutputContents: [][]byte{tensor.AppendINT32(nil, rows), raw},
	}
}

func TestCodecDecode(t *testing.T) {
	codec := NewCodec(model.Config{Dimension: 4})
	for _, dt := range []string{tensor.TypeFP16, tensor.TypeFP32} {
		embs, err := codec.Decode(3, response(dt, 4, 5, []int32{5, 2, 1}))
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		for i, e := range embs {
			wantRows := []int{5, 2, 1}[i]
			if e.Rows != wantRows || e.Dim != 4 || len(e.Values) != wantRows*4 {
				t.Fatalf("%s item %d: %d x %d with %d values", dt, i, e.Rows, e.Dim, len(e.Values))
			}
			for _, v := range e.Values {
				if v != float32(i+1) {
					t.Fatalf("%s item %d holds %v: padding or another item leaked in", dt, i, e.Values)
				}
			}
		}
	}
}

func TestCodecDecodeRejectsContractBreaks(t *testing.T) {
	codec := NewCodec(model.Config{Dimension: 4})
	for name, mutate := range map[string]func(*inference.ModelInferResponse){
		"missing output": func(r *inference.ModelInferResponse) {
			r.Outputs = r.Outputs[:1]
			r.RawOutputContents = r.RawOutputContents[:1]
		},
		"typed contents only": func(r *inference.ModelInferResponse) { r.RawOutputContents = nil },
		"wrong batch":         func(r *inference.ModelInferResponse) { r.Outputs[1].Shape[0] = 3 },
		"wrong dimension":     func(r *inference.ModelInferResponse) { r.Outputs[1].Shape[2] = 8 },
		"short data":          func(r *inference.ModelInferResponse) { r.RawOutputContents[1] = r.RawOutputContents[1][:10] },
		"unknown dtype":       func(r *inference.ModelInferResponse) { r.Outputs[1].Datatype = "BF16" },
		"token count too big": func(r *inference.ModelInferResponse) { r.RawOutputContents[0] = tensor.AppendINT32(nil, []int32{6, 1}) },
		"token count zero":    func(r *inference.ModelInferResponse) { r.RawOutputContents[0] = tensor.AppendINT32(nil, []int32{0, 1}) },
		"lengths shape":       func(r *inference.ModelInferResponse) { r.Outputs[0].Shape = []int64{2, 2} },
	} {
		t.Run(name, func(t *testing.T) {
			resp := response(tensor.TypeFP32, 4, 5, []int32{5, 1})
			mutate(resp)
			if _, err := codec.Decode(2, resp); !errors.Is(err, model.ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
		})
	}
}

func TestCodecTimeoutRoundsUp(t *testing.T) {
	req := NewCodec(model.Config{}).Request(model.Query, [][]byte{[]byte("q")}, EmbedOptions{Timeout: time.Nanosecond})
	if got := req.GetParameters()["timeout"].GetInt64Param(); got != 1 {
		t.Errorf("timeout parameter %d for 1ns left, want 1 (0 would mean none)", got)
	}
}

func TestClientEmbed(t *testing.T) {
	sim, c := startSim(t, tritonsim.Config{})
	ctx := testContext(t)
	embs, err := c.Embed(ctx, model.Query, [][]byte{[]byte("a b"), []byte("c")}, EmbedOptions{Timeout: time.Second, Priority: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(embs) != 2 || embs[0].Rows != tritonsim.QueryTokens("a b") || embs[1].Rows != tritonsim.QueryTokens("c") || embs[0].Dim != 128 {
		t.Fatalf("embeddings %+v", embs)
	}
	obs := sim.Observed()
	if len(obs) != 1 || obs[0].Model != "colpali_query" || obs[0].Priority != 2 || obs[0].TimeoutParam != 1_000_000 {
		t.Errorf("observed %+v, want one query call with priority 2 and timeout 1s", obs)
	}

	// A backend serving another dimension breaks the contract.
	wide, err := New(Config{Addr: sim.GRPCAddr(), Models: model.Config{Dimension: 64}})
	if err != nil {
		t.Fatal(err)
	}
	defer wide.Close()
	if _, err := wide.Embed(ctx, model.Query, [][]byte{[]byte("q")}, EmbedOptions{}); !errors.Is(err, model.ErrBadResponse) || !strings.Contains(err.Error(), sim.GRPCAddr()) {
		t.Errorf("err = %v, want ErrBadResponse naming the backend", err)
	}
}
