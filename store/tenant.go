package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// CountTenant returns how many committed documents tenant stores and their
// pages, for the storage quota (package quota's Counter). Pending
// documents are not counted: they are not stored yet, and one that fails
// is never counted at all.
func (s *Store) CountTenant(ctx context.Context, tenant string) (docs, pages int64, err error) {
	if err := checkTenant(tenant); err != nil {
		return 0, 0, err
	}
	err = s.inTx(ctx, readOnly, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, s.q(`SELECT count(*), coalesce(sum(page_count), 0)::bigint FROM {documents}
			WHERE tenant = $1 AND state = 'committed'`), tenant).Scan(&docs, &pages)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: count tenant: %w", err)
	}
	return docs, pages, nil
}

// Database returns the URL and schema the store works on, so that other
// tables of the same database and schema (the API keys of package
// auth/apikey, created by this store's migrations) are opened alongside
// it. The URL may hold a password: never log it.
func (s *Store) Database() (url, schema string) { return s.cfg.URL, s.cfg.Schema }
