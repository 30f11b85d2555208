#!/usr/bin/env bash
# services.sh - the private MariaDB and Redis a Ringchat node talks to, kept
# entirely under var/ in the repository: data, sockets, pid files, logs and the
# generated server configs. The system's own mariadb/redis services (if any)
# are never used or touched.
#
#   scripts/services.sh start  [mysql|redis]   start (no-op if running), then
#                                              ensure database, user and schema
#   scripts/services.sh stop   [mysql|redis]   clean shutdown, waits for exit
#   scripts/services.sh kill   [mysql|redis]   SIGKILL, to test crash recovery
#   scripts/services.sh status [mysql|redis]   "up"/"down"; exit 3 if any down
#   scripts/services.sh env    [mysql|redis]   export lines for the tests
#   scripts/services.sh reset  [mysql|redis]   stop and delete the data
#
# No name means both. Works from any directory and as root (CI) or a normal
# user. Ports can be moved with RINGCHAT_MYSQL_PORT / RINGCHAT_REDIS_PORT in the
# environment (set them for every call, e.g. two clones on one machine).
#
# Layout (absolute paths, derived from this script's location):
#   var/mysql/            MariaDB datadir        var/redis/   Redis dir
#   var/run/mysqld.sock   var/run/redis.sock     var/run/*.pid
#   var/log/mysqld.log    var/log/redis.log      var/*.cnf|conf (generated)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VAR=$ROOT/var
RUN_DIR=$VAR/run
LOG_DIR=$VAR/log
TMP_DIR=$VAR/tmp
LOCK_FILE=$VAR/.services.lock

MYSQL_PORT=${RINGCHAT_MYSQL_PORT:-13306}
MYSQL_DATADIR=$VAR/mysql
MYSQL_SOCK=$RUN_DIR/mysqld.sock
MYSQL_PIDFILE=$RUN_DIR/mysqld.pid
MYSQL_LOG=$LOG_DIR/mysqld.log
MYSQL_CNF=$VAR/mysqld.cnf
MYSQL_DB=ringchat
MYSQL_USER=ringchat
MYSQL_PASSWORD=ringchat
SCHEMA=$ROOT/sql/schema.sql

REDIS_PORT=${RINGCHAT_REDIS_PORT:-16379}
REDIS_DIR=$VAR/redis
REDIS_SOCK=$RUN_DIR/redis.sock
REDIS_PIDFILE=$RUN_DIR/redis.pid
REDIS_LOG=$LOG_DIR/redis.log
REDIS_CONF=$VAR/redis.conf

# Bounds on every wait, in tenths of a second.
START_WAIT=600   # first start creates a 256 MiB redo log; CI disks are slow
STOP_WAIT=600    # InnoDB flushes dirty pages on a clean shutdown

die() {
	echo "services: $*" >&2
	exit 1
}

# Prints the last lines of a log, indented, to stderr.
log_tail() {
	if [[ -f "$1" ]]; then
		echo "--- last lines of $1:" >&2
		tail -n 25 "$1" | sed 's/^/    /' >&2
	fi
}

# True if process $1 exists and is not a zombie. A daemon that exits is
# reparented to whatever reaps orphans (init, a container's pid 1, a CI
# runner), which may take its time: kill -0 would still see the zombie.
alive() {
	local state
	state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
	[[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Prints the pid in pidfile $1 if that process is alive and its command is
# one of the remaining arguments; fails otherwise. The name check keeps a
# stale pid file (after a crash or reboot) from matching a reused pid.
live_pid() {
	local pidfile=$1 pid comm name
	shift
	[[ -r "$pidfile" ]] || return 1
	read -r pid <"$pidfile" 2>/dev/null || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	for name in "$@"; do
		if [[ "$comm" == "$name"* ]]; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

mysql_pid() { live_pid "$MYSQL_PIDFILE" mariadbd mysqld; }
redis_pid() { live_pid "$REDIS_PIDFILE" redis-server; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# sun_path holds 108 bytes including the terminating NUL.
check_socket_path() {
	if ((${#1} > 107)); then
		die "socket path too long for a unix socket (${#1} > 107 bytes): $1 -- clone the repository to a shorter path"
	fi
}

# Waits until pid $1 has exited, at most $2 tenths of a second.
wait_exit() {
	local pid=$1 limit=$2 i
	for ((i = 0; i < limit; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	return 1
}

# Runs "$@" as a daemon-to-be: in its own session (setsid), so a test runner
# that kills a test's process group cannot take the server down with it; with
# stdin from /dev/null and stdout/stderr appended to log file $1; with no
# other file descriptor inherited. The callers of this script may be tests
# whose stdout/stderr are pipes read until EOF, and a server holding a copy
# of such a pipe (or of our flock fd) would keep it open for its lifetime.
# Prints nothing; $! is the daemon's pid (setsid does not fork here, as a
# background job of a non-interactive shell is not a group leader).
launch() {
	local log=$1
	shift
	(
		for fd in /proc/self/fd/*; do
			fd=${fd##*/}
			if ((fd > 2)); then
				eval "exec $fd>&-"
			fi
		done 2>/dev/null
		exec setsid "$@" </dev/null >>"$log" 2>&1
	) &
}

# Root client session over the private socket; never reads ~/.my.cnf or
# /etc/mysql, so a developer's own client settings cannot interfere.
mysql_root() {
	mariadb --no-defaults --socket="$MYSQL_SOCK" --user=root "$@"
}

mysql_write_cnf() {
	local user_line=""
	# mariadbd refuses to run as root unless told to explicitly; as a normal
	# user the option is meaningless (and warned about), so leave it out.
	if [[ $(id -u) -eq 0 ]]; then
		user_line="user = root"
	fi
	cat >"$MYSQL_CNF" <<EOF
# Generated by scripts/services.sh on every start; edit the script, not this.
[mysqld]
$user_line
datadir = $MYSQL_DATADIR
socket = $MYSQL_SOCK
pid-file = $MYSQL_PIDFILE
log-error = $MYSQL_LOG
tmpdir = $TMP_DIR
port = $MYSQL_PORT
bind-address = 127.0.0.1
skip-name-resolve
skip-external-locking

character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
# Strict: a value that does not fit is an error, never silently truncated.
sql_mode = STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION
# TIMESTAMP columns read back in UTC whatever the machine's zone.
default-time-zone = +00:00

max_connections = 1000
# A HISTORY page may reach 16 MiB and the group-commit writer sends
# multi-row INSERTs.
max_allowed_packet = 64M
# Saves ~100 MiB of memory on a test box; nothing here reads it.
performance_schema = OFF

default-storage-engine = InnoDB
innodb_buffer_pool_size = 1G
# A large redo log lets bursts of commits go by without checkpoint stalls.
innodb_log_file_size = 256M
innodb_log_buffer_size = 16M
# Durable: every COMMIT reaches the disk before it returns. The node's OK to
# a sender means "stored", so this must not be relaxed; throughput comes from
# the node's group commit (many rows per transaction), not from lying here.
innodb_flush_log_at_trx_commit = 1
innodb_file_per_table = ON
# Warming the buffer pool across restarts buys nothing on a test box and
# slows every stop the outage tests make.
innodb_buffer_pool_dump_at_shutdown = OFF
innodb_buffer_pool_load_at_startup = OFF
# No binary log (log-bin is off unless set, and nothing sets it): there is
# no replica to feed, and it would add a second fsync per commit.
sync_binlog = 0
EOF
}

mysql_install() {
	local tmp=$MYSQL_DATADIR.init
	echo "services: initialising MariaDB datadir $MYSQL_DATADIR"
	rm -rf "$tmp"
	# Built aside and renamed, so an interrupted initialisation never
	# leaves a half-made datadir that a later start would trust.
	if ! mariadb-install-db --defaults-file="$MYSQL_CNF" --datadir="$tmp" \
		--auth-root-authentication-method=normal --skip-test-db \
		--skip-name-resolve --user="$(id -un)" \
		</dev/null >"$LOG_DIR/mysql-install.log" 2>&1 9>&-; then
		log_tail "$LOG_DIR/mysql-install.log"
		rm -rf "$tmp"
		die "mariadb-install-db failed (full log: $LOG_DIR/mysql-install.log)"
	fi
	mv "$tmp" "$MYSQL_DATADIR"
}

# Database, account and schema; every statement is idempotent, so this runs
# on each start and picks up tables added to sql/schema.sql since.
mysql_provision() {
	[[ -f "$SCHEMA" ]] || die "missing $SCHEMA"
	mysql_root <<EOF
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\`
	CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
-- mariadb-install-db also makes anonymous accounts and password-less root
-- accounts reachable over TCP (127.0.0.1, ::1, the host name). Keep only
-- root@localhost, which is the unix socket under var/run.
DELETE FROM mysql.global_priv
	WHERE User = '' OR (User = 'root' AND Host <> 'localhost');
DELETE FROM mysql.proxies_priv WHERE User = 'root' AND Host <> 'localhost';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON \`$MYSQL_DB\`.* TO '$MYSQL_USER'@'localhost', '$MYSQL_USER'@'127.0.0.1';
-- Scratch databases (ringchat_<anything>) let a test work on a fresh copy of
-- the schema without disturbing the main one.
GRANT ALL PRIVILEGES ON \`${MYSQL_DB}\\_%\`.* TO '$MYSQL_USER'@'localhost', '$MYSQL_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
	mysql_root "$MYSQL_DB" <"$SCHEMA"
}

mysql_start() {
	local pid i
	if pid=$(mysql_pid); then
		mysql_provision
		echo "mysql: up (pid $pid)"
		return 0
	fi
	command -v mariadbd >/dev/null || die "mariadbd not installed (run scripts/deps.sh)"
	check_socket_path "$MYSQL_SOCK"
	if port_busy "$MYSQL_PORT"; then
		die "port 127.0.0.1:$MYSQL_PORT is taken by another process; stop it or set RINGCHAT_MYSQL_PORT"
	fi
	mkdir -p "$RUN_DIR" "$LOG_DIR" "$TMP_DIR"
	mysql_write_cnf
	if [[ ! -d "$MYSQL_DATADIR/mysql" ]]; then
		mysql_install
	fi
	rm -f "$MYSQL_PIDFILE"
	launch "$MYSQL_LOG" mariadbd --defaults-file="$MYSQL_CNF"
	pid=$!
	for ((i = 0; i < START_WAIT; i++)); do
		if ! alive "$pid"; then
			log_tail "$MYSQL_LOG"
			die "mariadbd exited during start-up (log: $MYSQL_LOG)"
		fi
		# ping answers as soon as the server accepts connections.
		if mariadb-admin --no-defaults --socket="$MYSQL_SOCK" --user=root \
			--connect-timeout=2 ping >/dev/null 2>&1; then
			break
		fi
		sleep 0.1
	done
	if ((i >= START_WAIT)); then
		log_tail "$MYSQL_LOG"
		die "mariadbd did not answer within $((START_WAIT / 10)) s (log: $MYSQL_LOG)"
	fi
	mysql_provision
	echo "mysql: up (pid $pid, socket $MYSQL_SOCK, port $MYSQL_PORT)"
}

mysql_stop() {
	local pid
	if ! pid=$(mysql_pid); then
		echo "mysql: down"
		return 0
	fi
	# A clean shutdown (the SQL statement, as mysqladmin shutdown sends, but
	# without its one-second polling: we wait on the pid ourselves). If the
	# server cannot be reached on its socket, SIGTERM asks for the same.
	if ! mysql_root --connect-timeout=5 -e SHUTDOWN >/dev/null 2>&1; then
		kill -TERM "$pid" 2>/dev/null || true
	fi
	if ! wait_exit "$pid" "$STOP_WAIT"; then
		log_tail "$MYSQL_LOG"
		die "mariadbd (pid $pid) did not stop within $((STOP_WAIT / 10)) s"
	fi
	echo "mysql: stopped"
}

redis_write_conf() {
	cat >"$REDIS_CONF" <<EOF
# Generated by scripts/services.sh on every start; edit the script, not this.
port $REDIS_PORT
bind 127.0.0.1
unixsocket $REDIS_SOCK
unixsocketperm 700
daemonize yes
pidfile $REDIS_PIDFILE
logfile $REDIS_LOG
dir $REDIS_DIR
loglevel notice
# No persistence at all (no AOF, no RDB snapshots). Redis holds only
# sessions, presence and routing: state that is rebuilt as clients log in
# again. MySQL is the source of truth for accounts, friendships, groups and
# messages. This also keeps fork()ed snapshot writers off a small test box.
appendonly no
save ""
EOF
}

redis_start() {
	local pid i
	if pid=$(redis_pid); then
		echo "redis: up (pid $pid)"
		return 0
	fi
	command -v redis-server >/dev/null || die "redis-server not installed (run scripts/deps.sh)"
	check_socket_path "$REDIS_SOCK"
	if port_busy "$REDIS_PORT"; then
		die "port 127.0.0.1:$REDIS_PORT is taken by another process; stop it or set RINGCHAT_REDIS_PORT"
	fi
	mkdir -p "$RUN_DIR" "$LOG_DIR" "$REDIS_DIR"
	redis_write_conf
	rm -f "$REDIS_PIDFILE"
	# daemonize yes: redis-server forks, detaches and returns; launch()
	# additionally strips inherited descriptors.
	launch "$REDIS_LOG" redis-server "$REDIS_CONF"
	if ! wait $!; then
		log_tail "$REDIS_LOG"
		die "redis-server failed to start (log: $REDIS_LOG)"
	fi
	for ((i = 0; i < START_WAIT; i++)); do
		if [[ $(redis-cli -s "$REDIS_SOCK" ping 2>/dev/null) == PONG ]]; then
			break
		fi
		# The daemon writes its pid file once it is set up; gone again
		# (or never there after a few seconds) means it gave up.
		if ((i > 30)) && ! redis_pid >/dev/null; then
			log_tail "$REDIS_LOG"
			die "redis-server exited during start-up (log: $REDIS_LOG)"
		fi
		sleep 0.1
	done
	if ((i >= START_WAIT)); then
		log_tail "$REDIS_LOG"
		die "redis-server did not answer within $((START_WAIT / 10)) s (log: $REDIS_LOG)"
	fi
	pid=$(redis_pid) || pid="?"
	echo "redis: up (pid $pid, socket $REDIS_SOCK, port $REDIS_PORT)"
}

redis_stop() {
	local pid
	if ! pid=$(redis_pid); then
		echo "redis: down"
		return 0
	fi
	# nosave: there is nothing worth writing (see redis_write_conf).
	redis-cli -s "$REDIS_SOCK" shutdown nosave >/dev/null 2>&1 ||
		kill -TERM "$pid" 2>/dev/null || true
	if ! wait_exit "$pid" "$STOP_WAIT"; then
		log_tail "$REDIS_LOG"
		die "redis-server (pid $pid) did not stop within $((STOP_WAIT / 10)) s"
	fi
	echo "redis: stopped"
}

# SIGKILL, as a crash or power loss would end it: recovery on the next start
# is part of what the durability tests check.
svc_kill() {
	local name=$1 pid
	if ! pid=$("${name}_pid"); then
		echo "$name: down"
		return 0
	fi
	kill -KILL "$pid"
	wait_exit "$pid" "$STOP_WAIT" || die "$name (pid $pid) survived SIGKILL"
	echo "$name: killed"
}

svc_reset() {
	local name=$1
	"${name}_stop"
	if [[ $name == mysql ]]; then
		rm -rf "$MYSQL_DATADIR" "$MYSQL_DATADIR.init"
	else
		rm -rf "$REDIS_DIR"
	fi
	echo "$name: data removed"
}

svc_status() {
	local name=$1 pid
	if pid=$("${name}_pid"); then
		echo "$name: up (pid $pid)"
		return 0
	fi
	echo "$name: down"
	return 3
}

svc_env() {
	if [[ $1 == mysql ]]; then
		printf 'export RINGCHAT_MYSQL_SOCKET=%q\n' "$MYSQL_SOCK"
		printf 'export RINGCHAT_MYSQL_PORT=%q\n' "$MYSQL_PORT"
	else
		printf 'export RINGCHAT_REDIS_SOCKET=%q\n' "$REDIS_SOCK"
		printf 'export RINGCHAT_REDIS_PORT=%q\n' "$REDIS_PORT"
	fi
}

usage() {
	exec >&2
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
	exit 2
}

main() {
	local cmd=${1:-} names=() name rc=0
	case "${2:-}" in
	"") names=(mysql redis) ;;
	mysql | mariadb) names=(mysql) ;;
	redis) names=(redis) ;;
	*) usage ;;
	esac
	(($# <= 2)) || usage

	case "$cmd" in
	start | stop | kill | reset)
		mkdir -p "$VAR"
		# One start/stop at a time: two tests (or a test and a developer)
		# racing to initialise the same datadir would corrupt it.
		exec 9>"$LOCK_FILE"
		flock -w 300 9 || die "timed out waiting for $LOCK_FILE"
		;;
	esac

	for name in "${names[@]}"; do
		case "$cmd" in
		start) "${name}_start" ;;
		stop) "${name}_stop" ;;
		kill) svc_kill "$name" ;;
		reset) svc_reset "$name" ;;
		status) svc_status "$name" || rc=3 ;;
		env) svc_env "$name" ;;
		*) usage ;;
		esac
	done
	return "$rc"
}

main "$@"
