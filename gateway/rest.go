package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// The REST routes are those of the API's google.api.http annotations, as
// grpc-gateway's mux matches them: the metrics and the body limits read the
// matched pattern (runtime.HTTPPattern) in a mux middleware, so that no
// second list of routes can drift from the API.

// otherRoute is the route label of a /v1/ request that matched no pattern
// (grpc-gateway answers it 404 or 405 without running the middleware).
const otherRoute = "other"

// routeKey is the context key of the *matchedRoute a REST request carries
// from the metrics around the mux to the middleware inside it and back.
type routeKey struct{}

type matchedRoute struct{ route string }

// routeLabel is a pattern as the API writes it: "/v1/documents/{document_id}"
// (Pattern.String writes a single-segment variable as "{id=*}").
func routeLabel(p runtime.Pattern) string {
	return strings.ReplaceAll(p.String(), "=*}", "}")
}

// restLimits are the body limits of the REST routes, keyed by method and
// route label; a route not listed has defaultLimit.
type restLimits struct {
	byRoute      map[string]int64
	defaultLimit int64
}

// newRESTLimits derives each route's body limit from the request limits,
// so that a small API cannot be sent a huge body. JSON carries images as
// base64 (4 bytes for every 3), and a query's characters may each be
// escaped as \uXXXX (6 bytes for one); 64 KiB covers the rest of the
// document. A document's pages are bounded like EmbedImages' images: by
// the gRPC receive limit that the loopback call must fit in anyway.
// Metadata and filter values may be escaped too.
func newRESTLimits(cfg Config) restLimits {
	const slack = 64 << 10
	imagesBody := int64(cfg.MaxRecvMsgSize)/3*4 + slack
	return restLimits{
		byRoute: map[string]int64{
			"POST /v1/images:embed":     imagesBody,
			"POST /v1/queries:embed":    int64(cfg.MaxQueries)*int64(cfg.MaxQueryBytes)*6 + slack,
			"POST /v1/documents":        imagesBody + int64(cfg.MaxMetadataBytes)*6,
			"POST /v1/documents:search": int64(cfg.MaxQueryBytes)*6 + int64(cfg.MaxFilters)*maxFilterValues*maxFilterValueBytes*6 + slack,
			// A read-only GET: no body is expected at all.
			"GET /v1/backends": 1 << 10,
		},
		defaultLimit: slack,
	}
}

func (l restLimits) of(method, route string) int64 {
	if n, ok := l.byRoute[method+" "+route]; ok {
		return n
	}
	return l.defaultLimit
}

// restMiddleware is the grpc-gateway mux middleware: it records the matched
// route for the metrics and applies the route's body limit.
func restMiddleware(limits restLimits) runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			route := otherRoute
			if p, ok := runtime.HTTPPattern(r.Context()); ok {
				route = routeLabel(p)
			}
			if m, ok := r.Context().Value(routeKey{}).(*matchedRoute); ok {
				m.route = route
			}
			if limitBody(w, r, limits.of(r.Method, route)) {
				next(w, r, params)
			}
		}
	}
}

// instrumentREST counts and times REST calls by route, method and code.
// They are counted here, around grpc-gateway's mux, because a call that
// grpc-gateway refuses (malformed JSON, a body over its limit, no such
// route) never reaches the gRPC interceptors and their metrics.
func instrumentREST(h http.Handler, reg prometheus.Registerer) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "colpali_http_requests_total",
		Help: "REST API requests by route, method and HTTP status code.",
	}, []string{"route", "method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "colpali_http_request_duration_seconds",
		Help:    "REST API request latency by route, method and HTTP status code.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "method", "code"})
	reg.MustRegister(requests, duration)
	route := promhttp.WithLabelFromCtx("route", func(ctx context.Context) string {
		if m, ok := ctx.Value(routeKey{}).(*matchedRoute); ok {
			return m.route
		}
		return otherRoute
	})
	inner := promhttp.InstrumentHandlerDuration(duration, promhttp.InstrumentHandlerCounter(requests, h, route), route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The middleware sets the route inside the mux, on this request's
		// goroutine; the instrumentation reads it once the mux returns.
		m := &matchedRoute{route: otherRoute}
		inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, m)))
	})
}

// limitBody refuses a request body over max bytes and reports whether the
// request may go on: at once with HTTP 413 and INVALID_ARGUMENT naming the
// limit when Content-Length says so, and with grpc-gateway's 400 when a
// body without a length runs over.
func limitBody(w http.ResponseWriter, r *http.Request, max int64) bool {
	if r.ContentLength > max {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		msg := fmt.Sprintf("request body is %d bytes; the limit for %s is %d bytes", r.ContentLength, r.URL.Path, max)
		body, _ := protojson.Marshal(status.New(codes.InvalidArgument, msg).Proto())
		_, _ = w.Write(body) // #nosec G705 -- a protojson body sent as application/json, never rendered as HTML
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, max)
	return true
}
