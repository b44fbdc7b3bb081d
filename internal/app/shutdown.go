package app

import "github.com/morphik-org/colpali-gateway/gateway"

// registerDrainFlags registers the flags of the gateway's drain
// (gateway.DrainConfig): how it leaves on SIGTERM, and how long client
// connections live. The total time a stop may take is -drain-delay plus
// -shutdown-timeout (plus a few seconds to flush traces): a supervisor's
// kill timeout (Kubernetes' terminationGracePeriodSeconds) must exceed it.
func registerDrainFlags(b binder, d *gateway.DrainConfig) {
	b = b.with(b.prefix + "Drain.")
	b.duration(&d.Delay, "drain-delay", "Delay", "how long the gateway keeps serving after SIGTERM, its health already NOT_SERVING, so that load balancers stop sending it calls")
	b.duration(&d.MaxConnectionAge, "max-connection-age", "MaxConnectionAge", "how long a gRPC client connection lives before the client is asked to reconnect (GOAWAY), so that clients spread over new replicas")
	b.duration(&d.MaxConnectionAgeGrace, "max-connection-age-grace", "MaxConnectionAgeGrace", "how long calls on a connection past -max-connection-age may continue before it closes")
}
