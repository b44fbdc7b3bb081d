// Package store keeps documents, their pages and the pages' ColPali
// vectors in Postgres with pgvector, and searches them: an approximate
// first stage inside Postgres, a cheap rerank over binarised vectors, then
// exact MaxSim over a short list.
//
// # Overview
//
// A document is a row of documents; each of its pages is a row of pages
// holding three encodings of the page's vectors:
//
//   - fde: a fixed-dimensional encoding in the spirit of MUVERA (fde.go),
//     binarised to bit(10240) and indexed by HNSW with Hamming distance;
//   - codes: each vector binarised, one sign bit a dimension, 16 bytes a
//     vector (16,480 bytes for a 1030-vector page; codes.go);
//   - vectors: the full vectors, 128-d little-endian fp16 packed in a
//     bytea stored out of line uncompressed (2 bytes a value: 263,680
//     bytes for a 1030-vector ColPali page).
//
// One row per page, not per vector: a per-vector index (1030 rows a page,
// a billion at a million pages) is beyond the embedded database and costly
// on a real one (see README.md for the arithmetic).
//
// Search encodes the query like a page, asks HNSW for Config.Candidates
// pages nearest in Hamming distance (hnsw.ef_search set per transaction)
// with their codes, keeps the Config.Rerank best by MaxSim over the codes
// (popcounts), reads only those pages' full vectors by primary key and
// computes exact MaxSim in Go across the CPUs. Under a filter, the
// filter's matches are counted up to Candidates first: if they all fit,
// they are the candidates (exact); if not, the index is walked with
// pgvector's iterative scan, skipping pages that do not match. Recall
// against exact MaxSim over every page rises with Candidates and Rerank;
// benchmarks/storebench measures it (benchmarks/results/store.md).
//
// # Tenancy
//
// Every row carries its tenant, every key starts with it, and every
// statement a caller can cause has tenant = $1 in its WHERE clause: a
// document of another tenant is not found, not listed, not searched, not
// deleted. The one statement across tenants is SweepPending, maintenance
// of abandoned staged documents.
//
// # Consistency
//
// Ingestion is staged (BeginDocument, AddPages, CommitDocument; the ingest
// package drives it): it writes a pending document whose pages are invisible (pages.committed is
// false and the HNSW index is partial on committed pages) until
// CommitDocument flips the document and its pages in one transaction. A
// failure anywhere rolls its transaction back: nothing half-written is ever
// visible, and a dropped connection (the server rolls back) loses only
// what was not acknowledged. DeleteDocument removes the pages and their
// vectors by cascade in the same statement. Idempotency keys are unique
// per tenant; a retry finds the committed document, a reuse with another
// request (the fingerprint differs) is ErrConflict.
//
// # Errors
//
// Driver errors are translated in one place (translate in errors.go): no
// row is ErrNotFound, a database that cannot be reached or a connection
// lost is ErrUnavailable, the caller's cancellation stays itself. Open
// never connects, so a gateway starts while its database is down and its
// calls answer ErrUnavailable until it is up and migrated.
//
// # Migrations
//
// migrations/NNN_name.up.sql are embedded and applied by Migrate in one
// transaction holding a transaction-scoped advisory lock, recorded in
// schema_migrations: running it twice, or from two gateways at once, is
// safe (the second waits and finds nothing to do). pgvector is used in
// whatever schema it is installed in (found in pg_extension and put on
// the migration's search_path; Search names its operator by schema), so
// a role that is not a superuser migrates a database whose administrator
// (or managed service) created the extension; Migrate creates it only
// when it is missing, and says who must when it cannot.
//
// # Concurrency Model
//
// Store is safe for concurrent use; pgxpool gives each call a connection.
// Every statement runs inside an explicit transaction with unnamed
// (describe-cached) statements and transaction-scoped settings only. That
// is free of session state, so it suits the embedded PGlite, which
// multiplexes every connection onto one Postgres session and keeps a
// connection's protocol messages together only inside a transaction; on
// a real Postgres it costs a BEGIN and a COMMIT round trip per read. The
// sweeper goroutine started by Open (Config.SweepInterval) stops in Close.
//
// # Embedded and real Postgres
//
// Nothing here depends on which database it talks to, but for one
// choice: pages go in by binary COPY on a real Postgres and by batched
// INSERTs on the embedded PGlite (internal/embeddedpg, the default without
// DATABASE_URL), whose socket server breaks on a binary COPY. Other known
// differences are of speed only: PGlite serialises transactions, has no
// autovacuum (so no statistics, hence Search's planner settings for the
// first stage), and computes in WebAssembly.
package store
