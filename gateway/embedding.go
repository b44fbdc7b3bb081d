package gateway

import (
	"context"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/quota"
)

// Embedder computes embeddings for the items of one call, at a priority
// level (1 is served first; 0 is the default level). The batcher
// (batching.Batcher) implements it in front of the router.
type Embedder interface {
	Embed(ctx context.Context, kind model.Kind, items [][]byte, priority int) ([]model.Embedding, error)
	// ModelName is the Triton model that embeds kind, reported to clients.
	ModelName(kind model.Kind) string
}

// priorityLeveler is implemented by an Embedder with priority levels (the
// batcher); requests may ask for levels 1 to PriorityLevels(kind). With an
// Embedder without levels, only 0 (the default) and 1 are valid.
type priorityLeveler interface {
	PriorityLevels(kind model.Kind) int
}

// priorityLevels is the number of priority levels of kind's model.
func (s *embeddingService) priorityLevels(kind model.Kind) int {
	if p, ok := s.embedder.(priorityLeveler); ok {
		return p.PriorityLevels(kind)
	}
	return 1
}

// embeddingService implements colpali.v1.EmbeddingService.
type embeddingService struct {
	colpaliv1.UnimplementedEmbeddingServiceServer
	cfg      Config
	embedder Embedder
	// quotas, when set, limit each tenant's pages per second.
	quotas *quota.Quotas
	images *imageChecker
}

var _ colpaliv1.EmbeddingServiceServer = (*embeddingService)(nil)

func (s *embeddingService) EmbedQueries(ctx context.Context, req *colpaliv1.EmbedQueriesRequest) (*colpaliv1.EmbedQueriesResponse, error) {
	if err := s.validateQueries(req); err != nil {
		return nil, err
	}
	items := make([][]byte, len(req.GetQueries()))
	for i, q := range req.GetQueries() {
		items[i] = []byte(q)
	}
	embs, err := s.embedder.Embed(ctx, model.Query, items, int(req.GetPriority()))
	if err != nil {
		return nil, err
	}
	return &colpaliv1.EmbedQueriesResponse{
		Embeddings: encodeAll(embs, req.GetEncoding()),
		Model:      s.embedder.ModelName(model.Query),
	}, nil
}

func (s *embeddingService) EmbedImages(ctx context.Context, req *colpaliv1.EmbedImagesRequest) (*colpaliv1.EmbedImagesResponse, error) {
	if err := s.validateImages(ctx, req); err != nil {
		return nil, err
	}
	if err := chargePages(ctx, s.quotas, len(req.GetImages())); err != nil {
		return nil, err
	}
	embs, err := s.embedder.Embed(ctx, model.Image, req.GetImages(), int(req.GetPriority()))
	if err != nil {
		return nil, err
	}
	return &colpaliv1.EmbedImagesResponse{
		Embeddings: encodeAll(embs, req.GetEncoding()),
		Model:      s.embedder.ModelName(model.Image),
	}, nil
}

func encodeAll(embs []model.Embedding, enc colpaliv1.EmbeddingEncoding) []*colpaliv1.MultiVector {
	out := make([]*colpaliv1.MultiVector, len(embs))
	for i, e := range embs {
		out[i] = encode(e, enc)
	}
	return out
}

// encode puts one embedding in the encoding the caller asked for.
func encode(e model.Embedding, enc colpaliv1.EmbeddingEncoding) *colpaliv1.MultiVector {
	mv := &colpaliv1.MultiVector{VectorCount: int32(e.Rows), Dimension: int32(e.Dim)} // #nosec G115 -- rows and dimension of an embedding the codec checked against the model and the message size limit
	switch enc {
	case colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT_LIST:
		mv.Vectors = make([]*colpaliv1.Vector, e.Rows)
		for r := range mv.Vectors {
			mv.Vectors[r] = &colpaliv1.Vector{Values: e.Vector(r)}
		}
	case colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_FLOAT16_BYTES:
		mv.DataType = colpaliv1.DataType_DATA_TYPE_FLOAT16
		mv.Data = tensor.AppendFP16(make([]byte, 0, 2*len(e.Values)), e.Values)
	default: // UNSPECIFIED and FLOAT32_BYTES; validation refused anything else
		// The values' own memory, as FLOAT_LIST's vectors are: the
		// embedding is the call's, and nothing writes it any more. A copy
		// was a fifth of the bytes a query's call allocated.
		mv.DataType = colpaliv1.DataType_DATA_TYPE_FLOAT32
		mv.Data = tensor.FP32Bytes(e.Values)
	}
	return mv
}
