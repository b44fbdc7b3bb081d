package app

import (
	"errors"
	"flag"
	"fmt"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// The embedded Postgres keeps its data on the gateway's own disk: with more
// than one replica, or a replica that is replaced, the documents would be
// split and lost. It is for `make run` and tests; in a cluster the gateway
// refuses it.

// kubernetesEnv is set by the kubelet in every container of a pod.
const kubernetesEnv = "KUBERNETES_SERVICE_HOST"

// errEmbeddedRefused: the embedded Postgres may not run here. Use
// errors.Is.
var errEmbeddedRefused = fmt.Errorf("%w: the embedded Postgres is refused", errclass.Invalid)

// registerStateless registers -require-database-url.
func (d *dbFlags) registerStateless(fs *flag.FlagSet) {
	fs.BoolVar(&d.Require, "require-database-url", false, "refuse to start without -database-url (or DATABASE_URL) rather than run the embedded Postgres, whose data stays on this replica; set in production")
}

// validateStateless reports a missing URL that -require-database-url
// demands, at start-up with the other configuration errors.
func (d *dbFlags) validateStateless() error {
	if d.Require && d.URL == "" {
		return fmt.Errorf("-require-database-url: no database URL: set -database-url, %sDATABASE_URL or %s", envPrefix, databaseURLEnv)
	}
	return nil
}

// embeddedAllowed reports why the embedded Postgres may not start, or nil.
func (d *dbFlags) embeddedAllowed() error {
	switch {
	case d.Require:
		return fmt.Errorf("%w: -require-database-url is set and no database URL is", errEmbeddedRefused)
	case d.InCluster:
		return fmt.Errorf("%w: running in Kubernetes (%s is set), where each replica would keep documents of its own; set -database-url or %s",
			errEmbeddedRefused, kubernetesEnv, databaseURLEnv)
	}
	return nil
}

// storageRefused reports whether err is the embedded Postgres refused.
func storageRefused(err error) bool { return errors.Is(err, errEmbeddedRefused) }
