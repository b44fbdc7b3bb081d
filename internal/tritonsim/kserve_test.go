package tritonsim

import (
	"math"
	"testing"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

// kserveRequest builds a request the way a generic KServe v2 client does
// (Triton's own client libraries without binary data, REST-to-gRPC
// proxies): typed contents rather than raw_input_contents, the batch shape
// [n, 1], outputs asked for by name, and an id.
func kserveRequest(modelName, input string, elements [][]byte, outputs ...string) *inference.ModelInferRequest {
	req := &inference.ModelInferRequest{
		ModelName: modelName,
		Id:        "kserve-client-1",
		Inputs: []*inference.ModelInferRequest_InferInputTensor{{
			Name:     input,
			Datatype: "BYTES",
			Shape:    []int64{int64(len(elements)), 1},
			Contents: &inference.InferTensorContents{BytesContents: elements},
		}},
	}
	for _, o := range outputs {
		req.Outputs = append(req.Outputs, &inference.ModelInferRequest_InferRequestedOutputTensor{Name: o})
	}
	return req
}

func TestTypedContentsFromAGenericKServeClient(t *testing.T) {
	for _, datatype := range []string{tensor.TypeFP16, tensor.TypeFP32} {
		t.Run(datatype, func(t *testing.T) {
			ctx := testContext(t)
			cfg := fastConfig()
			cfg.OutputDatatype = datatype
			_, c := startServer(t, cfg)

			queries := [][]byte{[]byte("total revenue 2023"), []byte("org chart")}
			resp, err := c.ModelInfer(ctx, kserveRequest(model.DefaultQueryModel, "text", queries, "num_tokens", "embeddings"))
			if err != nil {
				t.Fatalf("typed-content query request: %v", err)
			}
			if resp.GetId() != "kserve-client-1" || len(resp.GetOutputs()) != 2 || resp.GetOutputs()[1].GetDatatype() != datatype {
				t.Fatalf("response %v: want the id and num_tokens, then %s embeddings", resp.GetOutputs(), datatype)
			}
			rows, err := tensor.DecodeInts(resp.GetRawOutputContents()[0], tensor.TypeINT32, 2)
			if err != nil {
				t.Fatal(err)
			}
			shape := resp.GetOutputs()[1].GetShape()
			values, err := tensor.DecodeFloats(resp.GetRawOutputContents()[1], datatype, int(shape[0]*shape[1]*shape[2]))
			if err != nil {
				t.Fatal(err)
			}
			tolerance := 1e-6
			if datatype == tensor.TypeFP16 {
				tolerance = 1e-3
			}
			for i, q := range queries {
				want := Embed(model.Query, q, 128)
				if rows[i] != want.Rows {
					t.Fatalf("query %d: %d rows, want %d", i, rows[i], want.Rows)
				}
				got := values[i*int(shape[1])*128:]
				for j, v := range want.Values {
					if math.Abs(float64(got[j]-v)) > tolerance {
						t.Fatalf("query %d value %d = %v, want %v: typed contents give other embeddings than raw", i, j, got[j], v)
					}
				}
			}

			// Pages the same way, and the same request raw gives the same bytes.
			pages := [][]byte{testPNG(t, 9), testJPEG(t)}
			typed, err := c.ModelInfer(ctx, kserveRequest(model.DefaultImageModel, "image", pages))
			if err != nil {
				t.Fatalf("typed-content image request: %v", err)
			}
			raw, err := c.ModelInfer(ctx, defaultCodec.Request(model.Image, pages, triton.EmbedOptions{}))
			if err != nil {
				t.Fatal(err)
			}
			if string(typed.GetRawOutputContents()[0]) != string(raw.GetRawOutputContents()[0]) {
				t.Error("typed and raw image requests gave different embeddings")
			}
		})
	}
}
