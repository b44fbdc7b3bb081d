package tritonsim

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestErrorRateOneFailsEveryCall(t *testing.T) {
	ctx := testContext(t)
	cfg := fastConfig()
	cfg.Faults.ErrorRate = 1
	s, c := startServer(t, cfg)

	for range 5 {
		_, err := c.ModelInfer(ctx, queryRequest("flaky"))
		if status.Code(err) != codes.Internal || status.Convert(err).Message() != "simulated failure" {
			t.Fatalf("got %v, want Internal \"simulated failure\"", err)
		}
	}
	// Validation still comes first: a bad request is the caller's fault.
	if _, err := c.ModelInfer(ctx, queryRequest("")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad request with ErrorRate 1: %v, want InvalidArgument", err)
	}
	st := statsOf(t, ctx, c, model.DefaultQueryModel)
	if st.GetExecutionCount() != 0 || st.GetInferenceStats().GetFail().GetCount() != 6 || st.GetLastInference() != 0 {
		t.Errorf("execution_count %d fail %d last_inference %d; want 0, 6 and 0 (failures are not inferences)",
			st.GetExecutionCount(), st.GetInferenceStats().GetFail().GetCount(), st.GetLastInference())
	}

	s.SetFaults(Faults{})
	if _, err := c.ModelInfer(ctx, queryRequest("healthy again")); err != nil {
		t.Errorf("after clearing faults: %v", err)
	}
}

func TestNotReady(t *testing.T) {
	ctx := testContext(t)
	cfg := fastConfig()
	cfg.Faults.NotReady = []string{model.DefaultImageModel}
	s, c := startServer(t, cfg)
	base := "http://" + s.MetricsAddr()

	ready := func(name string) bool {
		t.Helper()
		r, err := c.ModelReady(ctx, &inference.ModelReadyRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetReady()
	}
	serverReady := func() bool {
		t.Helper()
		r, err := c.ServerReady(ctx, &inference.ServerReadyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetReady()
	}

	if ready(model.DefaultImageModel) || !ready(model.DefaultQueryModel) || !serverReady() {
		t.Error("want the image model not ready, the query model and the server ready")
	}
	_, err := c.ModelInfer(ctx, imageRequest(t, 1))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "model 'colpali_image' version 1 is not ready") {
		t.Errorf("infer on a not-ready model: %v, want Unavailable", err)
	}
	if _, err := c.ModelInfer(ctx, queryRequest("still fine")); err != nil {
		t.Errorf("infer on the ready model: %v", err)
	}
	for path, want := range map[string]int{
		"/v2/health/live":                           http.StatusOK,
		"/v2/health/ready":                          http.StatusOK,
		"/v2/models/colpali_image/ready":            http.StatusServiceUnavailable,
		"/v2/models/colpali_query/ready":            http.StatusOK,
		"/v2/models/colpali_query/versions/1/ready": http.StatusOK,
	} {
		if _, code := httpDo(t, ctx, http.MethodGet, base+path, ""); code != want {
			t.Errorf("GET %s = %d, want %d", path, code, want)
		}
	}

	s.SetFaults(Faults{NotReady: []string{model.DefaultImageModel, model.DefaultQueryModel}})
	if serverReady() {
		t.Error("ServerReady is true with every model not ready")
	}
	if _, code := httpDo(t, ctx, http.MethodGet, base+"/v2/health/ready", ""); code != http.StatusServiceUnavailable {
		t.Errorf("GET /v2/health/ready = %d with no model ready, want 503", code)
	}
	if _, code := httpDo(t, ctx, http.MethodGet, base+"/v2/health/live", ""); code != http.StatusOK {
		t.Errorf("GET /v2/health/live = %d, want 200: not ready is not dead", code)
	}
}

func TestFaultsOverHTTP(t *testing.T) {
	ctx := testContext(t)
	s, _ := startServer(t, fastConfig())
	url := "http://" + s.MetricsAddr() + "/simulator/faults"

	body, code := httpDo(t, ctx, http.MethodGet, url, "")
	if code != http.StatusOK {
		t.Fatalf("GET faults: %d %s", code, body)
	}
	var got faultsJSON
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(faultsJSON{ExtraLatency: "0s", NotReady: []string{}}, got); diff != "" {
		t.Errorf("initial faults (-want +got):\n%s", diff)
	}

	body, code = httpDo(t, ctx, http.MethodPost, url, `{"extra_latency":"50ms","error_rate":0.2,"not_ready":["colpali_image"]}`)
	if code != http.StatusOK {
		t.Fatalf("POST faults: %d %s", code, body)
	}
	want := Faults{ExtraLatency: 50 * time.Millisecond, ErrorRate: 0.2, NotReady: []string{"colpali_image"}}
	if diff := cmp.Diff(want, s.Faults()); diff != "" {
		t.Errorf("faults after POST (-want +got):\n%s", diff)
	}
	body, _ = httpDo(t, ctx, http.MethodGet, url, "")
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(faultsJSON{ExtraLatency: "50ms", ErrorRate: 0.2, NotReady: []string{"colpali_image"}}, got); diff != "" {
		t.Errorf("GET after POST (-want +got):\n%s", diff)
	}

	for _, tc := range []struct{ body, msg string }{
		{`{"extra_latency":`, "bad JSON"},
		{`{"error_rate":0.1,"latency":"5ms"}`, "unknown field"},
		{`{"extra_latency":"fast"}`, "extra_latency"},
		{`{"error_rate":2}`, "error rate"},
		{`{"not_ready":["ghost"]}`, `"ghost"`},
		{`{} {}`, "more than one value"},
	} {
		body, code := httpDo(t, ctx, http.MethodPost, url, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.msg) {
			t.Errorf("POST %s = %d %q, want 400 mentioning %q", tc.body, code, body, tc.msg)
		}
	}
	if diff := cmp.Diff(want, s.Faults()); diff != "" {
		t.Errorf("a rejected POST changed the faults (-want +got):\n%s", diff)
	}

	// An empty document clears every fault.
	if body, code := httpDo(t, ctx, http.MethodPost, url, `{}`); code != http.StatusOK {
		t.Fatalf("POST {}: %d %s", code, body)
	}
	if f := s.Faults(); f.ExtraLatency != 0 || f.ErrorRate != 0 || len(f.NotReady) != 0 {
		t.Errorf("faults after POST {} = %+v, want none", f)
	}
}

func TestSetFaultsClampsAndCopies(t *testing.T) {
	s, _ := startServer(t, fastConfig())
	notReady := []string{model.DefaultQueryModel}
	s.SetFaults(Faults{ExtraLatency: -time.Second, ErrorRate: 7, NotReady: notReady})
	notReady[0] = "mutated by the caller"
	got := s.Faults()
	if diff := cmp.Diff(Faults{ErrorRate: 1, NotReady: []string{model.DefaultQueryModel}}, got); diff != "" {
		t.Errorf("Faults (-want +got):\n%s", diff)
	}
	got.NotReady[0] = "mutated by a reader"
	if s.Faults().NotReady[0] != model.DefaultQueryModel {
		t.Error("Faults returned the server's own slice")
	}
}

func TestExtraLatencySlowsBatches(t *testing.T) {
	ctx := testContext(t)
	s, c := startServer(t, fastConfig())
	s.SetFaults(Faults{ExtraLatency: 30 * time.Millisecond})
	if _, err := c.ModelInfer(ctx, queryRequest("slow")); err != nil {
		t.Fatal(err)
	}
	infer := statsOf(t, ctx, c, model.DefaultQueryModel).GetInferenceStats().GetComputeInfer()
	if time.Duration(infer.GetNs()) < 30*time.Millisecond {
		t.Errorf("compute_infer %v, want at least the 30ms extra latency", time.Duration(infer.GetNs()))
	}
}
