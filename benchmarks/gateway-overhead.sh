#!/usr/bin/env bash
# Gateway overhead: the same single-query embedding load, sent in one run
# (a) straight to the Triton simulator's ModelInfer and (b) through the
# gateway's EmbedQueries (gRPC), alternating rounds so that both see the same
# machine noise. The simulator runs with many instances, so that its queue is
# never the bottleneck and the difference is the gateway's own cost
# (validation, interceptors, one more gRPC hop, decoding and re-encoding).
#
# Usage: benchmarks/gateway-overhead.sh [OUT.md]
# Environment: N requests per round (2000), C concurrent callers (16),
# ROUNDS (3). Everything binds 127.0.0.1 ports chosen at run time and is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
C=${C:-16}
ROUNDS=${ROUNDS:-3}
OUT=${1:-benchmarks/results/gateway-overhead.md}

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh


bin/tritonsim -grpc-addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -instances 64 -gpu-layout separate -dynamic-batching=false -profile linear -log-format json >"$tmp/sim.log" 2>&1 &
pids+=($!)
sim=$(log_field "$tmp/sim.log" grpc_addr)
# The gateway logs at info level, one line per call, as it would in
# production: that cost is part of what is measured.
bin/gateway -grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -admin-addr 127.0.0.1:0 -triton-addr "$sim" -log-format json >"$tmp/gw.log" 2>&1 &
pids+=($!)
gw=$(log_field "$tmp/gw.log" grpc_addr)

query="what is late interaction?"
# A BYTES tensor element: 4-byte little-endian length, then the bytes.
raw=$( (printf "\\x$(printf %02x ${#query})\\x00\\x00\\x00"; printf '%s' "$query") | base64 -w0)
direct_data="{\"model_name\":\"colpali_query\",\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[1,1]}],\"outputs\":[{\"name\":\"embeddings\"},{\"name\":\"num_tokens\"}],\"raw_input_contents\":[\"$raw\"]}"
gateway_data="{\"queries\":[\"$query\"]}"

direct() {
	bin/ghz --insecure --proto proto/inference/grpc_service.proto --import-paths proto \
		--call inference.GRPCInferenceService/ModelInfer -d "$direct_data" -n "$1" -c "$C" -O json "$sim" >"$2"
}
gateway() {
	bin/ghz --insecure --proto proto/colpali/v1/embedding.proto --import-paths proto \
		--call colpali.v1.EmbeddingService/EmbedQueries -d "$gateway_data" -n "$1" -c "$C" -O json "$gw" >"$2"
}

# Warm up both paths (connections, caches), then alternate measured rounds.
direct 200 "$tmp/warm-direct.json"
gateway 200 "$tmp/warm-gateway.json"
{
	echo "# Gateway overhead: direct to the Triton simulator vs through the gateway"
	echo
	echo "Command: \`N=$N C=$C ROUNDS=$ROUNDS benchmarks/gateway-overhead.sh\` on $(date -u +%Y-%m-%d),"
	echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))."
	echo "Load: ghz, $N single-query requests per round, $C concurrent callers, one connection."
	echo "Simulator: default query cost (5 ms + 0.3 ms per query), 64 instances so that it never queues."
	echo "The gateway, the simulator and ghz share the same $(nproc) cores."
	for r in $(seq 1 "$ROUNDS"); do
		direct "$N" "$tmp/direct-$r.json"
		gateway "$N" "$tmp/gateway-$r.json"
		echo
		echo "## Round $r"
		echo
		go run ./benchmarks/ghzreport "direct=$tmp/direct-$r.json" "gateway=$tmp/gateway-$r.json"
	done
} >"$OUT"
cat "$OUT"
