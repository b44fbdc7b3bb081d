// Package admission decides, at the gateway's entry, whether a call is
// served or refused at once, so that beyond capacity the gateway sheds load
// instead of queueing it into an outage.
//
// # Overview
//
// Two gates, both checked before a call does any work:
//
//   - An adaptive concurrency limit per class of call (query embedding,
//     image embedding, search, ingestion): at most Limit calls of a class
//     are in flight. A call over the limit is refused with class
//     errclass.Overloaded, reason CONCURRENCY_LIMIT and a RetryInfo delay,
//     which the gateway's edge sends as RESOURCE_EXHAUSTED (HTTP 429).
//   - A memory budget in bytes shared by every class: each call reserves an
//     estimate of the memory it will hold at its peak (each copy of its
//     request bytes, its search candidates, its embeddings) and gives it
//     back when it ends. A call that does not fit is refused with reason
//     MEMORY_BUDGET.
//
// # The memory budget
//
// Config.MemoryBudget is the memory the whole process keeps under, not
// only its calls: the calls' estimates count their working memory, but the
// Go heap also holds garbage between collections (up to as much again as
// the live data, with GOGC=100), the gateway's own structures, and calls
// still being received or refused. So the budget is split:
//
//   - the calls in flight reserve at most Config.CallMemoryShare of it
//     (Config.CallMemory, 3/4 by default);
//   - the gateway sets the Go runtime's soft memory limit to 90% of it
//     (ApplyMemoryLimit, never above GOMEMLIMIT), so that the collector
//     runs, and returns pages to the system, before the process passes the
//     budget. The 10% left is what the kernel counts and the runtime does
//     not (the program's text) and the collector's overshoot while it
//     marks.
//
// The gap between the calls' share and the runtime's limit is the heap's
// room to allocate between collections: with the live heap at the limit,
// the collector would run without pause (it then takes at most half the
// CPU and lets the heap pass the limit rather than stall the program).
//
// # The limit's algorithm
//
// The limit follows the latency of the admitted calls, in the family of
// Netflix's concurrency-limits (AIMD, Gradient2) and Envoy's adaptive
// concurrency filter, but steers toward an explicit latency target rather
// than toward a measured no-load latency: the gateway's calls include a
// batching delay that is wanted, and an operator states what latency the
// admitted calls must keep.
//
// Each class has its target: Config.LatencyTarget for queries and
// searches, Config.ImageLatencyTarget for page images and ingestions.
// Completed calls are collected in windows (at least Config.Window long and
// Config.MinSamples calls, or Config.MaxWindow long with any). At the end
// of each window the limit L moves once, on two measures of the window's
// latency: q, the Config.Quantile latency of the calls that completed in
// it (default the p99: the target is what 99 % of the admitted calls
// keep; of a window of fewer than 100 calls, such as an image class's
// few, q is its slowest call), and m, the mean time in flight of the
// window's calls by Little's law (the integral of the calls in flight
// over the window, divided by the calls that left it), which counts the
// calls still in flight as they wait:
//
//   - q or m above the target: L ← L × max(1/2, target/q), the gradient,
//     applied at once (too many calls in flight cost every admitted call
//     its latency); when m is above the target, at most served ×
//     GrowBelow × target, served being the window's completed calls a
//     second: by Little's law the calls in flight that keep the latency
//     in the band, and the evidence when completions lag (below);
//   - q and m between Config.GrowBelow × target (0.7) and the target: L
//     holds;
//   - both under GrowBelow × target, and the window used at least half of
//     L (a limit that was not reached says nothing about more): L grows
//     toward L + √L, the headroom Gradient2 adds as its queue allowance,
//     or toward L + L/2 while q is under half the target (a slow start, so
//     that a limit cut by an overload climbs back within seconds), smoothed
//     (L ← (1-s)·L + s·(L + headroom), s = Config.Smoothing);
//   - calls of the window dropped downstream (timed out, or refused as
//     overloaded): L ← L × Config.Backoff at most, as AIMD does;
//
// and L is kept within [MinLimit, MaxLimit].
//
// Completions lag when calls take longer than a window. Image calls take
// seconds: after a start, or when a backend slows down, the first calls
// to complete are the fast ones, admitted first, while those admitted
// behind them queue unseen; by the time one of those completes over the
// target, tens more have been admitted behind it (measured: 68 calls past
// their 10 s deadline in the first minute of image overload, the limit
// at 32). m sees them while they wait. For the same reason the image
// classes start at Config.ImageInitialLimit (4), not Config.InitialLimit
// (32), as TCP starts its window small: a limit found too high is known
// only seconds later, one found too low after one window.
//
// The band where L holds is what keeps q under the target at saturation.
// A limit that grows for as long as q is within the target and is cut as
// soon as it is not oscillates across the target: every other window's q
// is over it, and the admitted calls' p99 over a minute sits above it (575
// ms against 500 ms, measured at 3x capacity when q was the p90 and there
// was no band). With the band, L stops growing once q reaches GrowBelow of
// the target and settles there: the windows' noise stays within the band,
// a cut comes only when q crosses the target. The band is 0.7 to 1, not
// 0.8 to 1, because what the clients see includes what the limit does not
// (the gateway's receiving and decoding a call before admitting it, the
// client's own queueing): at 0.8, their p99 at 3x and 10x overload sat 1
// to 7 % over the target; goodput is the same anywhere in the band.
//
// A cut shows only in calls admitted after it, so after a cut the limit
// holds until enough of those have completed (MinSamples, or one after the
// cut's latency plus MaxWindow), rather than cut again on calls admitted
// before it (TCP cuts its window once per round trip for the same reason).
// Their latency then judges the cut: queueing latency falls with the
// limit, so a cut to a share r of L should take about 1-r off it. A cut of
// at least a fifth that took off less than half that, from a latency
// still above the target, was futile: the latency is not queueing the limit
// controls (the gateway's own CPU saturated by parsing calls, refused and
// admitted alike; a backend slow at any concurrency), and cutting on would
// only starve the batcher, and goodput with it, down to MinLimit. The cut
// is undone and cuts are held for 20 windows, while L may grow; the next
// cut is then tried from there. By Little's law the calls in
// flight are throughput × latency, so at saturation L settles between
// GrowBelow × target × capacity and target × capacity: what the backends
// can answer within the target, and no more; their goodput is the same
// anywhere in that band, as long as they have calls queued.
//
// # Priorities
//
// Lower priority levels are shed first: a call of level p of n (1 served
// first) is admitted while the class's calls in flight are under
// L × (1 - PriorityReserve × (p-1)/(n-1)). The most urgent level may use the
// whole limit; the least urgent stops PriorityReserve short of it, which
// leaves that share to the levels above.
//
// # Concurrency Model
//
// A Controller is safe for concurrent use. Each class has one mutex held
// for a few arithmetic operations on admit and release (the window's
// quantile is computed under it once per window, over at most
// maxWindowSamples samples); the memory budget is a single atomic counter.
// Time comes from a clock.Clock, so tests drive the windows with a fake.
//
// # Request Lifecycle and Ownership
//
// Admit returns a *Permit or an error; a Permit holds one slot of its class
// and its bytes of the budget until Done, which must be called exactly once
// (a second call is a no-op) with the call's outcome. Refused calls hold
// nothing.
package admission
