// Package gateway serves the colpali.v1 API over gRPC and over REST/JSON.
//
// # Overview
//
// One gRPC server carries the API (EmbeddingService, and the operator's
// read-only BackendService over Deps.Backends), gRPC health and reflection. The REST
// side is grpc-gateway's transcoding mux dialled to that same gRPC server
// over loopback (not the in-process handler), so a REST call passes the same
// interceptors as a gRPC call: panic recovery, request id and logging,
// Prometheus metrics, the deadline policy and OpenTelemetry tracing. The HTTP
// listener also serves /metrics, /openapi.json, /healthz and /readyz.
//
// # Request lifecycle
//
// Every call gets a deadline: the caller's, capped at Config.MaxTimeout, or
// Config.DefaultTimeout when the caller set none. Input is validated before
// any backend is called; a bad request answers INVALID_ARGUMENT with an
// errdetails.BadRequest naming each bad field and its limit. Backend errors
// are mapped to gRPC codes once, in errors.go.
//
// # Readiness
//
// A loop asks the Embedder's readiness check on an interval and sets the
// gRPC health status (overall and per service) and /readyz from it; on
// shutdown both turn NOT_SERVING before the servers drain.
package gateway
