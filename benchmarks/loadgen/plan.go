package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Call kinds.
const (
	kindQuery = "query"
	kindImage = "image"
)

// arrival is one planned call: when it is due (from the start) and what it
// sends.
type arrival struct {
	at   time.Duration
	kind string
	// payload indexes the pre-built payload pool of its kind.
	payload int
}

// mix is the share of each call kind, summing to 1.
type mix map[string]float64

// parseMix reads "query=90,image=10" (weights, normalised).
func parseMix(s string) (mix, error) {
	m := mix{}
	var total float64
	for part := range strings.SplitSeq(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: want kind=weight pairs, e.g. query=90,image=10", s)
		}
		if name != kindQuery && name != kindImage {
			return nil, fmt.Errorf("mix %q: kind %q: want %s or %s", s, name, kindQuery, kindImage)
		}
		v, err := strconv.ParseFloat(w, 64)
		if err != nil || !(v >= 0) || v > 1e9 {
			return nil, fmt.Errorf("mix %q: weight %q: want a non-negative number", s, w)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("mix %q: kind %q twice", s, name)
		}
		m[name] = v
		total += v
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: every weight is 0", s)
	}
	for k := range m {
		m[k] /= total
	}
	return m, nil
}

func (m mix) String() string {
	var parts []string
	for _, k := range m.kinds() {
		parts = append(parts, fmt.Sprintf("%s=%g", k, m[k]))
	}
	return strings.Join(parts, ",")
}

// kinds are the mix's kinds in a fixed order, so that a seed gives the same
// plan in every run.
func (m mix) kinds() []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// plan draws the arrivals of an open-loop Poisson process of the given rate
// (calls per second) over d: exponential gaps, each call's kind drawn from
// the mix, all from seed, so that two runs with one seed send the same
// calls at the same offsets whatever the system under test does.
//
// With block > 0, kinds are dealt in blocks of that many consecutive calls,
// each holding every kind in proportion to the mix (largest remainders
// rounded up) in a random order, instead of being drawn one by one. Drawn
// one by one, a short run's share can be far from the mix (the first 6 s of
// seed 1 at 28 calls/s hold 3 image calls in 153, 2 % for a mix of 10 %);
// dealt in blocks of 20, it is within one call of the mix per block. The
// arrival times stay Poisson either way, and a mix of one kind draws the
// same plan whatever block is.
func plan(rate float64, d time.Duration, m mix, pool map[string]int, seed uint64, block int) []arrival {
	r := rand.New(rand.NewPCG(seed, 0x6c6f616467656e)) // "loadgen"
	kinds := m.kinds()
	var out []arrival
	var at time.Duration
	var deck []string
	for {
		at += time.Duration(r.ExpFloat64() / rate * float64(time.Second))
		if at >= d {
			return out
		}
		var kind string
		if block > 0 && len(kinds) > 1 {
			if len(deck) == 0 {
				deck = m.deal(block, r)
			}
			kind, deck = deck[0], deck[1:]
		} else {
			u := r.Float64()
			kind = kinds[len(kinds)-1]
			for _, k := range kinds {
				if u < m[k] {
					kind = k
					break
				}
				u -= m[k]
			}
		}
		out = append(out, arrival{at: at, kind: kind, payload: r.IntN(pool[kind])})
	}
}

// deal returns n kinds in proportion to the mix, shuffled: each kind's
// share of n rounded down, the calls left over going to the kinds with the
// largest remainders.
func (m mix) deal(n int, r *rand.Rand) []string {
	kinds := m.kinds()
	counts := make(map[string]int, len(kinds))
	left := n
	for _, k := range kinds {
		counts[k] = int(m[k] * float64(n))
		left -= counts[k]
	}
	byRemainder := slices.Clone(kinds)
	sort.SliceStable(byRemainder, func(i, j int) bool {
		ri := m[byRemainder[i]]*float64(n) - float64(counts[byRemainder[i]])
		rj := m[byRemainder[j]]*float64(n) - float64(counts[byRemainder[j]])
		return ri > rj
	})
	for i := 0; left > 0; i, left = i+1, left-1 {
		counts[byRemainder[i%len(byRemainder)]]++
	}
	deck := make([]string, 0, n)
	for _, k := range kinds {
		for range counts[k] {
			deck = append(deck, k)
		}
	}
	r.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
	return deck
}

// payloadPoolSize is how many distinct calls of each kind are prepared: a
// gateway or Triton with a cache must not see one repeated request.
const payloadPoolSize = 256

// queryTexts are payloadPoolSize calls of n distinct queries each.
func queryTexts(n int) [][]string {
	topics := []string{"revenue", "org chart", "safety instructions", "warranty terms", "quarterly figures", "floor plan", "the appendix", "diagram"}
	out := make([][]string, payloadPoolSize)
	for i := range out {
		for j := range n {
			out[i] = append(out[i], fmt.Sprintf("what does page %d say about %s (call %d)", j+1, topics[(i+j)%len(topics)], i))
		}
	}
	return out
}

// pageImages are payloadPoolSize calls of n distinct PNG pages each of
// w x h pixels. Small by default (32x32), because the load generator must
// not be the bottleneck and the simulator's cost does not depend on the
// pixels; large pages (for the gateway's memory under image load) are
// noise, which PNG cannot compress, drawn from a few distinct pages shared
// by every call so that the generator's own memory stays small.
func pageImages(n, w, h int) ([][][]byte, error) {
	out := make([][][]byte, payloadPoolSize)
	if w*h > 32*32 {
		const distinct = 8
		rng := rand.New(rand.NewPCG(uint64(w), uint64(h)))
		pages := make([][]byte, distinct)
		for i := range pages {
			img := image.NewGray(image.Rect(0, 0, w, h))
			for p := range img.Pix {
				img.Pix[p] = uint8(rng.Uint32())
			}
			var buf bytes.Buffer
			if err := png.Encode(&buf, img); err != nil {
				return nil, err
			}
			pages[i] = buf.Bytes()
		}
		for i := range out {
			for j := range n {
				out[i] = append(out[i], pages[(i+j)%distinct])
			}
		}
		return out, nil
	}
	for i := range out {
		for j := range n {
			img := image.NewGray(image.Rect(0, 0, w, h))
			for p := range img.Pix {
				img.Pix[p] = uint8(i*31 + j*7 + p)
			}
			var buf bytes.Buffer
			if err := png.Encode(&buf, img); err != nil {
				return nil, err
			}
			out[i] = append(out[i], buf.Bytes())
		}
	}
	return out, nil
}
