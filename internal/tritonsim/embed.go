package tritonsim

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"unicode/utf8"

	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// ImageTokens is the number of vectors of every page: ColPali cuts a 448 px
// page into a 32x32 grid of 14 px patches and adds 6 text tokens.
const ImageTokens = 32*32 + 6

// The query token rule (see QueryTokens).
const (
	// QueryAugmentationTokens is the number of buffer tokens ColPali
	// appends to every query ("query augmentation").
	QueryAugmentationTokens = 10
	// MaxQueryTokens caps a query's vectors, as the processor's max_length
	// truncation does.
	MaxQueryTokens = 128
	// queryBOSTokens is the beginning-of-sequence token.
	queryBOSTokens = 1
	// runesPerSubword is a rough subword size: SentencePiece vocabularies
	// such as Gemma's average about four characters of English per token.
	runesPerSubword = 4
)

// QueryTokens is the number of vectors the simulator returns for a query:
// 1 (BOS) + ceil(runes/4) for every whitespace-separated word + 10
// augmentation tokens, at most MaxQueryTokens. It stands in for a tokenizer,
// so that longer queries get more vectors, as with the real model.
func QueryTokens(text string) int {
	n := queryBOSTokens + QueryAugmentationTokens
	for word := range strings.FieldsSeq(text) {
		n += (utf8.RuneCountInString(word) + runesPerSubword - 1) / runesPerSubword
		if n >= MaxQueryTokens {
			return MaxQueryTokens
		}
	}
	return n
}

// tokens is the number of vectors of one item of kind.
func tokens(k model.Kind, item []byte) int {
	if k == model.Image {
		return ImageTokens
	}
	return QueryTokens(string(item))
}

// Embed is the simulator's embedding of one item (a query's UTF-8 text or a
// page's encoded image bytes) of kind with dim-dimensional vectors: the
// vectors a Server returns for it, before FP16 or FP32 encoding. It is a
// pure function of its arguments, so tests can compute expected results
// without a server. dim must be positive.
//
// The rule: the SHA-256 of the item's bytes seeds, for each row r, a PCG
// generator (math/rand/v2) whose two seeds are the digest's first two
// little-endian uint64 words, mixed with r by SplitMix64's finalizer; the
// generator's output becomes standard normal values by the Box-Muller
// transform, and each row is scaled to unit L2 length. Box-Muller is written
// out rather than taken from rand.NormFloat64 so that the rule does not
// depend on a library's choice of algorithm.
func Embed(k model.Kind, item []byte, dim int) model.Embedding {
	rows := tokens(k, item)
	values := make([]float32, rows*dim)
	fillRows(values, item, rows, dim)
	return model.Embedding{Rows: rows, Dim: dim, Values: values}
}

// fillRows writes the rows x dim embedding of item into dst.
func fillRows(dst []float32, item []byte, rows, dim int) {
	digest := sha256.Sum256(item)
	s1 := binary.LittleEndian.Uint64(digest[0:8])
	s2 := binary.LittleEndian.Uint64(digest[8:16])
	row := make([]float64, dim+1) // +1: Box-Muller makes values in pairs
	var src rand.PCG
	for r := range rows {
		src.Seed(splitMix(s1^uint64(r)), splitMix(s2+uint64(r)))
		for i := 0; i < dim; i += 2 {
			row[i], row[i+1] = gaussianPair(&src)
		}
		var sq float64
		for _, v := range row[:dim] {
			sq += v * v
		}
		out := dst[r*dim : (r+1)*dim]
		if sq == 0 { // impossible in practice; keep the unit-length promise anyway
			out[0] = 1
			continue
		}
		inv := 1 / math.Sqrt(sq)
		for i, v := range row[:dim] {
			out[i] = float32(v * inv)
		}
	}
}

// gaussianPair draws two independent standard normal values from src by the
// Box-Muller transform.
func gaussianPair(src *rand.PCG) (float64, float64) {
	const unit = 1.0 / (1 << 53)
	u1 := float64(src.Uint64()>>11+1) * unit // (0, 1]: Log(0) is -Inf
	u2 := float64(src.Uint64()>>11) * unit
	radius := math.Sqrt(-2 * math.Log(u1))
	sin, cos := math.Sincos(2 * math.Pi * u2)
	return radius * cos, radius * sin
}

// splitMix is SplitMix64's output function; it spreads nearby seeds (row
// indices) over the whole seed space.
func splitMix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// batchOutputs are the two output tensors of one batch, encoded raw.
type batchOutputs struct {
	maxRows    int
	embeddings []byte // [n, maxRows, dim] in the configured datatype
	numTokens  []byte // INT32 [n, 1]
}

// embedBatch computes the outputs of a batch of kind. Items shorter than
// the longest are padded with zero rows, as a padded model output is. It
// returns false, having done part of the work, if abort is closed first: a
// page batch is tens of milliseconds of CPU and Stop must not wait for it.
func embedBatch(k model.Kind, items [][]byte, dim int, datatype string, abort <-chan struct{}) (batchOutputs, bool) {
	rows := make([]int32, len(items))
	maxRows := 0
	for i, item := range items {
		rows[i] = int32(tokens(k, item)) // #nosec G115 -- a query's token count, bounded by the query size limit
		maxRows = max(maxRows, int(rows[i]))
	}
	values := make([]float32, len(items)*maxRows*dim)
	for i, item := range items {
		select {
		case <-abort:
			return batchOutputs{}, false
		default:
		}
		start := i * maxRows * dim
		fillRows(values[start:start+int(rows[i])*dim], item, int(rows[i]), dim)
	}
	var emb []byte
	if datatype == tensor.TypeFP32 {
		emb = tensor.AppendFP32(make([]byte, 0, 4*len(values)), values)
	} else {
		emb = tensor.AppendFP16(make([]byte, 0, 2*len(values)), values)
	}
	return batchOutputs{
		maxRows:    maxRows,
		embeddings: emb,
		numTokens:  tensor.AppendINT32(make([]byte, 0, 4*len(rows)), rows),
	}, true
}
