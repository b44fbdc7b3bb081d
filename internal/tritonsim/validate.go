package tritonsim

import (
	"bytes"
	"fmt"
	"image"
	_ "image/jpeg" // registers JPEG with image.DecodeConfig
	_ "image/png"  // registers PNG with image.DecodeConfig
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// inferParams are the request parameters the simulator honours.
type inferParams struct {
	timeoutMicros int64 // 0: none
	priority      int64 // recorded only
}

// invalid is an InvalidArgument status: every validation error is the
// caller's fault and must not be retried.
func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// intParam reads an integer request parameter as Triton accepts it (int64
// or uint64); ok is false if the parameter has another type.
func intParam(p *inference.InferParameter) (v int64, ok bool) {
	switch c := p.GetParameterChoice().(type) {
	case *inference.InferParameter_Int64Param:
		return c.Int64Param, true
	case *inference.InferParameter_Uint64Param:
		if c.Uint64Param > 1<<63-1 {
			return 0, false
		}
		return int64(c.Uint64Param), true
	}
	return 0, false
}

// parseParams reads "timeout" and "priority"; other parameters pass, as
// Triton passes them to the backend.
func parseParams(params map[string]*inference.InferParameter) (inferParams, error) {
	var out inferParams
	for _, name := range []string{"timeout", "priority"} {
		p, ok := params[name]
		if !ok {
			continue
		}
		v, ok := intParam(p)
		if !ok || v < 0 {
			return inferParams{}, invalid("invalid value for '%s' parameter: expected a non-negative int64_param or uint64_param", name)
		}
		if name == "timeout" {
			out.timeoutMicros = v
		} else {
			out.priority = v
		}
	}
	return out, nil
}

// parseInputs checks req against m's contract, in the order Triton checks,
// and returns the batch's items and the outputs to return, in order.
func (m *modelState) parseInputs(req *inference.ModelInferRequest, outputs model.Config) ([][]byte, []string, error) {
	ins := req.GetInputs()
	if len(ins) != 1 {
		return nil, nil, invalid("expected 1 inputs but got %d inputs for model '%s' (its input is '%s')", len(ins), m.name, m.input)
	}
	in := ins[0]
	if in.GetName() != m.input {
		return nil, nil, invalid("unexpected inference input '%s' for model '%s' (its input is '%s')", in.GetName(), m.name, m.input)
	}
	if in.GetDatatype() != tensor.TypeBytes {
		return nil, nil, invalid("inference input '%s' data-type is '%s', but model '%s' expects '%s'", m.input, in.GetDatatype(), m.name, tensor.TypeBytes)
	}
	shape := in.GetShape()
	if !(len(shape) == 1 || (len(shape) == 2 && shape[1] == 1)) {
		return nil, nil, invalid("unexpected shape for input '%s' for model '%s'. Expected [-1,1], got %s", m.input, m.name, shapeString(shape))
	}
	n := shape[0]
	if n < 1 {
		return nil, nil, invalid("inference input '%s' for model '%s' has batch size %d: want at least 1", m.input, m.name, n)
	}
	if n > int64(m.maxBatch) {
		return nil, nil, invalid("inference request batch-size must be <= %d for '%s' (input '%s' has %d)", m.maxBatch, m.name, m.input, n)
	}
	if hasTypedContents(in.GetContents()) {
		return nil, nil, invalid("inference input '%s' for model '%s' uses typed contents: this simulator supports only raw_input_contents", m.input, m.name)
	}
	raw := req.GetRawInputContents()
	if len(raw) != 1 {
		return nil, nil, invalid("inference input '%s' for model '%s': expected 1 raw_input_contents entry (one per input, only raw is supported), got %d", m.input, m.name, len(raw))
	}
	items, err := tensor.DecodeBytes(raw[0], int(n))
	if err != nil {
		return nil, nil, invalid("inference input '%s' for model '%s': %v", m.input, m.name, err)
	}
	for i, item := range items {
		if err := m.checkItem(i, item); err != nil {
			return nil, nil, err
		}
	}

	names, err := m.requestedOutputs(req, outputs)
	if err != nil {
		return nil, nil, err
	}
	return items, names, nil
}

// checkItem checks one element: a query must be non-empty UTF-8, an image
// must be a PNG or JPEG that the real model's preprocessing could open.
func (m *modelState) checkItem(i int, item []byte) error {
	if m.kind == model.Image {
		if _, _, err := image.DecodeConfig(bytes.NewReader(item)); err != nil {
			return invalid("image %d: not a decodable PNG or JPEG (input '%s' of model '%s'): %v", i, m.input, m.name, err)
		}
		return nil
	}
	if len(item) == 0 {
		return invalid("query %d is empty (input '%s' of model '%s')", i, m.input, m.name)
	}
	if !utf8.Valid(item) {
		return invalid("query %d is not valid UTF-8 (input '%s' of model '%s')", i, m.input, m.name)
	}
	return nil
}

// requestedOutputs are the outputs the caller asked for, in its order, or
// both outputs if it named none (Triton returns every output then).
func (m *modelState) requestedOutputs(req *inference.ModelInferRequest, c model.Config) ([]string, error) {
	outs := req.GetOutputs()
	if len(outs) == 0 {
		return []string{c.EmbeddingsOutput, c.NumTokensOutput}, nil
	}
	names := make([]string, 0, len(outs))
	for _, o := range outs {
		name := o.GetName()
		if name != c.EmbeddingsOutput && name != c.NumTokensOutput {
			return nil, invalid("unexpected inference output '%s' for model '%s' (its outputs are '%s' and '%s')", name, m.name, c.EmbeddingsOutput, c.NumTokensOutput)
		}
		for _, seen := range names {
			if seen == name {
				return nil, invalid("inference output '%s' for model '%s' is requested twice", name, m.name)
			}
		}
		names = append(names, name)
	}
	return names, nil
}

// hasTypedContents reports whether any typed contents field holds data.
func hasTypedContents(c *inference.InferTensorContents) bool {
	return c != nil && (len(c.GetBoolContents()) > 0 || len(c.GetIntContents()) > 0 ||
		len(c.GetInt64Contents()) > 0 || len(c.GetUintContents()) > 0 || len(c.GetUint64Contents()) > 0 ||
		len(c.GetFp32Contents()) > 0 || len(c.GetFp64Contents()) > 0 || len(c.GetBytesContents()) > 0)
}

// shapeString formats a shape as Triton does in its messages: [2,3].
func shapeString(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
