#!/usr/bin/env bash
# Dynamic batching: the same single-query load from many concurrent clients,
# sent in one run through three gateways in front of one Triton simulator
# (its default cost model, one instance: 5 ms + 0.3 ms per query, one batch
# at a time): -batching-mode none (every call its own ModelInfer), static
# (Triton's policy) and adaptive. Modes alternate within each round and each
# concurrency level, so that all three see the same machine noise.
#
# Usage: benchmarks/batching.sh [OUT.md]
# Environment: LEVELS, the load levels ("16 64 256 256@80 256@1000"): C is C
# clients each sending its next call as soon as the last is answered (closed
# loop); C@R is C clients sending R calls per second in all (open loop, as
# independent users). DURATION of each measured run (5s), ROUNDS (2).
# Everything binds 127.0.0.1 ports chosen at run time and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

LEVELS=${LEVELS:-"16 64 256 256@80 256@1000"}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-2}
OUT=${1:-benchmarks/results/batching.md}
MODES=(none static adaptive)

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh


bin/tritonsim -grpc-addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -instances 1 -gpu-layout separate -dynamic-batching=false -profile linear -log-format json >"$tmp/sim.log" 2>&1 &
pids+=($!)
sim=$(log_field "$tmp/sim.log" grpc_addr)
declare -A grpc admin
for mode in "${MODES[@]}"; do
	# Info-level logs, one line per call, as in production: part of the cost.
	bin/gateway -auth none -grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -admin-addr 127.0.0.1:0 -triton-addr "$sim" -log-format json \
		-batching-mode "$mode" >"$tmp/gw-$mode.log" 2>&1 &
	pids+=($!)
	grpc[$mode]=$(log_field "$tmp/gw-$mode.log" grpc_addr)
	admin[$mode]=$(log_field "$tmp/gw-$mode.log" admin_addr)
done

# load MODE LEVEL OUT [DURATION]: single-query EmbedQueries calls, each with
# its own text, at LEVEL (C or C@R, see above) on one connection.
load() {
	local rate=()
	if [[ $2 == *@* ]]; then rate=(--rps "${2#*@}"); fi
	bin/ghz --insecure --proto proto/colpali/v1/embedding.proto --import-paths proto \
		--call colpali.v1.EmbeddingService/EmbedQueries --duration-stop wait \
		-d '{"queries":["query {{.RequestNumber}}: revenue by quarter in the annual report"]}' \
		-c "${2%@*}" "${rate[@]}" -z "${4:-$DURATION}" -O json "${grpc[$1]}" >"$3"
}

# batch_stats MODE: mean query batch size and rejections from the gateway's /metrics.
batch_stats() {
	curl -fsS "http://${admin[$1]}/metrics" | awk -v mode="$1" '
		/^colpali_batcher_batch_size_sum\{model="colpali_query"\}/ { sum = $2 }
		/^colpali_batcher_batch_size_count\{model="colpali_query"\}/ { n = $2 }
		/^colpali_batcher_rejections_total\{model="colpali_query"/ { rej += $2 }
		END { printf "| %s | %d | %.1f | %d |\n", mode, n, (n ? sum / n : 0), rej }'
}

# Warm up every gateway (connections, the adaptive policy's estimates).
for mode in "${MODES[@]}"; do load "$mode" 16 "$tmp/warm-$mode.json" 1s; done
{
	echo "# Dynamic batching: none vs static (Triton's policy) vs adaptive"
	echo
	echo "Command: \`LEVELS=\"$LEVELS\" DURATION=$DURATION ROUNDS=$ROUNDS benchmarks/batching.sh\` on $(date -u +%Y-%m-%d),"
	echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))."
	echo "Load: ghz, single-query EmbedQueries calls (each its own text) for $DURATION per run, on one connection,"
	echo "from C clients that each send the next call as soon as the last is answered (\"C clients\"), or from"
	echo "C clients sending R calls per second in all (\"C clients at R/s\", open loop), through three gateways (-batching-mode none, static, adaptive, all other"
	echo "flags at their defaults) in front of one Triton simulator with its default cost model and 1 instance"
	echo "(5 ms + 0.3 ms per query, one batch at a time: at most ~190 calls/s unbatched, ~2,600/s in batches of 64)."
	echo "The simulator, the gateways and ghz share the same $(nproc) cores (shared with other work: the ratios"
	echo "within one table are what count). Ratios are to none."
	for r in $(seq 1 "$ROUNDS"); do
		for c in $LEVELS; do
			args=()
			for mode in "${MODES[@]}"; do
				load "$mode" "$c" "$tmp/$mode-$c-$r.json"
				args+=("$mode=$tmp/$mode-$c-$r.json")
			done
			echo
			if [[ $c == *@* ]]; then title="${c%@*} clients at ${c#*@} calls/s"; else title="$c clients"; fi
			echo "## Round $r, $title"
			echo
			go run ./benchmarks/ghzreport "${args[@]}"
		done
	done
	echo
	echo "## Query batches over the whole run (from each gateway's /metrics)"
	echo
	echo "| mode | batches | mean batch size | rejections |"
	echo "|---|---:|---:|---:|"
	for mode in "${MODES[@]}"; do batch_stats "$mode"; done
} >"$OUT"
cat "$OUT"
