package testutil

import (
	"context"
	"fmt"
	"os"

	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
)

// Database is the database a test binary's tests share, for TestMain:
// $TEST_DATABASE_URL (a real Postgres with pgvector, as make test-postgres
// gives) or else an embedded PGlite started here, with StartTimeout. embedded
// says which; stop stops the embedded server (a no-op otherwise). Each test
// then takes a schema of its own.
func Database(ctx context.Context) (url string, embedded bool, stop func(), err error) {
	if url := os.Getenv("TEST_DATABASE_URL"); url != "" {
		return url, false, func() {}, nil
	}
	srv, err := embeddedpg.Start(ctx, embeddedpg.Config{StartTimeout: StartTimeout})
	if err != nil {
		return "", false, nil, fmt.Errorf("the embedded Postgres (make install): %w", err)
	}
	return srv.URL(), true, func() { _ = srv.Stop() }, nil
}
