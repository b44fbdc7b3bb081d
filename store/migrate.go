package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// migrateLockKey is the advisory lock that serialises Migrate across
// gateways ("colpali" as a number).
const migrateLockKey int64 = 0x636f6c70616c69

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".up.sql")
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("store: migration %s: want NNN_name.up.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("store: migrations %s and %s share a version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// Migrate applies the embedded migrations not yet applied, all in one
// transaction under a transaction-scoped advisory lock: safe to run twice,
// and from several gateways at once (the others wait, then find nothing
// to do). A failure leaves the schema as it was.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	var applied []string
	err = s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return err
		}
		// Unqualified names in the migration files land in the store's
		// schema; public stays on the path for pgvector's types.
		for _, stmt := range []string{
			`CREATE SCHEMA IF NOT EXISTS "` + s.cfg.Schema + `"`,
			`SET LOCAL search_path TO "` + s.cfg.Schema + `", public`,
			s.q(`CREATE TABLE IF NOT EXISTS {schema_migrations} (
				version    integer PRIMARY KEY,
				name       text NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now())`),
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		var current int
		if err := tx.QueryRow(ctx, s.q(`SELECT coalesce(max(version), 0) FROM {schema_migrations}`)).Scan(&current); err != nil {
			return err
		}
		for _, m := range ms {
			if m.version <= current {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql, pgx.QueryExecModeSimpleProtocol); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, s.q(`INSERT INTO {schema_migrations} (version, name) VALUES ($1, $2)`), m.version, m.name); err != nil {
				return err
			}
			applied = append(applied, m.name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if len(applied) > 0 {
		s.logger.Info("applied migrations", "schema", s.cfg.Schema, "migrations", applied)
	}
	// Connections opened before pgvector existed lack its types.
	s.pool.Reset()
	return nil
}
