#!/usr/bin/env bash
# Gateway overhead (issue 10): what one call costs the gateway, in CPU and in
# latency, beside the floor of one Go gRPC hop on this machine.
#
# One simulator at near-zero cost (tritonsim, Triton-side batching off, a
# 1 µs query batch) is called, in one run and alternating order:
#   direct           ghz → simulator ModelInfer
#   forwarder        ghz → benchmarks/forwarder (raw bytes, no decoding, no
#                    interceptors, one upstream connection) → simulator
#   gateway-grpc     ghz → gateway EmbedQueries (gRPC), -batching-mode none
#   gateway-grpc-lg  loadgen → gateway EmbedQueries (gRPC)
#   gateway-rest-lg  loadgen → gateway POST /v1/queries:embed (REST)
#   baseline-*       the same two, through the gateway built at git revision
#                    $BASELINE, when set (e.g. BASELINE=main): before and after
# each at a fixed rate (RATE calls/s, well below capacity: the latency added
# at light load) and at saturation (C callers in a closed loop; for loadgen,
# an open-loop rate far above capacity with at most C calls in flight).
# CPU per call is the measured process's user+sys time from /proc/PID/stat
# over the run divided by its successful calls (the simulator's for direct);
# the simulator's own is reported beside. Rounds alternate the order of the
# paths (ABBA); /proc/loadavg is recorded at the start of every run.
#
# Usage: benchmarks/overhead.sh [OUT.md]
# Environment: ROUNDS (4), DUR seconds per run (10), RATE (400), C (16),
# BASELINE (a git revision; unset: no baseline paths).
# Everything binds 127.0.0.1 ports chosen at run time and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-4}
DUR=${DUR:-10}
RATE=${RATE:-400}
C=${C:-16}
OUT=${1:-benchmarks/results/overhead.md}

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh
go build -o bin/ ./benchmarks/forwarder ./benchmarks/loadgen ./benchmarks/overheadreport

bin/tritonsim -grpc-addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -instances 4 -gpu-layout separate \
	-dynamic-batching=false -query-cost-curve 1:1us -log-format json >"$tmp/sim.log" 2>&1 &
sim_pid=$!
pids+=("$sim_pid")
sim=$(log_field "$tmp/sim.log" grpc_addr)
# start_gateway BINARY NAME [FLAGS...]: starts a gateway; sets NAME_pid, NAME_grpc and
# NAME_http. Info-level logs as in production. No document storage: the
# database URL points at a closed port (the embedded Postgres takes more than
# log_field's 10 s to start on a busy machine, and embeddings never need it).
start_gateway() {
	"$1" -grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -triton-addr "$sim" -log-format json \
		-batching-mode none -database-url postgres://127.0.0.1:1/none "${@:3}" >"$tmp/$2.log" 2>&1 &
	pids+=("$!")
	printf -v "$2_pid" %s "$!"
	printf -v "$2_grpc" %s "$(log_field "$tmp/$2.log" grpc_addr)"
	printf -v "$2_http" %s "$(log_field "$tmp/$2.log" http_addr)"
	# It answers once its router has found the backend ready.
	local http_var=$2_http
	for _ in $(seq 1 100); do
		curl -fsS "http://${!http_var}/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
}
# This build's gateway: no credentials (loopback), its admin listener on a
# free port; a BASELINE build may predate both flags and gets neither.
start_gateway bin/gateway gw -auth none -admin-addr 127.0.0.1:0
paths=(direct forwarder gateway-grpc gateway-grpc-lg gateway-rest-lg)
if [ -n "${BASELINE:-}" ]; then
	baseline_rev=$(git rev-parse --short "$BASELINE")
	mkdir "$tmp/base"
	git archive "$baseline_rev" | tar -x -C "$tmp/base"
	(cd "$tmp/base" && go build -o "$tmp/gateway-base" ./cmd/gateway)
	start_gateway "$tmp/gateway-base" base
	paths+=(baseline-grpc baseline-rest-lg)
fi
bin/forwarder -listen 127.0.0.1:0 -upstream "$sim" >"$tmp/fwd.log" 2>&1 &
fwd_pid=$!
pids+=("$fwd_pid")
for _ in $(seq 1 100); do
	fwd=$(sed -n 's/^forwarder listening on //p' "$tmp/fwd.log")
	[ -n "$fwd" ] && break
	sleep 0.1
done

query="what is late interaction?"
# A BYTES tensor element: 4-byte little-endian length, then the bytes.
raw=$( (printf "\\x$(printf %02x ${#query})\\x00\\x00\\x00"; printf '%s' "$query") | base64 -w0)
infer_data="{\"model_name\":\"colpali_query\",\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[1,1]}],\"outputs\":[{\"name\":\"embeddings\"},{\"name\":\"num_tokens\"}],\"raw_input_contents\":[\"$raw\"]}"
embed_data="{\"queries\":[\"$query\"]}"

# ticks PID: user+sys clock ticks the process has used.
ticks() {
	local f
	read -r -a f <"/proc/$1/stat"
	echo $((f[13] + f[14]))
}

# load PATH LEVEL OUT: one run of PATH at LEVEL (rate or sat).
load() {
	local level=() lg=()
	if [ "$2" = rate ]; then
		level=(--rps "$RATE" -c 8)
		lg=(-rate "$RATE")
	else
		level=(-c "$C")
		lg=(-rate 20000 -max-outstanding "$C")
	fi
	case $1 in
	direct | forwarder)
		local addr=$sim
		[ "$1" = forwarder ] && addr=$fwd
		bin/ghz --insecure --proto proto/inference/grpc_service.proto --import-paths proto \
			--call inference.GRPCInferenceService/ModelInfer -d "$infer_data" "${level[@]}" -z "${DUR}s" -O json "$addr" >"$3"
		;;
	gateway-grpc | baseline-grpc)
		local addr=$gw_grpc
		[ "$1" = baseline-grpc ] && addr=$base_grpc
		bin/ghz --insecure --proto proto/colpali/v1/embedding.proto --import-paths proto \
			--call colpali.v1.EmbeddingService/EmbedQueries -d "$embed_data" "${level[@]}" -z "${DUR}s" -O json "$addr" >"$3"
		;;
	gateway-grpc-lg)
		bin/loadgen -protocol grpc -target "$gw_grpc" "${lg[@]}" -duration "${DUR}s" -drain 5s -out "$3" 2>/dev/null
		;;
	gateway-rest-lg | baseline-rest-lg)
		local url=http://$gw_http
		[ "$1" = baseline-rest-lg ] && url=http://$base_http
		bin/loadgen -protocol rest -target "$url" "${lg[@]}" -duration "${DUR}s" -drain 5s -out "$3" 2>/dev/null
		;;
	esac
}

tool_of() { case $1 in *-lg) echo loadgen ;; *) echo ghz ;; esac; }

# measure ROUND PATH LEVEL: one run, recorded in runs.tsv.
measure() {
	local pid=$gw_pid
	case $2 in direct) pid=$sim_pid ;; forwarder) pid=$fwd_pid ;; baseline-*) pid=$base_pid ;; esac
	local out="$tmp/$1-$2-$3.json" loadavg t0 s0
	loadavg=$(cut -d' ' -f1 /proc/loadavg)
	t0=$(ticks "$pid")
	s0=$(ticks "$sim_pid")
	load "$2" "$3" "$out"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(tool_of "$2")" "$out" \
		$(($(ticks "$pid") - t0)) $(($(ticks "$sim_pid") - s0)) "$loadavg" >>"$tmp/runs.tsv"
}

# Warm-up: connections, caches, the gateway's first calls.
for p in "${paths[@]}"; do
	DUR=2 load "$p" rate "$tmp/warm-$p.json"
done
start_load=$(cat /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
	order=("${paths[@]}")
	if ((r % 2 == 0)); then
		order=()
		for ((i = ${#paths[@]} - 1; i >= 0; i--)); do order+=("${paths[i]}"); done
	fi
	echo "round $r: ${order[*]} ($(cat /proc/loadavg))" >&2
	for level in rate sat; do
		for p in "${order[@]}"; do
			measure "$r" "$p" "$level"
		done
	done
done

{
	echo "# Gateway overhead: CPU per call and latency added, beside a minimal Go gRPC forwarder"
	echo
	echo "Command: \`${BASELINE:+BASELINE=$BASELINE }ROUNDS=$ROUNDS DUR=$DUR RATE=$RATE C=$C benchmarks/overhead.sh\` on $(date -u +%Y-%m-%d) at"
	echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benchmarks/results' || echo ' (with uncommitted changes)'),"
	echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), shared with other work:"
	echo "/proc/loadavg at the start: $start_load; at the end: $(cat /proc/loadavg)."
	echo
	echo "Simulator: \`tritonsim -instances 4 -gpu-layout separate -dynamic-batching=false -query-cost-curve 1:1us\`"
	echo "(FP16 embeddings, as its default). Gateway: \`-batching-mode none\`, info-level JSON logs, tracing off"
	echo "(no OTLP endpoint), no document storage (\`-database-url\` at a closed port)."
	echo "Levels: \`rate\` is $RATE calls/s (ghz \`--rps $RATE -c 8\`, loadgen Poisson \`-rate $RATE\`);"
	echo "\`sat\` is $C callers in a closed loop (ghz \`-c $C\`; loadgen \`-rate 20000 -max-outstanding $C\`). $DUR s per run,"
	echo "$ROUNDS rounds, the order of the paths reversed every other round. CPU per call: user+sys ticks of the"
	echo "measured process over the run (clock tick $(getconf CLK_TCK)/s) divided by its successful calls."
	if [ -n "${BASELINE:-}" ]; then
		echo "Baseline: the gateway built at $baseline_rev ($BASELINE), run beside the one under test."
	fi
	echo
	bin/overheadreport -runs "$tmp/runs.tsv" -clk-tck "$(getconf CLK_TCK)"
} >"$OUT"
cat "$OUT"
