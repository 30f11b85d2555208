#!/usr/bin/env bash
# cluster.sh - the messaging benchmark on K nodes routing through Redis,
# with the CPU of every process and thread over the measured interval.
#
#   tests/perf/cluster.sh [-b BUILD_DIR] [-k NODES] [-n "NODE FLAGS"] [-s SCENARIO] MODE [BENCH ARGS...]
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
# --warmup/--duration), each process's and each thread's CPU seconds, CPU
# us per delivery, times scheduled in per delivery (wake-ups, roughly) and
# run-queue wait; then the goal accounting (nodes + Redis) and the same
# with MariaDB. Keeps command.txt, bench.txt, cpu.txt, samples.txt, each
# node's log and metrics (metrics-I.txt) in
# tests/perf/out/cluster-K-SCENARIO-MODE-<time>/, and prints the summary,
# cpu.txt and the nodes' ringchat_cluster_* counters.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

NODE_FLAGS=()
SCENARIO=chat
K=2
while getopts "b:k:n:s:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
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
	perf_node_start "$OUT/node$i" --node-id "$i" --cluster-route redis \
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
echo "\$ ${CMD[*]}   # nodes: $(perf_node_bin) --node-id 1..$K --cluster-route redis --durability $MODE ${NODE_FLAGS[*]}" |
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

# The measured interval from the first progress line ("[   5.0s] ..."):
# the load started 5.0 s before it, and measuring WARMUP s after that.
read -r T_PROG T_REL < <(awk '$2 == "[" || $2 ~ /^\[/ { t = $0; sub(/^[^[]*\[ */, "", t); sub(/s\].*/, "", t); print $1, t; exit }' "$OUT/bench.stamped")
DELIVERED=$(awk '/delivered [0-9]+ \(/ { for (i = 1; i <= NF; i++) if ($i == "delivered") { print $(i + 1); exit } }' "$OUT/bench.txt")
if [[ -z ${T_PROG:-} || -z $DELIVERED ]]; then
	perf_note "no progress line or no deliveries: no CPU breakdown"
else
	awk -v t0="$(awk -v a="$T_PROG" -v b="$T_REL" -v w="$WARMUP" 'BEGIN { printf "%.6f", a - b + w }')" \
		-v dur="$DURATION" -v dlv="$DELIVERED" -v k="$K" '
	# the value of series val of thread key at time t, linear between samples
	function at(val, key, t,   i, n, x0, x1) {
		n = cnt[key]
		if (t <= ts[key, 1]) return val[key, 1]
		for (i = 2; i <= n; i++)
			if (ts[key, i] >= t) {
				x0 = ts[key, i - 1]; x1 = ts[key, i]
				return val[key, i - 1] + (val[key, i] - val[key, i - 1]) * (t - x0) / (x1 - x0)
			}
		return val[key, n]
	}
	{
		key = $2 " " $3; n = ++cnt[key]
		ts[key, n] = $1; comm[key] = $4
		v[key, n] = $5; w[key, n] = $6; s[key, n] = $7
		label[key] = $2
	}
	END {
		t1 = t0 + dur
		for (key in cnt) {
			c = at(v, key, t1) - at(v, key, t0)
			wt = at(w, key, t1) - at(w, key, t0)
			sl = at(s, key, t1) - at(s, key, t0)
			g = label[key] " " comm[key]
			tc[g] += c; tw[g] += wt; tsl[g] += sl
			pc[label[key]] += c; pw[label[key]] += wt; psl[label[key]] += sl
		}
		printf "measured interval %.1f s, %d deliveries\n\n", dur, dlv
		printf "%-8s %-16s %8s %10s %12s %10s\n", "process", "thread", "cpu s", "us/dlv", "sched-in/dlv", "rq wait s"
		PROCINFO["sorted_in"] = "@ind_str_asc"
		for (p in pc) {
			printf "%-8s %-16s %8.2f %10.2f %12.3f %10.2f\n", p, "(all)", pc[p] / 1e9, pc[p] / 1e3 / dlv, psl[p] / dlv, pw[p] / 1e9
			for (g in tc) {
				split(g, a, " ")
				if (a[1] == p && tc[g] / 1e9 >= 0.01)
					printf "%-8s %-16s %8.2f %10.2f %12.3f %10.2f\n", "", a[2], tc[g] / 1e9, tc[g] / 1e3 / dlv, tsl[g] / dlv, tw[g] / 1e9
			}
		}
		for (p in pc) if (p ~ /^node/) nodes += pc[p]
		printf "\nnodes + redis: %.2f cpu s, %.0f deliveries per cpu-second, %.2f us per delivery\n",
			(nodes + pc["redis"]) / 1e9, dlv / ((nodes + pc["redis"]) / 1e9), (nodes + pc["redis"]) / 1e3 / dlv
		printf "nodes + redis + mariadb: %.2f cpu s, %.0f deliveries per cpu-second, %.2f us per delivery\n",
			(nodes + pc["redis"] + pc["mariadb"]) / 1e9, dlv / ((nodes + pc["redis"] + pc["mariadb"]) / 1e9),
			(nodes + pc["redis"] + pc["mariadb"]) / 1e3 / dlv
	}' "$OUT/samples.txt" | tee "$OUT/cpu.txt"
fi
echo
for ((i = 1; i <= K; i++)); do
	echo "node $i:"
	grep -E '^ringchat_(cluster_[a-z_]+(\{[^}]*\})?|msgs_(accepted|pushed)_total|commit_(batches|rows)_total) ' \
		"$OUT/metrics-$i.txt" | grep -v ' 0$' | sed 's/^/  /' || true
done
perf_note "results in $OUT"
