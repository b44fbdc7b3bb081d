package model

import (
	"errors"
	"fmt"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
)

// ErrBadResponse is the class of every error about a Triton response that
// does not follow the contract; use errors.Is. It means a misconfigured or
// mismatched model, not bad client input: class Internal.
var ErrBadResponse = errclass.Wrap(errclass.Internal, errors.New("model response does not follow the ColPali contract"))

// Embedding is one item's multi-vector embedding: Rows vectors of Dim
// float32 values, row-major in Values.
type Embedding struct {
	Rows   int
	Dim    int
	Values []float32
}

// Vector returns row i.
func (e Embedding) Vector(i int) []float32 { return e.Values[i*e.Dim : (i+1)*e.Dim] }

// Request options carried as KServe v2 request parameters.
type Request struct {
	// ID is echoed by Triton in its response and logs; optional.
	ID string
	// TimeoutMicros, when positive, is sent as the "timeout" parameter so
	// that Triton can drop a request whose caller has given up.
	TimeoutMicros int64
	// Priority, when positive, is sent as the "priority" parameter
	// (1 is the highest).
	Priority int64
}

// NewInferRequest builds the ModelInferRequest that embeds items (query
// texts or encoded images) with kind's model, as one batch.
func (c Config) NewInferRequest(k Kind, items [][]byte, opt Request) *inference.ModelInferRequest {
	req := &inference.ModelInferRequest{
		ModelName:    c.ModelName(k),
		ModelVersion: c.ModelVersion,
		Id:           opt.ID,
		Inputs: []*inference.ModelInferRequest_InferInputTensor{{
			Name:     c.InputName(k),
			Datatype: tensor.TypeBytes,
			Shape:    []int64{int64(len(items)), 1},
		}},
		Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{
			{Name: c.EmbeddingsOutput},
			{Name: c.NumTokensOutput},
		},
		RawInputContents: [][]byte{tensor.EncodeBytes(items)},
	}
	params := map[string]*inference.InferParameter{}
	if opt.TimeoutMicros > 0 {
		params["timeout"] = &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: opt.TimeoutMicros}}
	}
	if opt.Priority > 0 {
		params["priority"] = &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: opt.Priority}}
	}
	if len(params) > 0 {
		req.Parameters = params
	}
	return req
}

// DecodeInferResponse turns the response to a batch of n items into one
// Embedding per item, in batch order, checking every shape and size.
func (c Config) DecodeInferResponse(n int, resp *inference.ModelInferResponse) ([]Embedding, error) {
	if len(resp.GetRawOutputContents()) != len(resp.GetOutputs()) {
		return nil, fmt.Errorf("%w: %d outputs but %d raw_output_contents entries (typed contents are not supported)",
			ErrBadResponse, len(resp.GetOutputs()), len(resp.GetRawOutputContents()))
	}
	embIdx, lenIdx := -1, -1
	for i, o := range resp.GetOutputs() {
		switch o.GetName() {
		case c.EmbeddingsOutput:
			embIdx = i
		case c.NumTokensOutput:
			lenIdx = i
		}
	}
	if embIdx < 0 || lenIdx < 0 {
		return nil, fmt.Errorf("%w: outputs %q and %q are required", ErrBadResponse, c.EmbeddingsOutput, c.NumTokensOutput)
	}

	emb := resp.Outputs[embIdx]
	shape := emb.GetShape()
	if len(shape) != 3 || shape[0] != int64(n) || shape[2] != int64(c.Dimension) || shape[1] < 1 {
		return nil, fmt.Errorf("%w: output %q has shape %v, want [%d, tokens, %d]", ErrBadResponse, emb.GetName(), shape, n, c.Dimension)
	}
	count, err := tensor.ElementCount(shape)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	values, err := tensor.DecodeFloats(resp.RawOutputContents[embIdx], emb.GetDatatype(), int(count))
	if err != nil {
		return nil, fmt.Errorf("%w: output %q: %w", ErrBadResponse, emb.GetName(), err)
	}

	lens := resp.Outputs[lenIdx]
	if ls := lens.GetShape(); !(len(ls) == 1 && ls[0] == int64(n)) && !(len(ls) == 2 && ls[0] == int64(n) && ls[1] == 1) {
		return nil, fmt.Errorf("%w: output %q has shape %v, want [%d, 1]", ErrBadResponse, lens.GetName(), ls, n)
	}
	rows, err := tensor.DecodeInts(resp.RawOutputContents[lenIdx], lens.GetDatatype(), n)
	if err != nil {
		return nil, fmt.Errorf("%w: output %q: %w", ErrBadResponse, lens.GetName(), err)
	}

	maxRows, dim := int(shape[1]), c.Dimension
	out := make([]Embedding, n)
	for i := range out {
		if rows[i] < 1 || rows[i] > maxRows {
			return nil, fmt.Errorf("%w: item %d has %d tokens, want 1 to %d", ErrBadResponse, i, rows[i], maxRows)
		}
		start := i * maxRows * dim
		// Copy so that one caller's embedding does not pin the whole batch.
		out[i] = Embedding{Rows: rows[i], Dim: dim, Values: append([]float32(nil), values[start:start+rows[i]*dim]...)}
	}
	return out, nil
}
