package gateway

import (
	"context"
	"io"
	"log/slog"
	"testing"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/model"
)

// queryEmbedder answers every query with a fresh embedding of the size a
// query has (20 rows of 128), as the Triton codec does: a new slice per
// item.
type queryEmbedder struct{}

func (queryEmbedder) Embed(_ context.Context, _ model.Kind, items [][]byte, _ int) ([]model.Embedding, error) {
	out := make([]model.Embedding, len(items))
	for i := range out {
		out[i] = model.Embedding{Rows: 20, Dim: 128, Values: make([]float32, 20*128)}
	}
	return out, nil
}

func (queryEmbedder) ModelName(kind model.Kind) string { return "bench_" + kind.String() }

// BenchmarkEmbedQueriesGRPC is one EmbedQueries call over loopback gRPC
// through the gateway's interceptors (auth none, info-level logs), client
// included: the gateway's own CPU per call around the embedder.
func BenchmarkEmbedQueriesGRPC(b *testing.B) {
	g := startGateway(b, Config{}, Deps{
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Embedder: queryEmbedder{},
	})
	req := &colpaliv1.EmbedQueriesRequest{Queries: []string{"what is late interaction?"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.client.EmbedQueries(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeFP32 is the response encoding of one query's embedding
// in the default encoding (packed float32).
func BenchmarkEncodeFP32(b *testing.B) {
	embs := []model.Embedding{{Rows: 20, Dim: 128, Values: make([]float32, 20*128)}}
	b.ReportAllocs()
	for b.Loop() {
		_ = encodeAll(embs, colpaliv1.EmbeddingEncoding_EMBEDDING_ENCODING_UNSPECIFIED)
	}
}
