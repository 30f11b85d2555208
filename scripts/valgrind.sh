#!/usr/bin/env bash
# valgrind.sh - runs integration tests with every node under valgrind's
# memcheck (leaks, invalid reads and writes, uninitialised values), and
# fails when any node reported an error.
#
#   RINGCHAT_MYSQL_PORT=.. RINGCHAT_REDIS_PORT=.. scripts/valgrind.sh [BUILD_DIR] [TEST ...]
#
# BUILD_DIR defaults to build-ci (built first with ninja); TEST names are
# integration tests (tests/integration/test_NAME.c), by default those listed
# in VG_TESTS below. The services must be running (scripts/services.sh start).
# Not part of scripts/test.sh or CI: it takes several minutes.
#
# How: the harness puts $RINGCHAT_NODE_WRAPPER before the node binary
# (tests/integration/harness.h), and RINGCHAT_RING_WAIT=poll makes the
# node's I/O thread wait in poll(2) instead of io_uring_enter. valgrind
# 3.19 (Debian 12) knows the io_uring syscalls but runs io_uring_enter as
# one that never blocks: the thread waiting in it keeps valgrind's global
# lock, no other thread runs, and the node answers nothing. It also cannot
# see the kernel write received bytes into the provided buffers (the node
# zeroes them once, so they count as initialised). What it cannot check:
# memory the kernel reads or writes for io_uring operations (sends,
# receives, the SQ and CQ rings); everything the node's own code does with
# that memory it checks. Nodes a test SIGKILLs write no leak report.
#
# The valgrind output of each node lands in its log; the logs are kept in
# a directory named at the end, and every "==PID==" line there is an error
# (valgrind runs with -q).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${1:-build-ci}
shift || true
# Fast enough under valgrind (about 20x slower), and together they cover
# accounts, friends, presence, 1:1 and group messages, acks, the login push,
# history, and a clean stop with sessions and held marks.
VG_TESTS=(core messaging social presence)
if (($# > 0)); then
	VG_TESTS=("$@")
fi

command -v valgrind >/dev/null || {
	echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2
	exit 1
}
[[ "$BUILD" = /* ]] || BUILD=$ROOT/$BUILD
ninja -C "$BUILD" >/dev/null
eval "$(bash "$ROOT/scripts/services.sh" env)"

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ringchat-valgrind.XXXXXX")
export RINGCHATD=$BUILD/src/ringchatd
export RINGCHAT_SRCDIR=$ROOT
export RINGCHAT_TEST_LOGDIR=$LOGDIR
export RINGCHAT_KEEP_LOGS=1
export RINGCHAT_RING_WAIT=poll
# --error-exitcode: a node with errors exits 99, which node_stop() reports;
# the log scan below also catches nodes whose exit status a test ignores.
export RINGCHAT_NODE_WRAPPER="$(command -v valgrind) -q --error-exitcode=99 --leak-check=full \
--errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=30 \
--suppressions=$ROOT/scripts/valgrind.supp"

status=0
for t in "${VG_TESTS[@]}"; do
	exe=$BUILD/tests/itest_$t
	if [[ ! -x "$exe" ]]; then
		echo "valgrind.sh: no test $exe" >&2
		status=1
		continue
	fi
	echo "=== $t"
	start=$SECONDS
	if ! "$exe" >"$LOGDIR/itest_$t.out" 2>&1; then
		echo "    FAILED (output in $LOGDIR/itest_$t.out)"
		status=1
	fi
	echo "    $((SECONDS - start)) s"
done

# Every valgrind line in a node log is an error report (-q).
errors=$(grep -l '^==[0-9]*==' "$LOGDIR"/ringchat-itest-*.log 2>/dev/null || true)
if [[ -n "$errors" ]]; then
	echo "valgrind reported errors in:"
	for f in $errors; do
		echo "  $f"
		grep -m 20 '^==[0-9]*==' "$f" | sed 's/^/    /'
	done
	status=1
fi
echo "logs: $LOGDIR"
exit $status
