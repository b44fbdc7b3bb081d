package tritonsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
)

// Faults make the simulator slow, flaky or partly dead, for fault tests.
// The zero value is a healthy simulator.
type Faults struct {
	// ExtraLatency is added to every batch's execution, so it also holds
	// the instance (and lengthens the queue behind it), like a slow GPU.
	ExtraLatency time.Duration
	// ErrorRate, from 0 to 1, is the fraction of ModelInfer calls answered
	// codes.Internal "simulated failure". The failure is decided once the
	// call has passed validation (a bad request is still InvalidArgument)
	// and answered at once, without queueing: a flaky backend that fails
	// fast, which is the case that fools latency-based routing.
	ErrorRate float64
	// NotReady names models reported not ready: ModelReady answers false
	// and ModelInfer fails with codes.Unavailable, as Triton does while a
	// model is loading or unhealthy. ServerReady turns false when every
	// model is not ready.
	NotReady []string
}

// validate names every bad field of f; NotReady must name models of m.
func (f Faults) validate(m model.Config) error {
	var errs []error
	if f.ExtraLatency < 0 {
		errs = append(errs, fmt.Errorf("extra latency %v: want 0 or more", f.ExtraLatency))
	}
	if !(f.ErrorRate >= 0 && f.ErrorRate <= 1) {
		errs = append(errs, fmt.Errorf("error rate %v: want 0 to 1", f.ErrorRate))
	}
	for _, name := range f.NotReady {
		if name != m.QueryModel && name != m.ImageModel {
			errs = append(errs, fmt.Errorf("not ready %q: not a model of this simulator (%q, %q)", name, m.QueryModel, m.ImageModel))
		}
	}
	return errors.Join(errs...)
}

// sanitized returns a copy of f that owns its slice and whose values are
// within range, so that SetFaults, which cannot fail, never stores nonsense.
func (f Faults) sanitized() Faults {
	f.NotReady = slices.Clone(f.NotReady)
	f.ExtraLatency = max(f.ExtraLatency, 0)
	switch {
	case math.IsNaN(f.ErrorRate) || f.ErrorRate < 0:
		f.ErrorRate = 0
	case f.ErrorRate > 1:
		f.ErrorRate = 1
	}
	return f
}

// isNotReady reports whether f marks the model name not ready.
func (f Faults) isNotReady(name string) bool { return slices.Contains(f.NotReady, name) }

// faultsJSON is the wire form of Faults at /simulator/faults. Durations are
// Go duration strings ("50ms") because a JSON number of nanoseconds is
// unreadable and ambiguous.
type faultsJSON struct {
	ExtraLatency string   `json:"extra_latency"`
	ErrorRate    float64  `json:"error_rate"`
	NotReady     []string `json:"not_ready"`
}

func (f Faults) toJSON() faultsJSON {
	nr := f.NotReady
	if nr == nil {
		nr = []string{} // [] rather than null: easier for scripts
	}
	return faultsJSON{ExtraLatency: f.ExtraLatency.String(), ErrorRate: f.ErrorRate, NotReady: nr}
}

// faultsFromJSON parses and validates the body of a POST to
// /simulator/faults. Absent fields are zero: a POST replaces every fault.
func faultsFromJSON(body []byte, m model.Config) (Faults, error) {
	var w faultsJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields() // a misspelt fault must not pass silently
	if err := dec.Decode(&w); err != nil {
		return Faults{}, fmt.Errorf("bad JSON: %w", err)
	}
	if dec.More() {
		return Faults{}, errors.New("bad JSON: more than one value")
	}
	var f Faults
	if w.ExtraLatency != "" {
		d, err := time.ParseDuration(w.ExtraLatency)
		if err != nil {
			return Faults{}, fmt.Errorf("extra_latency: %w", err)
		}
		f.ExtraLatency = d
	}
	f.ErrorRate = w.ErrorRate
	f.NotReady = w.NotReady
	if err := f.validate(m); err != nil {
		return Faults{}, err
	}
	return f, nil
}
