package app

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/gateway"
)

// TestDrainFlags: the drain's flags default to gateway.DrainConfig's
// defaults, are read from the environment, and an explicit zero is refused
// by its flag's name like every other.
func TestDrainFlags(t *testing.T) {
	o, err := parseOptions(nil, io.Discard, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if d := o.gateway.Drain; d != (gateway.DrainConfig{}).WithDefaults() {
		t.Errorf("unset: %+v, want the defaults", d)
	}
	o, err = parseOptions([]string{"-max-connection-age", "10m"}, io.Discard, func(k string) string {
		if k == "COLPALI_DRAIN_DELAY" {
			return "7s"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.gateway.Drain.Delay != 7*time.Second || o.gateway.Drain.MaxConnectionAge != 10*time.Minute {
		t.Errorf("set: %+v", o.gateway.Drain)
	}
	_, err = parseOptions([]string{"-drain-delay", "0", "-max-connection-age-grace", "-1s"}, io.Discard, noEnv)
	for _, want := range []string{"-drain-delay 0s: must be positive", "-max-connection-age-grace -1s: must be positive"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from %v", want, err)
		}
	}
}
