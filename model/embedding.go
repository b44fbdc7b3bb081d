package model

import (
	"errors"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
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
