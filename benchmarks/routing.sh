#!/usr/bin/env bash
# Routing: the same offered load through the gateway in front of three Triton
# simulators of speeds 1x, 1x and 0.33x (one GPU three times slower), with
# each balancing policy in turn: round_robin, least_outstanding, gpu_aware.
# Then, per policy, the same load while one fast simulator is killed
# (SIGKILL) in the middle of the run: batches in flight there must fail over.
#
# The offered load is fixed with ghz --rps (an open-loop rate, with enough
# concurrent callers that slow answers do not lower it), so every policy
# faces the same arrivals; policies alternate within each round so that all
# see the same machine noise. One gateway is started per run (same flags but
# the policy) and reads each simulator's /metrics for GPU telemetry.
#
# Usage: benchmarks/routing.sh [OUT.md]
# Environment: RPS offered load (110 req/s), DURATION seconds per run (10),
# C concurrent callers (200), ROUNDS (2). Everything binds 127.0.0.1 ports
# chosen at run time and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RPS=${RPS:-110}
DURATION=${DURATION:-10}
C=${C:-200}
ROUNDS=${ROUNDS:-2}
OUT=${1:-benchmarks/results/routing.md}
POLICIES=(round_robin least_outstanding gpu_aware)

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh


# start_sim NAME SPEED: starts a simulator; sets sim_pid and sim_spec
# (grpc=metrics, the gateway's -triton-addrs syntax).
start_sim() {
	bin/tritonsim -grpc-addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -speed "$2" -gpu-layout separate -dynamic-batching=false -profile linear -log-format json >"$tmp/sim-$1.log" 2>&1 &
	sim_pid=$!
	pids+=("$sim_pid")
	local g m
	g=$(log_field "$tmp/sim-$1.log" grpc_addr "tritonsim listening (a Triton simulator, not Triton)")
	m=$(log_field "$tmp/sim-$1.log" metrics_addr "tritonsim listening (a Triton simulator, not Triton)")
	sim_spec="$g=$m"
	names[$g]=$1
}

# start_gateway POLICY BACKENDS: starts a gateway; sets gw_pid, gw, gw_http and gw_admin.
start_gateway() {
	bin/gateway -auth none -grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -admin-addr 127.0.0.1:0 -log-format json \
		-router-policy "$1" -triton-addrs "$2" -health-interval 100ms >"$tmp/gw.log" 2>&1 &
	gw_pid=$!
	pids+=("$gw_pid")
	gw=$(log_field "$tmp/gw.log" grpc_addr "gateway serving")
	gw_http=$(log_field "$tmp/gw.log" http_addr "gateway serving")
	gw_admin=$(log_field "$tmp/gw.log" admin_addr "gateway serving")
	for _ in $(seq 1 100); do
		if curl -fs "http://$gw_http/readyz" >/dev/null; then return; fi
		sleep 0.1
	done
	echo "gateway never ready" >&2; cat "$tmp/gw.log" >&2; exit 1
}

stop_gateway() {
	kill "$gw_pid"
	wait "$gw_pid" 2>/dev/null || true
}

# picks: batches per backend from the gateway's metrics, as "name=n" pairs.
picks() {
	curl -fs "http://$gw_admin/metrics" | grep '^colpali_router_backend_picks_total' |
		sed -E 's/.*backend="([^"]*)".* ([0-9.e+]+)$/\1 \2/' | while read -r addr n; do
		printf '%s=%.0f ' "${names[$addr]:-$addr}" "$n"
	done
}

# Batches of mixed sizes, as a batcher in front of the router forms them:
# ghz sends the messages of an array in turn. Eight messages (not a multiple
# of three) so that round robin does not pin one size to one backend.
# Mean 8 queries: 7.4 ms at speed 1, from 5.3 ms (1 query) to 14.6 ms (32).
sizes=(1 4 1 16 1 1 32 8)
data="["
for n in "${sizes[@]}"; do
	q=""
	for i in $(seq 1 "$n"); do q+="\"what is late interaction, variant $i?\","; done
	data+="{\"queries\":[${q%,}]},"
done
data="${data%,}]"
load() { # OUT.json [SECONDS]: RPS x SECONDS requests at RPS
	bin/ghz --insecure --proto proto/colpali/v1/embedding.proto --import-paths proto \
		--call colpali.v1.EmbeddingService/EmbedQueries -d "$data" \
		--rps "$RPS" -c "$C" -n "$(( RPS * ${2:-$secs} ))" -O json "$gw" >"$1" || true
}

declare -A names
start_sim fast1 1; fast1=$sim_spec
start_sim fast2 1; fast2=$sim_spec
start_sim slow 0.33; slow=$sim_spec
backends="$fast1,$fast2,$slow"

secs=$DURATION
{
	echo "# Routing: round robin vs least outstanding vs GPU-aware"
	echo
	echo "Command: \`RPS=$RPS DURATION=$DURATION C=$C ROUNDS=$ROUNDS benchmarks/routing.sh\` on $(date -u +%Y-%m-%d),"
	echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), shared with other work: ratios within a round are what count."
	echo "Backends: three Triton simulators, default query cost (5 ms + 0.3 ms per query), one instance each,"
	echo "speeds 1, 1 and 0.33 (fast1, fast2, slow)."
	echo "Load: ghz, EmbedQueries over gRPC, batches of ${sizes[*]} queries in turn (mean 8: 7.4 ms at speed 1,"
	echo "so capacities of about 135, 135 and 45 batches/s; round robin saturates the slow one at 135 req/s),"
	echo "$RPS req/s offered (--rps, evenly spaced) for ${DURATION}s ($((RPS * DURATION)) requests), $C concurrent callers."
	echo "Each run starts a fresh gateway (flags identical but -router-policy) after the simulators are warm."
	echo "Baseline of each table: round_robin. \"batches\" is colpali_router_backend_picks_total per backend."
} >"$OUT"

for r in $(seq 1 "$ROUNDS"); do
	# Rotate the order each round so no policy always runs first.
	order=("${POLICIES[@]:$(( (r-1) % 3 ))}" "${POLICIES[@]:0:$(( (r-1) % 3 ))}")
	declare -A pk=()
	for p in "${order[@]}"; do
		start_gateway "$p" "$backends"
		load "$tmp/warm.json" 2
		load "$tmp/$p-$r.json"
		pk[$p]=$(picks)
		stop_gateway
	done
	{
		echo
		echo "## Round $r (order: ${order[*]})"
		echo
		go run ./benchmarks/ghzreport "round_robin=$tmp/round_robin-$r.json" "least_outstanding=$tmp/least_outstanding-$r.json" "gpu_aware=$tmp/gpu_aware-$r.json"
		echo
		for p in "${POLICIES[@]}"; do echo "- $p batches (warm-up included): ${pk[$p]}"; done
	} >>"$OUT"
done

# Kill one fast backend in the middle of each run.
{
	echo
	echo "## One fast backend killed (SIGKILL) after $((secs / 2))s of each ${DURATION}s run"
	echo
	echo "A fresh simulator (victim, speed 1) replaces fast2 for each run and is killed mid-run;"
	echo "errors are calls that failed although they had deadline left (the gateway's default 30s)."
	echo
} >>"$OUT"
declare -A kp=()
for p in "${POLICIES[@]}"; do
	start_sim victim 1; victim=$sim_spec; victim_pid=$sim_pid
	start_gateway "$p" "$fast1,$victim,$slow"
	load "$tmp/warm.json" 2
	load "$tmp/kill-$p.json" &
	ghz_pid=$!
	sleep $((secs / 2))
	kill -9 "$victim_pid"
	wait "$ghz_pid"
	kp[$p]="$(picks) retries: $(curl -fs "http://$gw_admin/metrics" | grep '^colpali_router_retries_total' | sed -E 's/.*reason="([^"]*)"} (.*)/\1=\2/' | tr '\n' ' ')"
	stop_gateway
done
{
	go run ./benchmarks/ghzreport "round_robin=$tmp/kill-round_robin.json" "least_outstanding=$tmp/kill-least_outstanding.json" "gpu_aware=$tmp/kill-gpu_aware.json"
	echo
	for p in "${POLICIES[@]}"; do echo "- $p batches: ${kp[$p]}"; done
	for p in "${POLICIES[@]}"; do
		codes=$(grep -o '"statusCodeDistribution":{[^}]*}' "$tmp/kill-$p.json" || true)
		echo "- $p status codes: \`${codes#\"statusCodeDistribution\":}\`"
	done
} >>"$OUT"
cat "$OUT"
