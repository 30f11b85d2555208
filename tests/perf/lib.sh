# lib.sh - shared by the scripts in tests/perf: where things are, the
# private services, and one ringchatd started for a measurement.
#
# Sourced, not run. Sets ROOT (the repository), PERF_DIR (this folder) and
# BUILD (the build directory: -b DIR, else $RINGCHAT_BUILD, else build/).
# NODE_BUILD, when set (chat.sh -N DIR), is where ringchatd comes from
# instead of BUILD: another commit's node under the same load generator.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PERF_DIR=$ROOT/tests/perf
BUILD=${RINGCHAT_BUILD:-$ROOT/build}
NODE_BUILD=
NODE_PID=
NODE_PORT=

perf_die() {
	echo "perf: $*" >&2
	exit 1
}

perf_note() {
	echo "perf: $*" >&2
}

# Checks that BUILD holds the binaries (and says how to make them).
perf_check_build() {
	[[ -x $BUILD/src/ringchatd ]] ||
		perf_die "no $BUILD/src/ringchatd: build first (meson setup $BUILD && ninja -C $BUILD) or pass -b DIR"
	[[ -x $BUILD/src/ringchat-bench ]] || perf_die "no $BUILD/src/ringchat-bench in $BUILD"
	[[ -z $NODE_BUILD || -x $NODE_BUILD/src/ringchatd ]] || perf_die "no $NODE_BUILD/src/ringchatd"
}

# The ringchatd binary to start: NODE_BUILD's when set, else BUILD's.
perf_node_bin() {
	echo "${NODE_BUILD:-$BUILD}/src/ringchatd"
}

# The source tree of that binary's build (from meson-info), else ROOT. The
# node runs there, so it reads its own tree's config/ringchatd.conf: an
# older node refuses keys added after it.
perf_node_root() {
	local info=${NODE_BUILD:-$BUILD}/meson-info/meson-info.json src
	src=$(sed -n 's/.*"source": *"\([^"]*\)".*/\1/p' "$info" 2>/dev/null | head -n 1)
	[[ -n $src && -d $src ]] && echo "$src" || echo "$ROOT"
}

# Starts MariaDB and Redis (no-op when they run) and exports their sockets.
# They stay up afterwards, like scripts/run.sh leaves them.
perf_services_start() {
	bash "$ROOT/scripts/services.sh" start >&2 || perf_die "services did not start"
	eval "$(bash "$ROOT/scripts/services.sh" env)"
}

# perf_node_start OUTDIR [ringchatd flags...]: starts a node on free ports,
# logging to OUTDIR/node.log; sets NODE_PID and NODE_PORT. Extra flags come
# last and win over the defaults (hash cost 1, 2 workers, as the tests use;
# no per-address limits).
perf_node_start() {
	local out=$1 i lim=() help
	shift
	# Every bench connection comes from 127.0.0.1: lift the per-address
	# limits and the login deadline of a production node (a node built
	# before they existed does not know the flags).
	help=$("$(perf_node_bin)" --help 2>&1 || true)
	if [[ $help == *--max-unauth-per-addr* ]]; then
		lim=(--max-unauth-per-addr 0 --max-conns-per-addr 0 --signup-addr-limit 0
			--login-timeout-ms 600000)
	fi
	# The log exists before the background start opens it: the wait below
	# reads it at once (under pipefail a missing file would end the script).
	: >"$out/node.log"
	(cd "$(perf_node_root)" && exec "$(perf_node_bin)" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
		--mysql-socket "$RINGCHAT_MYSQL_SOCKET" --redis-socket "$RINGCHAT_REDIS_SOCKET" \
		--hash-cost 1 --workers 2 "${lim[@]}" "$@") >"$out/node.log" 2>&1 &
	NODE_PID=$!
	for ((i = 0; i < 100; i++)); do
		NODE_PORT=$(sed -n 's/.*info listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out/node.log" | head -n 1)
		[[ -n $NODE_PORT ]] && break
		kill -0 "$NODE_PID" 2>/dev/null || {
			tail -n 20 "$out/node.log" >&2
			perf_die "ringchatd exited during start-up"
		}
		sleep 0.1
	done
	[[ -n $NODE_PORT ]] || perf_die "ringchatd did not log its port in 10 s (see $out/node.log)"
	perf_note "ringchatd pid $NODE_PID on 127.0.0.1:$NODE_PORT (log $out/node.log)"
}

# Stops the node started above (SIGTERM, then SIGKILL after 15 s).
perf_node_stop() {
	local i
	[[ -n $NODE_PID ]] || return 0
	kill -TERM "$NODE_PID" 2>/dev/null || return 0
	for ((i = 0; i < 150; i++)); do
		kill -0 "$NODE_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$NODE_PID" 2>/dev/null || true
	wait "$NODE_PID" 2>/dev/null || true
	NODE_PID=
}
