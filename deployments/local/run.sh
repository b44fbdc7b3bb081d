#!/usr/bin/env bash
# Starts the local stack on loopback: two Triton simulators (standing in for
# Triton, as no GPU is here) and the gateway routing across them. Without
# DATABASE_URL the gateway starts its embedded Postgres (PGlite, installed by
# `make install`) itself, keeping documents in data/pg across restarts.
# Ctrl-C stops them all.
# Run it through `make run`, which builds bin/ first.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIM_GRPC=${SIM_GRPC:-127.0.0.1:8001}
SIM_METRICS=${SIM_METRICS:-127.0.0.1:8002}
SIM2_GRPC=${SIM2_GRPC:-127.0.0.1:8011}
SIM2_METRICS=${SIM2_METRICS:-127.0.0.1:8012}
GATEWAY_GRPC=${GATEWAY_GRPC:-127.0.0.1:9090}
GATEWAY_HTTP=${GATEWAY_HTTP:-127.0.0.1:8080}
GATEWAY_ADMIN=${GATEWAY_ADMIN:-127.0.0.1:9091}

pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

bin/tritonsim -grpc-addr "$SIM_GRPC" -metrics-addr "$SIM_METRICS" &
pids+=($!)
bin/tritonsim -grpc-addr "$SIM2_GRPC" -metrics-addr "$SIM2_METRICS" &
pids+=($!)

# Each backend names its metrics address after "=", since the simulators do
# not use Triton's default metrics port. No load balancer routes to this
# gateway, so Ctrl-C need not wait for -drain-delay. A development
# workspace may itself run in a Kubernetes pod, where the gateway would
# refuse the embedded Postgres: this stack is local whatever hosts it.
# -auth none: no API keys locally. The gateway then refuses any listen
# address that is not loopback, and says so in its log; see the README's
# Security section for running with keys.
env -u KUBERNETES_SERVICE_HOST bin/gateway -auth none -grpc-addr "$GATEWAY_GRPC" -http-addr "$GATEWAY_HTTP" -admin-addr "$GATEWAY_ADMIN" \
	-triton-addrs "$SIM_GRPC=$SIM_METRICS,$SIM2_GRPC=$SIM2_METRICS" -health-interval 1s \
	-drain-delay 1ms &
pids+=($!)

# Wait until the gateway reports ready (its backend's models are ready).
for _ in $(seq 1 300); do
	if curl -fsS "http://$GATEWAY_HTTP/readyz" >/dev/null 2>&1; then break; fi
	sleep 0.1
done
if ! curl -fsS "http://$GATEWAY_HTTP/readyz" >/dev/null; then
	echo "the gateway did not become ready; see the logs above" >&2
	exit 1
fi

cat <<MSG

colpali-gateway is up (Triton simulators on $SIM_GRPC and $SIM2_GRPC; documents in ${DATABASE_URL:-the embedded Postgres, data/pg}).

  REST:    curl -s -X POST http://$GATEWAY_HTTP/v1/queries:embed -d '{"queries": ["what is late interaction?"], "encoding": "EMBEDDING_ENCODING_FLOAT_LIST"}'
  gRPC:    bin/grpcurl -plaintext -protoset gen/colpali.protoset -d '{"queries": ["what is late interaction?"]}' $GATEWAY_GRPC colpali.v1.EmbeddingService/EmbedQueries
  image:   curl -s -X POST http://$GATEWAY_HTTP/v1/images:embed -d "{\"images\": [\"\$(base64 -w0 deployments/local/page.png)\"]}"
  ingest:  curl -s -X POST http://$GATEWAY_HTTP/v1/documents -d "{\"pages\": [{\"image\": \"\$(base64 -w0 deployments/local/page.png)\"}], \"metadata\": {\"title\": \"sample\"}}"
  search:  curl -s -X POST http://$GATEWAY_HTTP/v1/documents:search -d '{"query": "what is late interaction?", "topK": 3}'
  OpenAPI: curl -s http://$GATEWAY_HTTP/openapi.json
  metrics: curl -s http://$GATEWAY_ADMIN/metrics   (the admin listener: also /debug/pprof/ and gRPC reflection)
  backends: curl -s http://$GATEWAY_HTTP/v1/backends

Ctrl-C stops the stack.
MSG
wait -n "${pids[@]}"
