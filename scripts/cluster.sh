#!/usr/bin/env bash
# cluster.sh - several ringchatd nodes on this machine, sharing the private
# MariaDB and Redis of scripts/services.sh.
#
#   scripts/cluster.sh up N [FLAG...]   start nodes 1..N (no-op for those
#                                       running); FLAGs go to every ringchatd
#   scripts/cluster.sh down             SIGTERM every node, wait (bounded)
#   scripts/cluster.sh status           one line per node; exit 3 if any down
#
# Node i: node_id i, clients on 127.0.0.1:770i (7700+i), GET /metrics on
# 127.0.0.1:778i (7780+i); N is 1..31. Log var/cluster/node<i>.log, pid file
# var/cluster/node<i>.pid. The binary is build/src/ringchatd, built first if
# missing (as scripts/run.sh does). Set RINGCHAT_MYSQL_PORT and
# RINGCHAT_REDIS_PORT as for scripts/services.sh.
#
# Put a TCP load balancer in front for one client address (docs/operations.md,
# "Cluster", has an HAProxy example).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# The shipped config names var/run/*.sock relative to the repository root.
cd "$ROOT"
DIR=$ROOT/var/cluster
BIN=$ROOT/build/src/ringchatd
CLIENT_BASE=7700
ADMIN_BASE=7780
MAX_NODES=31
START_WAIT=100 # tenths of a second for a node to log "listening on"
STOP_WAIT=100  # tenths of a second for a node to exit after SIGTERM

die() {
	echo "cluster: $*" >&2
	exit 1
}

# True if process $1 exists and is not a zombie.
alive() {
	local state
	state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
	[[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Prints the pid of node $1 if it runs; the name check keeps a stale pid
# file from matching a reused pid.
node_pid() {
	local pidfile=$DIR/node$1.pid pid comm
	[[ -r "$pidfile" ]] || return 1
	read -r pid <"$pidfile" 2>/dev/null || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[[ "$comm" == ringchatd* ]] || return 1
	echo "$pid"
}

# Node ids that have a pid file, in order.
known_nodes() {
	local f i
	for f in "$DIR"/node*.pid; do
		[[ -e "$f" ]] || continue
		i=${f##*/node}
		i=${i%.pid}
		[[ "$i" =~ ^[0-9]+$ ]] && echo "$i"
	done | sort -n
}

build() {
	if [[ -x "$BIN" ]]; then
		return 0
	fi
	echo "cluster: building $BIN"
	if [[ -f build/build.ninja ]]; then
		meson setup --reconfigure build >/dev/null
	else
		rm -rf build
		meson setup build >/dev/null
	fi
	ninja -C build src/ringchatd >/dev/null
}

# Starts node $1 with the remaining arguments as extra flags.
start_node() {
	local i=$1 pid log=$DIR/node$1.log k skip rc
	shift
	if pid=$(node_pid "$i"); then
		echo "node $i: up (pid $pid)"
		return 0
	fi
	echo "--- $(date -u +%FT%TZ) cluster.sh: starting node $i" >>"$log"
	# the node's lines start after this many
	skip=$(wc -l <"$log")
	# Own session, stdin from /dev/null, no inherited descriptors beyond
	# the log: a caller reading our output to EOF must not wait for nodes.
	(
		for fd in /proc/self/fd/*; do
			fd=${fd##*/}
			if ((fd > 2)); then
				eval "exec $fd>&-"
			fi
		done 2>/dev/null
		exec setsid "$BIN" --node-id "$i" \
			--listen "127.0.0.1:$((CLIENT_BASE + i))" \
			--admin-listen "127.0.0.1:$((ADMIN_BASE + i))" "$@" \
			</dev/null >>"$log" 2>&1
	) &
	pid=$!
	echo "$pid" >"$DIR/node$i.pid"
	for ((k = 0; k < START_WAIT; k++)); do
		if ! alive "$pid"; then
			wait "$pid" 2>/dev/null && rc=0 || rc=$?
			echo "node $i: exited during start-up (status $rc); last lines of $log:" >&2
			tail -n 5 "$log" | sed 's/^/    /' >&2
			rm -f "$DIR/node$i.pid"
			return 1
		fi
		if tail -n "+$((skip + 1))" "$log" | grep -q 'listening on'; then
			echo "node $i: up (pid $pid, clients 127.0.0.1:$((CLIENT_BASE + i)), metrics 127.0.0.1:$((ADMIN_BASE + i)))"
			return 0
		fi
		sleep 0.1
	done
	echo "node $i: not listening after $((START_WAIT / 10)) s (pid $pid); see $log" >&2
	return 1
}

cmd_up() {
	local n=${1:-} i rc=0
	if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_NODES)); then
		die "usage: cluster.sh up N [FLAG...]  (N = 1..$MAX_NODES)"
	fi
	shift
	mkdir -p "$DIR"
	build
	bash scripts/services.sh start >/dev/null
	for ((i = 1; i <= n; i++)); do
		start_node "$i" "$@" || rc=1
	done
	return "$rc"
}

cmd_down() {
	local i pid k t pids=() ids=()
	for i in $(known_nodes); do
		if pid=$(node_pid "$i"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			ids+=("$i")
		else
			rm -f "$DIR/node$i.pid"
		fi
	done
	# all at once: each node takes up to its own shutdown bound
	for k in "${!pids[@]}"; do
		pid=${pids[$k]}
		i=${ids[$k]}
		for ((t = 0; t < STOP_WAIT; t++)); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			echo "node $i: still running $((STOP_WAIT / 10)) s after SIGTERM; SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$DIR/node$i.pid"
		echo "node $i: stopped"
	done
	if ((${#pids[@]} == 0)); then
		echo "cluster: no node running"
	fi
}

cmd_status() {
	local i pid rc=0 lease any=0
	for i in $(known_nodes); do
		any=1
		lease=""
		if pid=$(node_pid "$i"); then
			# the node's lease in Redis, once ringchatd runs the cluster bus
			if command -v redis-cli >/dev/null; then
				lease=$(redis-cli -s "$ROOT/var/run/redis.sock" hget "rc:node:$i" start_ms 2>/dev/null || true)
			fi
			if [[ -n "$lease" ]]; then
				lease="held (instance started at $lease epoch ms)"
			else
				lease="none"
			fi
			printf 'node %d: up   pid %-7s clients 127.0.0.1:%d  metrics 127.0.0.1:%d  lease %s\n' \
				"$i" "$pid" $((CLIENT_BASE + i)) $((ADMIN_BASE + i)) "$lease"
		else
			printf 'node %d: down (see %s)\n' "$i" "$DIR/node$i.log"
			rc=3
		fi
	done
	if ((any == 0)); then
		echo "cluster: no node started (scripts/cluster.sh up N)"
		rc=3
	fi
	return "$rc"
}

case "${1:-}" in
up)
	shift
	cmd_up "$@"
	;;
down) cmd_down ;;
status) cmd_status ;;
*)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
