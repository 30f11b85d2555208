#!/usr/bin/env bash
# test.sh - set-up command 2: every test Ringchat has, on a fresh Debian 12
# machine or a developer's tree. CI runs it through .ci/run.
#
#   1. scripts/deps.sh (installs what is missing), scripts/services.sh start
#   2. build-ci:   -Dwerror_ci=true, every target, every test suite
#   3. build-asan: AddressSanitizer + UBSan, the suites in ASAN_SUITES
#   4. build-tsan: ThreadSanitizer, the tests in TSAN_TESTS
#   5. build-fuzz: the libFuzzer targets of tests/fuzz, ~40 s each (clang)
#   6. a combined summary; the last line is "N passed, N failed"
#
# Every step runs even when an earlier one failed; the exit status is non-zero
# if anything failed. Services this script started are stopped at the end;
# services that were already running (a developer's) are left alone.
# Extra arguments are passed to every `meson test` call (e.g. a test name).
set -euo pipefail

# Suites run under ASan+UBSan (meson suite names, see tests/meson.build).
ASAN_SUITES=(unit store integration)
# Tests run under TSan (meson test names): the ones with threads that share
# memory (the I/O thread, workers, the group-commit writer and its held
# unread marks). Add a test here once it is TSan-clean.
TSAN_TESTS=(spsc handoff core commit_order messaging unread_defer dispatch membership inbox cluster link_io)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
SERVICES=$ROOT/scripts/services.sh

# Without packages or services no test can run; still end with the line CI
# reads.
setup_failed() {
	echo "test.sh: $1 failed; no tests were run" >&2
	echo
	echo "0 passed, 1 failed"
	exit 1
}

bash scripts/deps.sh || setup_failed "scripts/deps.sh"

# Which services this run starts (and so must stop).
started=()
for svc in mysql redis; do
	if ! bash "$SERVICES" status "$svc" >/dev/null; then
		started+=("$svc")
	fi
done
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	local svc
	for svc in "${started[@]}"; do
		bash "$SERVICES" stop "$svc" >/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$SERVICES" start || setup_failed "scripts/services.sh start"
# RINGCHAT_MYSQL_SOCKET, RINGCHAT_REDIS_SOCKET, ... for the tests.
eval "$(bash "$SERVICES" env)"

# The sanitizer runtimes of GCC 12 need the address-space layout they were
# built for; kernels with more mmap randomisation bits break them ("unexpected
# memory mapping"). Without ASLR they work everywhere; the personality flag is
# inherited, so a ringchatd started by an integration test gets it too.
# Some container seccomp profiles forbid that personality() call; there the
# tests run as they are.
sanitizer_wrap=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
	sanitizer_wrap=(--wrapper "setarch $(uname -m) -R")
fi

# Per-build results, filled by run_build.
labels=()
results=()
tot_ok=0 tot_xfail=0 tot_fail=0 tot_xpass=0 tot_skip=0 tot_timeout=0
any_error=0

# Prints "ok xfail fail xpass skip timeout" from a meson testlog.json
# (one JSON object per line, one line per test).
count_results() {
	python3 - "$1" <<'EOF'
import json, sys
n = {"OK": 0, "EXPECTEDFAIL": 0, "FAIL": 0, "UNEXPECTEDPASS": 0, "SKIP": 0,
     "TIMEOUT": 0}
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        r = json.loads(line).get("result", "ERROR")
        if r in ("INTERRUPT", "ERROR"):
            r = "FAIL"
        n[r] = n.get(r, 0) + 1
print(n["OK"], n["EXPECTEDFAIL"], n["FAIL"], n["UNEXPECTEDPASS"], n["SKIP"],
      n["TIMEOUT"])
EOF
}

# Configures dir (reconfiguring an existing one: meson.build picks source and
# test files up with fs.is_file, which only a reconfigure re-evaluates).
# Meson's chatter goes to a file and is shown only if the setup fails.
configure() {
	local dir=$1 out
	shift
	out=$(mktemp)
	if [[ -f "$dir/build.ninja" ]]; then
		set -- --reconfigure "$dir" "$@"
	else
		rm -rf "$dir"
		set -- "$dir" "$@"
	fi
	if ! meson setup "$@" >"$out" 2>&1; then
		cat "$out"
		rm -f "$out"
		return 1
	fi
	rm -f "$out"
}

# run_build LABEL DIR BUILD_ALL "SETUP OPTIONS" -- MESON TEST ARGS...
# Configures, optionally builds every target, runs meson test, and adds the
# outcome to the totals. A build that cannot be configured or compiled
# counts as one failure, so it can never pass as "0 failed".
run_build() {
	local label=$1 dir=$2 build_all=$3 setup_opts=$4
	shift 5
	local logdir=$dir/meson-logs log rc=0 build_failed=0 counts
	local ok xfail fail xpass skip timeout

	echo
	echo "==================== $label ===================="
	# shellcheck disable=SC2086 # setup_opts is a list of words
	if ! configure "$dir" $setup_opts; then
		build_failed=1
	elif ((build_all)) && ! ninja -C "$dir"; then
		build_failed=1
	fi
	# meson names the log testlog-<wrapper>.json when --wrapper is given;
	# clear them all so a stale one is never read as this run's result.
	rm -f "$logdir"/testlog*.json
	if [[ -f "$dir/build.ninja" ]]; then
		meson test -C "$dir" --print-errorlogs "$@" || rc=$?
	fi
	log=$(find "$logdir" -maxdepth 1 -name 'testlog*.json' 2>/dev/null | head -n 1)
	if [[ -n "$log" ]]; then
		counts=$(count_results "$log") || counts="0 0 1 0 0 0"
	elif ((rc == 0 && !build_failed)); then
		counts="0 0 0 0 0 0"    # nothing selected ("No suitable tests")
	else
		build_failed=1
		counts="0 0 0 0 0 0"
	fi
	read -r ok xfail fail xpass skip timeout <<<"$counts"
	fail=$((fail + build_failed))
	if ((rc != 0 || build_failed || fail || xpass || timeout)); then
		any_error=1
	fi
	tot_ok=$((tot_ok + ok)) tot_xfail=$((tot_xfail + xfail))
	tot_fail=$((tot_fail + fail)) tot_xpass=$((tot_xpass + xpass))
	tot_skip=$((tot_skip + skip)) tot_timeout=$((tot_timeout + timeout))
	labels+=("$label")
	if ((build_failed)); then
		results+=("BUILD FAILED; $((ok + xfail)) passed, $((fail + xpass + timeout)) failed, $skip skipped")
	else
		results+=("$((ok + xfail)) passed, $((fail + xpass + timeout)) failed, $skip skipped")
	fi
}

suite_args=()
for s in "${ASAN_SUITES[@]}"; do
	suite_args+=(--suite "$s")
done

run_build "build-ci (-Werror, all suites)" build-ci 1 "-Dwerror_ci=true" -- "$@"

ASAN_OPTIONS=detect_leaks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	run_build "build-asan (ASan+UBSan: ${ASAN_SUITES[*]})" build-asan 0 \
	"-Db_sanitize=address,undefined -Db_lundef=false" -- \
	"${sanitizer_wrap[@]}" "${suite_args[@]}" "$@"

RINGCHAT_TSAN=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	run_build "build-tsan (TSan: ${TSAN_TESTS[*]})" build-tsan 0 \
	"-Db_sanitize=thread" -- \
	"${sanitizer_wrap[@]}" "$@" "${TSAN_TESTS[@]}"

# libFuzzer targets (tests/fuzz): a short run of each from the checked-in
# seeds, one meson test per target; clang builds them. tests/fuzz/run.sh runs
# them longer. Skipped when a test name was given.
if (($# == 0)) && command -v clang >/dev/null; then
	CC=clang RINGCHAT_FUZZ_SECONDS=${RINGCHAT_FUZZ_SECONDS:-40} \
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run_build "build-fuzz (libFuzzer, ${RINGCHAT_FUZZ_SECONDS:-40} s per target)" \
		build-fuzz 0 \
		"-Dfuzz=true -Dtests=false -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link" \
		-- "${sanitizer_wrap[@]}" --suite fuzz
fi

passed=$((tot_ok + tot_xfail))
failed=$((tot_fail + tot_xpass + tot_timeout))

echo
echo "==================== summary ===================="
for i in "${!labels[@]}"; do
	printf '%-48s %s\n' "${labels[$i]}" "${results[$i]}"
done
echo
echo "Combined over all builds (a build that failed to compile counts as one Fail):"
printf '%-20s%s\n' "Ok:" "$tot_ok" "Expected Fail:" "$tot_xfail" "Fail:" "$tot_fail" \
	"Unexpected Pass:" "$tot_xpass" "Skipped:" "$tot_skip" "Timeout:" "$tot_timeout"
echo
echo "$passed passed, $failed failed"

if ((any_error || failed)); then
	exit 1
fi
exit 0
