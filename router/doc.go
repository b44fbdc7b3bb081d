// Package router owns the pool of Triton backends and decides, for every
// batch, which one computes it.
//
// # Overview
//
// The pool is the union of backends from configuration (Config.Static) and
// from DNS (Config.DNS, a headless Kubernetes service re-resolved every
// Config.DNSInterval through an injectable Resolver). Each backend has a
// gRPC connection with keepalive (package triton), through which the router
// sends a batch of items and gets their embeddings: the KServe v2 tensors
// are triton's business (triton.Codec), not the router's. Its health
// checks travel on a second connection of their own, so that a check never
// waits behind the frames of a multi-megabyte answer. A backend leaving the
// pool drains: no new batch goes there, the batches in flight finish (up to
// Config.DrainTimeout), then its connections close.
//
// # Health
//
// A backend is routable for a model while its health checks pass and its
// server last said that model is ready. What the server answers counts at
// once: a refused connection, or ServerLive false, takes the backend out
// at the first check, and each model's readiness follows ModelReady. A
// check that gets no answer (it times out: the server, or this gateway, is
// short of CPU) counts towards Config.UnhealthyThreshold (default 3), and
// only that many in a row take the backend out. Batches are evidence too
// (passive health): when the backend answered batches since the check
// before, a check that timed out is not counted and the count starts
// again. A backend taken out by its checks comes back after
// Config.HealthyThreshold passing checks in a row (default 2); before it
// was first ready, one pass admits it, as in Envoy. Apart from the checks,
// a backend leaves the routing set at once when a call to it fails
// UNAVAILABLE (until a check passes), and for a doubling backoff when
// Config.EjectAfter batches in a row fail through its fault (outlier
// ejection).
//
// When no backend is routable for a model but some are out only because
// their checks went unanswered (not refused, not said not live, not marked
// down by a failed call, not ejected or draining) and had the model ready,
// the model's batches go to those (panic routing, after Envoy's panic
// threshold): a fleet that is slow to answer checks under load keeps
// serving instead of failing every call. Entering and leaving panic
// routing are logged (at the pace of health changes, not of batches), and
// each batch routed so is counted in colpali_router_panic_routing_total.
// Ready still reports the model not ready meanwhile, and says that its
// batches go out in panic: readiness tells a load balancer to prefer
// another replica, which may have a backend that passes; a client that
// calls anyway gets its batch tried.
//
// The balancing policy is one of three packages under router/policy:
// round_robin and least_outstanding for comparison, and gpu_aware (the
// default), which sends each batch where it is estimated to complete first
// from this gateway's cost in flight there, the backend's learned latency
// per cost unit (both per model: a page batch in flight delays the queries
// behind it on the same GPU), and its GPU telemetry (the model's queue time
// and pending requests, GPU utilisation, free memory) when Deps.GPU has a
// fresh figure. The gpuaware package's documentation argues for a full
// scan over power of two choices.
//
// A batch's cost is derived from its model and size: Config.QueryCost and
// Config.ImageCost give a fixed part and a part per item in cost units
// (defaults shaped like ColPali's: a page costs about 80 queries). Only the
// shape is configured; each backend's latency per unit is measured from its
// answers (an EWMA), so GPU speeds are learned, not declared.
//
// # Concurrency Model
//
// The pick path never blocks. Everything a pick reads is either an
// immutable snapshot (the routable backends of each model, published through
// an atomic pointer) or an atomic counter of a backend (batches and cost in
// flight, latency per cost unit). The snapshot is rebuilt under Router.mu on
// every change of membership or health, which happen at the pace of health
// checks, DNS answers and failures, not of requests. Health checks run on one
// goroutine per backend, DNS on one goroutine; both, and drains, belong to
// Run and end with its context. The retry budget counts batches with a
// compare-and-swap per batch; its mutex is taken only to decide a retry,
// after a failure.
//
// Health checks, ejection backoffs, the retry budget's window, DNS
// re-resolution and drain polls read the clock in Deps.Clock, so that tests
// drive them with a fake clock instead of sleeping. Callers' deadlines,
// batch latencies and telemetry ages stay on real time (see Deps.Clock).
//
// # Request Lifecycle
//
// Embed derives the batch's cost, counts it in the retry budget's window,
// and picks a backend from the snapshot. The pick counts the batch in flight
// on that backend at once, then reads the snapshot again: a drain publishes
// the snapshot without the leaving backend before it reads that backend's
// batches in flight, so either the drain sees the batch and waits for it,
// or the pick sees the backend gone and picks again; no batch is sent on a
// connection a drain has closed. The batch stays counted until its answer
// (success or failure) returns, exactly once; a success resets the
// backend's consecutive failures and updates its latency per cost unit.
// The deadline's time left travels to Triton as the request's "timeout"
// parameter, and the priority Embed is given, when positive, as its
// "priority" parameter.
//
// A failure is judged by class (package triton). UNAVAILABLE (the backend is
// down; nothing was computed) counts towards ejection, takes the backend out
// until a health check passes, and is retried once on another ready backend.
// A full queue (ErrOverloaded) is back-pressure: the backend is not at fault
// and the batch never goes back to it, but it is retried once on another
// ready backend, since a full queue on one server while another has room is
// a placement miss; when every queue is full the retry fails the same way
// and the caller sees RESOURCE_EXHAUSTED. A timeout that expired in Triton's
// queue (ErrTimedOut), a rejection of bad input and the caller's own
// cancellation say nothing about the backend and neither count nor retry;
// any other failure (ErrFailed) counts towards ejection but is not retried.
// A retry happens only while the caller's deadline has time left and the
// retry budget allows: retries over the last 10 s may not exceed
// Config.RetryBudgetRatio of the batches (plus Config.RetryMinPerSecond),
// so an outage cannot double the load on the surviving backends.
//
// An ejection is skipped when no other backend is routable for one of the
// backend's models (those its last passing health check found ready): a
// failing backend still serves some batches, no backend serves none. A
// backend just marked down by an UNAVAILABLE call still counts as the last
// one, so a single backend whose server restarts is readmitted by its
// passing health checks, not after a backoff. A passing health check ends a
// mark-down but does not reset the consecutive failures, which count
// batches: only an answered batch resets them, so a backend that passes its
// checks yet fails every batch is ejected all the same. An ejected backend
// is probed when its backoff ends and readmitted when the probe passes; the
// backoff doubles with each ejection in a row (Config.EjectBackoff up to
// Config.EjectBackoffMax, however many) and starts again from the
// beginning once the backend has stayed in for EjectBackoffMax.
//
// Ready is nil while every model has a ready backend; a model without one
// and without panic candidates answers its batches ErrNoBackend
// (UNAVAILABLE at the API), while the other model's batches still flow.
package router
