package gateway

import (
	"context"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/router"
)

// Backends reports the pool of Triton backends for the operator's
// BackendService; the router implements it.
type Backends interface {
	Pool() router.PoolStatus
}

// backendService implements colpali.v1.BackendService, read-only.
type backendService struct {
	colpaliv1.UnimplementedBackendServiceServer
	backends Backends
}

var _ colpaliv1.BackendServiceServer = (*backendService)(nil)

func (s *backendService) ListBackends(context.Context, *colpaliv1.ListBackendsRequest) (*colpaliv1.ListBackendsResponse, error) {
	pool := s.backends.Pool()
	resp := &colpaliv1.ListBackendsResponse{Policy: pool.Policy}
	for _, b := range pool.Backends {
		resp.Backends = append(resp.Backends, backendProto(b))
	}
	return resp, nil
}

var backendStates = map[router.State]colpaliv1.BackendState{
	router.StateUnknown:  colpaliv1.BackendState_BACKEND_STATE_UNSPECIFIED,
	router.StateReady:    colpaliv1.BackendState_BACKEND_STATE_READY,
	router.StateNotReady: colpaliv1.BackendState_BACKEND_STATE_NOT_READY,
	router.StateEjected:  colpaliv1.BackendState_BACKEND_STATE_EJECTED,
	router.StateDraining: colpaliv1.BackendState_BACKEND_STATE_DRAINING,
}

func backendProto(b router.BackendStatus) *colpaliv1.Backend {
	out := &colpaliv1.Backend{
		Address:                  b.Addr,
		MetricsUrl:               b.MetricsURL,
		State:                    backendStates[b.State],
		LastCheckTime:            timestamp(b.LastCheck),
		LastError:                b.LastError,
		InFlight:                 b.InFlight,
		InFlightCost:             b.InFlightCost,
		ConsecutiveFailures:      b.ConsecutiveFailures,
		EjectedUntil:             timestamp(b.EjectedUntil),
		Picks:                    b.Picks,
		Failures:                 b.Failures,
		Ejections:                b.Ejections,
		LatencyPerCost:           duration(b.LatencyPerCost),
		LastEstimatedCompletion:  duration(b.LastEstimate),
		ConsecutiveCheckFailures: int32(min(b.ConsecutiveCheckFailures, math.MaxInt32)), // #nosec G115 -- clamped
		ConsecutiveCheckPasses:   int32(min(b.ConsecutiveCheckPasses, math.MaxInt32)),   // #nosec G115 -- clamped
		PanicRouting:             b.Panic,
	}
	for _, m := range b.Models {
		out.Models = append(out.Models, &colpaliv1.ModelReadiness{Model: m.Name, Ready: m.Ready})
	}
	if b.GPUFresh {
		g := b.GPU
		out.Gpu = &colpaliv1.GpuTelemetry{
			ObserveTime:         timestamp(g.At),
			Utilization:         g.Utilization,
			MemoryUsedBytes:     g.MemoryUsed,
			MemoryTotalBytes:    g.MemoryTotal,
			Pending:             g.Pending,
			QueueTime:           duration(g.QueueTimePerRequest),
			ComputePerExecution: duration(g.ComputePerExec),
			InferencesPerSecond: g.InferencesPerSecond,
			ExecutionsPerSecond: g.ExecutionsPerSecond,
			Gpus:                int32(g.GPUs), // #nosec G115 -- a backend's GPU count, a handful
		}
	}
	return out
}

// timestamp is t as a Timestamp, unset for the zero time.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// duration is d as a Duration, unset for zero.
func duration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}
