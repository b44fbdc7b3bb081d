package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/internal/clock"
)

// refusalLogInterval is how often, at most, refusals are summed up in a
// warn line.
const refusalLogInterval = 10 * time.Second

// refusalLog logs the calls refused as overloaded (RESOURCE_EXHAUSTED: the
// admission controller's limits and budget, tenants' quotas) as one warn
// line per interval carrying their count, instead of a line each. Under
// overload refusals come by the thousand a second: a line each would spend
// on formatting and writing logs the CPU that the admitted calls need (a
// tenth of a refused REST call's cost, measured), and drown every other
// line. Each refusal is still logged at debug level, and counted by the
// metrics (colpali_admission_shed_total, colpali_quota_rejections_total,
// grpc_server_handled_total).
type refusalLog struct {
	base  *slog.Logger
	clock clock.Clock
	every time.Duration
	// refused counts the refusals not yet reported; next is when (Unix
	// nanoseconds) the next summary may be written: the first refusal
	// after a quiet spell is reported at once.
	refused atomic.Int64
	next    atomic.Int64
}

func newRefusalLog(base *slog.Logger, clk clock.Clock) *refusalLog {
	return &refusalLog{base: base, clock: clk, every: refusalLogInterval}
}

// note counts one refusal of method, err, and writes the summary line
// when one is due. Safe for concurrent use.
func (l *refusalLog) note(ctx context.Context, method string, err error) {
	l.refused.Add(1)
	if !l.base.Enabled(ctx, slog.LevelWarn) {
		return
	}
	now := l.clock.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+l.every.Nanoseconds()) {
		return
	}
	l.base.LogAttrs(ctx, slog.LevelWarn, "calls refused as overloaded",
		slog.Int64("refused", l.refused.Swap(0)), // since the last such line
		slog.String("last_method", method),
		slog.String("last_error", status.Convert(err).Message()))
}
