package store

import (
	"context"
	"time"
)

// Backoff of MigrateUntilDone: a database that is down at start-up is
// retried at once, then after 1s, doubling up to 30s; each attempt may
// take up to migrateAttemptTimeout.
const (
	migrateFirstBackoff   = time.Second
	migrateMaxBackoff     = 30 * time.Second
	migrateAttemptTimeout = 2 * time.Minute
)

// MigrateUntilDone applies the migrations, retrying with backoff while the
// database cannot be reached, until they are applied or ctx ends. It is
// meant to run in the background of a server: a database that is down at
// start-up must not keep the server from serving what needs no database,
// and the store answers document calls with ErrUnavailable until
// migrated.
func (s *Store) MigrateUntilDone(ctx context.Context) {
	backoff := migrateFirstBackoff
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		attemptCtx, cancel := context.WithTimeout(ctx, migrateAttemptTimeout)
		err := s.Migrate(attemptCtx)
		cancel()
		if err == nil {
			s.logger.Info("database migrated; document storage available")
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.logger.Warn("database migration failed; document calls answer UNAVAILABLE until it succeeds", "error", err.Error(), "retry_in", backoff)
		timer.Reset(backoff)
		backoff = min(2*backoff, migrateMaxBackoff)
	}
}
