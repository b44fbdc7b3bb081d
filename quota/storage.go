package quota

import (
	"context"
	"fmt"
	"strconv"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// CheckStorage reports whether tenant may store addDocs more documents
// with addPages more pages: nil, or an error in class Overloaded with the
// ErrorInfo reason STORAGE_QUOTA naming the limit (no RetryInfo: waiting
// does not help, deleting does). Call it before spending GPU time on an
// ingest. A failure to count is returned as the Counter's error.
//
// It is a check, not a reservation: ingests of one tenant running at once
// may together overshoot by what they add.
func (q *Quotas) CheckStorage(ctx context.Context, tenant string, addDocs, addPages int64) error {
	l, _ := q.cfg.limitsFor(tenant)
	if !l.storage() {
		return nil
	}
	docs, pages, err := q.counter.CountTenant(ctx, tenant)
	if err != nil {
		return fmt.Errorf("quota: counting tenant %q's documents: %w", tenant, err)
	}
	check := func(what, limit string, have, add, maxN int64) error {
		if maxN == 0 || have+add <= maxN {
			return nil
		}
		q.metrics.reject(q.whose(auth.Principal{Tenant: tenant}).label, limit)
		return errclass.WithReason(
			errclass.Errorf(errclass.Overloaded, "tenant %q stores %d %s; %d more would pass its quota of %d: delete some first", tenant, have, what, add, maxN),
			"STORAGE_QUOTA", map[string]string{"limit": limit, "value": strconv.FormatInt(maxN, 10)})
	}
	if err := check("documents", "storage_documents", docs, addDocs, l.MaxDocuments); err != nil {
		return err
	}
	return check("pages", "storage_pages", pages, addPages, l.MaxPages)
}
