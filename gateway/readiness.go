package gateway

import (
	"context"
	"errors"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// watchReadiness runs the readiness check now and on every interval until
// ctx ends, and publishes the result to gRPC health and /readyz.
func (s *Server) watchReadiness(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.HealthInterval)
	defer ticker.Stop()
	var docWas error = errors.New("not checked yet")
	for {
		checkTimeout := min(s.cfg.HealthInterval, 5*time.Second)
		checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
		err := s.deps.Ready(checkCtx)
		cancel()
		docErr := errors.New("document storage is not configured")
		if s.deps.Documents != nil {
			// A check of its own, so that a slow backend check does not
			// eat the database's time.
			checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
			docErr = s.deps.Documents.Ping(checkCtx)
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		if s.draining { // a check that ends after the drain began must not undo it
			s.mu.Unlock()
			return
		}
		was := s.ready
		s.ready = err
		s.mu.Unlock()
		switch {
		case err == nil && was != nil:
			s.deps.Logger.Info("gateway ready")
		case err != nil && (was == nil || was.Error() != err.Error()):
			s.deps.Logger.Warn("gateway not ready", "reason", err.Error())
		}
		switch {
		case s.deps.Documents == nil:
		case docErr == nil && docWas != nil:
			s.deps.Logger.Info("document storage ready")
		case docErr != nil && (docWas == nil || docWas.Error() != docErr.Error()):
			s.deps.Logger.Warn("document storage not ready; embeddings are still served", "reason", docErr.Error())
		}
		docWas = docErr
		s.setServing(err == nil, err == nil && docErr == nil)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (s *Server) readiness() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// setServing publishes health: embeddings (the overall status and the
// EmbeddingService's) and documents (the DocumentService's) separately, so
// that a database outage does not take the embedding API out of rotation.
func (s *Server) setServing(embeddings, documents bool) {
	st := func(ok bool) healthpb.HealthCheckResponse_ServingStatus {
		if ok {
			return healthpb.HealthCheckResponse_SERVING
		}
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", st(embeddings))
	s.health.SetServingStatus(embeddingServiceName, st(embeddings))
	if s.deps.Backends != nil {
		s.health.SetServingStatus(backendServiceName, st(embeddings))
	}
	s.health.SetServingStatus(documentServiceName, st(documents))
}
