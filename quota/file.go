package quota

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

// Overrides is the overrides file: JSON with the per-tenant and per-key
// limits, the default coming from flags. For example:
//
//	{
//	  "tenants": {"team-a": {"calls_per_second": 200, "pages_per_second": 400, "max_concurrent": 64, "max_pages": 1000000}},
//	  "keys":    {"cpk_k3nq7x2a": {"calls_per_second": 5, "max_concurrent": 2}}
//	}
//
// Unknown fields are an error, so that a misspelt limit is not silently
// unlimited.
type Overrides struct {
	Tenants map[string]Limits `json:"tenants"`
	Keys    map[string]Limits `json:"keys"`
}

// ParseOverrides decodes an overrides file strictly.
func ParseOverrides(b []byte) (Overrides, error) {
	var o Overrides
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return Overrides{}, err
	}
	if dec.More() {
		return Overrides{}, fmt.Errorf("trailing data after the JSON object")
	}
	return o, nil
}

// RegisterFlags adds -quota-* flags to fs, writing into c: the default
// limits, and -quota-overrides naming an Overrides file (read when the
// flag is parsed, so that a bad file is reported with the other flags).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Float64Var(&c.Default.CallsPerSecond, "quota-calls-per-second", c.Default.CallsPerSecond, "default calls/s per tenant (0: unlimited)")
	fs.IntVar(&c.Default.CallBurst, "quota-call-burst", c.Default.CallBurst, "default call burst (0: one second's worth)")
	fs.Float64Var(&c.Default.PagesPerSecond, "quota-pages-per-second", c.Default.PagesPerSecond, "default pages/s per tenant (0: unlimited)")
	fs.IntVar(&c.Default.PageBurst, "quota-page-burst", c.Default.PageBurst, "default page burst (0: one second's worth, at least 64); keep it at or above the largest call's pages")
	fs.IntVar(&c.Default.MaxConcurrent, "quota-max-concurrent", c.Default.MaxConcurrent, "default calls in progress per tenant (0: unlimited)")
	fs.Int64Var(&c.Default.MaxDocuments, "quota-max-documents", c.Default.MaxDocuments, "default documents stored per tenant (0: unlimited)")
	fs.Int64Var(&c.Default.MaxPages, "quota-max-pages", c.Default.MaxPages, "default pages stored per tenant (0: unlimited)")
	fs.Func("quota-overrides", "JSON file of per-tenant and per-key limits (see package quota)", func(path string) error {
		b, err := os.ReadFile(path) // #nosec G304 -- an operator's flag, read at start
		if err != nil {
			return err
		}
		o, err := ParseOverrides(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		c.Tenants, c.Keys = o.Tenants, o.Keys
		return nil
	})
	fs.DurationVar(&c.BusyRetryDelay, "quota-busy-retry-delay", c.BusyRetryDelay, "retry delay suggested when the concurrency cap refuses a call (0: 200ms)")
}
