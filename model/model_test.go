package model

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	err := Config{QueryModel: "bad name", Dimension: -1}.WithDefaults().Validate()
	if err == nil {
		t.Fatal("no error for a model name with a space and a negative dimension")
	}
	for _, want := range []string{`QueryModel "bad name"`, "Dimension -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}
}
