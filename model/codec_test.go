package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
)

func TestNewInferRequest(t *testing.T) {
	cfg := Config{ModelVersion: "3"}.WithDefaults()
	got := cfg.NewInferRequest(Image, [][]byte{[]byte("img0"), []byte("im1")}, Request{ID: "r1", TimeoutMicros: 1500, Priority: 2})
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
	if q := cfg.NewInferRequest(Query, [][]byte{[]byte("q")}, Request{}); q.GetModelName() != "colpali_query" ||
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

func TestDecodeInferResponse(t *testing.T) {
	cfg := Config{Dimension: 4}.WithDefaults()
	for _, dt := range []string{tensor.TypeFP16, tensor.TypeFP32} {
		embs, err := cfg.DecodeInferResponse(3, response(dt, 4, 5, []int32{5, 2, 1}))
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

func TestDecodeInferResponseRejectsContractBreaks(t *testing.T) {
	cfg := Config{Dimension: 4}.WithDefaults()
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
			if _, err := cfg.DecodeInferResponse(2, resp); !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	err := Config{QueryModel: "bad name", Dimension: -1}.WithDefaults().Validate()
	if err == nil {
		t.Fatal("no error for a model name with a space and a negative dimension")
	}
	for _, want := range []string{`QueryModel "bad name"`, "Dimension -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}
}
