package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
//
// pgvector must be installed in the database, in any schema. Migrate does
// not need to be a superuser: when the extension exists it uses it where
// it is (a managed Postgres creates extensions for its users, Supabase in
// a schema "extensions"); only when it is missing does Migrate try to
// create it, and if the role may not (pgvector is not a trusted
// extension), the error says who must.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	var applied []string
	var vecSchema string
	err = s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return err
		}
		if vecSchema, err = ensureVector(ctx, tx); err != nil {
			return err
		}
		// Unqualified names in the migration files land in the store's
		// schema; pgvector's schema follows it on the path, for its
		// operator classes and operators.
		for _, stmt := range []string{
			`CREATE SCHEMA IF NOT EXISTS "` + s.cfg.Schema + `"`,
			`SET LOCAL search_path TO "` + s.cfg.Schema + `", ` + quoteIdent(vecSchema),
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
	if errors.Is(err, errCannotCreateVector) {
		s.logger.Error("pgvector is not installed and this role cannot install it: ask the database administrator "+
			"(or the managed service's console) to run CREATE EXTENSION vector in this database, then start again", "error", err)
	}
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	s.vecSchema.Store(&vecSchema)
	if len(applied) > 0 {
		s.logger.Info("applied migrations", "schema", s.cfg.Schema, "vector_schema", vecSchema, "migrations", applied)
	}
	// Connections opened before pgvector existed lack its types.
	s.pool.Reset()
	return nil
}

// errCannotCreateVector: pgvector is missing and the role may not create it.
var errCannotCreateVector = errors.New("the vector extension (pgvector) is not installed in this database, " +
	"and this role may not create it: ask the database administrator, or the managed service, " +
	"to run CREATE EXTENSION vector in this database")

// vectorSchemaSQL finds the schema pgvector is installed in, if it is.
const vectorSchemaSQL = `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
	WHERE e.extname = 'vector'`

// ensureVector returns pgvector's schema, creating the extension (in
// public) only when it is absent: creating it needs a superuser (pgvector
// is not a trusted extension), which a managed database's users are not.
func ensureVector(ctx context.Context, tx pgx.Tx) (string, error) {
	var schema string
	err := tx.QueryRow(ctx, vectorSchemaSQL).Scan(&schema)
	if err == nil {
		// Its operator classes are invisible without USAGE on its schema
		// (the migration would fail on "operator class does not exist").
		var usable bool
		if err := tx.QueryRow(ctx, `SELECT has_schema_privilege($1, 'USAGE')`, schema).Scan(&usable); err != nil {
			return "", err
		}
		if !usable {
			return "", fmt.Errorf("%w: the vector extension is installed in schema %q, on which this role has no USAGE: "+
				"ask the database administrator to GRANT USAGE ON SCHEMA %s TO the gateway's role", ErrUnavailable, schema, quoteIdent(schema))
		}
		return schema, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	if _, err := tx.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public`); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
			return "", fmt.Errorf("%w: %w: %w", ErrUnavailable, errCannotCreateVector, err)
		}
		return "", fmt.Errorf("create extension vector: %w", err)
	}
	return "public", nil
}

// vectorSchema returns pgvector's schema, found once (by Migrate, or here
// by the first search of a store that did not migrate).
func (s *Store) vectorSchema(ctx context.Context, tx pgx.Tx) (string, error) {
	if p := s.vecSchema.Load(); p != nil {
		return *p, nil
	}
	var schema string
	if err := tx.QueryRow(ctx, vectorSchemaSQL).Scan(&schema); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("%w: %w", ErrUnavailable, errCannotCreateVector)
		}
		return "", err
	}
	s.vecSchema.Store(&schema)
	return schema, nil
}

// quoteIdent quotes a Postgres identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
