package tritonsim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxFaultsBody bounds a POST to /simulator/faults; the document is tiny.
const maxFaultsBody = 64 << 10

// httpHandler serves Triton's metrics and HTTP health paths, and the
// simulator's own fault control.
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(readyStatus(s.serverReady()))
	})
	mux.HandleFunc("GET /v2/models/{model}/ready", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(readyStatus(s.ready(r.PathValue("model"), "")))
	})
	mux.HandleFunc("GET /v2/models/{model}/versions/{version}/ready", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(readyStatus(s.ready(r.PathValue("model"), r.PathValue("version"))))
	})
	mux.HandleFunc("GET /simulator/faults", s.getFaults)
	mux.HandleFunc("POST /simulator/faults", s.postFaults)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s\ngRPC: %s\nGET /metrics, GET /v2/health/live, GET /v2/health/ready, GET|POST /simulator/faults\n", Name, s.grpcAddr)
	})
	return mux
}

func readyStatus(ready bool) int {
	if ready {
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

func (s *Server) getFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Faults().toJSON())
}

// postFaults replaces every fault with the posted document and answers
// with the faults now in force.
func (s *Server) postFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFaultsBody))
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	f, err := faultsFromJSON(body, s.cfg.Model)
	if err != nil {
		http.Error(w, err.Error()+"\nwant e.g. {\"extra_latency\":\"50ms\",\"error_rate\":0.2,\"not_ready\":[\""+s.cfg.Model.ImageModel+"\"]}", http.StatusBadRequest)
		return
	}
	s.SetFaults(f)
	writeJSON(w, http.StatusOK, s.Faults().toJSON())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client has gone if this fails; nothing to do
}
