package tritonsim

import (
	"bytes"
	"encoding/binary"
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
	priority      int64 // 0: the default level
}

// invalid is an InvalidArgument status: every validation error is the
// caller's fault and must not be retried.
func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// intParam reads an integer request parameter as sent, int64 or uint64, for
// Observed; ok is false if the parameter has another type.
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
// Triton passes them to the backend. Like Triton's gRPC front end, it takes
// them as int64_param only.
func parseParams(params map[string]*inference.InferParameter) (inferParams, error) {
	var out inferParams
	for _, name := range []string{"timeout", "priority"} {
		p, ok := params[name]
		if !ok {
			continue
		}
		c, ok := p.GetParameterChoice().(*inference.InferParameter_Int64Param)
		if !ok {
			return inferParams{}, invalid("invalid value type for '%s' parameter, expected int64_param.", name)
		}
		if c.Int64Param < 0 {
			// Triton reads these as unsigned; a negative value is a caller's
			// bug, refused here rather than read as ~584,000 years.
			return inferParams{}, invalid("invalid value for '%s' parameter: %d is negative", name, c.Int64Param)
		}
		if name == "timeout" {
			out.timeoutMicros = c.Int64Param
		} else {
			out.priority = c.Int64Param
		}
	}
	return out, nil
}

// parseInputs checks req against m's contract, in the order Triton checks
// (its gRPC front end first, then the core), with Triton's texts where a
// client may match on them, and returns the batch's items and the outputs
// to return, in order.
func (m *modelState) parseInputs(req *inference.ModelInferRequest, outputs model.Config) ([][]byte, []string, error) {
	core := requestPrefix(req.GetId())
	if core == "" {
		core = "[request id: <id_unknown>] " // Triton's core prefixes every message about a request
	}
	ins := req.GetInputs()
	data, err := m.inputData(req)
	if err != nil {
		return nil, nil, err
	}
	if len(ins) != 1 {
		return nil, nil, invalid("%sexpected 1 inputs but got %d inputs for model '%s' (its input is '%s')", core, len(ins), m.name, m.input)
	}
	in := ins[0]
	if in.GetName() != m.input {
		return nil, nil, invalid("%sunexpected inference input '%s' for model '%s'", core, in.GetName(), m.name)
	}
	if in.GetDatatype() != tensor.TypeBytes {
		return nil, nil, invalid("%sinference input '%s' data-type is '%s', but model '%s' expects '%s'", core, m.input, in.GetDatatype(), m.name, tensor.TypeBytes)
	}
	shape := in.GetShape()
	if len(shape) == 0 {
		return nil, nil, invalid("%sinput '%s' has no shape but model requires batch dimension for '%s'", core, m.input, m.name)
	}
	n := shape[0]
	if n > int64(m.maxBatch) {
		return nil, nil, invalid("%sinference request batch-size must be <= %d for '%s'", core, m.maxBatch, m.name)
	}
	if len(shape) != 2 || shape[1] != 1 {
		return nil, nil, invalid("%sunexpected shape for input '%s' for model '%s'. Expected [-1,1], got %s. %s", core, m.input, m.name, shapeString(shape), batchDimNote)
	}
	if n < 1 {
		return nil, nil, invalid("%sinference input '%s' for model '%s' has batch size %d: want at least 1", core, m.input, m.name, n)
	}
	items, err := m.decodeBytes(core, data, int(n))
	if err != nil {
		return nil, nil, err
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

// batchDimNote is the advice Triton appends to a shape mismatch for a model
// with a non-zero max_batch_size.
const batchDimNote = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each input shape. " +
	"If you want to specify the full shape including the batch dim in your input dims config, try setting max_batch_size to zero. " +
	"See the model configuration docs for more info on max_batch_size."

// inputData finds the first input's data as Triton's gRPC front end does:
// from its typed contents (InferTensorContents), serialised as a BYTES
// tensor, or from raw_input_contents, never both.
func (m *modelState) inputData(req *inference.ModelInferRequest) ([]byte, error) {
	ins := req.GetInputs()
	if len(ins) == 0 {
		return nil, nil
	}
	in := ins[0]
	raw := req.GetRawInputContents()
	if in.GetContents() == nil {
		if len(raw) == 0 {
			return nil, invalid("unable to find data for input tensor '%s' for model '%s' in request.", in.GetName(), req.GetModelName())
		}
		if len(raw) > len(ins) {
			return nil, invalid("%d raw_input_contents entries for %d inputs of model '%s': want one per input", len(raw), len(ins), req.GetModelName())
		}
		return raw[0], nil
	}
	if len(raw) > 0 {
		return nil, invalid("contents field must not be specified when using raw_input_contents for '%s' for model '%s'", in.GetName(), req.GetModelName())
	}
	c := in.GetContents()
	// Triton's order of the typed fields; the first non-empty one is the
	// data, a second one is refused.
	fields := []struct {
		datatype string
		n        int
	}{
		{"BOOL", len(c.GetBoolContents())}, {"INT32", len(c.GetIntContents())}, {"INT64", len(c.GetInt64Contents())},
		{"UINT32", len(c.GetUintContents())}, {"UINT64", len(c.GetUint64Contents())}, {"FP32", len(c.GetFp32Contents())},
		{"FP64", len(c.GetFp64Contents())}, {tensor.TypeBytes, len(c.GetBytesContents())},
	}
	supplied := false
	for _, f := range fields {
		if f.n == 0 {
			continue
		}
		if supplied {
			return nil, invalid("unexpected explicit tensor data for input tensor '%s' for model '%s', binary data was already supplied.", in.GetName(), req.GetModelName())
		}
		if f.datatype != in.GetDatatype() {
			return nil, invalid("unexpected explicit tensor data for input tensor '%s' for model '%s' of type '%s', expected datatype '%s'", in.GetName(), req.GetModelName(), f.datatype, in.GetDatatype())
		}
		supplied = true
	}
	// Only BYTES gets this far with data (a typed tensor of another type
	// fails the datatype check next), so serialise bytes_contents as Triton
	// does: a 4-byte length before each element.
	return tensor.EncodeBytes(c.GetBytesContents()), nil
}

// decodeBytes splits a BYTES tensor that must hold n elements, with
// Triton's texts for a count that does not match the shape.
func (m *modelState) decodeBytes(core string, data []byte, n int) ([][]byte, error) {
	items := make([][]byte, 0, n)
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, invalid("%selement byte size indicator exceeds the end of the buffer", core)
		}
		if len(items) == n {
			return nil, invalid("%sunexpected number of string elements %d for inference input '%s' for model '%s', expecting %d", core, n+1, m.input, m.name, n)
		}
		size := binary.LittleEndian.Uint32(data)
		data = data[4:]
		if uint64(size) > uint64(len(data)) {
			return nil, invalid("%sstring element %d of inference input '%s' for model '%s' claims %d bytes but only %d remain", core, len(items), m.input, m.name, size, len(data))
		}
		items = append(items, data[:size:size])
		data = data[size:]
	}
	if len(items) != n {
		return nil, invalid("%sexpected %d string elements for inference input '%s' for model '%s', got %d", core, n, m.input, m.name, len(items))
	}
	return items, nil
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

// shapeString formats a shape as Triton does in its messages: [2,3].
func shapeString(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
