#!/usr/bin/env bash
# ab.sh - alternating runs of two nodes (an older build and this one) under
# the same load generator, each beside its Redis reference.
#
#   tests/perf/ab.sh [-b BUILD_DIR] [-p PAIRS] [-o "OLD NODE FLAGS"] [-n "NEW NODE FLAGS"] \
#                    OLD_BUILD_DIR WHAT [BENCH ARGS...]
#
#   tests/perf/ab.sh -n "--cluster-route off" ../perf-old/build-ci ping
#   tests/perf/ab.sh -n "--cluster-route off" ../perf-old/build-ci relay
#   tests/perf/ab.sh ../perf-old/build-ci relay          # the new node's default route
#   tests/perf/ab.sh -n "--cluster-route off" ../perf-old/build-ci group-stored
#
# WHAT is one of the runs docs/benchmarks.md quotes, with its arguments
# unless BENCH ARGS are given:
#
#   ping          ringchat-bench ping --connections 1000 --window 16
#                 --duration 10 --threads 2 on a node without MariaDB and
#                 Redis (as in "Node core"); reference: redis-benchmark -t
#                 ping_mbulk -c 1000 -P 16 --threads 2 -n 3000000 against
#                 the private Redis, once at the start of each pair
#   relay|stored  tests/perf/chat.sh MODE --users 1000 --window 4
#                 --duration 10 --target both
#   group-relay|group-stored
#                 tests/perf/chat.sh -s group MODE --groups 10 --members 50
#                 --window 4 --duration 10 --target both
#
# PAIRS (3) pairs run old, new, old, new, ...; the ringchat-bench of
# BUILD_DIR drives both nodes (chat.sh -N for the old one), so only the
# server differs. -o and -n add flags to the old and the new node (an old
# node refuses keys it does not know). Every run's summary is kept in
# tests/perf/out/ab-WHAT-<time>/, and a table of all runs is printed at
# the end: Ringchat rate, latency, server CPU, and the Redis reference of
# the same run with the ratio.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

PAIRS=3
OLD_FLAGS=()
NEW_FLAGS=()
while getopts "b:p:o:n:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
	p) PAIRS=$OPTARG ;;
	o) read -r -a OLD_FLAGS <<<"$OPTARG" ;;
	n) read -r -a NEW_FLAGS <<<"$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -ge 2 ]] || usage
OLD_BUILD=$(cd "$1" && pwd -P) || perf_die "no build directory $1"
WHAT=$2
shift 2
[[ -x $OLD_BUILD/src/ringchatd ]] || perf_die "no $OLD_BUILD/src/ringchatd"
perf_check_build
perf_services_start

case $WHAT in
ping) DEFAULT_ARGS=(--connections 1000 --window 16 --duration 10 --threads 2) ;;
relay | stored) DEFAULT_ARGS=(--users 1000 --window 4 --duration 10 --target both) ;;
group-relay | group-stored) DEFAULT_ARGS=(--groups 10 --members 50 --window 4 --duration 10 --target both) ;;
*) perf_die "WHAT is ping, relay, stored, group-relay or group-stored, not '$WHAT'" ;;
esac
[[ $# -gt 0 ]] && ARGS=("$@") || ARGS=("${DEFAULT_ARGS[@]}")

OUT=$PERF_DIR/out/ab-$WHAT-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
TABLE=$OUT/table.txt

# ping_run WHICH BUILD FLAGS...: one PING run of the node of BUILD; the
# summary goes to $OUT/WHICH-<n>.txt.
ping_run() {
	local file=$1 nb=$2
	shift 2
	NODE_BUILD=$nb
	trap perf_node_stop EXIT
	perf_node_start "$OUT" --admin-listen "" \
		--mysql-socket /nonexistent --redis-socket /nonexistent "$@"
	local cmd=("$BUILD/src/ringchat-bench" ping --port "$NODE_PORT" "${ARGS[@]}" --server-pid "$NODE_PID")
	echo "\$ ${cmd[*]}   # node: $(perf_node_bin) $*" >"$file"
	"${cmd[@]}" 2>&1 | grep -v '^\[' >>"$file"
	perf_node_stop
	trap - EXIT
}

# chat_run WHICH BUILD FLAGS...: one tests/perf/chat.sh run.
chat_run() {
	local file=$1 nb=$2 mode=${WHAT#group-} scen=chat
	shift 2
	[[ $WHAT == group-* ]] && scen=group
	local cmd=("$PERF_DIR/chat.sh" -b "$BUILD" -N "$nb" -s "$scen")
	[[ $# -gt 0 ]] && cmd+=(-n "$*")
	cmd+=("$mode" "${ARGS[@]}")
	echo "\$ ${cmd[*]}" >"$file"
	"${cmd[@]}" >>"$file" 2>&1 || perf_note "run failed, see $file"
}

# The first "delivered"/"requests" rate, its p50/p99 and the server CPU of
# the Ringchat part of a summary; then those of the Redis part.
summarize() {
	awk '
	/^chat on redis|^group on redis/ { part = "redis" }
	/^chat on ringchat|^group on ringchat|^ping/ { if (part == "") part = "rc" }
	/delivered [0-9]+ \(/ { match($0, /delivered [0-9]+ \([0-9.]+/); s = substr($0, RSTART, RLENGTH); sub(/.*\(/, "", s); rate[part] = s }
	/ rps [0-9.]+/ && rate["rc"] == "" { for (i = 1; i <= NF; i++) if ($i == "rps") rate["rc"] = $(i + 1) }
	/send->delivery|round trip|latency/ && p[part] == "" {
		for (i = 1; i <= NF; i++) { if ($i == "p50") a = $(i + 1); if ($i == "p99") b = $(i + 1) }
		p[part] = sprintf("%.1f/%.1f ms", a / 1000, b / 1000) }
	/server cpu/ && cpu[part] == "" { for (i = 1; i <= NF; i++) if ($i == "cpu") { cpu[part] = $(i + 1); break }
		for (i = 1; i <= NF; i++) if ($i == "per" && $(i + 1) == "cpu-second") { percpu[part] = $(i - 2); break } }
	END { printf "%s\t%s\t%s\t%s\t%s\t%s\n", rate["rc"], p["rc"], cpu["rc"], percpu["rc"], rate["redis"], cpu["redis"] }
	' "$1"
}

printf "run\tnode\tringchat/s\tp50/p99\tserver cpu s\tper cpu-s\tredis/s\tredis cpu s\tratio\n" >"$TABLE"
for ((i = 1; i <= PAIRS; i++)); do
	if [[ $WHAT == ping ]]; then
		# One reference per pair, before it: both nodes of the pair use it.
		ref=$OUT/redis-$i.txt
		rcmd=(redis-benchmark -p "${RINGCHAT_REDIS_PORT:-16379}" -t ping_mbulk -c 1000 -P 16 -n 3000000 --threads 2 -q)
		perf_note "pair $i: redis-benchmark"
		echo "\$ ${rcmd[*]}" >"$ref"
		"${rcmd[@]}" 2>&1 | tr '\r' '\n' | grep -v 'rps=' | grep '[^ ]' >>"$ref" || true
	fi
	for side in old new; do
		if [[ $side == old ]]; then nb=$OLD_BUILD flags=("${OLD_FLAGS[@]}"); else nb=$BUILD flags=("${NEW_FLAGS[@]}"); fi
		file=$OUT/$side-$i.txt
		perf_note "pair $i: $side ($nb)"
		if [[ $WHAT == ping ]]; then
			ping_run "$file" "$nb" "${flags[@]}"
		else
			chat_run "$file" "$nb" "${flags[@]}"
		fi
		IFS=$'\t' read -r rc lat cpu percpu rd rdcpu < <(summarize "$file")
		[[ $WHAT == ping ]] && rd=$(sed -n 's/.*PING_MBULK: \([0-9.]*\) requests per second.*/\1/p' "$OUT/redis-$i.txt" | head -n 1)
		ratio=
		[[ -n $rc && -n $rd ]] && ratio=$(awk -v a="$rc" -v b="$rd" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
		printf "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$i" "$side" "$rc" "$lat" "$cpu" "$percpu" "$rd" "$rdcpu" "$ratio" >>"$TABLE"
	done
done
column -t -s $'\t' "$TABLE"
perf_note "results in $OUT"
