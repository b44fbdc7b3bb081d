package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPlanIsPoissonAndSeeded(t *testing.T) {
	m, err := parseMix("query=90,image=10")
	if err != nil {
		t.Fatal(err)
	}
	pool := map[string]int{kindQuery: 256, kindImage: 256}
	const rate, d = 1000.0, 100 * time.Second
	arr := plan(rate, d, m, pool, 7, 0)
	if n := float64(len(arr)); math.Abs(n-rate*d.Seconds())/(rate*d.Seconds()) > 0.02 {
		t.Errorf("%v arrivals, want about %v", n, rate*d.Seconds())
	}
	// Exponential gaps: the coefficient of variation of a Poisson process's
	// gaps is 1 (evenly spaced calls, as ghz --rps sends, have 0).
	var sum, sq float64
	prev := time.Duration(0)
	images := 0
	for _, a := range arr {
		g := float64(a.at - prev)
		prev = a.at
		sum += g
		sq += g * g
		if a.kind == kindImage {
			images++
		}
		if a.payload < 0 || a.payload >= 256 {
			t.Fatalf("payload %d out of the pool", a.payload)
		}
	}
	mean := sum / float64(len(arr))
	cv := math.Sqrt(sq/float64(len(arr))-mean*mean) / mean
	if math.Abs(mean-1e6) > 0.02e6 || math.Abs(cv-1) > 0.03 {
		t.Errorf("gaps: mean %.0fns, CV %.3f; want 1ms and 1", mean, cv)
	}
	if share := float64(images) / float64(len(arr)); math.Abs(share-0.1) > 0.01 {
		t.Errorf("image share %.3f, want 0.1", share)
	}
	again := plan(rate, d, m, pool, 7, 0)
	other := plan(rate, d, m, pool, 8, 0)
	if len(again) != len(arr) || again[100] != arr[100] || other[100] == arr[100] {
		t.Error("the plan does not depend on the seed alone")
	}
}

// Dealt in blocks, a short run offers the mix asked for, whatever the
// seed; drawn one by one, it need not (seed 1's first 153 calls hold 3
// image calls).
func TestPlanMixBlocks(t *testing.T) {
	m, err := parseMix("query=90,image=10")
	if err != nil {
		t.Fatal(err)
	}
	pool := map[string]int{kindQuery: 256, kindImage: 256}
	for seed := uint64(1); seed <= 50; seed++ {
		arr := plan(28, 6*time.Second, m, pool, seed, 20)
		images := 0
		for i, a := range arr {
			if a.kind == kindImage {
				images++
			}
			if (i+1)%20 == 0 && images != (i+1)/10 {
				t.Fatalf("seed %d: %d image calls in the first %d, want %d", seed, images, i+1, (i+1)/10)
			}
		}
		if want := float64(len(arr)) / 10; math.Abs(float64(images)-want) > 2 {
			t.Errorf("seed %d: %d image calls in %d, want %.0f±2", seed, images, len(arr), want)
		}
	}
	one, err := parseMix("query=1")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := plan(28, 6*time.Second, one, pool, 1, 0), plan(28, 6*time.Second, one, pool, 1, 20); !slices.Equal(a, b) {
		t.Error("a mix of one kind plans differently with -mix-block")
	}
	odd, err := parseMix("query=2,image=1")
	if err != nil {
		t.Fatal(err)
	}
	deck := odd.deal(10, rand.New(rand.NewPCG(1, 2)))
	if n := slices.Index(deck, kindImage); len(deck) != 10 || n < 0 {
		t.Fatalf("deal of 10 at 2:1 = %v", deck)
	}
	images := 0
	for _, k := range deck {
		if k == kindImage {
			images++
		}
	}
	if images != 3 { // 3.33 rounded down; the leftover call goes to the query's 0.67
		t.Errorf("deal of 10 at 2:1 holds %d image calls, want 3", images)
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 95: 95 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond} {
		if got := percentile(s, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 99) != 0 {
		t.Error("empty percentile not 0")
	}
}

func TestFlagErrorsAllAtOnce(t *testing.T) {
	var stderr bytes.Buffer
	err := run(testutil.Context(t), []string{"-protocol", "udp", "-rate", "0", "-duration", "2h", "-mix", "query=1,video=2",
		"-pages-per-call", "0", "-max-outstanding", "0"}, io.Discard, &stderr)
	for _, want := range []string{"-protocol \"udp\"", "-target: required", "-rate 0", "-duration 2h0m0s", `kind "video"`, "-pages-per-call 0", "-max-outstanding 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

func TestRefusesNonLoopbackTargets(t *testing.T) {
	for _, args := range [][]string{
		{"-target", "192.0.2.1:9090", "-rate", "1"},
		{"-protocol", "rest", "-target", "http://192.0.2.1:8080", "-rate", "1"},
		{"-protocol", "rest", "-target", "http://[2001:db8::1]", "-rate", "1"},
	} {
		err := run(testutil.Context(t), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("run(%q) = %v, want a refusal naming loopback", args, err)
		}
	}
}

// fakeGateway answers queries and refuses every image call with
// RESOURCE_EXHAUSTED, as an overloaded gateway does.
type fakeGateway struct {
	colpaliv1.UnimplementedEmbeddingServiceServer
	queries, images atomic.Int64
}

func (f *fakeGateway) EmbedQueries(_ context.Context, r *colpaliv1.EmbedQueriesRequest) (*colpaliv1.EmbedQueriesResponse, error) {
	f.queries.Add(1)
	if len(r.GetQueries()) != 2 {
		return nil, status.Error(codes.InvalidArgument, "want 2 queries")
	}
	return &colpaliv1.EmbedQueriesResponse{Model: "colpali_query"}, nil
}

func (f *fakeGateway) EmbedImages(_ context.Context, r *colpaliv1.EmbedImagesRequest) (*colpaliv1.EmbedImagesResponse, error) {
	f.images.Add(1)
	if len(r.GetImages()) != 4 {
		return nil, status.Error(codes.InvalidArgument, "want 4 pages")
	}
	return nil, status.Error(codes.ResourceExhausted, "queue full")
}

func checkReport(t *testing.T, out []byte, f *fakeGateway) Report {
	t.Helper()
	var rep Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	q, img := rep.Kinds[kindQuery], rep.Kinds[kindImage]
	if rep.Sent != rep.Planned || rep.Dropped != 0 || q == nil || img == nil {
		t.Fatalf("report %+v: want every planned call sent, both kinds", rep)
	}
	if int64(q.Sent) != f.queries.Load() || int64(img.Sent) != f.images.Load() || q.OK != q.Sent {
		t.Errorf("report says %d query and %d image calls (%d ok); the gateway saw %d and %d", q.Sent, img.Sent, q.OK, f.queries.Load(), f.images.Load())
	}
	if img.OK != 0 || img.Errors["ResourceExhausted"] != img.Sent || rep.Errors["ResourceExhausted"] != img.Sent {
		t.Errorf("image errors %v (total %v), want %d ResourceExhausted", img.Errors, rep.Errors, img.Sent)
	}
	if q.P50Ms <= 0 || q.P50Ms > q.P95Ms || q.P95Ms > q.P99Ms || q.P99Ms > q.MaxMs || rep.AchievedRate <= 0 {
		t.Errorf("query latencies %+v, achieved rate %v: want ordered positive figures", q, rep.AchievedRate)
	}
	return rep
}

func TestGRPCRun(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeGateway{}
	srv := grpc.NewServer()
	colpaliv1.RegisterEmbeddingServiceServer(srv, f)
	go srv.Serve(lis)
	defer srv.Stop()

	var out bytes.Buffer
	err = run(testutil.Context(t), []string{"-target", lis.Addr().String(), "-rate", "400", "-duration", "300ms",
		"-mix", "query=3,image=1", "-queries-per-call", "2", "-seed", "3", "-label", "none/round1"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep := checkReport(t, out.Bytes(), f)
	if rep.Protocol != "grpc" || rep.Mix != "image=0.25,query=0.75" || rep.Seed != 3 || rep.Label != "none/round1" {
		t.Errorf("report header %+v", rep)
	}
}

func TestRESTRun(t *testing.T) {
	f := &fakeGateway{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/queries:embed", func(w http.ResponseWriter, r *http.Request) {
		var body colpaliv1.EmbedQueriesRequest
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := f.EmbedQueries(r.Context(), &body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write([]byte(`{"embeddings":[]}`))
	})
	mux.HandleFunc("POST /v1/images:embed", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Images [][]byte }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, err := f.EmbedImages(r.Context(), &colpaliv1.EmbedImagesRequest{Images: body.Images})
		w.WriteHeader(http.StatusTooManyRequests)
		json.NewEncoder(w).Encode(map[string]any{"code": int(status.Code(err)), "message": err.Error()})
	})
	srv := httptest.NewServer(mux) // listens on 127.0.0.1
	defer srv.Close()

	var out bytes.Buffer
	err := run(testutil.Context(t), []string{"-protocol", "rest", "-target", srv.URL, "-rate", "400", "-duration", "300ms",
		"-mix", "query=3,image=1", "-queries-per-call", "2"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, out.Bytes(), f)
}
