package router

import (
	"fmt"

	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router/policy"
)

// Panic routing: when no backend is routable for a model, its batches go
// to the backends out only because their checks went unanswered (see the
// package documentation, "Health", and health.panicRoutable).

// candidates are the backends batches of k go to: the routable ones, or
// in panic the ones not known dead; panicking tells which.
func (s *snapshot) candidates(k model.Kind) (cands []policy.Candidate, panicking bool) {
	if c := s.routable[k]; len(c) > 0 {
		return c, false
	}
	return s.panic[k], len(s.panic[k]) > 0
}

// addPanic fills s.panic for each model without a routable backend.
// s.routable must be complete.
func (s *snapshot) addPanic() {
	for _, k := range kinds {
		if len(s.routable[k]) > 0 {
			continue
		}
		for _, b := range s.backends {
			if b.health.panicRoutable(k) {
				s.panic[k] = append(s.panic[k], b)
			}
		}
	}
}

// logPanicChange logs each model that entered or left panic routing
// between the snapshots old (nil: none) and s: at the pace of health
// changes, not of batches, which the panic counter counts.
func (r *Router) logPanicChange(old, s *snapshot) {
	for _, k := range kinds {
		was := old != nil && len(old.panic[k]) > 0
		switch is := len(s.panic[k]) > 0; {
		case is && !was:
			r.logger.Warn("no backend passes its health checks for the model; panic routing to the backends not known dead",
				"model", r.ModelName(k), "backends", len(s.panic[k]))
		case was && !is:
			r.logger.Info("panic routing ended", "model", r.ModelName(k), "ready_backends", len(s.routable[k]))
		}
	}
}

// describePanic says, for Ready's error, which models' batches still go
// out by panic routing; empty when none.
func (r *Router) describePanic(s *snapshot) string {
	out := ""
	for _, k := range kinds {
		if n := len(s.panic[k]); n > 0 {
			out += fmt.Sprintf(" (%s batches still go to %d backends not known dead: panic routing)", r.ModelName(k), n)
		}
	}
	return out
}
