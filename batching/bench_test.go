package batching

import (
	"context"
	"fmt"
	"testing"

	"github.com/morphik-org/colpali-gateway/model"
)

// BenchmarkEmbed measures the batcher's own cost per call: concurrent
// single-query calls through each mode to a downstream that answers at
// once, so that queueing, dispatch and batch forming are all there is.
func BenchmarkEmbed(b *testing.B) {
	for _, mode := range []Mode{ModeNone, ModeStatic, ModeAdaptive} {
		b.Run(string(mode), func(b *testing.B) {
			bt, err := New(Config{Mode: mode}, Deps{Downstream: &fakeDownstream{embed: func(_ context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
				return echoEmbeddings(items), nil
			}}})
			if err != nil {
				b.Fatal(err)
			}
			defer bt.Close(context.Background())
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for i := 0; pb.Next(); i++ {
					if _, err := bt.Embed(ctx, model.Query, [][]byte{fmt.Appendf(nil, "query %d", i)}, 0); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
