package store

import (
	"math/rand/v2"
	"testing"

	"github.com/morphik-org/colpali-gateway/model"
)

// randomPage returns rows random vectors of VectorDim with unit-scale values.
func randomPage(rng *rand.Rand, rows int) model.Embedding {
	e := model.Embedding{Rows: rows, Dim: VectorDim, Values: make([]float32, rows*VectorDim)}
	for i := range e.Values {
		e.Values[i] = float32(rng.NormFloat64() / 11.3)
	}
	return e
}

// The gateway's own work per page on ingestion: the FDE, its bits, the
// per-patch codes and the fp16 packing, for a ColPali page (1030 x 128),
// on one core (go test -bench EncodePage -cpu 1).
func BenchmarkEncodePage(b *testing.B) {
	p := randomPage(rand.New(rand.NewPCG(1, 2)), 1030)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodePages(1, []model.Embedding{p}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFDE(b *testing.B) {
	p := randomPage(rand.New(rand.NewPCG(1, 2)), 1030)
	for b.Loop() {
		fde.bits(fde.page(p))
	}
}

func BenchmarkEncodeFP16(b *testing.B) {
	p := randomPage(rand.New(rand.NewPCG(1, 2)), 1030)
	for b.Loop() {
		encodeFP16(p)
	}
}
