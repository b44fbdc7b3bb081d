package batching

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValidAndDifferPerModel(t *testing.T) {
	c := Config{}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeAdaptive || c.Query.MaxBatchSize != 64 || c.Image.MaxBatchSize != 16 || c.Image.ItemCost <= c.Query.ItemCost {
		t.Fatalf("defaults %+v", c)
	}
	if c.Query.DefaultPriority != 2 || c.Query.PriorityLevels != 3 || c.Query.TimeoutAction != TimeoutReject {
		t.Fatalf("queue defaults %+v", c.Query)
	}
	// A single level makes the default level 1.
	if one := (Config{Query: ModelConfig{PriorityLevels: 1}}).WithDefaults(); one.Query.DefaultPriority != 1 {
		t.Fatalf("default priority with one level: %d", one.Query.DefaultPriority)
	}
}

func TestValidateNamesEverySetting(t *testing.T) {
	c := Config{}.WithDefaults()
	c.Mode = "eager"
	c.Query.MaxBatchSize = -1
	c.Query.MaxQueueDelay = -time.Millisecond
	c.Query.QueueTimeout = -1
	c.Query.MaxInFlightBatches = -3
	c.Query.TimeoutAction = "drop"
	c.Query.DefaultPriority = 9
	c.Image.MaxQueueSize = -5
	c.Image.LatencyTarget = -time.Second
	c.Image.PreferredBatchSizes = []int{4, 32}
	c.Image.ItemCost = 20000
	c.Image.PriorityLevels = 100
	err := c.Validate()
	if err == nil {
		t.Fatal("bad settings accepted")
	}
	for _, want := range []string{
		`Mode "eager"`, "Query.MaxBatchSize -1", "Query.MaxQueueDelay -1ms", "Query.QueueTimeout",
		"Query.MaxInFlightBatches -3", `Query.TimeoutAction "drop"`, "Query.DefaultPriority 9",
		"Image.MaxQueueSize -5", "Image.LatencyTarget -1s", "Image.PreferredBatchSizes [4 32]",
		"Image.MaxBatchCost 16480: below Image.ItemCost 20000", "Image.PriorityLevels 100",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	if err := (ModelConfig{}).Validate(); err == nil || !strings.Contains(err.Error(), "MaxBatchSize 0: must be positive") {
		t.Errorf("an undefaulted ModelConfig: %v", err)
	}
}

// One rule for zero: unset (zero before WithDefaults) takes the default,
// and a zero that survives to Validate, as an explicit zero read from a
// flag does, is an error naming the field; so is a negative value either
// way.
func TestZeroIsUnsetOnlyBeforeDefaults(t *testing.T) {
	unset := Config{Query: ModelConfig{MaxBatchSize: 0}}.WithDefaults()
	if unset.Query.MaxBatchSize != DefaultQueryMaxBatchSize {
		t.Fatalf("unset MaxBatchSize became %d", unset.Query.MaxBatchSize)
	}
	explicit := Config{}.WithDefaults()
	explicit.Query.MaxBatchSize = 0
	explicit.Image.QueueTimeout = 0
	err := explicit.Validate()
	for _, want := range []string{"Query.MaxBatchSize 0: must be positive", "Image.QueueTimeout 0s: must be positive"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("explicit zero: %v; want %q", err, want)
		}
	}
	if _, err := New(Config{Image: ModelConfig{MaxQueueSize: -1}}, Deps{Downstream: &fakeDownstream{}}); err == nil || !strings.Contains(err.Error(), "Image.MaxQueueSize -1: must be positive") {
		t.Errorf("New with a negative setting: %v", err)
	}
}

func TestParseBatchSizes(t *testing.T) {
	got, err := ParseBatchSizes(" 4, 8,16 ")
	if err != nil || len(got) != 3 || got[2] != 16 {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := ParseBatchSizes(""); err != nil || got != nil {
		t.Fatalf("empty: %v, %v", got, err)
	}
	if _, err := ParseBatchSizes("4,x"); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("bad size: %v", err)
	}
}
