package app

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// TestEmbeddedPostgresRefused: -require-database-url without a URL stops
// the gateway and `gateway migrate` at start-up, naming the flag; in a
// Kubernetes pod the embedded Postgres is refused even without the flag.
func TestEmbeddedPostgresRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, args := range [][]string{{"-require-database-url"}, {"migrate", "-require-database-url"}} {
		err := Main(ctx, args, io.Discard, noEnv)
		if err == nil || !strings.Contains(err.Error(), "-require-database-url: no database URL") {
			t.Errorf("%v without a URL: %v, want an error naming the flag", args, err)
		}
	}
	inPod := func(k string) string {
		if k == kubernetesEnv {
			return "10.96.0.1"
		}
		return ""
	}
	err := Main(ctx, []string{"migrate"}, io.Discard, inPod)
	if !errors.Is(err, errEmbeddedRefused) || !strings.Contains(err.Error(), kubernetesEnv) {
		t.Errorf("migrate in a pod without a URL: %v, want the embedded Postgres refused", err)
	}
	// Serving: the refusal is the one the gateway logs before serving
	// embeddings without document storage.
	var d dbFlags
	d.resolve(inPod)
	if _, _, err := openStore(ctx, d, testutil.Logger(t)); !storageRefused(err) {
		t.Errorf("openStore in a pod without a URL: %v, want refused", err)
	}
	// With a URL the flag and the pod are satisfied.
	d = dbFlags{Require: true}
	d.resolve(func(k string) string {
		if k == databaseURLEnv {
			return "postgres://db.example:5432/colpali"
		}
		return inPod(k)
	})
	if err := d.validateStateless(); err != nil || !d.InCluster {
		t.Errorf("with DATABASE_URL: %v (in cluster %v)", err, d.InCluster)
	}
}
