# Shared by the benchmark scripts (sourced, not run): builds the binaries and
# tools, gives a scratch directory $tmp, stops every process added to $pids
# on exit, and reads what the binaries log.

make -s build tools
tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# log_field LOG KEY [MSG]: waits (up to 10s) for a JSON log line, the first
# one whose msg is MSG when given, and prints its string field KEY.
log_field() {
	local v
	for _ in $(seq 1 100); do
		if [ -n "${3:-}" ]; then
			v=$(grep "\"msg\":\"$3\"" "$1" 2>/dev/null | head -1 | grep -o "\"$2\":\"[^\"]*\"" | cut -d'"' -f4 || true)
		else
			v=$(grep -o "\"$2\":\"[^\"]*\"" "$1" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
		fi
		if [ -n "$v" ]; then echo "$v"; return; fi
		sleep 0.1
	done
	echo "no $2 in $1" >&2
	cat "$1" >&2
	exit 1
}

# The open-loop load generator of batching.sh and routing.sh.
go build -o bin/loadgen ./benchmarks/loadgen

# The gateways of the benchmarks serve embeddings only: pointing the
# embedded Postgres at a directory without its packages disables document
# storage (the gateway logs so and serves embeddings), so that no Postgres
# shares the CPU with the load.
export COLPALI_PGLITE_DIR="$tmp/no-pglite"

# LOAD_MAX is the 1-minute load average (from /proc/loadavg) above which a
# round is repeated, once per RETRIES: the machine has 2 cores, so a load
# above 3 means other work had at least one core's worth of runnable
# processes while the benchmark wanted both.
LOAD_MAX=${LOAD_MAX:-3}
RETRIES=${RETRIES:-1}

# loadavg1: the 1-minute load average.
loadavg1() { cut -d' ' -f1 /proc/loadavg; }

# too_loaded L: whether a round that started at load average L is repeated.
too_loaded() { awk -v l="$1" -v m="$LOAD_MAX" 'BEGIN { exit !(l > m) }'; }

# busy_seconds METRICS_ADDR: the simulator's tritonsim_gpu_busy_seconds_total,
# summed over its GPUs.
busy_seconds() {
	curl -fsS "http://$1/metrics" | awk '/^tritonsim_gpu_busy_seconds_total/ { s += $NF } END { printf "%.6f\n", s + 0 }'
}

# gpu_count METRICS_ADDR: the simulator's number of GPUs.
gpu_count() { curl -fsS "http://$1/metrics" | grep -c '^tritonsim_gpu_busy_seconds_total'; }

# now_seconds: wall-clock time in seconds, with nanoseconds.
now_seconds() { date +%s.%N; }

# record FILE KEY=VALUE... : appends one JSON object to FILE (JSON Lines),
# each VALUE taken as JSON when it parses as JSON and as a string otherwise;
# REPORT=path embeds a loadgen report.
record() {
	local file=$1
	shift
	local args=(-n -c) expr="{" sep=""
	for kv in "$@"; do
		local k=${kv%%=*} v=${kv#*=}
		if [ "$k" = REPORT ]; then
			args+=(--slurpfile report "$v")
			expr+="${sep}report: \$report[0]"
		elif jq -e . >/dev/null 2>&1 <<<"$v"; then
			args+=(--argjson "$k" "$v")
			expr+="${sep}$k: \$$k"
		else
			args+=(--arg "$k" "$v")
			expr+="${sep}$k: \$$k"
		fi
		sep=", "
	done
	jq "${args[@]}" "$expr}" >>"$file"
}
