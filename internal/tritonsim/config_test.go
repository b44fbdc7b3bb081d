package tritonsim

import (
	"math"
	"strings"
	"testing"
	"time"

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
	if c.OutputDatatype != "FP16" || c.Instances != 1 || c.MaxQueueSize != 0 ||
		c.QueryMaxBatchSize != 64 || c.ImageMaxBatchSize != 16 || c.Speed != 1 || c.Model.Dimension != 128 {
		t.Errorf("unexpected defaults: %+v", c)
	}
	if got, want := c.BatchDuration(model.Query, 10), 8*time.Millisecond; got != want {
		t.Errorf("BatchDuration(query, 10) = %v, want %v (5ms + 10 x 0.3ms)", got, want)
	}
	if got, want := c.BatchDuration(model.Image, 16), 415*time.Millisecond; got != want {
		t.Errorf("BatchDuration(image, 16) = %v, want %v (15ms + 16 x 25ms)", got, want)
	}
}

func TestBatchDurationScalesWithSpeed(t *testing.T) {
	c := Config{Speed: 0.5, ImageCost: Cost{Base: 10 * time.Millisecond, PerItem: time.Millisecond}, Faults: Faults{ExtraLatency: time.Hour}}
	if got, want := c.BatchDuration(model.Image, 4), 28*time.Millisecond; got != want {
		t.Errorf("BatchDuration = %v, want %v: (10ms + 4ms) / 0.5, without ExtraLatency", got, want)
	}
	// A zero Config uses the default costs.
	if got := (Config{}).BatchDuration(model.Image, 1); got != 40*time.Millisecond {
		t.Errorf("zero Config BatchDuration(image, 1) = %v, want 40ms", got)
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
		`not ready "ghost"`, "stop after",
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
