#!/usr/bin/env bash
# chat.sh - one run of the messaging benchmark as docs/benchmarks.md quotes it.
#
#   tests/perf/chat.sh [-b BUILD_DIR] [-N NODE_BUILD_DIR] [-n "NODE FLAGS"] [-s SCENARIO] MODE [BENCH ARGS...]
#
#   tests/perf/chat.sh stored --users 1000 --window 4 --duration 10
#   tests/perf/chat.sh relay --users 1000 --window 4 --duration 10 --target both
#   tests/perf/chat.sh stored --users 1000 --window 16 --rate 37500 --duration 10
#   tests/perf/chat.sh -n "--unread-defer-ms 0" stored --users 1000 --window 4 --duration 10
#   tests/perf/chat.sh -s group stored --groups 10 --members 50 --window 4 --target both
#   tests/perf/chat.sh -s offline stored --messages 10000 --window 64
#
# MODE is the node's durability (stored or relay). Starts the private
# services (left running), makes a fresh database ringchat_bench with
# sql/schema.sql (each run starts from empty tables), starts a node on it
# (--durability MODE --hash-cost 1 --workers 2, then the -n flags), runs
# `ringchat-bench SCENARIO` (chat, or the -s one: group, offline) with the
# given arguments and --server-pid NODE,MARIADBD (--redis-port and
# --redis-pid of the private Redis for --target redis|both), prints the
# bench's summary and the node's group-commit and unread-mark metrics, and
# stops the node. -N takes ringchatd from another build (another commit's
# node under this build's ringchat-bench: only the server differs between
# runs). Keeps node.log, bench.txt and metrics.txt in
# tests/perf/out/SCENARIO-MODE-YYYYmmdd-HHMMSS/.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

NODE_FLAGS=()
SCENARIO=chat
while getopts "b:N:n:s:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
	N) NODE_BUILD=$(cd "$OPTARG" && pwd -P) ;;
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
[[ $SCENARIO == chat || $SCENARIO == group || $SCENARIO == offline ]] ||
	perf_die "SCENARIO is chat, group or offline, not '$SCENARIO'"

perf_check_build
perf_services_start
OUT=$PERF_DIR/out/$SCENARIO-$MODE-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

DB=ringchat_bench
mysql_root() {
	mariadb --no-defaults --socket="$RINGCHAT_MYSQL_SOCKET" --user=root "$@"
}
mysql_root -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4" ||
	perf_die "cannot make the database $DB"
mysql_root "$DB" <"$ROOT/sql/schema.sql" || perf_die "cannot apply sql/schema.sql to $DB"

trap perf_node_stop EXIT
perf_node_start "$OUT" --durability "$MODE" --mysql-db "$DB" "${NODE_FLAGS[@]}"
# The private services' own pids (several engineers' MariaDBs may run on
# one machine, so "the first mariadbd" is not necessarily ours).
MARIADB_PID=$(cat "$ROOT/var/run/mysqld.pid" 2>/dev/null || pgrep -x mariadbd | head -n 1 || true)
REDIS_PID=$(cat "$ROOT/var/run/redis.pid" 2>/dev/null ||
	pgrep -f 'redis-server .*:'"${RINGCHAT_REDIS_PORT:-16379}" | head -n 1 || true)
ADMIN_PORT=$(sed -n 's/.*info admin listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/node.log" | head -n 1)

CMD=("$BUILD/src/ringchat-bench" "$SCENARIO" --port "$NODE_PORT"
	--redis-port "${RINGCHAT_REDIS_PORT:-16379}" "$@"
	--server-pid "$NODE_PID${MARIADB_PID:+,$MARIADB_PID}" ${REDIS_PID:+--redis-pid "$REDIS_PID"})
echo "\$ ${CMD[*]}   # node: $(perf_node_bin) --durability $MODE ${NODE_FLAGS[*]}" | tee "$OUT/command.txt"
"${CMD[@]}" 2>&1 | grep -v '^\[' | tee "$OUT/bench.txt"
if [[ -n $ADMIN_PORT ]]; then
	curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" >"$OUT/metrics.txt" || true
	grep -E '^ringchat_(commit_(batches|rows)_total|commit_latency_seconds_(total|max)|unread_[a-z]+_total) ' \
		"$OUT/metrics.txt" || true
fi
perf_note "results in $OUT"
