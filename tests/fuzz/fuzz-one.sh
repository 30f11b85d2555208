#!/usr/bin/env bash
# fuzz-one.sh EXE SEEDS WORK [SECONDS] - runs one libFuzzer target for
# SECONDS (else $RINGCHAT_FUZZ_SECONDS, else 40) on the checked-in seeds
# SEEDS (read only) and the scratch corpus WORK (created; new inputs go
# there). Exits non-zero, with the reproducer path in the output, when the
# target crashes, leaks or trips a sanitizer.
set -euo pipefail
exe=$1 seeds=$2 work=$3
secs=${4:-${RINGCHAT_FUZZ_SECONDS:-40}}
mkdir -p "$work" "$work/crashes"
exec "$exe" -max_total_time="$secs" -timeout=10 -error_exitcode=1 -timeout_exitcode=1 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$work/crashes/" "$work" "$seeds"
