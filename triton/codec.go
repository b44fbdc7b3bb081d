package triton

import (
	"context"
	"fmt"
	"time"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// EmbedOptions are a batch's KServe v2 request parameters.
type EmbedOptions struct {
	// ID is echoed by Triton in its response and logs; optional.
	ID string
	// Timeout, when positive, is sent as the "timeout" parameter (in
	// microseconds, at least 1) so that Triton can drop a request whose
	// caller has given up.
	Timeout time.Duration
	// Priority, when positive, is sent as the "priority" parameter (1 is
	// the highest). Triton serves a level its model does not have at the
	// model's default level.
	Priority int
}

// Codec encodes batches for, and decodes answers from, the models and
// tensors a model.Config names (see package model for the contract).
type Codec struct {
	cfg model.Config
	// heads are each kind's request fields that no call changes,
	// marshalled once (wire.go).
	heads *[2]requestHead
}

// NewCodec is a Codec for cfg with its defaults applied.
func NewCodec(cfg model.Config) Codec {
	c := Codec{cfg: cfg.WithDefaults(), heads: new([2]requestHead)}
	for _, k := range []model.Kind{model.Query, model.Image} {
		c.heads[k] = c.newRequestHead(k)
	}
	return c
}

// Request builds the ModelInferRequest that embeds items (query texts or
// encoded images) with kind's model, as one batch.
func (c Codec) Request(k model.Kind, items [][]byte, opt EmbedOptions) *inference.ModelInferRequest {
	req := c.header(k, len(items), opt)
	req.RawInputContents = [][]byte{tensor.AppendBytes(nil, items)}
	return req
}

// header is Request without the input tensor's contents: n items.
func (c Codec) header(k model.Kind, n int, opt EmbedOptions) *inference.ModelInferRequest {
	req := &inference.ModelInferRequest{
		ModelName:    c.cfg.ModelName(k),
		ModelVersion: c.cfg.ModelVersion,
		Id:           opt.ID,
		Inputs: []*inference.ModelInferRequest_InferInputTensor{{
			Name:     c.cfg.InputName(k),
			Datatype: tensor.TypeBytes,
			Shape:    []int64{int64(n), 1},
		}},
		Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{
			{Name: c.cfg.EmbeddingsOutput},
			{Name: c.cfg.NumTokensOutput},
		},
	}
	params := map[string]*inference.InferParameter{}
	if opt.Timeout > 0 {
		params["timeout"] = int64Param(max(opt.Timeout.Microseconds(), 1))
	}
	if opt.Priority > 0 {
		params["priority"] = int64Param(int64(opt.Priority))
	}
	if len(params) > 0 {
		req.Parameters = params
	}
	return req
}

func int64Param(v int64) *inference.InferParameter {
	return &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: v}}
}

// Decode turns the response to a batch of n items into one Embedding per
// item, in batch order, checking every shape and size. Its errors wrap
// model.ErrBadResponse.
func (c Codec) Decode(n int, resp *inference.ModelInferResponse) ([]model.Embedding, error) {
	bad := model.ErrBadResponse
	if len(resp.GetRawOutputContents()) != len(resp.GetOutputs()) {
		return nil, fmt.Errorf("%w: %d outputs but %d raw_output_contents entries (typed contents are not supported)",
			bad, len(resp.GetOutputs()), len(resp.GetRawOutputContents()))
	}
	embIdx, lenIdx := -1, -1
	for i, o := range resp.GetOutputs() {
		switch o.GetName() {
		case c.cfg.EmbeddingsOutput:
			embIdx = i
		case c.cfg.NumTokensOutput:
			lenIdx = i
		}
	}
	if embIdx < 0 || lenIdx < 0 {
		return nil, fmt.Errorf("%w: outputs %q and %q are required", bad, c.cfg.EmbeddingsOutput, c.cfg.NumTokensOutput)
	}

	emb := resp.Outputs[embIdx]
	shape := emb.GetShape()
	if len(shape) != 3 || shape[0] != int64(n) || shape[2] != int64(c.cfg.Dimension) || shape[1] < 1 {
		return nil, fmt.Errorf("%w: output %q has shape %v, want [%d, tokens, %d]", bad, emb.GetName(), shape, n, c.cfg.Dimension)
	}
	count, err := tensor.ElementCount(shape)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", bad, err)
	}
	raw, datatype := resp.RawOutputContents[embIdx], emb.GetDatatype()
	size := tensor.ElementSize(datatype)
	if datatype != tensor.TypeFP32 && datatype != tensor.TypeFP16 {
		return nil, fmt.Errorf("%w: output %q: %w: datatype %q is not FP32 or FP16", bad, emb.GetName(), tensor.ErrMalformed, datatype)
	}
	if len(raw) != size*int(count) {
		return nil, fmt.Errorf("%w: output %q: %w: %d bytes for %d %s elements, want %d",
			bad, emb.GetName(), tensor.ErrMalformed, len(raw), count, datatype, size*int(count))
	}

	lens := resp.Outputs[lenIdx]
	if ls := lens.GetShape(); !(len(ls) == 1 && ls[0] == int64(n)) && !(len(ls) == 2 && ls[0] == int64(n) && ls[1] == 1) {
		return nil, fmt.Errorf("%w: output %q has shape %v, want [%d, 1]", bad, lens.GetName(), ls, n)
	}
	rows, err := tensor.DecodeInts(resp.RawOutputContents[lenIdx], lens.GetDatatype(), n)
	if err != nil {
		return nil, fmt.Errorf("%w: output %q: %w", bad, lens.GetName(), err)
	}

	maxRows, dim := int(shape[1]), c.cfg.Dimension
	out := make([]model.Embedding, n)
	for i := range out {
		if rows[i] < 1 || rows[i] > maxRows {
			return nil, fmt.Errorf("%w: item %d has %d tokens, want 1 to %d", bad, i, rows[i], maxRows)
		}
		// Each item's rows are converted straight into a slice of its own:
		// one caller's embedding does not pin the whole batch, and the
		// padding rows are never converted.
		start := i * maxRows * dim * size
		values := make([]float32, rows[i]*dim)
		if err := tensor.DecodeFloatsInto(values, raw[start:start+len(values)*size], datatype); err != nil {
			return nil, fmt.Errorf("%w: output %q: %w", bad, emb.GetName(), err)
		}
		out[i] = model.Embedding{Rows: rows[i], Dim: dim, Values: values}
	}
	return out, nil
}

// Embed embeds items, one batch, with kind's model: one ModelInfer call
// built by the client's Codec (Config.Models), its answer decoded into one
// embedding per item, in order. A failed call's error is classified as
// Infer's; an answer that breaks the contract wraps model.ErrBadResponse.
//
// The items travel to Triton without being copied into a tensor: the
// request is marshalled around them (itemsRequest), so that a batch of
// page images is held once, by its callers; and the request message is
// never built: its bytes are written from the kind's precomputed fields
// and the call's options. The answer is decoded from grpc-go's receive
// buffer, its raw contents never copied (embedResponse).
func (c *Client) Embed(ctx context.Context, kind model.Kind, items [][]byte, opt EmbedOptions) ([]model.Embedding, error) {
	resp := &embedResponse{Codec: &c.codec, N: len(items)}
	if err := c.conn.Invoke(ctx, inference.GRPCInferenceService_ModelInfer_FullMethodName,
		&itemsRequest{Codec: &c.codec, Kind: kind, Items: items, Opt: opt}, resp, c.embedOpts...); err != nil {
		return nil, c.classify(ctx, "ModelInfer "+c.codec.cfg.ModelName(kind), err)
	}
	if !resp.decoded { // grpc-go answers a unary call with one message or an error
		return nil, fmt.Errorf("triton %s: model %s: %w: no response message", c.addr, c.codec.cfg.ModelName(kind), model.ErrBadResponse)
	}
	if resp.Err != nil {
		return nil, fmt.Errorf("triton %s: model %s: %w", c.addr, resp.Resp.GetModelName(), resp.Err)
	}
	return resp.Out, nil
}
