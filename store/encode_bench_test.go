package store

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

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

// The gateway's own work per page on ingestion: the checks, the FDE, its
// bits, the per-vector codes and the fp16 packing, for a ColPali page
// (1030 x 128), on one core (go test -bench EncodePage -cpu 1). On a
// shared machine ns/op counts the time others take from it; cpu-ms/page
// (the process's CPU time) does not.
func BenchmarkEncodePage(b *testing.B) {
	p := randomPage(rand.New(rand.NewPCG(1, 2)), 1030)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		if _, err := encodePages(1, []model.Embedding{p}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/page")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Stage 2 of Search for one candidate page: Hamming MaxSim of a 20-vector
// query against 1030 codes.
func BenchmarkHammingMaxSim(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	q := codesOf(patchCodes(randomPage(rng, 20)))
	p := patchCodes(randomPage(rng, 1030))
	cpu0 := cpuTime(b)
	for b.Loop() {
		hammingMaxSim(q, p)
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// Stage 3 of Search for one page: decode its fp16 vectors and exact MaxSim
// of a 20-vector query.
func BenchmarkExactMaxSim(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	q := randomPage(rng, 20)
	p := encodeFP16(randomPage(rng, 1030))
	cpu0 := cpuTime(b)
	for b.Loop() {
		MaxSim(q, DecodeFP16(p, VectorDim))
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

func BenchmarkFDE(b *testing.B) {
	p := randomPage(rand.New(rand.NewPCG(1, 2)), 1030)
	cpu0 := cpuTime(b)
	for b.Loop() {
		fde.bits(fde.page(p))
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

func BenchmarkEncodeFP16(b *testing.B) {
	p := randomPage(rand.New(rand.NewPCG(1, 2)), 1030)
	cpu0 := cpuTime(b)
	for b.Loop() {
		encodeFP16(p)
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// The asymmetric rerank of one candidate page: a 20-vector float query
// against 1030 codes.
func BenchmarkAsymMaxSim(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	t := newAsymTables(randomPage(rng, 20))
	p := patchCodes(randomPage(rng, 1030))
	cpu0 := cpuTime(b)
	for b.Loop() {
		t.maxSim(p)
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}
