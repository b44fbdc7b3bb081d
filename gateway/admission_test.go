package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/admission"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router"
)

// fixedAdmission is a controller whose limit stays at limit and whose
// calls may reserve callBytes (half of its memory budget).
func fixedAdmission(t *testing.T, limit int, callBytes int64) *admission.Controller {
	t.Helper()
	c, err := admission.New(admission.Config{InitialLimit: limit, ImageInitialLimit: limit, MinLimit: limit, MaxLimit: limit, MemoryBudget: 2 * callBytes, CallMemoryShare: 0.5}, admission.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// staticBackends is a Backends with an empty pool.
type staticBackends struct{}

func (staticBackends) Pool() router.PoolStatus { return router.PoolStatus{Policy: "round_robin"} }

// checkOverloaded checks that err is RESOURCE_EXHAUSTED with reason and a
// RetryInfo (when retry).
func checkOverloaded(t *testing.T, err error, reason string, retry bool, text string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), text) {
		t.Fatalf("got %v; want RESOURCE_EXHAUSTED mentioning %q", err, text)
	}
	var gotReason string
	gotRetry := false
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			gotReason = d.GetReason()
		case *errdetails.RetryInfo:
			gotRetry = d.GetRetryDelay().AsDuration() > 0
		}
	}
	if gotReason != reason || gotRetry != retry {
		t.Errorf("details: reason %q, retry info %v; want %q, %v", gotReason, gotRetry, reason, retry)
	}
}

// holdingEmbedder is a fakeEmbedder whose first n calls wait for release
// (or their context); entered is done once all n are waiting. Later calls
// answer at once.
func holdingEmbedder(n int) (fake *fakeEmbedder, entered *sync.WaitGroup, release chan struct{}) {
	release, entered = make(chan struct{}), &sync.WaitGroup{}
	entered.Add(n)
	var mu sync.Mutex
	held := 0
	fake = &fakeEmbedder{embed: func(ctx context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		mu.Lock()
		hold := held < n
		held++
		mu.Unlock()
		if hold {
			entered.Done()
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return constantEmbeddings(len(items), 1, 2), nil
	}}
	return fake, entered, release
}

func TestAdmissionShedsBeyondTheLimitButNeverProbes(t *testing.T) {
	fake, entered, release := holdingEmbedder(2)
	reg := prometheus.NewRegistry()
	ctl, err := admission.New(admission.Config{InitialLimit: 2, ImageInitialLimit: 2, MinLimit: 2, MaxLimit: 2, MemoryBudget: 1 << 30}, admission.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, Config{}, Deps{Embedder: fake, Admission: ctl, Backends: staticBackends{}, Registry: reg})
	ctx := testContext(t)
	var calls sync.WaitGroup
	for range 2 {
		calls.Go(func() {
			if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
				t.Errorf("admitted call: %v", err)
			}
		})
	}
	entered.Wait()

	start := time.Now()
	_, err = g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
	t.Logf("refusal took %v", time.Since(start))
	checkOverloaded(t, err, admission.ReasonConcurrency, true, "query concurrency limit")
	code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`)
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "RetryInfo") || !strings.Contains(string(body), admission.ReasonConcurrency) {
		t.Errorf("REST: HTTP %d %s; want 429 with RetryInfo and %s", code, body, admission.ReasonConcurrency)
	}
	// Images have a limit of their own.
	if _, err := g.client.EmbedImages(ctx, &colpaliv1.EmbedImagesRequest{Images: [][]byte{[]byte("not an image")}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("image call while queries are at their limit: %v; want validation's INVALID_ARGUMENT", err)
	}
	// Probes and the operator's view are never shed.
	if resp, err := healthpb.NewHealthClient(g.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check at the limit: %v, %v", resp, err)
	}
	if _, err := colpaliv1.NewBackendServiceClient(g.conn).ListBackends(ctx, &colpaliv1.ListBackendsRequest{}); err != nil {
		t.Errorf("ListBackends at the limit: %v", err)
	}
	if code, body := g.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz at the limit: HTTP %d %s", code, body)
	}
	if code, body := g.getAdmin(t, "/metrics"); code != http.StatusOK || !strings.Contains(string(body), `colpali_admission_shed_total{class="query",reason="concurrency_limit"} 2`) {
		t.Errorf("/metrics at the limit: HTTP %d, shed count missing", code)
	}

	close(release)
	calls.Wait()
	if _, in := ctl.Limit(admission.Query); in != 0 {
		t.Errorf("query calls in flight after all ended: %d", in)
	}
	if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Errorf("call after the others ended: %v", err)
	}
}

// defaultLevelEmbedder is a leveledEmbedder with a default level, as the
// batcher.
type defaultLevelEmbedder struct {
	leveledEmbedder
	level int
}

func (d defaultLevelEmbedder) DefaultPriority(model.Kind) int { return d.level }

// The REST side refuses a call at its limit before decoding it, at the
// level the gRPC side would give it: the default level when the body asks
// for none, and never a call that asks for a level Admit would take.
func TestRESTAdmissionAtTheCallsLevel(t *testing.T) {
	fake, entered, release := holdingEmbedder(3)
	// Limit 4: 3 calls at the default level 2 (of 3), 4 at level 1.
	g := startGateway(t, Config{}, Deps{Embedder: defaultLevelEmbedder{leveledEmbedder{fake, 3}, 2}, Admission: fixedAdmission(t, 4, 1<<30)})
	ctx := testContext(t)
	var calls sync.WaitGroup
	defer calls.Wait()
	defer close(release)
	for range 3 {
		calls.Go(func() {
			if _, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
				t.Errorf("admitted call: %v", err)
			}
		})
	}
	entered.Wait()

	// An unknown field would be a 400 once decoded: a 429 says the call
	// was refused before.
	code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"],"no_such_field":1}`)
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "allowed at priority 2") {
		t.Errorf("default level at its limit: HTTP %d %s; want 429 before decoding", code, body)
	}
	code, body, _ = g.post(t, "/v1/queries:embed", `{"queries":["q"],"priority":3}`)
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "allowed at priority 3") {
		t.Errorf("level 3 at its limit: HTTP %d %s; want 429 from Admit", code, body)
	}
	code, body, _ = g.post(t, "/v1/queries:embed", `{"queries":["q"],"priority":1}`)
	if code != http.StatusOK {
		t.Errorf("level 1 under its limit: HTTP %d %s; want 200", code, body)
	}
}

func TestAdmissionReleasesOnEveryPath(t *testing.T) {
	var mode string
	fake := &fakeEmbedder{embed: func(_ context.Context, _ model.Kind, items [][]byte) ([]model.Embedding, error) {
		switch mode {
		case "panic":
			panic("boom")
		case "error":
			return nil, errors.New("backend failed")
		}
		return constantEmbeddings(len(items), 1, 2), nil
	}}
	ctl := fixedAdmission(t, 1, 1<<30)
	g := startGateway(t, Config{}, Deps{Embedder: fake, Admission: ctl})
	ctx := testContext(t)
	img := pngImage(t, 8, 8)
	for _, tc := range []struct {
		mode string
		call func() error
		code codes.Code
	}{
		{"ok", func() error {
			_, err := g.client.EmbedImages(ctx, &colpaliv1.EmbedImagesRequest{Images: [][]byte{img}})
			return err
		}, codes.OK},
		{"invalid", func() error {
			_, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{})
			return err
		}, codes.InvalidArgument},
		{"error", func() error {
			_, err := g.client.EmbedImages(ctx, &colpaliv1.EmbedImagesRequest{Images: [][]byte{img}})
			return err
		}, codes.Internal},
		{"panic", func() error {
			_, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
			return err
		}, codes.Internal},
		{"deadline", func() error {
			ctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
			defer cancel()
			_, err := g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
			return err
		}, codes.DeadlineExceeded},
	} {
		mode = tc.mode
		// Each path twice: with a limit of 1, a leaked slot refuses the
		// second.
		for range 2 {
			if err := tc.call(); status.Code(err) != tc.code {
				t.Errorf("%s: %v; want %v", tc.mode, err, tc.code)
			}
		}
		for _, cl := range admission.Classes {
			if _, in := ctl.Limit(cl); in != 0 {
				t.Errorf("%s: %d %s calls in flight after the call; want 0", tc.mode, in, cl)
			}
		}
		if n := ctl.MemoryInUse(); n != 0 {
			t.Errorf("%s: %d bytes in use after the call; want 0", tc.mode, n)
		}
	}
}

func TestAdmissionMemoryBudgetCountsImages(t *testing.T) {
	// Each image's embeddings are charged about 1 MB, and the check's
	// buffer 1 MiB: two images do not fit 2.5 MiB, one does.
	img := pngImage(t, 600, 600)
	ctl := fixedAdmission(t, 16, 5<<19)
	g := startGateway(t, Config{}, Deps{Admission: ctl})
	_, err := g.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: [][]byte{img, img}})
	checkOverloaded(t, err, admission.ReasonMemory, false, "memory budget of 2621440 bytes")
	code, body, _ := g.post(t, "/v1/images:embed", fmt.Sprintf(`{"images":[%q,%q]}`, base64.StdEncoding.EncodeToString(img), base64.StdEncoding.EncodeToString(img)))
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), admission.ReasonMemory) {
		t.Errorf("REST: HTTP %d %s; want 429 naming %s", code, body, admission.ReasonMemory)
	}
	// A small image fits.
	if _, err := g.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: [][]byte{pngImage(t, 100, 100)}}); err != nil {
		t.Errorf("small image: %v", err)
	}
	if n := ctl.MemoryInUse(); n != 0 {
		t.Errorf("%d bytes in use after the calls; want 0", n)
	}
}
