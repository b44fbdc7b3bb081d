package gateway

import (
	"runtime"

	"google.golang.org/grpc"
)

// streamWorkers has the gRPC server run calls on a pool of long-lived
// goroutines rather than a new one per call. A new goroutine starts with a
// small stack and grows it, by copying, as the call goes down the
// interceptors, the batcher, the router and the Triton client: stack growth
// was 7% of a call's CPU in a profile at saturation. When every worker is
// busy, grpc-go starts a goroutine for the call as before, so the pool
// bounds nothing; it is sized for the calls in flight at saturation on a
// few cores.
func streamWorkers() grpc.ServerOption {
	return grpc.NumStreamWorkers(uint32(max(32, 8*runtime.GOMAXPROCS(0)))) // #nosec G115 -- GOMAXPROCS is a small positive number
}
