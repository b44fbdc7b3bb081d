package dashboards

//lint:file-ignore SA1019 the classic dashboard model on purpose: see dashboards.go

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// store is the document store: ingestion and search as the gateway serves
// them, and Postgres and its PgBouncer pool from CloudNativePG's exporters.
func store() *dashboard.DashboardBuilder {
	docs := gatewaySel + `, grpc_service="colpali.v1.DocumentService"`
	return newDashboard("colpali-store", "colpali / Store",
		"Documents in Postgres with pgvector: ingestion rate, search latency, the PgBouncer pool and the database.").
		WithRow(dashboard.NewRowBuilder("Documents")).
		WithPanel(graph("Ingestion", "Documents ingested per second (unary and streaming), and pages received on streams.", "ops",
			query(`sum by (grpc_method) (rate(grpc_server_handled_total{`+docs+`, grpc_method=~"IngestDocument|IngestDocumentStream", grpc_code="OK"}[$__rate_interval]))`, "{{grpc_method}}"),
			query(`sum(rate(grpc_server_msg_received_total{`+docs+`, grpc_method="IngestDocumentStream"}[$__rate_interval]))`, "stream messages"))).
		WithPanel(graph("Search latency", "Search calls, embedding the query included: p50, p95, p99.", "s",
			query(quantile(0.5, "grpc_server_handling_seconds", docs+`, grpc_method="Search"`, "grpc_method"), "p50"),
			query(quantile(0.95, "grpc_server_handling_seconds", docs+`, grpc_method="Search"`, "grpc_method"), "p95"),
			query(quantile(0.99, "grpc_server_handling_seconds", docs+`, grpc_method="Search"`, "grpc_method"), "p99"))).
		WithPanel(graph("Document calls by RPC and code", "Every DocumentService call per second; Unavailable means the database could not be reached.", "reqps",
			query(rateBy("grpc_server_handled_total", docs, "grpc_method, grpc_code"), "{{grpc_method}} {{grpc_code}}"))).
		WithPanel(graph("Ingestion latency", "IngestDocument calls, embedding included (p95).", "s",
			query(quantile(0.95, "grpc_server_handling_seconds", docs+`, grpc_method="IngestDocument"`, "grpc_method"), "p95"))).
		WithRow(dashboard.NewRowBuilder("Pool (PgBouncer)")).
		WithPanel(graph("Client connections", "Gateway connections to PgBouncer: active (linked to a server connection) and waiting for one.", "short",
			query(`sum(cnpg_pgbouncer_pools_cl_active{`+poolerSel+`, database="colpali"})`, "active"),
			query(`sum(cnpg_pgbouncer_pools_cl_waiting{`+poolerSel+`, database="colpali"})`, "waiting"))).
		WithPanel(graph("Server connections", "PgBouncer's connections to Postgres: in use and idle.", "short",
			query(`sum(cnpg_pgbouncer_pools_sv_active{`+poolerSel+`, database="colpali"})`, "active"),
			query(`sum(cnpg_pgbouncer_pools_sv_idle{`+poolerSel+`, database="colpali"})`, "idle"))).
		WithPanel(graph("Longest wait for a server connection", "How long the oldest waiting client has waited: above zero for long, the pool is too small or Postgres too slow.", "s",
			query(`max(cnpg_pgbouncer_pools_maxwait{`+poolerSel+`, database="colpali"})`, "max wait"))).
		WithRow(dashboard.NewRowBuilder("Postgres")).
		WithPanel(graph("Instances up", "CloudNativePG instances whose exporter reaches Postgres, and PgBouncers up.", "short",
			query(`sum(cnpg_collector_up{`+postgresSel+`})`, "postgres"),
			query(`sum(cnpg_pgbouncer_up{`+poolerSel+`})`, "pgbouncer"))).
		WithPanel(graph("Backends", "Postgres connections to the colpali database, by state.", "short",
			query(`sum by (state) (cnpg_backends_total{`+postgresSel+`, datname="colpali"})`, "{{state}}"))).
		WithPanel(graph("Database size", "Size of the colpali database (pages, vectors, indexes).", "bytes",
			query(`max(cnpg_pg_database_size_bytes{`+postgresSel+`, datname="colpali"})`, "colpali"))).
		WithPanel(graph("Replication lag", "Seconds each replica is behind the primary.", "s",
			query(`max by (pod) (cnpg_pg_replication_lag{`+postgresSel+`})`, "{{pod}}")))
}
