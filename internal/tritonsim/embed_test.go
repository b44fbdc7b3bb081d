package tritonsim

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestQueryTokens(t *testing.T) {
	for _, tc := range []struct {
		text string
		want int
	}{
		{"", 11},                                   // BOS + 10 augmentation tokens
		{"cat", 12},                                // + 1 subword
		{"  cat  ", 12},                            // whitespace is not a word
		{"what is colpali", 1 + 1 + 1 + 2 + 10},    // ceil(4/4)+ceil(2/4)+ceil(7/4)
		{"internationalization", 1 + 5 + 10},       // 20 runes: 5 subwords
		{"héllo wörld", 1 + 2 + 2 + 10},            // runes, not bytes
		{strings.Repeat("word ", 200), 128},        // capped
		{strings.Repeat("a", 4*117), 1 + 117 + 10}, // exactly at the cap
	} {
		if got := QueryTokens(tc.text); got != tc.want {
			t.Errorf("QueryTokens(%.30q) = %d, want %d", tc.text, got, tc.want)
		}
	}
}

func TestEmbedIsDeterministicWithUnitRows(t *testing.T) {
	for _, tc := range []struct {
		kind model.Kind
		item []byte
		rows int
	}{
		{model.Query, []byte("what is late interaction"), QueryTokens("what is late interaction")},
		{model.Image, testPNG(t, 7), ImageTokens},
	} {
		a := Embed(tc.kind, tc.item, 128)
		b := Embed(tc.kind, tc.item, 128)
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("%v: two embeddings of the same bytes differ (-first +second):\n%s", tc.kind, diff)
		}
		if a.Rows != tc.rows || a.Dim != 128 || len(a.Values) != tc.rows*128 {
			t.Fatalf("%v: Rows %d Dim %d len %d, want %d x 128", tc.kind, a.Rows, a.Dim, len(a.Values), tc.rows)
		}
		for r := range a.Rows {
			if n := norm(a.Vector(r)); math.Abs(n-1) > 1e-5 {
				t.Fatalf("%v: row %d has length %v, want 1", tc.kind, r, n)
			}
		}
		if cos := dot(a.Vector(0), a.Vector(1)); math.Abs(cos) > 0.5 {
			t.Errorf("%v: rows 0 and 1 have cosine %v: rows should look independent", tc.kind, cos)
		}
	}
	x := Embed(model.Query, []byte("query one"), 128)
	y := Embed(model.Query, []byte("query two"), 128)
	if cmp.Equal(x.Vector(0), y.Vector(0)) {
		t.Error("different queries have the same first vector")
	}
}

// TestEmbedGolden pins the embedding rule, so that the same input gives the
// same vectors in every process and every release: stored embeddings made
// with one simulator must still match queries made with the next.
func TestEmbedGolden(t *testing.T) {
	got := Embed(model.Query, []byte("colpali"), 4)
	if got.Rows != 13 {
		t.Fatalf("Rows = %d, want 13", got.Rows)
	}
	// A tolerance, not equality: math.Log and math.Sincos may differ in the
	// last bit between architectures.
	approx := cmpopts.EquateApprox(0, 1e-6)
	if diff := cmp.Diff([]float32{0.29964775, 0.8645927, -0.04088488, 0.40127188}, got.Vector(0), approx); diff != "" {
		t.Errorf("row 0 changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]float32{-0.54024917, -0.26443955, 0.7916433, -0.10725402}, got.Vector(12), approx); diff != "" {
		t.Errorf("row 12 changed (-want +got):\n%s", diff)
	}
}

func TestEmbedBatchPadsAndEncodes(t *testing.T) {
	items := [][]byte{[]byte("short"), []byte("a much longer query about document retrieval")}
	for _, dt := range []string{tensor.TypeFP32, tensor.TypeFP16} {
		out, ok := embedBatch(model.Query, items, 16, dt, nil)
		if !ok {
			t.Fatal("embedBatch aborted without a stop")
		}
		r0, r1 := QueryTokens(string(items[0])), QueryTokens(string(items[1]))
		if out.maxRows != r1 || r0 >= r1 {
			t.Fatalf("maxRows = %d, want %d (rows %d and %d)", out.maxRows, r1, r0, r1)
		}
		values, err := tensor.DecodeFloats(out.embeddings, dt, 2*out.maxRows*16)
		if err != nil {
			t.Fatal(err)
		}
		pad := values[r0*16 : out.maxRows*16]
		for i, v := range pad {
			if v != 0 {
				t.Fatalf("%s: padding value %d is %v, want 0", dt, i, v)
			}
		}
		want := Embed(model.Query, items[1], 16).Values
		got := values[out.maxRows*16:]
		tol := 0.0
		if dt == tensor.TypeFP16 {
			tol = 1e-3 // half precision keeps ~3 decimal digits
		}
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > tol {
				t.Fatalf("%s: value %d is %v, want %v", dt, i, got[i], want[i])
			}
		}
		rows, err := tensor.DecodeInts(out.numTokens, tensor.TypeINT32, 2)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{r0, r1}, rows); diff != "" {
			t.Errorf("%s: num_tokens (-want +got):\n%s", dt, diff)
		}
	}
}

func TestEmbedBatchAborts(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	if _, ok := embedBatch(model.Image, [][]byte{[]byte("x")}, 128, tensor.TypeFP16, stop); ok {
		t.Error("embedBatch finished although stop was closed")
	}
}

func norm(v []float32) float64 { return math.Sqrt(dot(v, v)) }

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}
