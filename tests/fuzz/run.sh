#!/usr/bin/env bash
# run.sh [SECONDS] [TARGET...] - builds the libFuzzer targets of tests/fuzz
# with clang (-fsanitize=fuzzer,address,undefined) into build-fuzz/ and runs
# each for SECONDS (default: $RINGCHAT_FUZZ_SECONDS, else 60).
# Targets: frame request dispatch (default: all).
#
# A crash leaves its input in build-fuzz/tests/fuzz/work-<target>/crashes/;
# replay it with build-fuzz/tests/fuzz/fuzz_<target> <file>, then make it a
# unit test and fix the code.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT"
secs=${1:-${RINGCHAT_FUZZ_SECONDS:-60}}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(frame request dispatch)

if [[ ! -f build-fuzz/build.ninja ]]; then
	CC=${FUZZ_CC:-clang} meson setup build-fuzz -Dfuzz=true -Dtests=false \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
for t in "${targets[@]}"; do
	ninja -C build-fuzz "tests/fuzz/fuzz_$t" >/dev/null
done

# GCC-built sanitizer runtimes need this on some kernels; clang's do not
# mind it (see scripts/test.sh).
wrap=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
	wrap=(setarch "$(uname -m)" -R)
fi
rc=0
for t in "${targets[@]}"; do
	echo "== fuzz_$t: $secs s"
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		"${wrap[@]}" bash tests/fuzz/fuzz-one.sh "build-fuzz/tests/fuzz/fuzz_$t" \
		"tests/fuzz/corpus/$t" "build-fuzz/tests/fuzz/work-$t" "$secs" || rc=1
done
exit $rc
