#!/usr/bin/env bash
# Routing, fair: round robin vs least outstanding vs GPU-aware under the
# mixed load (90 % single-query calls, 10 % 4-page image calls, open-loop
# Poisson arrivals from benchmarks/loadgen over gRPC) through one gateway in
# front of three Triton simulators of speeds 1, 1 and 0.33 (fast1, fast2,
# slow), each running the bench-2x profile (2x slower than the router's
# prior, non-linear) with lognormal jitter and rare stalls, Triton's
# batcher on and one GPU shared by both models.
#
# Three scenarios per policy:
#   steady  no fault
#   stall   at half time, fast2 gets STALL of extra latency on every batch
#           (the simulator's /simulator/faults), lifted after the run
#   kill    a fresh simulator (victim, speed 1) stands in for fast2 and is
#           killed (SIGKILL) at half time: every call should still succeed
# Each run starts a fresh gateway (flags identical but -router-policy) and
# warms it up for 2 s. Method: ROUNDS rounds, the policies in ABBA order
# (forward, reverse, forward, ...); the 1-minute load average recorded at
# the start of each round, a round that started above LOAD_MAX repeated
# (RETRIES times at most, then kept and flagged). Every run is one JSON line
# in $OUT (loadgen's report plus the batches each backend got).
#
# Usage: benchmarks/routing.sh [OUT.jsonl]
# Environment: RATE offered calls/s (50), DURATION of the arrivals (10s),
# ROUNDS (4), STALL (300ms), SCENARIOS ("steady stall kill"), LOAD_MAX (3),
# RETRIES (1), SEED (1). Everything binds 127.0.0.1 ports chosen at run time
# and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-50}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-4}
STALL=${STALL:-300ms}
SEED=${SEED:-1}
SCENARIOS=${SCENARIOS:-"steady stall kill"}
OUT=${1:-benchmarks/results/routing.jsonl}
POLICIES=(round_robin least_outstanding gpu_aware)

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh

declare -A names metricsof
# start_sim NAME SPEED SEED: starts a simulator; sets sim_pid and sim_spec
# (grpc=metrics, the gateway's -triton-addrs syntax).
start_sim() {
	bin/tritonsim -grpc-addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -log-format json -speed "$2" \
		-profile bench-2x -jitter-sigma 0.2 -stall-probability 0.002 -stall-duration 200ms -seed "$3" \
		>"$tmp/sim-$1.log" 2>&1 &
	sim_pid=$!
	pids+=("$sim_pid")
	local g m
	g=$(log_field "$tmp/sim-$1.log" grpc_addr "tritonsim listening (a Triton simulator, not Triton)")
	m=$(log_field "$tmp/sim-$1.log" metrics_addr "tritonsim listening (a Triton simulator, not Triton)")
	sim_spec="$g=$m"
	names[$g]=$1
	metricsof[$1]=$m
}

# start_gateway POLICY BACKENDS: starts a gateway; sets gw_pid, gw, gw_http and gw_admin.
start_gateway() {
	# -admission=false: this measures the balancing policies, not shedding
	# (benchmarks/overload.sh does).
	bin/gateway -auth none -admission=false -grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -admin-addr 127.0.0.1:0 -log-format json \
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
	echo "gateway never ready" >&2
	cat "$tmp/gw.log" >&2
	exit 1
}

stop_gateway() {
	kill "$gw_pid"
	wait "$gw_pid" 2>/dev/null || true
}

# picks: batches per backend and model from the gateway's metrics, as JSON
# {"fast1": n, ...}.
picks() {
	curl -fs "http://$gw_admin/metrics" | grep '^colpali_router_backend_picks_total' |
		sed -E 's/.*backend="([^"]*)".* ([0-9.e+]+)$/\1 \2/' | while read -r addr n; do
		printf '%s %.0f\n' "${names[$addr]:-$addr}" "$n"
	done | jq -R -s -c 'split("\n") | map(select(length > 0) | split(" ") | {(.[0]): (.[1] | tonumber)}) | add // {}'
}

# retries: the gateway's retries by reason, as JSON.
retries() {
	curl -fs "http://$gw_admin/metrics" | grep '^colpali_router_retries_total' |
		sed -E 's/.*reason="([^"]*)"} (.*)/\1 \2/' |
		jq -R -s -c 'split("\n") | map(select(length > 0) | split(" ") | {(.[0]): (.[1] | tonumber)}) | add // {}'
}

# loadgen_run OUT.json SECONDS SEED: the mixed load at RATE.
loadgen_run() {
	bin/loadgen -protocol grpc -target "$gw" -rate "$RATE" -duration "${2}s" -mix query=90,image=10 \
		-pages-per-call 4 -seed "$3" -timeout 30s -drain 30s -out "$1"
}

start_sim fast1 1 "$SEED"; fast1=$sim_spec
start_sim fast2 1 "$((SEED + 1))"; fast2=$sim_spec
start_sim slow 0.33 "$((SEED + 2))"; slow=$sim_spec

# run POLICY SCENARIO ROUND ATTEMPT ROUNDLOAD: one measured run, appended to $OUT.
run() {
	local p=$1 sc=$2 second=$fast2 victim_pid=""
	if [ "$sc" = kill ]; then
		start_sim victim 1 "$((SEED + 1))"
		second=$sim_spec
		victim_pid=$sim_pid
	fi
	start_gateway "$p" "$fast1,$second,$slow"
	loadgen_run /dev/null 2 99 >/dev/null
	local before
	before=$(picks)
	loadgen_run "$tmp/run.json" "$DURATION" "$SEED" &
	local lg=$!
	case $sc in
	stall)
		sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
		curl -fsS -d "{\"extra_latency\":\"$STALL\"}" "http://${metricsof[fast2]}/simulator/faults" >/dev/null
		;;
	kill)
		sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
		kill -9 "$victim_pid"
		{ wait "$victim_pid" || true; } 2>/dev/null
		;;
	esac
	wait "$lg"
	if [ "$sc" = stall ]; then
		curl -fsS -d '{"extra_latency":"0s"}' "http://${metricsof[fast2]}/simulator/faults" >/dev/null
	fi
	record "$OUT" bench=routing round="$3" attempt="$4" round_loadavg="$5" policy="$p" scenario="$sc" rate="$RATE" \
		picks_before="$before" picks_after="$(picks)" retries="$(retries)" REPORT="$tmp/run.json"
	stop_gateway
}

: >"$OUT"
record "$OUT" bench=routing kind=header command="RATE=$RATE DURATION=$DURATION ROUNDS=$ROUNDS STALL=$STALL benchmarks/routing.sh" \
	date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" cores="$(nproc)" cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
	simulator="3 simulators, speeds 1, 1, 0.33, bench-2x jitter 0.2 stalls 0.002x200ms, Triton batching on, one shared GPU each" \
	duration="${DURATION}s" load_max="$LOAD_MAX" stall="$STALL"
for r in $(seq 1 "$ROUNDS"); do
	order=("${POLICIES[@]}")
	if (( r % 2 == 0 )); then order=("${POLICIES[2]}" "${POLICIES[1]}" "${POLICIES[0]}"); fi
	for attempt in $(seq 0 "$RETRIES"); do
		l=$(loadavg1)
		echo "round $r attempt $attempt: load average $l, order ${order[*]}" >&2
		for sc in $SCENARIOS; do
			for p in "${order[@]}"; do run "$p" "$sc" "$r" "$attempt" "$l"; done
		done
		if ! too_loaded "$l" || (( attempt == RETRIES )); then break; fi
		echo "round $r started at load average $l > $LOAD_MAX: repeated" >&2
	done
done
echo "wrote $OUT" >&2
