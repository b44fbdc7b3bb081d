#!/usr/bin/env bash
# Overload: open-loop load beyond capacity through two gateways in front of
# one Triton simulator (-profile bench-2x), one with admission control
# (-admission, the default) and one without (-admission=false), in one run:
#
#  1. capacity, measured first with admission off: single-query calls (gRPC,
#     then REST) and 16-page image calls (gRPC) on a ladder of open-loop
#     rates; the capacity is the best goodput of the levels whose admitted
#     p99 stays within the latency target with under 1 % errors other than
#     503 (503s come from the router's health checks under load, measured
#     apart);
#  2. overload: query calls at LEVELS x that capacity, gRPC and REST, each
#     level through both gateways in ABBA order across ROUNDS rounds;
#  3. image load: 16-page image calls of IMAGE_PAGE_SIZE noise pages (PNG,
#     incompressible) at IMAGE_LEVEL x the image capacity, both gateways,
#     ROUNDS rounds.
#
# Each run records the gateway's peak RSS (VmHWM, reset before the run via
# /proc/PID/clear_refs) and /proc/loadavg. Both gateways run under
# GOMEMLIMIT=$MEMLIMIT, as in a container with that memory, so the admission
# gateway's default -memory-budget is half of it.
#
# Usage: benchmarks/overload.sh [OUT.md]
# Environment: DURATION of each overload run (60s, as the issue asks), ROUNDS (3), LEVELS
# ("1.5 3 10"), PROTOCOLS ("grpc rest"), IMAGE_LEVEL (3), IMAGE_PAGE_SIZE
# (1000x1400), MEMLIMIT (1GiB), LADDER_DURATION of each capacity level (8s,
# twice that for images; in seconds), QUERY_LADDER and IMAGE_LADDER (rates).
# Everything binds 127.0.0.1 ports chosen at run time and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-60s}
ROUNDS=${ROUNDS:-3}
LEVELS=${LEVELS:-"1.5 3 10"}
PROTOCOLS=${PROTOCOLS:-"grpc rest"}
IMAGE_LEVEL=${IMAGE_LEVEL:-3}
IMAGE_PAGE_SIZE=${IMAGE_PAGE_SIZE:-1000x1400}
MEMLIMIT=${MEMLIMIT:-1GiB}
LADDER_DURATION=${LADDER_DURATION:-8s}
QUERY_LADDER=${QUERY_LADDER:-"200 400 600 800 1000 1300 1600 2000"}
IMAGE_LADDER=${IMAGE_LADDER:-"0.5 1 1.5 2 3"}
OUT=${1:-benchmarks/results/overload.md}
QUERY_TARGET_MS=500 # -admission-latency-target's default
IMAGE_TARGET_MS=5000 # -admission-image-latency-target's default

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh
go build -o bin/ ./benchmarks/loadgen ./benchmarks/overloadreport

bin/tritonsim -grpc-addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -profile bench-2x -log-format json >"$tmp/sim.log" 2>&1 &
pids+=($!)
sim=$(log_field "$tmp/sim.log" grpc_addr)
sim_metrics=$(log_field "$tmp/sim.log" metrics_addr)
declare -A grpc http pid
for mode in on off; do
	# Info-level logs, one line per call, as in production: part of the cost.
	GOMEMLIMIT=$MEMLIMIT bin/gateway -auth none -grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -admin-addr 127.0.0.1:0 -triton-addrs "$sim=$sim_metrics" \
		-log-format json -data-dir "" -admission="$([ "$mode" = on ] && echo true || echo false)" >"$tmp/gw-$mode.log" 2>&1 &
	pids+=($!)
	pid[$mode]=$!
	# The embedded Postgres starts first, slowly on a busy machine: wait
	# up to a minute for the listeners, past log_field's own 10 s.
	for _ in $(seq 1 600); do
		grep -q '"msg":"gateway serving"' "$tmp/gw-$mode.log" && break
		sleep 0.1
	done
	grpc[$mode]=$(log_field "$tmp/gw-$mode.log" grpc_addr "gateway serving")
	http[$mode]=$(log_field "$tmp/gw-$mode.log" http_addr "gateway serving")
	for _ in $(seq 1 300); do
		curl -fsS "http://${http[$mode]}/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
done
budget=$(grep -o '"memory_budget_bytes":[0-9]*' "$tmp/gw-on.log" | head -1 | cut -d: -f2)
budget_mib=$((budget / 1048576))

index=$tmp/index.jsonl
touch "$index"
# run PHASE KIND PROTOCOL MODE RATE LEVEL ROUND CAPACITY DURATION: one loadgen
# run; appends its index line and prints the report's path.
run() {
	local phase=$1 kind=$2 protocol=$3 mode=$4 rate=$5 level=$6 round=$7 capacity=$8 duration=$9
	local target=${grpc[$mode]} extra=() target_ms=$QUERY_TARGET_MS
	[ "$protocol" = rest ] && target=http://${http[$mode]}
	if [ "$kind" = image ]; then
		extra=(-pages-per-call 16 -page-size "$IMAGE_PAGE_SIZE" -max-outstanding 512)
		target_ms=$IMAGE_TARGET_MS
	fi
	# Runs are numbered by the index's lines (a file, as runs happen in
	# subshells too): the seed and the report's name.
	local n out load
	n=$(($(wc -l <"$index") + 1))
	out=$tmp/run-$n.json
	echo 5 >"/proc/${pid[$mode]}/clear_refs" 2>/dev/null || true
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	local ticks0 ticks1
	ticks0=$(awk '{print $14 + $15}' "/proc/${pid[$mode]}/stat" 2>/dev/null || echo 0)
	bin/loadgen -protocol "$protocol" -target "$target" -rate "$rate" -duration "$duration" -mix "$kind=1" \
		-timeout 10s -drain 15s -seed "$n" -label "$phase $kind $protocol admission=$mode x$level round $round" "${extra[@]}" -out "$out"
	local hwm oom=false gw_cpu=0
	ticks1=$(awk '{print $14 + $15}' "/proc/${pid[$mode]}/stat" 2>/dev/null || echo "$ticks0")
	gw_cpu=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
	if [ -r "/proc/${pid[$mode]}/status" ]; then
		hwm=$(awk '/^VmHWM/ {print $2}' "/proc/${pid[$mode]}/status")
	else
		hwm=0 oom=true # the gateway is gone
	fi
	printf '{"report":"%s","phase":"%s","kind":"%s","protocol":"%s","mode":"%s","level":%s,"round":%s,"capacity":%s,"target_ms":%s,"vmhwm_kib":%s,"budget_mib":%s,"gateway_cpu_seconds":%s,"loadavg":"%s","oom":%s}\n' \
		"$out" "$phase" "$kind" "$protocol" "$mode" "$level" "$round" "$capacity" "$target_ms" "$hwm" "$budget_mib" "$gw_cpu" "$load" "$oom" >>"$index"
	echo "$out"
}

# capacity KIND PROTOCOL LADDER: climbs the ladder with admission off until
# a level fails (admitted p99 over the target, or over 1 % errors other than
# 503), and prints the best goodput of the levels that passed (else that of
# the first level).
capacity() {
	local kind=$1 protocol=$2 best=0 first="" out target_ms=$QUERY_TARGET_MS
	[ "$kind" = image ] && target_ms=$IMAGE_TARGET_MS
	# Image calls are few a second: twice as long a level, for samples.
	local d=$LADDER_DURATION
	[ "$kind" = image ] && d=$(awk -v d="${LADDER_DURATION%s}" 'BEGIN { print 2 * d "s" }')
	for rate in $3; do
		out=$(run capacity "$kind" "$protocol" off "$rate" 0 0 0 "$d")
		read -r ok p99 sent errs < <(jq -r --arg k "$kind" '[.kinds[$k].throughput_ok_per_s, .kinds[$k].p99_ms, .sent, ([.errors | to_entries[] | select(.key != "Unavailable") | .value] | add // 0)] | @tsv' "$out")
		[ -z "$first" ] && first=$ok
		if awk -v p="$p99" -v t="$target_ms" -v e="$errs" -v s="$sent" 'BEGIN { exit !(p <= t && e <= 0.01 * s) }'; then
			best=$(awk -v a="$best" -v b="$ok" 'BEGIN { print (b > a ? b : a) }')
		else
			break
		fi
	done
	[ "$best" = 0 ] && best=$first
	# Mark the chosen figure on the ladder's last index line.
	jq -c --argjson c "$best" '.capacity = $c' <<<"$(tail -1 "$index")" >>"$index.tmp"
	sed -i '$ d' "$index"
	cat "$index.tmp" >>"$index"
	rm "$index.tmp"
	echo "$best"
}

# Warm up both gateways (connections, the batcher's estimates).
for mode in on off; do
	bin/loadgen -protocol grpc -target "${grpc[$mode]}" -rate 100 -duration 2s -out /dev/null
done

declare -A cap
for protocol in $PROTOCOLS; do
	cap[$protocol]=$(capacity query "$protocol" "$QUERY_LADDER")
	echo "query capacity over $protocol: ${cap[$protocol]}/s" >&2
done
image_cap=$(capacity image grpc "$IMAGE_LADDER")
echo "image capacity over grpc: $image_cap calls/s" >&2

for r in $(seq 1 "$ROUNDS"); do
	order=(on off)
	[ $((r % 2)) = 0 ] && order=(off on)
	for protocol in $PROTOCOLS; do
		for level in $LEVELS; do
			rate=$(awk -v c="${cap[$protocol]}" -v l="$level" 'BEGIN { printf "%.1f", c * l }')
			for mode in "${order[@]}"; do
				run overload query "$protocol" "$mode" "$rate" "$level" "$r" "${cap[$protocol]}" "$DURATION" >/dev/null
			done
		done
	done
	rate=$(awk -v c="$image_cap" -v l="$IMAGE_LEVEL" 'BEGIN { printf "%.2f", c * l }')
	for mode in "${order[@]}"; do
		run image image grpc "$mode" "$rate" "$IMAGE_LEVEL" "$r" "$image_cap" "$DURATION" >/dev/null
	done
done

{
	echo "# Overload: admission control (adaptive concurrency limits, memory budget) on vs off"
	echo
	echo "Command: \`DURATION=$DURATION ROUNDS=$ROUNDS LEVELS=\"$LEVELS\" PROTOCOLS=\"$PROTOCOLS\" IMAGE_LEVEL=$IMAGE_LEVEL IMAGE_PAGE_SIZE=$IMAGE_PAGE_SIZE MEMLIMIT=$MEMLIMIT benchmarks/overload.sh\`"
	echo "on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), shared with other work"
	echo "(the load average is recorded per run)."
	echo
	echo "Set-up: one Triton simulator (\`-profile bench-2x\`, Triton's dynamic batching on, one shared GPU) behind two"
	echo "gateways with default flags (adaptive batching, info-level logs) under GOMEMLIMIT=$MEMLIMIT, one with \`-admission\`"
	echo "(the default; memory budget $budget_mib MiB, derived from GOMEMLIMIT) and one with \`-admission=false\`."
	echo "Load: benchmarks/loadgen, open-loop Poisson arrivals, 10 s deadline per call; query calls of one query;"
	echo "image calls of 16 pages of $IMAGE_PAGE_SIZE noise (PNG), over gRPC. Capacity is measured first, in the same run."
	echo "Latency targets: $QUERY_TARGET_MS ms for queries, $IMAGE_TARGET_MS ms for 16-page image calls. \"429s\" are"
	echo "RESOURCE_EXHAUSTED answers (HTTP 429 over REST), their latency from the send; \"503s\" are UNAVAILABLE"
	echo "answers while the simulator was alive (what the router's health checks once caused under CPU load)."
	echo
	bin/overloadreport "$index"
} >"$OUT"
echo "wrote $OUT" >&2
