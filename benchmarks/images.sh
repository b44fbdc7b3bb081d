#!/usr/bin/env bash
# Image checks before and after issue 11: peak RSS (VmHWM) and CPU of
# checking 16-bit RGBA PNGs at 10 and 40 Mpx, one at a time and many at
# once. Each line is a process of its own. Writes results/images-run.md.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/imagecheck-bench ./benchmarks/imagecheck
out=benchmarks/results/images-run.md
{
	echo "load at start: $(cat /proc/loadavg)"
	echo
	echo "| check | image | file | images at once | RSS before | peak RSS (VmHWM) | CPU | wall |"
	echo "|---|---|---|---|---|---|---|---|"
	for args in "-mpx 10 -images 1" "-mpx 40 -images 1" "-mpx 40 -images 4" "-mpx 10 -images 16" "-mpx 40 -images 16"; do
		for check in before after; do
			# shellcheck disable=SC2086 # args is a list of flags
			bin/imagecheck-bench -check "$check" $args
		done
	done
} | tee "$out"
