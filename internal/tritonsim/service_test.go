package tritonsim

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

func TestServerMetadataAndHealth(t *testing.T) {
	ctx := testContext(t)
	_, c := startServer(t, fastConfig())

	md, err := c.ServerMetadata(ctx, &inference.ServerMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if md.GetName() != "colpali-gateway-tritonsim (a Triton simulator, not Triton)" {
		t.Errorf("ServerMetadata name %q does not say it is a simulator", md.GetName())
	}
	live, err := c.ServerLive(ctx, &inference.ServerLiveRequest{})
	if err != nil || !live.GetLive() {
		t.Errorf("ServerLive = %v, %v; want live", live, err)
	}
	ready, err := c.ServerReady(ctx, &inference.ServerReadyRequest{})
	if err != nil || !ready.GetReady() {
		t.Errorf("ServerReady = %v, %v; want ready", ready, err)
	}
	for _, tc := range []struct {
		name, version string
		want          bool
	}{
		{model.DefaultQueryModel, "", true},
		{model.DefaultImageModel, "1", true},
		{model.DefaultImageModel, "2", false},
		{"unknown", "", false}, // Triton answers false, not an error
	} {
		r, err := c.ModelReady(ctx, &inference.ModelReadyRequest{Name: tc.name, Version: tc.version})
		if err != nil || r.GetReady() != tc.want {
			t.Errorf("ModelReady(%q, %q) = %v, %v; want %v", tc.name, tc.version, r.GetReady(), err, tc.want)
		}
	}
}

func TestModelMetadata(t *testing.T) {
	ctx := testContext(t)
	cfg := fastConfig()
	cfg.OutputDatatype = tensor.TypeFP32
	cfg.Model = model.Config{QueryModel: "q", QueryInput: "query_text", Dimension: 96}
	_, c := startServer(t, cfg)

	got, err := c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	want := &inference.ModelMetadataResponse{
		Name:     "q",
		Versions: []string{"1"},
		Platform: "python",
		Inputs:   []*inference.ModelMetadataResponse_TensorMetadata{{Name: "query_text", Datatype: "BYTES", Shape: []int64{-1, 1}}},
		Outputs: []*inference.ModelMetadataResponse_TensorMetadata{
			{Name: "embeddings", Datatype: "FP32", Shape: []int64{-1, -1, 96}},
			{Name: "num_tokens", Datatype: "INT32", Shape: []int64{-1, 1}},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("ModelMetadata (-want +got):\n%s", diff)
	}
	img, err := c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: model.DefaultImageModel})
	if err != nil || img.GetInputs()[0].GetName() != "image" {
		t.Errorf("image model metadata = %v, %v; want input \"image\"", img, err)
	}

	_, err = c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "nope"})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "Request for unknown model: 'nope' is not found") {
		t.Errorf("unknown model: %v, want NotFound in Triton's words", err)
	}
	_, err = c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "q", Version: "7"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown version: %v, want NotFound", err)
	}
}

func TestInferReturnsTheEmbeddings(t *testing.T) {
	for _, dt := range []string{tensor.TypeFP32, tensor.TypeFP16} {
		t.Run(dt, func(t *testing.T) {
			ctx := testContext(t)
			cfg := fastConfig()
			cfg.OutputDatatype = dt
			_, c := startServer(t, cfg)

			texts := [][]byte{[]byte("what is colpali"), []byte("late interaction retrieval over page images")}
			req := defaultCodec.Request(model.Query, texts, triton.EmbedOptions{ID: "req-1"})
			resp, err := c.ModelInfer(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetId() != "req-1" || resp.GetModelName() != model.DefaultQueryModel || resp.GetModelVersion() != "1" {
				t.Errorf("response id/model/version = %q %q %q", resp.GetId(), resp.GetModelName(), resp.GetModelVersion())
			}
			emb := resp.GetOutputs()[0]
			maxRows := QueryTokens(string(texts[1]))
			if emb.GetDatatype() != dt || !cmp.Equal(emb.GetShape(), []int64{2, int64(maxRows), 128}) {
				t.Errorf("embeddings %s %v, want %s [2 %d 128]", emb.GetDatatype(), emb.GetShape(), dt, maxRows)
			}
			if got, want := len(resp.GetRawOutputContents()[0]), 2*maxRows*128*tensor.ElementSize(dt); got != want {
				t.Errorf("embeddings are %d bytes, want %d", got, want)
			}
			got, err := defaultCodec.Decode(2, resp)
			if err != nil {
				t.Fatalf("the gateway's decoder rejects the response: %v", err)
			}
			tol := 0.0
			if dt == tensor.TypeFP16 {
				tol = 1e-3
			}
			for i, text := range texts {
				want := Embed(model.Query, text, 128)
				if got[i].Rows != want.Rows {
					t.Fatalf("item %d: %d rows, want %d", i, got[i].Rows, want.Rows)
				}
				for j := range want.Values {
					if math.Abs(float64(got[i].Values[j]-want.Values[j])) > tol {
						t.Fatalf("item %d value %d: %v, want %v", i, j, got[i].Values[j], want.Values[j])
					}
				}
			}
			// The same request again gives the same bytes.
			again, err := c.ModelInfer(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if !cmp.Equal(resp.GetRawOutputContents(), again.GetRawOutputContents()) {
				t.Error("the same input gave different outputs")
			}
		})
	}
}

func TestInferImagesAndOutputSelection(t *testing.T) {
	ctx := testContext(t)
	_, c := startServer(t, fastConfig())

	req := defaultCodec.Request(model.Image, [][]byte{testPNG(t, 1), testJPEG(t)}, triton.EmbedOptions{})
	// Only num_tokens.
	req.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "num_tokens"}}
	resp, err := c.ModelInfer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetOutputs()) != 1 || resp.GetOutputs()[0].GetName() != "num_tokens" {
		t.Fatalf("outputs %v, want only num_tokens", resp.GetOutputs())
	}
	rows, err := tensor.DecodeInts(resp.GetRawOutputContents()[0], tensor.TypeINT32, 2)
	if err != nil || !cmp.Equal(rows, []int{ImageTokens, ImageTokens}) {
		t.Errorf("num_tokens = %v, %v; want [1030 1030]", rows, err)
	}

	// No requested outputs: both, embeddings first.
	resp, err = c.ModelInfer(ctx, &inference.ModelInferRequest{
		ModelName:        model.DefaultImageModel,
		Inputs:           []*inference.ModelInferRequest_InferInputTensor{{Name: "image", Datatype: "BYTES", Shape: []int64{1, 1}}},
		RawInputContents: [][]byte{tensor.EncodeBytes([][]byte{testPNG(t, 2)})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetOutputs()) != 2 || resp.GetOutputs()[0].GetName() != "embeddings" {
		t.Errorf("outputs %v, want embeddings and num_tokens", resp.GetOutputs())
	}
}

func TestInferLargeFP32ImageBatch(t *testing.T) {
	// 16 FP32 pages are ~8.4 MB, twice grpc-go's default 4 MiB limit.
	ctx := testContext(t)
	cfg := fastConfig()
	cfg.OutputDatatype = tensor.TypeFP32
	_, c := startServer(t, cfg)
	resp, err := c.ModelInfer(ctx, imageRequest(t, 16))
	if err != nil {
		t.Fatalf("16 FP32 pages: %v", err)
	}
	if got, want := len(resp.GetRawOutputContents()[0]), 16*ImageTokens*128*4; got != want {
		t.Errorf("embeddings are %d bytes, want %d", got, want)
	}
}

func TestInferValidation(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, fastConfig())

	mutate := func(base *inference.ModelInferRequest, f func(r *inference.ModelInferRequest)) *inference.ModelInferRequest {
		r := proto.Clone(base).(*inference.ModelInferRequest)
		f(r)
		return r
	}
	q := queryRequest("hello", "world")
	img := imageRequest(t, 2)
	for _, tc := range []struct {
		name string
		req  *inference.ModelInferRequest
		code codes.Code
		msg  string
	}{
		{"unknown model", mutate(q, func(r *inference.ModelInferRequest) { r.ModelName = "nope" }),
			codes.NotFound, "Request for unknown model: 'nope' is not found"},
		{"unknown version", mutate(q, func(r *inference.ModelInferRequest) { r.ModelVersion = "3" }),
			codes.NotFound, "version 3 is not found"},
		{"two inputs", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs = append(r.Inputs, r.Inputs[0]) }),
			codes.InvalidArgument, "expected 1 inputs but got 2 inputs"},
		{"no input", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs = nil }),
			codes.InvalidArgument, "expected 1 inputs but got 0 inputs"},
		{"wrong input name", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs[0].Name = "txt" }),
			codes.InvalidArgument, "unexpected inference input 'txt'"},
		// Triton's own texts, whole, for the mismatches clients match on.
		{"wrong datatype", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs[0].Datatype = "FP32" }),
			codes.InvalidArgument, "[request id: <id_unknown>] inference input 'text' data-type is 'FP32', but model 'colpali_query' expects 'BYTES'"},
		{"bad shape", mutate(q, func(r *inference.ModelInferRequest) { r.Id = "r7"; r.Inputs[0].Shape = []int64{2, 3} }),
			codes.InvalidArgument, "[request id: r7] unexpected shape for input 'text' for model 'colpali_query'. Expected [-1,1], got [2,3]. NOTE: Setting a non-zero max_batch_size"},
		{"no batch dimension", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{2} }),
			codes.InvalidArgument, "unexpected shape for input 'text' for model 'colpali_query'. Expected [-1,1], got [2]."},
		{"empty batch", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{0, 1} }),
			codes.InvalidArgument, "has batch size 0"},
		{"query batch too large", queryRequest(make([]string, 65)...),
			codes.InvalidArgument, "[request id: <id_unknown>] inference request batch-size must be <= 64 for 'colpali_query'"},
		{"image batch too large", imageRequest(t, 17),
			codes.InvalidArgument, "inference request batch-size must be <= 16 for 'colpali_image'"},
		{"typed and raw contents", mutate(q, func(r *inference.ModelInferRequest) {
			r.Inputs[0].Contents = &inference.InferTensorContents{BytesContents: [][]byte{[]byte("a"), []byte("b")}}
		}), codes.InvalidArgument, "contents field must not be specified when using raw_input_contents for 'text' for model 'colpali_query'"},
		{"typed contents of another type", mutate(q, func(r *inference.ModelInferRequest) {
			r.RawInputContents = nil
			r.Inputs[0].Contents = &inference.InferTensorContents{Fp32Contents: []float32{1, 2}}
		}), codes.InvalidArgument, "unexpected explicit tensor data for input tensor 'text' for model 'colpali_query' of type 'FP32', expected datatype 'BYTES'"},
		{"two typed contents", mutate(q, func(r *inference.ModelInferRequest) {
			r.RawInputContents = nil
			r.Inputs[0].Contents = &inference.InferTensorContents{IntContents: []int32{1}, BytesContents: [][]byte{[]byte("a"), []byte("b")}}
			r.Inputs[0].Datatype = "INT32"
		}), codes.InvalidArgument, "unexpected explicit tensor data for input tensor 'text' for model 'colpali_query', binary data was already supplied."},
		{"too few typed elements", mutate(q, func(r *inference.ModelInferRequest) {
			r.RawInputContents = nil
			r.Inputs[0].Contents = &inference.InferTensorContents{BytesContents: [][]byte{[]byte("a")}}
		}), codes.InvalidArgument, "expected 2 string elements for inference input 'text' for model 'colpali_query', got 1"},
		{"no data", mutate(q, func(r *inference.ModelInferRequest) { r.RawInputContents = nil }),
			codes.InvalidArgument, "unable to find data for input tensor 'text' for model 'colpali_query' in request."},
		{"fewer elements than the shape", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{3, 1} }),
			codes.InvalidArgument, "expected 3 string elements for inference input 'text' for model 'colpali_query', got 2"},
		{"more elements than the shape", mutate(q, func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{1, 1} }),
			codes.InvalidArgument, "unexpected number of string elements 2 for inference input 'text' for model 'colpali_query', expecting 1"},
		{"truncated length", mutate(q, func(r *inference.ModelInferRequest) { r.RawInputContents[0] = r.RawInputContents[0][:11] }),
			codes.InvalidArgument, "element byte size indicator exceeds the end of the buffer"},
		{"truncated element", mutate(q, func(r *inference.ModelInferRequest) { r.RawInputContents[0] = r.RawInputContents[0][:6] }),
			codes.InvalidArgument, "input 'text' for model 'colpali_query'"},
		{"unknown output", mutate(q, func(r *inference.ModelInferRequest) { r.Outputs[1].Name = "pooled" }),
			codes.InvalidArgument, "unexpected inference output 'pooled'"},
		{"duplicate output", mutate(q, func(r *inference.ModelInferRequest) { r.Outputs[1].Name = "embeddings" }),
			codes.InvalidArgument, "requested twice"},
		{"empty query", queryRequest("fine", ""),
			codes.InvalidArgument, "query 1 is empty"},
		{"invalid UTF-8", queryRequest("\xff\xfe"),
			codes.InvalidArgument, "query 0 is not valid UTF-8"},
		{"not an image", mutate(img, func(r *inference.ModelInferRequest) {
			r.RawInputContents[0] = tensor.EncodeBytes([][]byte{testPNG(t, 0), []byte("%PDF-1.7")})
		}), codes.InvalidArgument, "image 1: not a decodable PNG or JPEG"},
		{"timeout of the wrong type", mutate(q, func(r *inference.ModelInferRequest) {
			r.Parameters = map[string]*inference.InferParameter{"timeout": {ParameterChoice: &inference.InferParameter_StringParam{StringParam: "1s"}}}
		}), codes.InvalidArgument, "invalid value type for 'timeout' parameter, expected int64_param."},
		{"uint64 priority", mutate(q, func(r *inference.ModelInferRequest) {
			r.Parameters = map[string]*inference.InferParameter{"priority": {ParameterChoice: &inference.InferParameter_Uint64Param{Uint64Param: 1}}}
		}), codes.InvalidArgument, "invalid value type for 'priority' parameter, expected int64_param."},
		{"negative priority", mutate(q, func(r *inference.ModelInferRequest) {
			r.Parameters = map[string]*inference.InferParameter{"priority": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: -1}}}
		}), codes.InvalidArgument, "'priority' parameter"},
	} {
		_, err := c.ModelInfer(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: got %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
	}

	// Nothing executed; every call that named a served model failed once.
	qs, is := statsOf(t, ctx, c, model.DefaultQueryModel), statsOf(t, ctx, c, model.DefaultImageModel)
	if qs.GetExecutionCount()+is.GetExecutionCount() != 0 {
		t.Errorf("invalid requests executed: %d + %d executions", qs.GetExecutionCount(), is.GetExecutionCount())
	}
	if got := qs.GetInferenceStats().GetFail().GetCount() + is.GetInferenceStats().GetFail().GetCount(); got != 26 {
		t.Errorf("fail count %d, want 26 (every case but the unknown model and version)", got)
	}
	if got := len(s.Observed()); got != 28 {
		t.Errorf("Observed has %d calls, want all 28", got)
	}
}

func TestModelStatistics(t *testing.T) {
	ctx := testContext(t)
	_, c := startServer(t, fastConfig())
	for _, n := range []int{3, 3, 1} {
		if _, err := c.ModelInfer(ctx, queryRequest(make([]string, n)...)); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("empty queries: %v, want InvalidArgument", err)
		}
	}
	for _, texts := range [][]string{{"a", "b", "c"}, {"d", "e", "f"}, {"g"}} {
		if _, err := c.ModelInfer(ctx, queryRequest(texts...)); err != nil {
			t.Fatal(err)
		}
	}

	st := statsOf(t, ctx, c, model.DefaultQueryModel)
	is := st.GetInferenceStats()
	if st.GetName() != model.DefaultQueryModel || st.GetVersion() != "1" ||
		st.GetInferenceCount() != 7 || st.GetExecutionCount() != 3 || st.GetLastInference() == 0 {
		t.Errorf("name %q version %q inference_count %d execution_count %d last_inference %d; want 7 items in 3 executions",
			st.GetName(), st.GetVersion(), st.GetInferenceCount(), st.GetExecutionCount(), st.GetLastInference())
	}
	if is.GetSuccess().GetCount() != 3 || is.GetFail().GetCount() != 3 || is.GetComputeInfer().GetCount() != 3 ||
		is.GetSuccess().GetNs() == 0 || is.GetComputeInfer().GetNs() == 0 || is.GetQueue().GetCount() != 3 {
		t.Errorf("inference_stats %v: want 3 successes with time, 3 failures", is)
	}
	var sizes []uint64
	for _, b := range st.GetBatchStats() {
		sizes = append(sizes, b.GetBatchSize())
		if b.GetBatchSize() == 3 && b.GetComputeInfer().GetCount() != 2 {
			t.Errorf("batch size 3 ran %d times, want 2", b.GetComputeInfer().GetCount())
		}
	}
	if !cmp.Equal(sizes, []uint64{1, 3}) {
		t.Errorf("batch_stats sizes %v, want [1 3]", sizes)
	}

	all, err := c.ModelStatistics(ctx, &inference.ModelStatisticsRequest{})
	if err != nil || len(all.GetModelStats()) != 2 {
		t.Fatalf("ModelStatistics(all) = %v, %v; want both models", all, err)
	}
	if img := all.GetModelStats()[1]; img.GetName() != model.DefaultImageModel || img.GetLastInference() != 0 {
		t.Errorf("image model stats %v: want untouched", img)
	}
	if _, err := c.ModelStatistics(ctx, &inference.ModelStatisticsRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("statistics of an unknown model: %v, want NotFound", err)
	}
}

func TestObservedRecordsWhatArrived(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, fastConfig())

	req := defaultCodec.Request(model.Query, [][]byte{[]byte("a"), []byte("b")}, triton.EmbedOptions{Timeout: 250 * time.Millisecond, Priority: 2})
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := c.ModelInfer(metadata.AppendToOutgoingContext(ctx, "traceparent", traceparent), req); err != nil { // ctx has a deadline
		t.Fatal(err)
	}
	// No timeout here on purpose: the observation of a call without a
	// deadline is the point, and the call fails at once.
	noDeadline := t.Context()
	bad := queryRequest("x")
	bad.ModelName = "elsewhere"
	if _, err := c.ModelInfer(noDeadline, bad); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown model: %v", err)
	}

	obs := s.Observed()
	if len(obs) != 2 {
		t.Fatalf("Observed() = %v, want 2 calls", obs)
	}
	first := obs[0]
	if first.Model != model.DefaultQueryModel || first.BatchSize != 2 || first.TimeoutParam != 250000 || first.Priority != 2 || first.Traceparent != traceparent {
		t.Errorf("first observation %+v", first)
	}
	if first.DeadlineLeft <= 0 || first.DeadlineLeft > testutil.Timeout {
		t.Errorf("DeadlineLeft %v, want within (0, %v]", first.DeadlineLeft, testutil.Timeout)
	}
	if diff := cmp.Diff(Observation{Model: "elsewhere", BatchSize: 1}, obs[1]); diff != "" {
		t.Errorf("second observation (-want +got):\n%s", diff)
	}
}

func TestObservationsAreBounded(t *testing.T) {
	var o observations
	for i := range maxObservations + 10 {
		o.add(Observation{BatchSize: i})
	}
	got := o.list()
	if len(got) != maxObservations || got[0].BatchSize != 10 || got[len(got)-1].BatchSize != maxObservations+9 {
		t.Errorf("kept %d observations from %d to %d; want the last %d in order",
			len(got), got[0].BatchSize, got[len(got)-1].BatchSize, maxObservations)
	}
}
