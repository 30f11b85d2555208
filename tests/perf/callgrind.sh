#!/usr/bin/env bash
# callgrind.sh - instructions per request of the node's codec and dispatch
# path, counted by valgrind's callgrind.
#
#   tests/perf/callgrind.sh [-b BUILD_DIR] [N]        (N requests, 20000)
#   CG_CMD=FRIEND_LIST tests/perf/callgrind.sh        (another command;
#                     CG_PAYLOAD='{"...":...}' gives it a payload)
#
# Builds tests/perf/cg_dispatch.c against the build's static libraries
# (libringchat_core.a, libringchat_proto.a) into tests/perf/out/, starts
# the private services (its worker opens the node's MySQL and Redis
# links, as a real worker does; they stay up), and runs it under
# callgrind: N PING frames go through frame_reader_feed → in_msg →
# dispatch_in → the encoded reply in an out_msg, as the I/O thread and a
# worker pass them, without sockets. Collection is on only for the N
# requests (after a warm-up); the script prints the total divided by N,
# the main functions of the path with their inclusive instructions per
# request, and the top functions by self cost.
#
# Why not ringchatd itself under callgrind: valgrind 3.19 (Debian 12)
# keeps its scheduler lock while a thread sits in io_uring_enter, so the
# workers only run when the I/O thread's 1 s tick wakes it (a node under
# callgrind answered 128 PINGs in 90 s). With a valgrind that releases
# it, `ringchat-bench ping --connections 1 --window 1 --requests N`
# against a node under callgrind (callgrind_control -z before, -d after)
# gives the whole path including io_uring.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while getopts "b:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
	*)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
N=${1:-20000}
[[ $N =~ ^[1-9][0-9]*$ ]] || perf_die "N must be a positive integer"

command -v valgrind >/dev/null || perf_die "valgrind is not installed (apt-get install -y valgrind)"
[[ -f /usr/include/valgrind/callgrind.h ]] || perf_die "no valgrind/callgrind.h (it comes with the valgrind package)"
for lib in src/libringchat_core.a libringchat_proto.a; do
	[[ -f $BUILD/$lib ]] || perf_die "no $BUILD/$lib: build first (ninja -C $BUILD) or pass -b DIR"
done

OUT=$PERF_DIR/out/callgrind-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
CC=${CC:-cc}
# The same optimisation as the build (debugoptimized): -O2 -g.
"$CC" -std=gnu17 -O2 -g -D_GNU_SOURCE -Wall -Wextra -I"$ROOT/include" -I"$ROOT/src" \
	"$PERF_DIR/cg_dispatch.c" "$BUILD/src/libringchat_core.a" "$BUILD/libringchat_proto.a" \
	$(pkg-config --libs liburing hiredis libcjson) \
	$(pkg-config --libs libmariadb 2>/dev/null || pkg-config --libs mysqlclient) \
	-lcrypt -lpthread -lm -o "$OUT/cg_dispatch"

perf_services_start
cd "$OUT" # no config/ringchatd.conf here: only the flags below apply
valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
	"$OUT/cg_dispatch" "$N" --mysql-socket "$RINGCHAT_MYSQL_SOCKET" \
	--redis-socket "$RINGCHAT_REDIS_SOCKET" --log-level warn \
	>"$OUT/run.txt" 2>"$OUT/valgrind.txt" || {
	cat "$OUT/run.txt" "$OUT/valgrind.txt" >&2
	perf_die "cg_dispatch failed under callgrind"
}
cat "$OUT/run.txt"

DUMP=$OUT/callgrind.out
[[ -f $DUMP ]] || perf_die "no $DUMP: callgrind wrote nothing"
callgrind_annotate --inclusive=yes --threshold=100 "$DUMP" >"$OUT/inclusive.txt" 2>/dev/null
callgrind_annotate --inclusive=no --threshold=99 "$DUMP" >"$OUT/self.txt" 2>/dev/null
TOTAL=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$OUT/self.txt")
[[ -n $TOTAL ]] || perf_die "no PROGRAM TOTALS in the callgrind dump"

echo
echo "== ${CG_CMD:-PING}: $TOTAL instructions for $N requests: $((TOTAL / N)) per request"
echo
echo "== the path, inclusive instructions per request"
# "1,234 (12.3%)  file:function [object]" -> "1234 function"
perf_fn_lines() {
	sed -nE 's/^ *([0-9,]+) +\( *[0-9.]+%\) +[^ ]*:([^ :]+) .*/\1 \2/p' "$1" | tr -d ,
}
perf_fn_lines "$OUT/inclusive.txt" |
	grep -E ' (frame_reader_feed|cg_on_frame|dispatch_in|parse_object|rate_take|cmd_[a-z_]+|reply_[a-z_]+|out_frame|worker_send_out|frame_hdr_(en|de)code|cJSON_[A-Za-z]+)$' |
	awk -v n="$N" '!seen[$2]++ { printf "  %8.1f  %s\n", $1 / n, $2 }' | head -n 25
echo
echo "== top functions by self instructions per request"
perf_fn_lines "$OUT/self.txt" | awk -v n="$N" '{ printf "  %8.1f  %s\n", $1 / n, $2 }' | head -n 15
echo
echo "files: $OUT (callgrind_annotate $DUMP for more)"
