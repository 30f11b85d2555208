#!/usr/bin/env bash
# profile.sh - profile a ringchatd while ringchat-bench runs one scenario.
#
#   tests/perf/profile.sh [-b BUILD_DIR] [-n "NODE FLAGS"] SCENARIO [BENCH ARGS...]
#
#   tests/perf/profile.sh ping --connections 200 --window 16 --duration 10
#   tests/perf/profile.sh chat --users 1000 --duration 20
#   tests/perf/profile.sh -n "--workers 1" login --users 2000
#
# Starts the private services (left running) and a node (stopped at the
# end), runs the bench with --json --server-pid NODE, and records:
#   bench.json / bench.txt   the bench's JSON line / its human summary
#   perf.data                perf record -g of the node (cpu-clock samples)
#   perf-report.txt          perf report --stdio: top symbols by self time,
#                            then by time including children
#   perf-stat.txt            perf stat of the node: software counters, and
#                            hardware ones (cycles, instructions, ...) where
#                            the machine exposes them
#   flame.svg                only when FlameGraph or inferno is installed
#   node.log                 the node's log
# in tests/perf/out/SCENARIO-YYYYmmdd-HHMMSS/. Without perf the bench still
# runs and the rest is skipped with a note. PERF_CALLGRAPH=dwarf asks perf
# for DWARF unwinding (deeper stacks in a build without frame pointers,
# much larger perf.data); PERF_FREQ sets the sampling rate (999 Hz).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

NODE_FLAGS=()
while getopts "b:n:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
	n) read -r -a NODE_FLAGS <<<"$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
(($# >= 1)) || usage
SCENARIO=$1
shift

perf_check_build
OUT=$PERF_DIR/out/$SCENARIO-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
perf_services_start
perf_node_start "$OUT" "${NODE_FLAGS[@]}"
trap perf_node_stop EXIT

# What perf can do here.
HAVE_PERF=no
HAVE_HW=no
if ! command -v perf >/dev/null; then
	perf_note "perf is not installed (apt-get install -y linux-perf): profiling skipped"
elif ! perf stat -e task-clock true >/dev/null 2>&1; then
	perf_note "perf cannot count here (perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)): profiling skipped"
else
	HAVE_PERF=yes
	if perf stat -e instructions true 2>&1 | grep -q "not supported"; then
		perf_note "hardware counters are not supported on this machine (a VM?): perf stat keeps to software counters, perf record samples cpu-clock"
	else
		HAVE_HW=yes
	fi
fi

PR_PID=
PS_PID=
if [[ $HAVE_PERF == yes ]]; then
	EVENTS=task-clock,context-switches,cpu-migrations,page-faults
	[[ $HAVE_HW == yes ]] && EVENTS=$EVENTS,cycles,instructions,branches,branch-misses,cache-misses
	CG=(-g)
	[[ ${PERF_CALLGRAPH:-} ]] && CG=(--call-graph "$PERF_CALLGRAPH")
	perf record -e cpu-clock -F "${PERF_FREQ:-999}" "${CG[@]}" -p "$NODE_PID" \
		-o "$OUT/perf.data" >"$OUT/perf-record.log" 2>&1 &
	PR_PID=$!
	perf stat -e "$EVENTS" -p "$NODE_PID" -o "$OUT/perf-stat.txt" >/dev/null 2>&1 &
	PS_PID=$!
	sleep 0.5
fi

BENCH=("$BUILD/src/ringchat-bench" "$SCENARIO" --port "$NODE_PORT" --server-pid "$NODE_PID" --json "$@")
perf_note "running: ${BENCH[*]}"
printf '%q ' "${BENCH[@]}" >"$OUT/command.txt"
echo >>"$OUT/command.txt"
set +e
"${BENCH[@]}" >"$OUT/bench.json" 2> >(tee "$OUT/bench.txt" >&2)
BENCH_RC=$?
set -e

if [[ $HAVE_PERF == yes ]]; then
	kill -INT "$PR_PID" "$PS_PID" 2>/dev/null || true
	wait "$PR_PID" 2>/dev/null || true
	wait "$PS_PID" 2>/dev/null || true
	{
		echo "# perf report --no-children (self time), top symbols"
		perf report -i "$OUT/perf.data" --stdio --no-children --sort dso,symbol \
			--percent-limit 0.5 -g none 2>/dev/null | grep -v '^$' | sed 's/ *- *- *$//'
		echo
		echo "# perf report --children (time including callees)"
		perf report -i "$OUT/perf.data" --stdio --children --sort symbol \
			--percent-limit 2 -g none 2>/dev/null | grep -v '^$' | sed 's/ *- *- *$//'
	} >"$OUT/perf-report.txt"
	if command -v stackcollapse-perf.pl >/dev/null && command -v flamegraph.pl >/dev/null; then
		perf script -i "$OUT/perf.data" 2>/dev/null | stackcollapse-perf.pl | flamegraph.pl >"$OUT/flame.svg"
	elif command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
		perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$OUT/flame.svg"
	else
		perf_note "no FlameGraph/inferno tools installed: no flame graph"
	fi
fi
perf_node_stop
trap - EXIT

echo
echo "== $SCENARIO: results in $OUT"
cat "$OUT/bench.json"
if [[ $HAVE_PERF == yes ]]; then
	echo
	echo "== perf stat (node)"
	grep -vE '^\s*$|^#' "$OUT/perf-stat.txt" || true
	echo
	echo "== top symbols (self), more in perf-report.txt"
	sed -n '/^# perf report --no-children/,/^# perf report --children/p' "$OUT/perf-report.txt" |
		grep -E '^ +[0-9]' | head -n 25
fi
exit "$BENCH_RC"
