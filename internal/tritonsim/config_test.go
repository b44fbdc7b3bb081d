package tritonsim

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/morphik-org/colpali-gateway/model"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.GRPCAddr != "127.0.0.1:8001" || c.MetricsAddr != "127.0.0.1:8002" {
		t.Errorf("addresses %q %q, want Triton's ports 8001 and 8002", c.GRPCAddr, c.MetricsAddr)
	}
	if c.OutputDatatype != "FP16" || c.Instances != 1 || c.MaxQueueSize != 0 || c.Layout != LayoutShared ||
		c.DisableDynamicBatching || c.Profile != "h100" ||
		c.QueryMaxBatchSize != 64 || c.ImageMaxBatchSize != 16 || c.Speed != 1 || c.Model.Dimension != 128 {
		t.Errorf("unexpected defaults: %+v", c)
	}
	// The h100 profile, interpolated: 8 -> 13ms, 16 -> 15ms.
	if got, want := c.BatchDuration(model.Query, 12), 14*time.Millisecond; got != want {
		t.Errorf("BatchDuration(query, 12) = %v, want %v", got, want)
	}
	if got, want := c.BatchDuration(model.Image, 16), 480*time.Millisecond; got != want {
		t.Errorf("BatchDuration(image, 16) = %v, want %v", got, want)
	}
	// Dynamic batching from the shipped model repository.
	if b := c.batching(model.Image); !cmp.Equal(b, RepositoryBatching(model.Image)) || b.DefaultQueuePolicy.MaxQueueSize != 64 {
		t.Errorf("image batching %+v, want the repository's", b)
	}
}

func TestBatchDurationScalesWithSpeed(t *testing.T) {
	c := Config{Speed: 0.5, ImageCost: Cost{Base: 10 * time.Millisecond, PerItem: time.Millisecond}, Faults: Faults{ExtraLatency: time.Hour}}
	if got, want := c.BatchDuration(model.Image, 4), 28*time.Millisecond; got != want {
		t.Errorf("BatchDuration = %v, want %v: (10ms + 4ms) / 0.5, without ExtraLatency", got, want)
	}
	// A zero Config uses the default profile.
	if got := (Config{}).BatchDuration(model.Image, 1); got != 48*time.Millisecond {
		t.Errorf("zero Config BatchDuration(image, 1) = %v, want 48ms", got)
	}
	// A curve replaces the profile's; a Cost replaces both.
	c = Config{Profile: "linear", QueryCurve: Curve{{1, time.Millisecond}, {10, 10 * time.Millisecond}}}
	if got := c.BatchDuration(model.Query, 5); got != 5*time.Millisecond {
		t.Errorf("curve BatchDuration(query, 5) = %v, want 5ms", got)
	}
	if got := c.BatchDuration(model.Image, 16); got != 415*time.Millisecond {
		t.Errorf("linear profile BatchDuration(image, 16) = %v, want 415ms, the router's prior", got)
	}
	c.QueryCost = Cost{Base: 2 * time.Millisecond}
	if got := c.BatchDuration(model.Query, 5); got != 2*time.Millisecond {
		t.Errorf("cost BatchDuration(query, 5) = %v, want 2ms", got)
	}
}

// TestRepositoryBatchingMatchesConfigPbtxt reads the shipped model
// repository, so that the simulator's defaults cannot drift from it.
func TestRepositoryBatchingMatchesConfigPbtxt(t *testing.T) {
	for _, k := range []model.Kind{model.Query, model.Image} {
		name := model.Config{}.WithDefaults().ModelName(k)
		raw, err := os.ReadFile(filepath.Join("..", "..", "deployments", "triton", "model_repository", name, "config.pbtxt"))
		if err != nil {
			t.Fatal(err)
		}
		// Drop comments: they quote values too.
		var lines []string
		for line := range strings.Lines(string(raw)) {
			if i := strings.Index(line, "#"); i >= 0 {
				line = line[:i]
			}
			lines = append(lines, line)
		}
		text := strings.Join(lines, "")
		field := func(name string) string {
			m := regexp.MustCompile(name + `:\s*(\[[^\]]*\]|[^\s\]]+)`).FindStringSubmatch(text)
			if m == nil {
				t.Fatalf("%s: no %s", name, name)
			}
			return strings.Trim(m[1], "[] ")
		}
		b := RepositoryBatching(k)
		var sizes []string
		for _, n := range b.PreferredBatchSizes {
			sizes = append(sizes, strconv.Itoa(n))
		}
		p := b.DefaultQueuePolicy
		for _, f := range []struct{ name, want string }{
			{"max_batch_size", strconv.Itoa(Config{}.WithDefaults().maxBatchSize(k))},
			{"preferred_batch_size", strings.Join(sizes, ", ")},
			{"max_queue_delay_microseconds", strconv.FormatInt(b.MaxQueueDelay.Microseconds(), 10)},
			{"timeout_action", p.TimeoutAction},
			{"default_timeout_microseconds", strconv.FormatInt(p.DefaultTimeout.Microseconds(), 10)},
			{"allow_timeout_override", strconv.FormatBool(p.AllowTimeoutOverride)},
			{"max_queue_size", strconv.Itoa(p.MaxQueueSize)},
		} {
			if got := field(f.name); got != f.want {
				t.Errorf("%s config.pbtxt %s = %q, simulator default %q", name, f.name, got, f.want)
			}
		}
		if strings.Contains(text, "priority_levels") {
			t.Errorf("%s config.pbtxt sets priority levels; RepositoryBatching does not", name)
		}
	}
}

func TestValidateNamesEveryBadField(t *testing.T) {
	bad := Config{
		GRPCAddr:          "no-port",
		OutputDatatype:    "INT8",
		Instances:         -1,
		MaxQueueSize:      -2,
		QueryMaxBatchSize: -3,
		ImageMaxBatchSize: 100000,
		Speed:             -1,
		QueryCost:         Cost{Base: -time.Second},
		Layout:            "diagonal",
		Profile:           "a100",
		ImageCurve:        Curve{{4, time.Millisecond}, {2, time.Millisecond}},
		JitterSigma:       -1,
		StallProbability:  2,
		StallDuration:     -time.Second,
		QueryBatching:     Batching{PreferredBatchSizes: []int{128}, PriorityLevels: 2, DefaultQueuePolicy: QueuePolicy{TimeoutAction: "DROP"}},
		Model:             model.Config{Dimension: -5},
		Faults:            Faults{ExtraLatency: -time.Second, ErrorRate: 1.5, NotReady: []string{"ghost"}},
		StopAfter:         -1,
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, field := range []string{
		"grpc addr", "output datatype", "instances", "max queue size", "query max batch size",
		"image max batch size", "speed", "query cost", "model: Dimension -5", "extra latency", "error rate",
		`not ready "ghost"`, "stop after", `layout "diagonal"`, `profile "a100"`, "image curve", "jitter sigma",
		"stall probability", "stall duration", "query batching: preferred batch size 128", `timeout action "DROP"`,
	} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %q:\n%v", field, err)
		}
	}
}

func TestValidateRejectsOddValues(t *testing.T) {
	for name, c := range map[string]Config{
		"same addresses": {GRPCAddr: "127.0.0.1:9000", MetricsAddr: "127.0.0.1:9000"},
		"same models":    {Model: model.Config{QueryModel: "m", ImageModel: "m"}},
		"NaN speed":      {Speed: math.NaN()},
		"infinite speed": {Speed: math.Inf(1)},
		"NaN error rate": {Faults: Faults{ErrorRate: math.NaN()}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	ok := Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Faults: Faults{NotReady: []string{model.DefaultImageModel}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("two :0 ports and a known not-ready model should validate: %v", err)
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	if _, err := Start(testContext(t), Config{Instances: -1}, nil); err == nil || !strings.Contains(err.Error(), "instances") {
		t.Errorf("Start(bad config) error = %v, want one naming instances", err)
	}
}
