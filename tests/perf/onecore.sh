#!/usr/bin/env bash
# onecore.sh - one stored-mode chat run with the whole server (ringchatd,
# MariaDB and Redis) pinned to one CPU and the load generator on another.
#
#   tests/perf/onecore.sh [-b BUILD_DIR] [-N NODE_BUILD_DIR] [-c SERVER_CPU] [-g BENCH_CPU] \
#                         [-n "NODE FLAGS"] [BENCH ARGS...]
#
#   tests/perf/onecore.sh                                   # --users 1000 --window 4 --duration 10
#   tests/perf/onecore.sh -N ../base/build-ci               # an older node, its own schema
#   for i in 1 2 3; do tests/perf/onecore.sh -N ../base/build-ci; tests/perf/onecore.sh; done
#
# As chat.sh stored (fresh database ringchat_bench, node with --durability
# stored --hash-cost 1 --workers 2), with these differences:
# * the schema is the one of the node's source tree (perf_node_root), so an
#   older node (-N) runs on the tables it was written for;
# * the private mariadbd and redis-server (every thread: taskset -a) and the
#   node are pinned to SERVER_CPU (1), ringchat-bench to BENCH_CPU (0); the
#   services get both CPUs back at the end;
# * the node also gets --max-unauth-per-addr 0 --max-conns-per-addr 0
#   --signup-addr-limit 0 --login-timeout-ms 600000: 1000 logins from one
#   address, on a node that shares its only CPU with MariaDB.
# The bench reports the CPU of node + MariaDB + Redis (--server-pid); this
# script adds mariadbd's own CPU per committed message row over the whole
# run (set-up included: the same 1000 signups and 500 friendships each
# time). Keeps
# command.txt, bench.txt, metrics.txt and node.log in
# tests/perf/out/onecore-<time>/.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

SERVER_CPU=1
BENCH_CPU=0
NODE_FLAGS=()
while getopts "b:N:c:g:n:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
	N) NODE_BUILD=$(cd "$OPTARG" && pwd -P) ;;
	c) SERVER_CPU=$OPTARG ;;
	g) BENCH_CPU=$OPTARG ;;
	n) read -r -a NODE_FLAGS <<<"$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -gt 0 ]] && ARGS=("$@") || ARGS=(--users 1000 --window 4 --duration 10)

perf_check_build
perf_services_start
OUT=$PERF_DIR/out/onecore-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
SCHEMA=$(perf_node_root)/sql/schema.sql
[[ -f $SCHEMA ]] || perf_die "no $SCHEMA"

DB=ringchat_bench
mysql_root() {
	mariadb --no-defaults --socket="$RINGCHAT_MYSQL_SOCKET" --user=root "$@"
}
mysql_root -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4" ||
	perf_die "cannot make the database $DB"
mysql_root "$DB" <"$SCHEMA" || perf_die "cannot apply $SCHEMA to $DB"

MARIADB_PID=$(cat "$ROOT/var/run/mysqld.pid")
REDIS_PID=$(cat "$ROOT/var/run/redis.pid")
unpin() {
	perf_node_stop
	taskset -a -p -c 0-$(($(nproc) - 1)) "$MARIADB_PID" >/dev/null 2>&1 || true
	taskset -a -p -c 0-$(($(nproc) - 1)) "$REDIS_PID" >/dev/null 2>&1 || true
}
trap unpin EXIT
taskset -a -p -c "$SERVER_CPU" "$MARIADB_PID" >/dev/null || perf_die "cannot pin mariadbd"
taskset -a -p -c "$SERVER_CPU" "$REDIS_PID" >/dev/null || perf_die "cannot pin redis-server"
# the node inherits the CPU from this shell (the bench is pinned below)
taskset -p -c "$SERVER_CPU" $$ >/dev/null || perf_die "cannot pin this shell"
perf_node_start "$OUT" --durability stored --mysql-db "$DB" \
	--max-unauth-per-addr 0 --max-conns-per-addr 0 --signup-addr-limit 0 \
	--login-timeout-ms 600000 "${NODE_FLAGS[@]}"
# and every thread it has started by now, to be sure
taskset -a -p -c "$SERVER_CPU" "$NODE_PID" >/dev/null || perf_die "cannot pin ringchatd"
ADMIN_PORT=$(sed -n 's/.*info admin listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/node.log" | head -n 1)

CMD=(taskset -c "$BENCH_CPU" "$BUILD/src/ringchat-bench" chat --port "$NODE_PORT" "${ARGS[@]}"
	--server-pid "$NODE_PID,$MARIADB_PID,$REDIS_PID")
echo "\$ ${CMD[*]}   # node: $(perf_node_bin) (CPU $SERVER_CPU) --durability stored ${NODE_FLAGS[*]}; schema $SCHEMA" |
	tee "$OUT/command.txt"
# utime + stime of a process, in clock ticks
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}
DB_TICKS0=$(cpu_ticks "$MARIADB_PID")
"${CMD[@]}" 2>&1 | grep -v '^\[' | tee "$OUT/bench.txt"
DB_TICKS=$(($(cpu_ticks "$MARIADB_PID") - DB_TICKS0))
if [[ -n $ADMIN_PORT ]]; then
	curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" >"$OUT/metrics.txt" || true
	grep -E '^ringchat_(commit_(batches|rows)_total|commit_latency_seconds_(total|max)|unread_[a-z]+_total) ' \
		"$OUT/metrics.txt" || true
	ROWS=$(awk '$1 == "ringchat_commit_rows_total" { print $2 }' "$OUT/metrics.txt")
	[[ -n $ROWS && $ROWS != 0 ]] &&
		awk -v t="$DB_TICKS" -v hz="$(getconf CLK_TCK)" -v r="$ROWS" 'BEGIN {
			printf "mariadbd cpu %.2f s for %d rows: %.2f us per row (whole run)\n", t / hz, r, t / hz / r * 1e6 }' |
		tee -a "$OUT/bench.txt"
fi
perf_note "results in $OUT"
