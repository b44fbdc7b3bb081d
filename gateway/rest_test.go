package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/morphik-org/colpali-gateway/gen/openapiv2"
)

// TestRESTRoutesFromTheMux: the REST metrics are labelled with the route
// grpc-gateway matched, as the API's HTTP rules write it, and a request
// that matched none is "other"; the body limits follow the same route.
func TestRESTRoutesFromTheMux(t *testing.T) {
	// One filter keeps Search's body limit (filters may be long) below 1 MiB.
	g := startGateway(t, Config{MaxFilters: 1}, Deps{})
	if code, body := g.get(t, "/v1/documents/doc-1"); code == http.StatusNotFound {
		t.Fatalf("GET /v1/documents/doc-1: HTTP %d %s, want the route matched", code, body)
	}
	if code, _ := g.get(t, "/v1/nothing-here"); code != http.StatusNotFound {
		t.Fatalf("GET /v1/nothing-here: HTTP %d, want 404", code)
	}
	// Search's limit is far below that of images: 2 MiB is refused by the
	// route's own limit before any handler runs.
	code, body, _ := g.post(t, "/v1/documents:search", `{"query": "`+strings.Repeat("a", 2<<20)+`"}`)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "/v1/documents:search") {
		t.Fatalf("2 MiB search: HTTP %d %s, want 413", code, body)
	}
	_, metrics := g.getAdmin(t, "/metrics")
	for _, want := range []string{
		`colpali_http_requests_total{code="501",method="get",route="/v1/documents/{document_id}"} 1`,
		`colpali_http_requests_total{code="404",method="get",route="other"} 1`,
		`colpali_http_requests_total{code="413",method="post",route="/v1/documents:search"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestRESTLimitsNameRealRoutes: every route given a body limit of its own
// is a route of the API (the OpenAPI document is generated from the same
// HTTP rules as grpc-gateway's mux), so a renamed route cannot silently
// fall back to the default limit.
func TestRESTLimitsNameRealRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapiv2.Document, &doc); err != nil {
		t.Fatal(err)
	}
	for key := range newRESTLimits(Config{}.WithDefaults()).byRoute {
		method, route, _ := strings.Cut(key, " ")
		if _, ok := doc.Paths[route][strings.ToLower(method)]; !ok {
			t.Errorf("body limit for %q: no such route in the API", key)
		}
	}
}
