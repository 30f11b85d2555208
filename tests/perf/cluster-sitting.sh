#!/usr/bin/env bash
# cluster-sitting.sh - the cluster comparison of docs/benchmarks.md in one
# sitting: rounds of cross-node runs, each beside a single-node run with
# the same users and the same accounting.
#
#   tests/perf/cluster-sitting.sh [-b BUILD_DIR] [-r ROUNDS] [-d SECONDS] [WHAT...]
#
# WHAT (default: all four, in this order, in every round):
#
#   chat-relay    cluster.sh -k 2 relay  --users 1000 --window 4, then -k 1
#                 with --target both (redis pub/sub, same pairs)
#   chat-stored   cluster.sh -k 2 stored --users 1000 --window 4, then -k 1
#   group-relay   cluster.sh -k 3 -s group relay --groups 10 --members 50
#                 --window 4, then -k 1 with --target both
#   group-stored  cluster.sh -k 3 -s group stored ..., then -k 1
#   ...-udp       any of the above with the cross-node run over the node
#                 link (cluster_route udp) instead of Redis routing, e.g.
#                 chat-relay-udp, group-stored-udp
#   rate-relay[-udp]  chat relay in an open loop, --window 16 --rate 20000
#                 (the per-message cost at a moderate load), then -k 1
#
# ROUNDS (3) rounds; every run measures SECONDS (10). Prints one line per
# run: deliveries/s, delivery p50/p99, the CPU of the nodes + Redis over the
# measured interval and the deliveries per CPU-second of that (the bench's
# --server-pid figure), the same with MariaDB (cluster.sh's sampler), and
# for each cross-node run its ratio to the single-node run of the same
# round. Each run's files stay in its tests/perf/out/cluster-* folder; the
# table is kept in tests/perf/out/sitting-<time>.txt.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

ROUNDS=3
DUR=10
BOPT=()
while getopts "b:r:d:h" opt; do
	case $opt in
	b) BOPT=(-b "$OPTARG") ;;
	r) ROUNDS=$OPTARG ;;
	d) DUR=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
WHATS=("$@")
[[ ${#WHATS[@]} -gt 0 ]] || WHATS=(chat-relay chat-stored group-relay group-stored)

TABLE=$PERF_DIR/out/sitting-$(date +%Y%m%d-%H%M%S).txt
mkdir -p "$PERF_DIR/out"

# run LABEL cluster.sh-args...: one run; appends its line to TABLE and
# prints its deliveries per CPU-second (nodes + Redis).
run() {
	local label=$1 log dir
	shift
	log=$(mktemp)
	"$PERF_DIR/cluster.sh" "${BOPT[@]}" "$@" >"$log" 2>&1 || true
	dir=$(sed -n 's/^perf: results in //p' "$log" | tail -n 1)
	rm -f "$log"
	[[ -n $dir && -f $dir/bench.txt ]] || {
		printf "%s\tFAILED\n" "$label" >>"$TABLE"
		echo 0
		return
	}
	awk -v label="$label" -v dir="${dir##*/}" '
	FNR == 1 { f++ }
	f == 1 && /^(chat|group) on redis/ { part = "redis" }
	f == 1 && /delivered [0-9]+ \(/ { match($0, /delivered [0-9]+ \([0-9.]+/); r = substr($0, RSTART, RLENGTH); sub(/.*\(/, "", r)
		if (part == "redis") rr = r; else if (rate == "") rate = r }
	f == 1 && /send->delivery/ && lat == "" { for (i = 1; i <= NF; i++) { if ($i == "p50") a = $(i + 1); if ($i == "p99") b = $(i + 1) }
		lat = sprintf("%.1f/%.1f", a / 1000, b / 1000) }
	f == 1 && /server cpu/ && cpu == "" { cpu = $3; pc = $5 }
	f == 2 && /^nodes \+ redis \+ mariadb:/ { mcpu = $6; mpc = $9 }
	END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", label, rate, lat, cpu, pc, mcpu, mpc, rr, dir }
	' "$dir/bench.txt" "$dir/cpu.txt" | tee -a "$TABLE" >/dev/null
	tail -n 1 "$TABLE" | cut -f5
}

printf "run\tdlv/s\tp50/p99 ms\tnodes+redis cpu s\tper cpu-s\t+mariadb cpu s\tper cpu-s\tredis pub/sub dlv/s\tfolder\n" >"$TABLE"
for ((r = 1; r <= ROUNDS; r++)); do
	for what in "${WHATS[@]}"; do
		base=${what%-udp}
		route=()
		[[ $base != "$what" ]] && route=(-n "--cluster-route udp --cluster-secret bench-cluster-secret-of-at-least-32-bytes")
		case $base in
		chat-*) mode=${base#chat-} k=2 scen=(-s chat) args=(--users 1000 --window 4 --duration "$DUR") ;;
		group-*) mode=${base#group-} k=3 scen=(-s group) args=(--groups 10 --members 50 --window 4 --duration "$DUR") ;;
		rate-*) mode=${base#rate-} k=2 scen=(-s chat) args=(--users 1000 --window 16 --rate 20000 --duration "$DUR") ;;
		*) perf_die "unknown WHAT '$what'" ;;
		esac
		ref=()
		[[ $mode == relay ]] && ref=(--target both)
		perf_note "round $r: $what, $k nodes"
		cross=$(run "$r $what k=$k" -k "$k" "${route[@]}" "${scen[@]}" "$mode" "${args[@]}")
		perf_note "round $r: $what, 1 node"
		single=$(run "$r $what k=1" -k 1 "${scen[@]}" "$mode" "${args[@]}" "${ref[@]}")
		awk -v a="$cross" -v b="$single" -v w="$r $what" 'BEGIN { if (b > 0) printf "%s\tcross/single per cpu-s %.2f\n", w, a / b }' >>"$TABLE"
	done
done
column -t -s $'\t' "$TABLE"
perf_note "table in $TABLE"
