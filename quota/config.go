// Package quota keeps each tenant (or API key, with an override) within its share: calls per second and
// pages per second (token buckets), calls at once (a concurrency cap), and
// documents and pages stored. Over a rate or the cap, a call is refused at
// once with RESOURCE_EXHAUSTED (class errclass.Overloaded) and a RetryInfo
// delay; it never waits in the gateway, so that one tenant's burst cannot
// queue in front of another's calls.
//
// # Usage
//
//   - Admit(principal) once per call, before any work (the interceptors
//     do it for every authenticated RPC), and release when the call ends.
//   - Pages(principal, n) when a call's page count is known (EmbedImages'
//     images, IngestDocument's pages, each page of an ingest stream).
//   - CheckStorage(ctx, tenant, docs, pages) before an ingest spends GPU
//     time.
//
// # Concurrency Model
//
// One mutex guards the tenants' states; every operation holds it for a
// map lookup and a token-bucket update (no I/O), so admission stays in
// the sub-microsecond range. CheckStorage counts outside it.
package quota

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/morphik-org/colpali-gateway/auth"
)

// Limits are one tenant's quotas. Zero means unlimited, field by field.
type Limits struct {
	// CallsPerSecond is the sustained call rate.
	CallsPerSecond float64 `json:"calls_per_second"`
	// CallBurst is how many calls may come at once after a quiet spell.
	// Default: one second's worth (at least 1).
	CallBurst int `json:"call_burst"`
	// PagesPerSecond is the sustained rate of pages embedded (images of
	// EmbedImages, pages of ingestion).
	PagesPerSecond float64 `json:"pages_per_second"`
	// PageBurst is the most pages at once. Default: one second's worth,
	// and at least 64 (the gateway's default MaxDocumentPages), because a
	// call with more pages than the burst can never pass: keep it at or
	// above the largest call the gateway accepts.
	PageBurst int `json:"page_burst"`
	// MaxConcurrent is the most calls in progress at once (a stream
	// counts for its whole life).
	MaxConcurrent int `json:"max_concurrent"`
	// MaxDocuments and MaxPages bound what the tenant keeps stored. They
	// are per tenant only: in a key's override they are ignored.
	MaxDocuments int64 `json:"max_documents"`
	MaxPages     int64 `json:"max_pages"`
}

// DefaultMinPageBurst is the least default PageBurst.
const DefaultMinPageBurst = 64

func (l Limits) withDefaults() Limits {
	if l.CallsPerSecond > 0 && l.CallBurst == 0 {
		l.CallBurst = max(1, int(math.Ceil(l.CallsPerSecond)))
	}
	if l.PagesPerSecond > 0 && l.PageBurst == 0 {
		l.PageBurst = max(DefaultMinPageBurst, int(math.Ceil(l.PagesPerSecond)))
	}
	return l
}

func (l Limits) validate(name string) error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("quota %s %s: %s", name, field, fmt.Sprintf(format, args...)))
	}
	if l.CallsPerSecond < 0 || math.IsNaN(l.CallsPerSecond) || math.IsInf(l.CallsPerSecond, 0) {
		bad("CallsPerSecond", "%v: must be a finite number, 0 for unlimited", l.CallsPerSecond)
	}
	if l.PagesPerSecond < 0 || math.IsNaN(l.PagesPerSecond) || math.IsInf(l.PagesPerSecond, 0) {
		bad("PagesPerSecond", "%v: must be a finite number, 0 for unlimited", l.PagesPerSecond)
	}
	if l.CallBurst < 0 || l.CallBurst > 0 && l.CallsPerSecond == 0 {
		bad("CallBurst", "%d: must be positive, and only with CallsPerSecond", l.CallBurst)
	}
	if l.PageBurst < 0 || l.PageBurst > 0 && l.PagesPerSecond == 0 {
		bad("PageBurst", "%d: must be positive, and only with PagesPerSecond", l.PageBurst)
	}
	if l.MaxConcurrent < 0 {
		bad("MaxConcurrent", "%d: must be positive, 0 for unlimited", l.MaxConcurrent)
	}
	if l.MaxDocuments < 0 || l.MaxPages < 0 {
		bad("MaxDocuments/MaxPages", "%d/%d: must be positive, 0 for unlimited", l.MaxDocuments, l.MaxPages)
	}
	return errors.Join(errs...)
}

func (l Limits) storage() bool { return l.MaxDocuments > 0 || l.MaxPages > 0 }

// Config is every tenant's quotas.
type Config struct {
	// Default applies to every tenant without an override. The zero
	// value is unlimited.
	Default Limits
	// Tenants holds per-tenant overrides. An override replaces Default as
	// a whole (a field left zero there is unlimited, not the default's),
	// so that what a tenant gets can be read in one place. These tenants
	// also get their own label in the rejection metric.
	Tenants map[string]Limits
	// Keys holds per-credential overrides, by auth.Principal.Subject (an
	// API key's "cpk_<prefix>", a JWT's "sub"). Such a credential's calls
	// draw on buckets and a concurrency cap of its own, not its tenant's;
	// storage stays its tenant's. These keys get their own metric label.
	Keys map[string]Limits
	// MaxTenants bounds the tenants whose buckets are tracked at once.
	// Past it, tenants whose buckets have refilled are forgotten (which
	// loses nothing), then the least recently seen idle ones. Default
	// 10000.
	MaxTenants int
	// BusyRetryDelay is the RetryInfo delay sent with a refusal by the
	// concurrency cap, which has no schedule to compute one from.
	// Default 200ms.
	BusyRetryDelay time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.Default = c.Default.withDefaults()
	c.Tenants = withDefaults(c.Tenants)
	c.Keys = withDefaults(c.Keys)
	if c.MaxTenants == 0 {
		c.MaxTenants = 10000
	}
	if c.BusyRetryDelay == 0 {
		c.BusyRetryDelay = 200 * time.Millisecond
	}
	return c
}

func withDefaults(m map[string]Limits) map[string]Limits {
	if len(m) == 0 {
		return m
	}
	out := make(map[string]Limits, len(m))
	for name, l := range m {
		out[name] = l.withDefaults()
	}
	return out
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	errs := []error{c.Default.validate("default")}
	for name, l := range c.Tenants {
		if err := auth.ValidateTenant(name); err != nil {
			errs = append(errs, fmt.Errorf("quota override: %w", err))
		}
		errs = append(errs, l.validate("tenant "+name))
	}
	for name, l := range c.Keys {
		if name == "" || strings.ContainsAny(name, "\x00\n") {
			errs = append(errs, fmt.Errorf("quota key override %q: want a credential's subject, such as cpk_<prefix>", name))
		}
		if l.storage() {
			errs = append(errs, fmt.Errorf("quota key %s: MaxDocuments/MaxPages: storage quotas are per tenant", name))
		}
		errs = append(errs, l.validate("key "+name))
	}
	if c.MaxTenants < 1 {
		errs = append(errs, fmt.Errorf("quota MaxTenants %d: must be at least 1", c.MaxTenants))
	}
	if c.BusyRetryDelay < 0 {
		errs = append(errs, fmt.Errorf("quota BusyRetryDelay %v: must be positive", c.BusyRetryDelay))
	}
	return errors.Join(errs...)
}

func (c Config) limitsFor(tenant string) (Limits, bool) {
	if l, ok := c.Tenants[tenant]; ok {
		return l, true
	}
	return c.Default, false
}

func (c Config) anyStorage() bool {
	if c.Default.storage() {
		return true
	}
	for _, l := range c.Tenants {
		if l.storage() {
			return true
		}
	}
	return false
}
