package app

import (
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/heapfloor"
)

// numericFlag is an int, float or duration flag, with its zero and a
// negative value as given and as Validate prints them.
type numericFlag struct{ name, zero, negative string }

// numericFlags lists the serving command's int, float and duration flags.
func numericFlags(t *testing.T) []numericFlag {
	t.Helper()
	var flags []numericFlag
	newFlagSet(newOptions(), io.Discard).VisitAll(func(f *flag.Flag) {
		g, ok := f.Value.(flag.Getter)
		if !ok {
			return
		}
		switch g.Get().(type) {
		case int, int64, float64:
			flags = append(flags, numericFlag{f.Name, "0", "-1"})
		case time.Duration:
			flags = append(flags, numericFlag{f.Name, "0s", "-1s"})
		}
	})
	if len(flags) < 40 {
		t.Fatalf("only %d numeric flags found: %v", len(flags), flags)
	}
	return flags
}

// TestZeroOrNegativeIsRefusedByFlagName: one rule for every numeric flag:
// an explicit zero or negative value, on the command line or in the
// environment, is an error naming the flag; none is silently replaced by
// its default.
func TestZeroOrNegativeIsRefusedByFlagName(t *testing.T) {
	for _, f := range numericFlags(t) {
		for _, v := range []string{f.zero, f.negative} {
			_, err := parseOptions([]string{"-" + f.name, v}, io.Discard, noEnv)
			if err == nil || !strings.Contains(err.Error(), "-"+f.name+" "+v+":") {
				t.Errorf("-%s %s: got %v, want an error naming the flag", f.name, v, err)
			}
		}
		env := map[string]string{"COLPALI_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_")): "0"}
		_, err := parseOptions(nil, io.Discard, func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), "-"+f.name+" "+f.zero+":") {
			t.Errorf("%v: got %v, want an error naming -%s", env, err, f.name)
		}
	}
}

// TestUnsetMeansDefault: with no flags, every Config validates and holds
// its defaults; -max-recv-msg-size, unset, follows -max-images and
// -max-image-bytes.
func TestUnsetMeansDefault(t *testing.T) {
	o, err := parseOptions(nil, io.Discard, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if o.gateway.MaxQueries != 64 || o.gateway.MaxRecvMsgSize != 16*8<<20+1<<20 || o.router.EjectAfter != 5 {
		t.Errorf("defaults not taken: %+v", o.gateway)
	}
	o, err = parseOptions([]string{"-max-images", "2", "-max-image-bytes", "1000"}, io.Discard, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if o.gateway.MaxRecvMsgSize != 2000+1<<20 || o.router.Triton.MaxSendMsgSize < o.gateway.MaxRecvMsgSize {
		t.Errorf("derived receive limit %d, Triton send limit %d", o.gateway.MaxRecvMsgSize, o.router.Triton.MaxSendMsgSize)
	}
	if o.router.Static[0].Addr != defaultTritonAddr {
		t.Errorf("backends %v, want %s", o.router.Static, defaultTritonAddr)
	}
}

// TestEveryBadFlagReportedAtOnce: with every numeric flag bad, each is
// named in one joined error, and every finding is named by a flag: no
// Config field is reported by its Go name for want of a flag.
func TestEveryBadFlagReportedAtOnce(t *testing.T) {
	var args []string
	flags := numericFlags(t)
	for _, f := range flags {
		args = append(args, "-"+f.name, f.negative)
	}
	_, err := parseOptions(args, io.Discard, noEnv)
	if err == nil {
		t.Fatal("no error")
	}
	for _, f := range flags {
		if !strings.Contains(err.Error(), "-"+f.name+" "+f.negative+":") {
			t.Errorf("-%s missing from the joined error", f.name)
		}
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, "-") {
			t.Errorf("a finding not named by its flag: %q", line)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	err := Main(t.Context(), []string{"migrat", "-timeout", "1s"}, io.Discard, noEnv)
	if err == nil || !strings.Contains(err.Error(), `unknown command "migrat"`) || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("Main(migrat) = %v, want an error naming the known commands", err)
	}
}

// TestHeapFloorFlag: -gc-heap-floor defaults to 64 MiB or a 16th of the
// memory budget, and takes 0 (no floor) or a size.
func TestHeapFloorFlag(t *testing.T) {
	defer heapfloor.Set(0)
	for _, c := range []struct {
		args []string
		want int64
	}{
		{nil, 64 << 20},
		{[]string{"-memory-budget", "512MiB"}, 32 << 20},
		{[]string{"-gc-heap-floor", "0"}, 0},
		{[]string{"-gc-heap-floor", "8MiB", "-admission=false"}, 8 << 20},
	} {
		o, err := parseOptions(c.args, io.Discard, noEnv)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if c.args == nil && o.admission.cfg.MemoryBudget < 1<<30 {
			continue // a machine with less than 1 GiB of budget: the 16th applies
		}
		o.admission.applyHeapFloor(slog.New(slog.DiscardHandler))
		if got := heapfloor.Floor(); got != c.want {
			t.Errorf("%v: heap floor %d, want %d", c.args, got, c.want)
		}
	}
	if _, err := parseOptions([]string{"-gc-heap-floor", "-1"}, io.Discard, noEnv); err == nil || !strings.Contains(err.Error(), "gc-heap-floor") {
		t.Errorf("-gc-heap-floor -1: %v, want an error naming the flag", err)
	}
}
