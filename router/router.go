// Package router sends each batch of queries or page images to a Triton
// backend and returns one embedding per item. Today it forwards to a single
// backend; the backend pool, health checks, failover and the GPU-aware
// policy grow here behind the same Embed method.
package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/model"
)

// Backend is what the router needs of one Triton server; *triton.Client
// implements it.
type Backend interface {
	Addr() string
	Infer(ctx context.Context, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error)
	ModelReady(ctx context.Context, model, version string) (bool, error)
}

// ErrNotReady reports a backend whose model is not ready; use errors.Is.
var ErrNotReady = errors.New("model not ready")

// Router embeds batches on its backend.
type Router struct {
	models  model.Config
	backend Backend
}

// New returns a router over one backend for the models of cfg (defaulted).
func New(models model.Config, backend Backend) *Router {
	return &Router{models: models.WithDefaults(), backend: backend}
}

// Embed embeds items, one batch, with kind's model. The time left before
// ctx's deadline also travels as Triton's "timeout" request parameter, so
// that Triton's queue drops the request once its caller has given up.
func (r *Router) Embed(ctx context.Context, kind model.Kind, items [][]byte) ([]model.Embedding, error) {
	var opt model.Request
	if deadline, ok := ctx.Deadline(); ok {
		opt.TimeoutMicros = max(time.Until(deadline).Microseconds(), 1)
	}
	resp, err := r.backend.Infer(ctx, r.models.NewInferRequest(kind, items, opt))
	if err != nil {
		return nil, err
	}
	out, err := r.models.DecodeInferResponse(len(items), resp)
	if err != nil {
		return nil, fmt.Errorf("backend %s, model %s: %w", r.backend.Addr(), resp.GetModelName(), err)
	}
	return out, nil
}

// ModelName is the Triton model that embeds kind.
func (r *Router) ModelName(kind model.Kind) string { return r.models.ModelName(kind) }

// Ready reports nil when both models are ready on the backend, or why not.
func (r *Router) Ready(ctx context.Context) error {
	for _, kind := range []model.Kind{model.Query, model.Image} {
		name := r.models.ModelName(kind)
		ok, err := r.backend.ModelReady(ctx, name, r.models.ModelVersion)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s on backend %s", ErrNotReady, name, r.backend.Addr())
		}
	}
	return nil
}
