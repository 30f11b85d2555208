#!/usr/bin/env bash
# cpu-window.sh - CPU of every process and thread of a cluster.sh run over
# the bench's measured interval, from the run's samples.
#
#   tests/perf/cpu-window.sh OUT_DIR
#
# Reads OUT_DIR/samples.txt (cluster.sh's sampler: time label tid comm
# cpu_ns run-queue-wait_ns times-scheduled-in, from
# /proc/PID/task/TID/schedstat), OUT_DIR/bench.stamped (the bench's stderr,
# each line with its arrival time) and OUT_DIR/bench.txt (the delivered
# count of the measured interval). The interval: the first load progress
# line ("[   5.0s] sent OK ...", not a set-up one) came 5.0 s after the
# load started, measuring began WARMUP (1) s after that and lasted
# DURATION (10) s (both from the environment). Values at its ends are
# interpolated between the samples (4 a second). Prints, per process and
# per thread: CPU seconds, CPU us per delivery, times scheduled in per
# delivery and run-queue wait; then nodes + Redis and nodes + Redis +
# MariaDB in CPU seconds, deliveries per CPU-second and us per delivery.
# Threads of a node that share a name (an older build names none) are
# shown as NAME.1, NAME.2, ... in creation order.
# Exit status 1 without a progress line or deliveries.
set -euo pipefail

OUT=${1:?usage: cpu-window.sh OUT_DIR}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-10}

read -r T_PROG T_REL < <(awk '$2 ~ /^\[/ && / sent OK / { t = $0; sub(/^[^[]*\[ */, "", t); sub(/s\].*/, "", t); print $1, t; exit }' "$OUT/bench.stamped") || true
DELIVERED=$(awk '/delivered [0-9]+ \(/ { for (i = 1; i <= NF; i++) if ($i == "delivered") { print $(i + 1); exit } }' "$OUT/bench.txt")
if [[ -z ${T_PROG:-} || -z $DELIVERED ]]; then
echo "cpu-window: no load progress line (--duration under 5 s?) or no deliveries in $OUT" >&2
exit 1
fi
T0=$(awk -v a="$T_PROG" -v b="$T_REL" -v w="$WARMUP" 'BEGIN { printf "%.6f", a - b + w }')
awk -v t0="$T0" -v dur="$DURATION" -v dlv="$DELIVERED" '
# the value of series val of thread key at time t, linear between samples
function at(val, key, t,   i, n, x0, x1) {
	n = cnt[key]
	if (t <= ts[key, 1]) return val[key, 1]
	for (i = 2; i <= n; i++)
		if (ts[key, i] >= t) {
			x0 = ts[key, i - 1]; x1 = ts[key, i]
			return val[key, i - 1] + (val[key, i] - val[key, i - 1]) * (t - x0) / (x1 - x0)
		}
	return val[key, n]
}
{
	key = $2 " " $3; n = ++cnt[key]
	ts[key, n] = $1; comm[key] = $4
	v[key, n] = $5; w[key, n] = $6; s[key, n] = $7
	label[key] = $2
}
END {
	t1 = t0 + dur
	# A node whose threads are not named (an older build) shows them as
	# ringchatd.1, .2, ... in the order they were created (by tid).
	for (key in cnt) if (label[key] ~ /^node/) { split(key, kk, " "); same[label[key] " " comm[key]] = same[label[key] " " comm[key]] " " kk[2] }
	for (g in same) {
		m = split(substr(same[g], 2), tids, " ")
		if (m < 2) continue
		asort(tids, tids, "@val_num_asc")
		split(g, gg, " ")
		for (i = 1; i <= m; i++) comm[gg[1] " " tids[i]] = gg[2] "." i
	}
	for (key in cnt) {
		c = at(v, key, t1) - at(v, key, t0)
		wt = at(w, key, t1) - at(w, key, t0)
		sl = at(s, key, t1) - at(s, key, t0)
		g = label[key] " " comm[key]
		tc[g] += c; tw[g] += wt; tsl[g] += sl
		pc[label[key]] += c; pw[label[key]] += wt; psl[label[key]] += sl
	}
	printf "measured interval %.1f s, %d deliveries\n\n", dur, dlv
	printf "%-8s %-16s %8s %10s %12s %10s\n", "process", "thread", "cpu s", "us/dlv", "sched-in/dlv", "rq wait s"
	PROCINFO["sorted_in"] = "@ind_str_asc"
	for (p in pc) {
		printf "%-8s %-16s %8.2f %10.2f %12.3f %10.2f\n", p, "(all)", pc[p] / 1e9, pc[p] / 1e3 / dlv, psl[p] / dlv, pw[p] / 1e9
		for (g in tc) {
			split(g, a, " ")
			if (a[1] == p && tc[g] / 1e9 >= 0.01)
				printf "%-8s %-16s %8.2f %10.2f %12.3f %10.2f\n", "", a[2], tc[g] / 1e9, tc[g] / 1e3 / dlv, tsl[g] / dlv, tw[g] / 1e9
		}
	}
	for (p in pc) if (p ~ /^node/) nodes += pc[p]
	printf "\nnodes + redis: %.2f cpu s, %.0f deliveries per cpu-second, %.2f us per delivery\n",
		(nodes + pc["redis"]) / 1e9, dlv / ((nodes + pc["redis"]) / 1e9), (nodes + pc["redis"]) / 1e3 / dlv
	printf "nodes + redis + mariadb: %.2f cpu s, %.0f deliveries per cpu-second, %.2f us per delivery\n",
		(nodes + pc["redis"] + pc["mariadb"]) / 1e9, dlv / ((nodes + pc["redis"] + pc["mariadb"]) / 1e9),
		(nodes + pc["redis"] + pc["mariadb"]) / 1e3 / dlv
}' "$OUT/samples.txt"
