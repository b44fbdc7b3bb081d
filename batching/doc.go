// Package batching is the dynamic batcher: it turns concurrent embedding
// calls for one model into GPU-sized batches, sends each batch downstream
// (to the router), and hands every caller exactly its own rows.
//
// # Overview
//
// A Batcher holds one queue per model (queries, page images), each with its
// own ModelConfig: Triton's dynamic_batching knobs (max batch size, max
// queue delay, preferred batch sizes, priority levels and a default level,
// a queue policy with max queue size, queue timeout, timeout action and
// timeout override) plus a cost budget per batch, a latency target and a
// number of batches allowed in flight. The batcher knows nothing of
// Triton's wire format: downstream is any Downstream (Embed one batch).
//
// A call may carry several items. A batch is bounded by MaxBatchSize items
// and by MaxBatchCost, the sum of its items' costs (estimated tokens: a page
// costs 1030, a short query about 13), so that a batch of long queries or
// of pages stays within what the GPU holds. A call larger than a batch is
// split across consecutive batches and its rows are reassembled in order.
//
// A call carries its priority level as a parameter of Embed (1 is served
// first, 0 means the model's DefaultPriority); a batch goes downstream at
// the level of its most urgent member, the priority argument of
// Downstream.Embed.
//
// Configuration follows one rule for zero: a zero field of Config is unset
// and takes its default (WithDefaults, which New applies), and Validate
// refuses zero and negative values, naming the field ("Query.MaxBatchSize
// 0: must be positive"), so that an application starting from the
// defaults refuses an explicit zero.
//
// Three modes: ModeAdaptive (the default, below), ModeStatic (Triton's
// policy, kept for comparison) and ModeNone (every call goes downstream at
// once on its own, as before batching existed).
//
// # Layout
//
// Batcher.Embed checks a call (kind, context, priority level, empty items)
// and hands it to its model's lane, the one seam between the public API
// and the modes: a lane embeds a checked call and closes. The lanes:
//
//   - queue.go: queue, the lane of ModeStatic and ModeAdaptive, its state
//     and its close (flush, or give up once Close's context ends);
//   - request.go: a call as a request in the queue: enqueue, a caller
//     leaving, queue timeouts, and finish, which ends a request exactly
//     once;
//   - dispatch.go: the dispatcher loop, which asks the policy (policy.go)
//     whether to send, and a batch's trip downstream and back;
//   - form.go: batch forming. One walker of the queue, plan, works out the
//     batch that would leave now without moving anything; view is the plan
//     at the policy's limit, which the policy decides on, and take carries
//     out the plan for the size the policy chose. The batch the policy saw
//     and the batch sent are the same walk, so they cannot disagree;
//   - direct.go: direct, the lane of ModeNone: no queue, no goroutine of
//     its own; it splits a call only where it exceeds a batch.
//
// # Concurrency Model
//
// In ModeNone a call runs downstream in its caller's goroutine (its pieces
// in goroutines it waits for); there is no other state than a closing
// flag. In the batching modes each queue has one dispatcher goroutine and
// one mutex. Callers enqueue under the mutex and wait on their request's
// done channel or their own context, whichever comes first. The dispatcher
// wakes on an arrival, a departure, a finished batch, or its timer (the
// policy's delay or the earliest queue timeout, on the injected Clock);
// under the mutex it expires timed-out requests and, while fewer than
// MaxInFlightBatches batches per ready backend (Deps.Backends) are in
// flight, asks the policy whether to send a batch now. Each batch runs
// downstream in its own goroutine, without the mutex, then takes the mutex
// to hand out rows. Batches form while every slot is busy, as Triton's
// form while every model instance is busy: under load the queue itself
// makes the batches large, and the delay matters only when a slot is free.
//
// # Request Lifecycle and Ownership
//
// In ModeNone a call owns everything it makes, and what follows is about
// the batching modes. A request is finished exactly once, under the mutex, by whichever comes
// first: its last rows arrive (success), a batch carrying part of it fails
// (that batch's error, the same for every member, so the gateway maps it
// as any backend error), its queue timeout passes under TimeoutReject
// (ErrQueueTimeout), its caller's context ends (the caller gets ctx.Err()
// at once), or Close gives up on it (ErrClosed). A caller's context may end
// before the caller takes the mutex to leave; the dispatcher's walker
// (plan) checks the context of every request it passes, whether sizing or
// taking a batch, and finishes one that has ended just as leave would
// (ctx.Err(), counted as canceled or deadline_exceeded), so a caller that
// has left is never sent. A full queue
// refuses a request before it is queued (ErrQueueFull). Finishing removes
// the request from its queue, so its remaining items are never sent; rows
// that arrive later for a finished request are dropped. Until it is
// finished the request belongs to the queue; afterwards only its caller
// reads it.
//
// A batch's downstream context is not any caller's: it is not canceled when
// a member leaves while another still waits (that one still wants its
// rows), and its deadline is the latest of its members' deadlines, so that
// the router's Triton timeout covers the longest-waiting member. But work
// nobody waits for is not done: each batch in flight counts its members
// still waiting, and each request knows the batches in flight carrying its
// pieces. A request finished before those batches answer (for any of the
// reasons above) is counted off each of them, and a batch that no member
// waits for any more is canceled (cause errAbandoned), so that the backend
// stops, and the router spends no failover on it. Such a batch counts as
// canceled, not failed: its members' rejections are already counted, and
// it gives the adaptive policy no sample, unless it was answered all the
// same or its last member left because its deadline passed (then the
// batch ran out of time, below).
// Tracing: the batch has its own span, a child of its first member's span,
// linked to every other member's span, so that each caller's trace leads
// to the batch it rode in.
//
// Close stops accepting calls (ErrClosed) and flushes: everything queued is
// sent at once, without waiting for fuller batches, and answered as usual;
// if Close's context ends first, what is still queued fails with ErrClosed
// and the batches in flight are canceled. In ModeNone nothing is queued:
// calls already made finish in their callers' goroutines.
//
// # Adaptive Policy
//
// Throughput grows with batch size (a batch costs base + perItem x n on the
// GPU, so each item's share of the base shrinks); latency grows with it
// too. The adaptive policy takes the largest batches the latency target
// allows, and it delays a batch only when waiting buys throughput.
//
// Batch size limit. What the target bounds is what a caller sees: the time
// from its arrival to its batch's answer. So the policy measures that for
// the oldest member of every batch, and splits it into the backend's
// service time for the batch (below) and the wait before it, in the
// gateway's queue and the backend's. It steers the batch size limit by
// additive increase, multiplicative decrease, as Clipper does with its
// batch latency against the SLO:
//
//   - within the target, a batch as large as the limit raises it by
//     MaxBatchSize/16 (larger batches are cheaper per item);
//   - over the target with the service time the larger part, the batch
//     itself is too slow: the limit drops to 90% of the batch's size;
//   - over the target with the wait the larger part, the batch size is not
//     to blame but the load: if a full batch already waits, the backend is
//     the bottleneck and larger batches drain the queue faster, so the
//     limit rises; otherwise it holds.
//
// The third case is where a caller's latency differs from Clipper's batch
// latency: under overload no batch size holds the target, and shrinking
// batches there (as a plain AIMD on caller latency would) lowers the
// throughput and makes every caller wait longer. The limit starts at
// MaxBatchSize, so that a burst is served in large batches from the start;
// the first batches show at once if that is too large. Failed batches say
// nothing of the backend's speed and do not count, except those that ran
// out of time.
//
// Delay. When a slot is free and fewer items wait than the limit, sending
// now costs the backend's base cost for few items. The policy estimates the
// item arrival rate lambda (decayed over 200ms) and fits the backend's
// service time S(n) = base + perItem x n to recent batches (exponentially
// weighted least squares, about the last 20). Service time, not latency:
// with batches pipelined, a batch waits in the backend behind the previous
// one, so its service time is the shorter of its latency and the time since
// the previous answer. The backend utilisation at the batch size on hand is
// rho = lambda x S(n)/n, the share of backend time needed if every batch
// had n items. If rho < 1 and no batch is in flight, the backend is idle
// and would keep up even if every batch were this small: the batch leaves
// now, and at low load requests are never held back (the static policy
// holds them for its full delay). Otherwise waiting pays (with a batch in flight, this
// one would wait behind it in the backend anyway): the policy waits for the
// expected time to fill the batch, (limit - n)/lambda, but never past
// MaxQueueDelay for the oldest request, nor so long that the batch expected
// by then, S(n + lambda x wait) after the oldest request's wait so far,
// would overrun the target; it decides again on every arrival.
//
// ModeStatic is Triton's policy on the same slots: when a slot is free, send
// the largest preferred batch size the queue fills; otherwise send once the
// batch is full or its oldest request has waited MaxQueueDelay.
package batching
