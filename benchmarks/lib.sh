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
