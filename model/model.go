// Package model is the contract between the gateway and the ColPali models
// served by Triton: the two kinds of input, which models and tensors embed
// them, and the multi-vector embedding each item gets. Package triton
// encodes a batch into one KServe v2 ModelInferRequest by this contract and
// decodes the response; model itself knows nothing of the wire, so that the
// store and the batcher depend on the contract alone.
//
// The contract, with its defaults (every name is configuration):
//
//	query model "colpali_query"
//	  input  "text"        BYTES [batch, 1]  UTF-8 query text
//	image model "colpali_image"
//	  input  "image"       BYTES [batch, 1]  encoded PNG or JPEG page
//	both models
//	  output "embeddings"  FP16 or FP32 [batch, tokens, 128]  L2-normalised,
//	                       padded to the longest item of the batch
//	  output "num_tokens"  INT32 or INT64 [batch, 1] (or [batch])  real rows
//	                       of each item; the rest of its rows are padding
//
// Tensors travel raw (raw_input_contents / raw_output_contents), never as
// typed contents, because FP16 can only travel raw and raw is faster.
package model

import (
	"cmp"
	"strings"

	"github.com/morphik-org/colpali-gateway/internal/config"
)

// Kind says which of the two models a batch is for.
type Kind int

const (
	// Query is the text query model.
	Query Kind = iota
	// Image is the page image model.
	Image
)

func (k Kind) String() string {
	if k == Image {
		return "image"
	}
	return "query"
}

// Defaults of Config.
const (
	DefaultQueryModel       = "colpali_query"
	DefaultImageModel       = "colpali_image"
	DefaultQueryInput       = "text"
	DefaultImageInput       = "image"
	DefaultEmbeddingsOutput = "embeddings"
	DefaultNumTokensOutput  = "num_tokens"
	DefaultDimension        = 128
	DefaultModelVersion     = ""
	maxDimension            = 4096
	maxNameLength           = 256
)

// Config names the Triton models and tensors. In a Config built in Go a
// zero field means its default (WithDefaults); Validate refuses it (see
// package internal/config: one rule for zero).
type Config struct {
	// QueryModel is the Triton model for text queries. Default "colpali_query".
	QueryModel string
	// ImageModel is the Triton model for page images. Default "colpali_image".
	ImageModel string
	// ModelVersion pins a model version; empty lets Triton's version policy
	// choose. Default "".
	ModelVersion string
	// QueryInput is the query model's BYTES input. Default "text".
	QueryInput string
	// ImageInput is the image model's BYTES input. Default "image".
	ImageInput string
	// EmbeddingsOutput is both models' embeddings output. Default "embeddings".
	EmbeddingsOutput string
	// NumTokensOutput is both models' per-item row count output.
	// Default "num_tokens".
	NumTokensOutput string
	// Dimension is the length of every embedding vector. Default 128.
	Dimension int
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.QueryModel = cmp.Or(c.QueryModel, DefaultQueryModel)
	c.ImageModel = cmp.Or(c.ImageModel, DefaultImageModel)
	c.QueryInput = cmp.Or(c.QueryInput, DefaultQueryInput)
	c.ImageInput = cmp.Or(c.ImageInput, DefaultImageInput)
	c.EmbeddingsOutput = cmp.Or(c.EmbeddingsOutput, DefaultEmbeddingsOutput)
	c.NumTokensOutput = cmp.Or(c.NumTokensOutput, DefaultNumTokensOutput)
	c.Dimension = cmp.Or(c.Dimension, DefaultDimension)
	return c
}

// Validate names every bad field of c by its Go name. It takes c as it is:
// an empty name or a zero Dimension is refused, not defaulted (call
// WithDefaults first); ModelVersion may be empty.
func (c Config) Validate() error {
	var errs config.Errors
	for _, f := range []struct{ field, value string }{
		{"QueryModel", c.QueryModel}, {"ImageModel", c.ImageModel},
		{"QueryInput", c.QueryInput}, {"ImageInput", c.ImageInput},
		{"EmbeddingsOutput", c.EmbeddingsOutput}, {"NumTokensOutput", c.NumTokensOutput},
	} {
		if f.value == "" || len(f.value) > maxNameLength || strings.ContainsAny(f.value, " \t\n/") {
			errs.Bad(f.field, f.value, "want 1 to %d characters without spaces or slashes", maxNameLength)
		}
	}
	if c.Dimension < 1 || c.Dimension > maxDimension {
		errs.Bad("Dimension", c.Dimension, "want 1 to %d", maxDimension)
	}
	return errs.Err()
}

// ModelName is the Triton model serving kind.
func (c Config) ModelName(k Kind) string {
	if k == Image {
		return c.ImageModel
	}
	return c.QueryModel
}

// InputName is the BYTES input of kind's model.
func (c Config) InputName(k Kind) string {
	if k == Image {
		return c.ImageInput
	}
	return c.QueryInput
}
