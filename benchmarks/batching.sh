#!/usr/bin/env bash
# Dynamic batching, fair: who batches, under open-loop Poisson load.
#
# Four set-ups, each a gateway in front of its own Triton simulator (so that
# each has its own GPU and its own busy counter):
#   none+triton      gateway -batching-mode none, Triton's dynamic batcher on
#                    (as deployments/triton configures it): the honest baseline
#   static+triton    gateway static, Triton's batcher on
#   adaptive+triton  gateway adaptive (the default), Triton's batcher on
#   none+none        nobody batches (gateway none, -dynamic-batching=false)
# and, for the mix only, set-ups on a simulator whose models each have a
# GPU of their own (-gpu-layout separate, "+sep"), which shows what the
# shared GPU costs the queries. A mode written MODE-if1 runs the gateway
# with -query-max-in-flight-batches 1 -image-max-in-flight-batches 1 (one
# batch per model at Triton at a time, instead of the default 2).
# Three loads (benchmarks/loadgen, gRPC, Poisson arrivals): queries only
# (one query per call), images only (4-page calls) and the mix (90 % query
# calls, 10 % 4-page image calls), each at three rates up to saturation.
#
# The simulators run the bench-2x profile (2x slower than the router's prior
# at full batches, non-linear) at -speed $SPEED, with lognormal jitter and
# rare stalls, one GPU shared by both models: slow enough that the gateway
# machine (2 cores, shared with the load generator) is not the bottleneck.
#
# Method: ROUNDS rounds; within a round every rate runs every set-up, in an
# order that alternates between rounds (ABBA: forward, reverse, forward...).
# The 1-minute load average is recorded at the start of each round; a round
# that started above LOAD_MAX is repeated (RETRIES times at most, then kept
# and flagged). Every run is one JSON line in $OUT, with the loadgen report,
# the simulator's GPU busy seconds and the wall time they cover; the report
# and plots come from that file (go run ./benchmarks/plot in benchmarks/plot).
#
# Usage: benchmarks/batching.sh [OUT.jsonl]
# Environment: DURATION of each run's arrivals (6s), ROUNDS (3), SPEED (0.5),
# LOADS ("query:40,200,600 image:1,2,3 mix:8,16,28": name:rates, calls/s),
# SETUPS (the six above), SEP_LOADS (mix), LOAD_MAX (3), RETRIES (1), SEED (1),
# MIX_BLOCK (20: loadgen deals call kinds in blocks of 20 calls holding the
# mix's shares, so that a 6 s run offers the mix asked for).
# Everything binds 127.0.0.1 ports chosen at run time and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6s}
ROUNDS=${ROUNDS:-3}
SPEED=${SPEED:-0.5}
SEED=${SEED:-1}
MIX_BLOCK=${MIX_BLOCK:-20}
LOADS=${LOADS:-"query:40,200,600 image:1,2,3 mix:8,16,28"}
read -r -a SETUPS <<<"${SETUPS:-none+triton static+triton adaptive+triton none+none none+triton+sep adaptive+triton+sep}"
# SEP_LOADS: the loads the +sep set-ups run.
SEP_LOADS=${SEP_LOADS:-mix}
OUT=${1:-benchmarks/results/batching.jsonl}

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh

SIM_FLAGS=(-profile bench-2x -speed "$SPEED" -jitter-sigma 0.2 -stall-probability 0.002 -stall-duration 200ms -seed "$SEED")

# mix_of LOAD: loadgen's -mix for a load name.
mix_of() {
	case $1 in
	query) echo query=1 ;;
	image) echo image=1 ;;
	mix) echo query=90,image=10 ;;
	*) echo "unknown load $1" >&2; exit 1 ;;
	esac
}

declare -A target simmetrics gwhttp
for s in "${SETUPS[@]}"; do
	IFS=+ read -r mode tb layout <<<"$s"
	gwflags=()
	if [[ $mode == *-if1 ]]; then
		mode=${mode%-if1}
		gwflags=(-query-max-in-flight-batches 1 -image-max-in-flight-batches 1)
	fi
	bin/tritonsim -grpc-addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -log-format json \
		-dynamic-batching="$([ "$tb" = none ] && echo false || echo true)" \
		-gpu-layout "$([ "${layout:-}" = sep ] && echo separate || echo shared)" \
		"${SIM_FLAGS[@]}" >"$tmp/sim-$s.log" 2>&1 &
	pids+=($!)
	sim=$(log_field "$tmp/sim-$s.log" grpc_addr "tritonsim listening (a Triton simulator, not Triton)")
	simmetrics[$s]=$(log_field "$tmp/sim-$s.log" metrics_addr "tritonsim listening (a Triton simulator, not Triton)")
	# Info-level logs, one line per call, as in production: part of the cost.
	# -admission=false: this measures the batching policies, not shedding
	# (benchmarks/overload.sh does).
	bin/gateway -auth none -admission=false -grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -admin-addr 127.0.0.1:0 -log-format json \
		-triton-addrs "$sim=${simmetrics[$s]}" -batching-mode "$mode" "${gwflags[@]}" >"$tmp/gw-$s.log" 2>&1 &
	pids+=($!)
	target[$s]=$(log_field "$tmp/gw-$s.log" grpc_addr "gateway serving")
	gwhttp[$s]=$(log_field "$tmp/gw-$s.log" http_addr "gateway serving")
	for _ in $(seq 1 100); do
		if curl -fs "http://${gwhttp[$s]}/readyz" >/dev/null; then break; fi
		sleep 0.1
	done
done

# run SETUP LOAD RATE ROUND ATTEMPT ROUNDLOAD: one measured run, appended to $OUT.
run() {
	local s=$1 load=$2 rate=$3 before after t0 t1
	before=$(busy_seconds "${simmetrics[$s]}")
	t0=$(now_seconds)
	bin/loadgen -protocol grpc -target "${target[$s]}" -rate "$rate" -duration "$DURATION" \
		-mix "$(mix_of "$load")" -mix-block "$MIX_BLOCK" -pages-per-call 4 -seed "$SEED" -timeout 5s -drain 5s \
		-label "$s $load $rate round $4" -out "$tmp/run.json"
	t1=$(now_seconds)
	after=$(busy_seconds "${simmetrics[$s]}")
	record "$OUT" bench=batching round="$4" attempt="$5" round_loadavg="$6" setup="$s" load="$load" rate="$rate" \
		gpus="$(gpu_count "${simmetrics[$s]}")" gpu_busy_seconds="$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.6f", a - b }')" \
		wall_seconds="$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.6f", a - b }')" \
		REPORT="$tmp/run.json"
}

# Warm up every set-up (connections, the adaptive policy's estimates).
for s in "${SETUPS[@]}"; do
	bin/loadgen -protocol grpc -target "${target[$s]}" -rate 20 -duration 2s -mix query=90,image=10 \
		-pages-per-call 4 -seed 99 -out /dev/null >/dev/null
done

: >"$OUT"
record "$OUT" bench=batching kind=header command="DURATION=$DURATION ROUNDS=$ROUNDS SPEED=$SPEED MIX_BLOCK=$MIX_BLOCK LOADS=\"$LOADS\" SETUPS=\"${SETUPS[*]}\" benchmarks/batching.sh $OUT" \
	date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" cores="$(nproc)" cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
	simulator="bench-2x speed $SPEED jitter 0.2 stalls 0.002x200ms seed $SEED, one GPU shared by both models, 1 instance per model" \
	duration="$DURATION" load_max="$LOAD_MAX"
for r in $(seq 1 "$ROUNDS"); do
	order=("${SETUPS[@]}")
	if (( r % 2 == 0 )); then
		order=()
		for ((i = ${#SETUPS[@]} - 1; i >= 0; i--)); do order+=("${SETUPS[i]}"); done
	fi
	for attempt in $(seq 0 "$RETRIES"); do
		l=$(loadavg1)
		echo "round $r attempt $attempt: load average $l, order ${order[*]}" >&2
		for spec in $LOADS; do
			load=${spec%%:*}
			IFS=, read -r -a rates <<<"${spec#*:}"
			for rate in "${rates[@]}"; do
				for s in "${order[@]}"; do
					if [[ $s == *+sep && " $SEP_LOADS " != *" $load "* ]]; then continue; fi
					run "$s" "$load" "$rate" "$r" "$attempt" "$l"
				done
			done
		done
		if ! too_loaded "$l" || (( attempt == RETRIES )); then break; fi
		echo "round $r started at load average $l > $LOAD_MAX: repeated" >&2
	done
done
echo "wrote $OUT" >&2
