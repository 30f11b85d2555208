#!/usr/bin/env bash
# cluster.sh - the messaging benchmark on K nodes routing through Redis,
# with the CPU of every process and thread over the measured interval.
#
#   tests/perf/cluster.sh [-b BUILD_DIR] [-N NODE_BUILD_DIR] [-k NODES] [-n "NODE FLAGS"] [-s SCENARIO] MODE [BENCH ARGS...]
#
#   tests/perf/cluster.sh -k 2 relay --users 1000 --window 4 --duration 10
#   tests/perf/cluster.sh -k 1 relay --users 1000 --window 4 --duration 10 --target both
#   tests/perf/cluster.sh -k 3 -s group relay --groups 10 --members 51 --window 4 --duration 10
#
# MODE is the nodes' durability (stored or relay). Like chat.sh: the private
# services (left running), a fresh database ringchat_bench, nodes with
# --durability MODE --hash-cost 1 --workers 2 --cluster-route redis, then
# the -n flags. Node i (1..K) has --node-id i and free ports; the script
# waits until every node sees the K-1 others (ringchat_cluster_peers_up).
# The bench gets --nodes with all of them (K >= 2: member k of pair or
# group g on node (g + k) mod K, so every 1:1 message crosses nodes) or
# --port (K = 1), and --server-pid NODE1,...,NODEK,REDIS: its "server cpu"
# and per-CPU-second figures count every node and Redis (not MariaDB).
#
# Beside the bench, a sampler reads /proc/PID/task/TID/schedstat (CPU ns,
# run-queue wait ns, times scheduled in) of every thread of the nodes, of
# Redis, MariaDB and the bench itself four times a second. cpu.txt gives,
# over the bench's measured interval (from its 5-second progress line and
# --warmup/--duration, so only with --duration 5 or more), each process's
# and each thread's CPU seconds, CPU us per delivery, times scheduled in per delivery (wake-ups, roughly) and
# run-queue wait; then the goal accounting (nodes + Redis) and the same
# with MariaDB. Keeps command.txt, bench.txt, cpu.txt, samples.txt, each
# node's log and metrics (metrics-I.txt) in
# tests/perf/out/cluster-K-SCENARIO-MODE-<time>/, and prints the summary,
# cpu.txt and the nodes' ringchat_cluster_* counters.
#
# -N (with -k 1) runs the ringchatd of another build, as chat.sh -N does,
# without --cluster-route (an older node does not know it): the same
# per-thread accounting for an older single node and this one.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

NODE_FLAGS=()
SCENARIO=chat
K=2
while getopts "b:N:k:n:s:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
	N) NODE_BUILD=$(cd "$OPTARG" && pwd -P) ;;
	k) K=$OPTARG ;;
	n) read -r -a NODE_FLAGS <<<"$OPTARG" ;;
	s) SCENARIO=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -ge 1 ]] || usage
MODE=$1
shift
[[ $MODE == stored || $MODE == relay ]] || perf_die "MODE is stored or relay, not '$MODE'"
[[ $SCENARIO == chat || $SCENARIO == group ]] || perf_die "SCENARIO is chat or group, not '$SCENARIO'"
[[ $K =~ ^[0-9]+$ && $K -ge 1 && $K -le 16 ]] || perf_die "NODES is 1..16, not '$K'"
ROUTE=(--cluster-route redis)
if [[ -n $NODE_BUILD ]]; then
	[[ $K == 1 ]] || perf_die "-N runs one node: -k 1"
	ROUTE=()
fi

# The measured interval, as the bench computes it.
WARMUP=1
DURATION=10
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	case ${args[i]} in
	--warmup) WARMUP=${args[i + 1]:-1} ;;
	--duration) DURATION=${args[i + 1]:-10} ;;
	esac
done

perf_check_build
perf_services_start
OUT=$PERF_DIR/out/cluster-$K-$SCENARIO-$MODE-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

REDIS_PID=$(cat "$ROOT/var/run/redis.pid")
MARIADB_PID=$(cat "$ROOT/var/run/mysqld.pid")
rcli() {
	redis-cli -s "$RINGCHAT_REDIS_SOCKET" "$@"
}

DB=ringchat_bench
mysql_root() {
	mariadb --no-defaults --socket="$RINGCHAT_MYSQL_SOCKET" --user=root "$@"
}
mysql_root -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4" ||
	perf_die "cannot make the database $DB"
mysql_root "$DB" <"$ROOT/sql/schema.sql" || perf_die "cannot apply sql/schema.sql to $DB"

# Inboxes of earlier runs would be read first; a lease left by a node
# killed earlier keeps its id taken for node_ttl_ms.
for ((i = 1; i <= K; i++)); do
	for ((w = 0; w < 80; w++)); do
		[[ $(rcli exists "rc:node:$i") == 0 ]] && break
		sleep 0.1
	done
	rcli del "rc:inbox:$i" >/dev/null
done

PIDS=()
PORTS=()
ADMINS=()
SAMPLER=
stop_all() {
	local p
	[[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null
	# NODE_PID: a node whose start failed half-way is not in PIDS yet
	for p in "${PIDS[@]}" $NODE_PID; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}" $NODE_PID; do
		NODE_PID=$p
		perf_node_stop
	done
}
trap stop_all EXIT

for ((i = 1; i <= K; i++)); do
	mkdir -p "$OUT/node$i"
	perf_node_start "$OUT/node$i" --node-id "$i" "${ROUTE[@]}" \
		--durability "$MODE" --mysql-db "$DB" "${NODE_FLAGS[@]}"
	PIDS+=("$NODE_PID")
	PORTS+=("$NODE_PORT")
	ADMINS+=("$(sed -n 's/.*info admin listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/node$i/node.log" | head -n 1)")
done
NODE_PID=

metric() { # ADMIN_PORT NAME: the value of an unlabelled metric
	curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'
}
for ((i = 0; i < K; i++)); do
	for ((w = 0; w < 100; w++)); do
		up=$(metric "${ADMINS[i]}" ringchat_cluster_peers_up || true)
		[[ ${up:-0} -ge $((K - 1)) ]] && break
		sleep 0.1
	done
	[[ ${up:-0} -ge $((K - 1)) ]] || perf_die "node $((i + 1)) sees ${up:-no} peers, not $((K - 1)) (see $OUT/node$((i + 1))/node.log)"
done

if ((K >= 2)); then
	TARGET=(--nodes "$(printf '127.0.0.1:%s,' "${PORTS[@]}" | sed 's/,$//')")
else
	TARGET=(--port "${PORTS[0]}")
fi
SERVER_PIDS=$(
	IFS=,
	echo "${PIDS[*]},$REDIS_PID"
)
CMD=("$BUILD/src/ringchat-bench" "$SCENARIO" "${TARGET[@]}" --redis-port "${RINGCHAT_REDIS_PORT:-16379}"
	"$@" --server-pid "$SERVER_PIDS" --redis-pid "$REDIS_PID")
echo "\$ ${CMD[*]}   # nodes: $(perf_node_bin) --node-id 1..$K ${ROUTE[*]} --durability $MODE ${NODE_FLAGS[*]}" |
	tee "$OUT/command.txt"

# sample LABEL=PID...: one line per thread and sample:
# time label tid comm cpu_ns wait_ns timeslices
sample() {
	local lp t a b c comm now
	while :; do
		now=$EPOCHREALTIME
		for lp in "$@"; do
			for t in /proc/"${lp#*=}"/task/*; do
				read -r a b c <"$t/schedstat" 2>/dev/null || continue
				read -r comm <"$t/comm" 2>/dev/null || continue
				printf '%s %s %s %s %s %s %s\n' "$now" "${lp%%=*}" "${t##*/}" "${comm// /_}" "$a" "$b" "$c"
			done
		done
		sleep 0.25
	done
}

"${CMD[@]}" >"$OUT/bench.out" 2> >(while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$OUT/bench.stamped") &
BENCH_PID=$!
LABELS=()
for ((i = 0; i < K; i++)); do LABELS+=("node$((i + 1))=${PIDS[i]}"); done
LABELS+=("redis=$REDIS_PID" "mariadb=$MARIADB_PID" "bench=$BENCH_PID")
sample "${LABELS[@]}" >"$OUT/samples.txt" &
SAMPLER=$!
BENCH_RC=0
wait "$BENCH_PID" || BENCH_RC=$?
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=
sleep 0.2 # the stamping reader ends with the bench's stderr
{
	cat "$OUT/bench.out"
	cut -d' ' -f2- "$OUT/bench.stamped" | grep -v '^\[' || true
} | tee "$OUT/bench.txt"
((BENCH_RC == 0)) || perf_note "ringchat-bench exited with status $BENCH_RC"

for ((i = 0; i < K; i++)); do
	curl -s "http://127.0.0.1:${ADMINS[i]}/metrics" >"$OUT/metrics-$((i + 1)).txt" || true
done

WARMUP=$WARMUP DURATION=$DURATION "$PERF_DIR/cpu-window.sh" "$OUT" | tee "$OUT/cpu.txt" ||
	perf_note "no CPU breakdown (see above)"
echo
for ((i = 1; i <= K; i++)); do
	echo "node $i:"
	grep -E '^ringchat_(cluster_[a-z_]+(\{[^}]*\})?|msgs_(accepted|pushed)_total|commit_(batches|rows)_total) ' \
		"$OUT/metrics-$i.txt" | grep -v ' 0$' | sed 's/^/  /' || true
done
perf_note "results in $OUT"
