package gpu

import (
	"maps"
	"strings"
)

// Merged is a Source that combines several, field group by field group:
// for each group (FieldQueue, FieldRates, FieldGPU) the first source, in
// the order given to Merge, that has fresh Stats for the backend (ok true)
// and reports that group supplies all of the group's fields. Put the more
// direct source first: Merge(nvml, scraper) takes NVML's utilisation and
// memory for the GPUs on this node and Triton's queue figures from the
// scrape, and falls back to the scrape's GPU figures where NVML has none.
//
// A Stats with Reported zero, from a Source that does not fill it in, is
// taken as reporting every group.
type Merged struct {
	sources []Source
}

// Merge combines sources; see Merged for the rule. Nil sources are
// skipped.
func Merge(sources ...Source) *Merged {
	m := &Merged{}
	for _, s := range sources {
		if s != nil {
			m.sources = append(m.sources, s)
		}
	}
	return m
}

var _ Source = (*Merged)(nil)

// Stats merges the sources' Stats for backend; ok is false when no source
// has fresh Stats for it.
func (m *Merged) Stats(backend string) (Stats, bool) {
	var out Stats
	var names []string
	for _, src := range m.sources {
		s, ok := src.Stats(backend)
		if !ok {
			continue
		}
		reported := s.Reported
		if reported == 0 {
			reported = FieldAll
		}
		take := reported &^ out.Reported
		if take == 0 {
			continue
		}
		if take.Has(FieldQueue) {
			out.Pending = s.Pending
		}
		if take&(FieldQueue|FieldRates) != 0 && out.Models == nil {
			// Per-model figures come with the queue and rates, from the
			// one source (Triton's metrics) that tells models apart.
			out.Models = s.Models
		}
		if take.Has(FieldRates) {
			out.QueueTimePerRequest = s.QueueTimePerRequest
			out.ComputePerExec = s.ComputePerExec
			out.RequestTimePerRequest = s.RequestTimePerRequest
			out.InferencesPerSecond, out.ExecutionsPerSecond = s.InferencesPerSecond, s.ExecutionsPerSecond
			out.RequestsPerSecond, out.FailuresPerSecond = s.RequestsPerSecond, s.FailuresPerSecond
		}
		if take.Has(FieldGPU) {
			out.Utilization = s.Utilization
			out.MemoryUsed, out.MemoryTotal = s.MemoryUsed, s.MemoryTotal
			out.GPUs, out.Devices = s.GPUs, s.Devices
		}
		if out.Reported == 0 || s.At.Before(out.At) {
			out.At = s.At
		}
		out.Reported |= take
		if s.Source != "" {
			names = append(names, s.Source)
		}
		if out.Reported == FieldAll {
			break
		}
	}
	out.Source = strings.Join(names, "+")
	return out, out.Reported != 0
}

// lister is a Source that can list every backend it has fresh Stats for.
type lister interface {
	All() map[string]Stats
}

// All returns the merged Stats of every backend that any source able to
// list its backends (Scraper, NVML, Merged) has fresh Stats for.
func (m *Merged) All() map[string]Stats {
	backends := make(map[string]struct{})
	for _, src := range m.sources {
		if l, ok := src.(lister); ok {
			for b := range maps.Keys(l.All()) {
				backends[b] = struct{}{}
			}
		}
	}
	out := make(map[string]Stats, len(backends))
	for b := range backends {
		if s, ok := m.Stats(b); ok {
			out[b] = s
		}
	}
	return out
}
