// Package gateway serves the colpali.v1 API over gRPC and over REST/JSON.
//
// # Overview
//
// One gRPC server carries the API (EmbeddingService, and the operator's
// read-only BackendService over Deps.Backends) and gRPC health. The REST
// side is grpc-gateway's transcoding mux dialled to that same gRPC server
// over an in-memory connection (transport.go; not the in-process handler),
// so a REST call passes the same interceptors as a gRPC call: panic
// recovery, request id and logging, Prometheus metrics, the deadline policy
// and OpenTelemetry tracing. The HTTP listener also serves /openapi.json,
// /healthz and /readyz. With Deps.TLS both listeners speak TLS (mutual TLS
// with a client CA). The admin listener (admin.go, loopback by default)
// serves /metrics, /debug/pprof/, gRPC reflection, the BackendService and
// health. Images are checked without decoding a bitmap, a bounded number
// at once (image.go).
//
// # Request lifecycle
//
// Every call gets a deadline: the caller's, capped at Config.MaxTimeout, or
// Config.DefaultTimeout when the caller set none. Input is validated before
// any backend is called; a bad request is an *errclass.FieldError naming
// each bad field and its limit.
//
// # Errors
//
// Handlers return plain errors. Every layer (triton, router, batching,
// model, store, ingest) wraps its own under an internal/errclass class, and
// one interceptor pair, the innermost (status.go), maps the class to a
// gRPC code and its details: BadRequest from a FieldError, RetryInfo from
// errclass.RetryAfter, ErrorInfo from errclass.WithReason. grpc-gateway then
// maps the code to an HTTP status. The call's own cancellation or deadline
// is CANCELLED or DEADLINE_EXCEEDED; a gRPC status from grpc-go itself
// passes unchanged; class Internal and unclassified errors reach the client
// as "internal error; request id <id>", the error itself going to the log
// under that request id, so that no backend address or SQL leaks.
//
// # Documents
//
// The DocumentService (documents.go) stores documents through a
// DocumentStore (the store package) and embeds queries through the same
// Embedder as the EmbeddingService. Ingestion is the ingest package's
// pipeline (begin, which also answers an idempotent retry before any page
// is embedded; embed groups of Config.MaxImages pages; add them; commit, or
// abort on any failure); IngestDocument and IngestDocumentStream
// (documents_ingest.go) are adapters that validate, hand it the pages and
// turn its progress into messages. The streaming ingestion receives in a
// goroutine of its own, so that the stream's deadline
// (Config.StreamTimeout) holds even against a client that stops sending.
// Without a DocumentStore the service is registered, once, with every
// method answering UNIMPLEMENTED. What the gateway and the store both
// check (document ids, filter fields, text Postgres can hold, the default
// top_k) is defined once, in the store (store/rules.go). Every call acts for one tenant,
// decided in tenantOf: the tenant of the call's credential.
//
// # Access
//
// Every call but health checks passes the access interceptor (access.go)
// before any validation or backend work: the credential (Deps.Authenticator,
// package auth) names the principal, its scopes must cover the method
// (auth.MethodScopes: ListBackends and reflection need "admin"), and its
// tenant must be within its quotas (Deps.Quotas, package quota: calls and
// pages per second, calls at once; the storage quota is checked when an
// ingestion has begun, before any page is embedded). A missing or bad
// credential is UNAUTHENTICATED (401), a missing scope PERMISSION_DENIED
// (403), a quota RESOURCE_EXHAUSTED (429) with a RetryInfo delay.
//
// # Readiness
//
// A loop asks the Embedder's readiness check on an interval and sets the
// gRPC health status (overall and per service) and /readyz from it; on
// shutdown both turn NOT_SERVING, the gateway serves on for
// Config.Drain.Delay so that load balancers notice, and then the servers
// drain (drain.go). The
// DocumentService's own health status also needs the database to answer
// (DocumentStore.Ping); the overall status and /readyz do not, so that a
// database outage does not stop the embedding API.
package gateway
