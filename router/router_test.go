package router

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// fakeBackend is a Backend whose behaviour each test sets.
type fakeBackend struct {
	infer      func(ctx context.Context, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error)
	modelReady func(ctx context.Context, name, version string) (bool, error)
}

var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) Addr() string { return "fake:8001" }
func (f *fakeBackend) Infer(ctx context.Context, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
	return f.infer(ctx, req)
}
func (f *fakeBackend) ModelReady(ctx context.Context, name, version string) (bool, error) {
	return f.modelReady(ctx, name, version)
}

// echoResponse answers a batch of n with one row of dimension dim per item,
// every value i+1 for item i.
func echoResponse(n, dim int) *inference.ModelInferResponse {
	vals := make([]float32, 0, n*dim)
	lens := make([]int32, n)
	for i := range n {
		lens[i] = 1
		for range dim {
			vals = append(vals, float32(i+1))
		}
	}
	return &inference.ModelInferResponse{
		Outputs: []*inference.ModelInferResponse_InferOutputTensor{
			{Name: "embeddings", Datatype: "FP32", Shape: []int64{int64(n), 1, int64(dim)}},
			{Name: "num_tokens", Datatype: "INT32", Shape: []int64{int64(n), 1}},
		},
		RawOutputContents: [][]byte{tensor.AppendFP32(nil, vals), tensor.AppendINT32(nil, lens)},
	}
}

func TestEmbedSendsTimeoutAndDecodes(t *testing.T) {
	var got *inference.ModelInferRequest
	b := &fakeBackend{infer: func(_ context.Context, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
		got = req
		return echoResponse(2, 128), nil
	}}
	r := New(model.Config{}, b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	embs, err := r.Embed(ctx, model.Query, [][]byte{[]byte("a"), []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	if len(embs) != 2 || embs[1].Values[0] != 2 {
		t.Fatalf("embeddings %v", embs)
	}
	timeout := got.GetParameters()["timeout"].GetInt64Param()
	if timeout <= 1_000_000 || timeout > 2_000_000 {
		t.Errorf("timeout parameter = %dµs, want the ~2s left on the caller's deadline", timeout)
	}
	if got.GetModelName() != "colpali_query" {
		t.Errorf("model = %q", got.GetModelName())
	}
}

func TestEmbedWithoutDeadlineSendsNoTimeout(t *testing.T) {
	b := &fakeBackend{infer: func(_ context.Context, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
		if _, ok := req.GetParameters()["timeout"]; ok {
			return nil, errors.New("timeout parameter sent without a deadline")
		}
		return echoResponse(1, 128), nil
	}}
	if _, err := New(model.Config{}, b).Embed(context.Background(), model.Image, [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
}

func TestEmbedBadResponseNamesBackend(t *testing.T) {
	b := &fakeBackend{infer: func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
		return echoResponse(1, 64), nil // wrong dimension
	}}
	_, err := New(model.Config{}, b).Embed(context.Background(), model.Query, [][]byte{[]byte("x")})
	if !errors.Is(err, model.ErrBadResponse) || !strings.Contains(err.Error(), "fake:8001") {
		t.Fatalf("err = %v, want ErrBadResponse naming the backend", err)
	}
}

func TestReady(t *testing.T) {
	notReady := ""
	b := &fakeBackend{modelReady: func(_ context.Context, name, _ string) (bool, error) {
		return name != notReady, nil
	}}
	r := New(model.Config{}, b)
	if err := r.Ready(context.Background()); err != nil {
		t.Fatalf("all ready: %v", err)
	}
	notReady = "colpali_image"
	if err := r.Ready(context.Background()); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "colpali_image") {
		t.Fatalf("image not ready: %v", err)
	}
	boom := errors.New("connection refused")
	b.modelReady = func(context.Context, string, string) (bool, error) { return false, boom }
	if err := r.Ready(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("backend down: %v", err)
	}
}
