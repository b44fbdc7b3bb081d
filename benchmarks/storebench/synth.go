package main

import (
	"math"
	"math/rand/v2"

	"github.com/morphik-org/colpali-gateway/model"
)

// synth generates clustered multi-vector pages and queries whose exact
// answer is meaningful, from a fixed seed.
//
// Topics are random unit directions (the "visual words" of a corpus). A
// page draws topicsPerPage topics; for each it perturbs the topic into its
// own variant (so two pages on the same topic differ), and each patch is
// one of the page's variants plus patch noise, normalised. A query is
// queryRows patches of one page plus query noise, normalised: the page it
// came from should rank first, and pages sharing its topics follow, so
// the exact top 10 is a real ranking, not one obvious hit and noise.
type synth struct {
	dim, patches, queryRows int
	topics                  [][]float32
	topicsPerPage           int
	pageNoise, patchNoise   float64
	queryNoise              float64
}

func newSynth(seed uint64, dim, patches, queryRows, nTopics, topicsPerPage int) *synth {
	rng := rand.New(rand.NewPCG(seed, 0))
	s := &synth{dim: dim, patches: patches, queryRows: queryRows, topicsPerPage: topicsPerPage,
		pageNoise: 0.6, patchNoise: 0.5, queryNoise: 0.3}
	for range nTopics {
		s.topics = append(s.topics, randUnit(rng, dim, nil, 0))
	}
	return s
}

// page returns page i; the same (seed, i) always gives the same page.
func (s *synth) page(seed uint64, i int) model.Embedding {
	rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
	variants := make([][]float32, s.topicsPerPage)
	for t := range variants {
		variants[t] = randUnit(rng, s.dim, s.topics[rng.IntN(len(s.topics))], s.pageNoise)
	}
	e := model.Embedding{Rows: s.patches, Dim: s.dim, Values: make([]float32, 0, s.patches*s.dim)}
	for range s.patches {
		e.Values = append(e.Values, randUnit(rng, s.dim, variants[rng.IntN(len(variants))], s.patchNoise)...)
	}
	return e
}

// query returns a query drawn from page p (itself drawn from seed).
func (s *synth) query(rng *rand.Rand, p model.Embedding) model.Embedding {
	q := model.Embedding{Rows: s.queryRows, Dim: s.dim}
	for range s.queryRows {
		q.Values = append(q.Values, randUnit(rng, s.dim, p.Vector(rng.IntN(p.Rows)), s.queryNoise)...)
	}
	return q
}

// randUnit returns centre + noise·N(0, I/dim), normalised (a random unit
// vector when centre is nil).
func randUnit(rng *rand.Rand, dim int, centre []float32, noise float64) []float32 {
	v := make([]float32, dim)
	sigma := noise / math.Sqrt(float64(dim))
	if centre == nil {
		sigma = 1
	}
	var n float64
	for i := range v {
		x := rng.NormFloat64() * sigma
		if centre != nil {
			x += float64(centre[i])
		}
		v[i] = float32(x)
		n += x * x
	}
	inv := float32(1 / math.Sqrt(n))
	for i := range v {
		v[i] *= inv
	}
	return v
}
