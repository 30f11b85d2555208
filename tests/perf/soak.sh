#!/usr/bin/env bash
# soak.sh - one node under minutes of mixed load: do its memory and its
# descriptors stay flat?
#
#   tests/perf/soak.sh [-b BUILD_DIR] [-d SECONDS] [-i SAMPLE_SECONDS] [-n "NODE FLAGS"]
#
#   tests/perf/soak.sh -b build-ci                # 600 s of load, a sample every 5 s
#   tests/perf/soak.sh -b build-ci -d 120 -i 10   # a short check of the script
#
# Starts the private services (left running), makes a fresh database
# ringchat_bench from sql/schema.sql and one node on it (--durability
# stored and the defaults, plus what lib.sh adds: --hash-cost 1 --workers 2
# and no per-address limits; then the -n flags). Then:
#
#  1. priming: one small round of every load below, one after the other.
#     The node opens its MariaDB and Redis links on first use (one per
#     worker, the commit writer, the cluster bus...), so only after this
#     are its own descriptors all open. Wait for idle (no client
#     connection, the fd count steady), take the BASELINE: the fd table.
#  2. the load, for SECONDS (-d, 600): all of these at the same time
#     - chat: `ringchat-bench chat --users 1000 --rate 2000 --tick-us 1000`,
#       open loop for the whole time (--duration SECONDS);
#     - rounds, one after the other in a loop, each with its own --prefix
#       so the database grows as it would with new users:
#       group (4 groups of 25, open loop 200 msgs/s, 10 s), then offline
#       (2,000 messages stored, then drained at the recipient's login);
#     - rounds in a second loop: login (a storm: 200 new users, 50 logins
#       in flight; the connections close at the end, so every user logs in
#       and out), then connections (2,000 connections that PING and close);
#     - kick cycles (ringchat-cli, as the bench never logs one user in
#       twice): 10 users in 5 friend pairs each log in, log in again on a
#       second connection, which kicks the first (PUSH_KICKED, presence to
#       the friend), and LOGOUT there (the token revoked).
#     The loops start no new round once the chat bench has finished.
#  3. the end: wait for idle again (ringchat_connections 0, fd count
#     steady for 3 s), take the END snapshot.
#
# Meanwhile a sampler writes OUT/samples.tsv every SAMPLE_SECONDS (-i, 5):
# the node's VmRSS and VmHWM (/proc/PID/status, KiB), open descriptors
# (/proc/PID/fd), threads, and counters of its /metrics. /proc is read
# before /metrics is fetched, so the admin connection is not counted.
#
# The verdict (OUT/verdict.txt) and the exit status:
#  - fds: the node's whole descriptor table at END has exactly as many
#    entries as at BASELINE (both idle, after priming). fds.txt lists both
#    tables by kind (client TCP, admin TCP, listeners, unix sockets to the
#    services, eventfd, io_uring, files...) to show where a difference
#    is. Any difference fails.
#  - rounds: every bench round and kick cycle must exit 0 with no errors,
#    no lost connection, every message delivered (chat and group:
#    "delivered N of N"; offline: every stored message pushed; connections:
#    0 failed; login: no probe failure; kick: every first session got
#    PUSH_KICKED, every second one logged out). Any failure fails. One
#    exception is followed up rather than failed: the offline bench does
#    not retry its drain LOGIN when the node sheds it (RATE_LIMITED, a
#    login storm in flight), so the script logs that recipient in with
#    ringchat-cli instead and requires every stored message pushed.
#  - RSS is judged, not merely compared: glibc keeps freed memory in its
#    arenas (the node keeps 64 MiB before trimming), so RSS moves with the
#    mix of rounds running at a sample. WARM is the RSS at the end of the
#    warm-up (the first 60 s of load; SECONDS/3 for runs under 180 s). The
#    load samples after it are split into four quarters of time; the soak
#    fails on RSS only when the medians of the quarters rise in every
#    quarter AND the last quarter's median is over 20 % above WARM: a
#    steady climb, not one peak of the allocator. The growth of RSS from
#    WARM to the end of the load and to the idle END is printed in MiB and
#    % either way.
#  - the node must be alive at the end.
#
# Keeps node.log, samples.tsv, samples-minute.md (a sample a minute, as
# docs/benchmarks.md quotes it), rounds.tsv (one line per round), every
# round's output in rounds/, fds.txt, metrics-baseline.txt,
# metrics-end.txt and verdict.txt in tests/perf/out/soak-<time>/.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

DURATION=600
INTERVAL=5
NODE_FLAGS=()
while getopts "b:d:i:n:h" opt; do
	case $opt in
	b) BUILD=$(cd "$OPTARG" && pwd -P) ;;
	d) DURATION=$OPTARG ;;
	i) INTERVAL=$OPTARG ;;
	n) read -r -a NODE_FLAGS <<<"$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || usage
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 30 ]] || perf_die "-d SECONDS: 30 or more, not '$DURATION'"
[[ $INTERVAL =~ ^[0-9]+$ && $INTERVAL -ge 1 ]] || perf_die "-i SECONDS: 1 or more, not '$INTERVAL'"
WARMUP=60
((DURATION >= 180)) || WARMUP=$((DURATION / 3))

perf_check_build
perf_services_start
OUT=$PERF_DIR/out/soak-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/rounds" "$OUT/kick"
BENCH=$BUILD/src/ringchat-bench
CLI=$BUILD/src/ringchat-cli
[[ -x $CLI ]] || perf_die "no $CLI in $BUILD"

DB=ringchat_bench
mysql_root() {
	mariadb --no-defaults --socket="$RINGCHAT_MYSQL_SOCKET" --user=root "$@"
}
mysql_root -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4" ||
	perf_die "cannot make the database $DB"
mysql_root "$DB" <"$ROOT/sql/schema.sql" || perf_die "cannot apply sql/schema.sql to $DB"

# The node routes through Redis (the default cluster_route) as node 1: a
# lease left by a node killed earlier keeps the id taken for node_ttl_ms,
# and an old inbox would be read first.
rcli() {
	redis-cli -s "$RINGCHAT_REDIS_SOCKET" "$@"
}
for ((w = 0; w < 80; w++)); do
	[[ $(rcli exists rc:node:1) == 0 ]] && break
	sleep 0.1
done
rcli del rc:inbox:1 >/dev/null

BG=() # background jobs of this script: the sampler, the load
stop_all() {
	local p
	touch "$OUT/stop" 2>/dev/null || true
	for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
	perf_node_stop
}
trap stop_all EXIT

perf_node_start "$OUT" --durability stored --mysql-db "$DB" "${NODE_FLAGS[@]}"
ADMIN_PORT=$(sed -n 's/.*info admin listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/node.log" | head -n 1)
[[ -n $ADMIN_PORT ]] || perf_die "the node logged no admin port (see $OUT/node.log)"
echo "node: $(perf_node_bin) --durability stored ${NODE_FLAGS[*]} (pid $NODE_PID, port $NODE_PORT)" |
	tee "$OUT/command.txt"
T_START=$EPOCHSECONDS

# ---- sampling ---------------------------------------------------------

# The /metrics counters of samples.tsv, in column order.
METRICS=(connections conn_accepted_total conn_closed_total logins_total kicks_total
	msgs_accepted_total msgs_pushed_total commit_rows_total mysql_errors_total
	redis_errors_total 'responses_total{status="INTERNAL"}')

metrics_get() { # FILE: the node's /metrics into FILE
	curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$1" 2>/dev/null || : >"$1"
}

metric() { # FILE NAME: one value of a metrics file (without ringchat_), - when absent
	awk -v n="ringchat_$2" '$1 == n { v = $2 } END { print v == "" ? "-" : v }' "$1"
}

fd_count() {
	local fds=(/proc/"$NODE_PID"/fd/*)
	[[ -e ${fds[0]} ]] && echo "${#fds[@]}" || echo 0
}

# One line of samples.tsv: seconds since the node started, the phase
# (from OUT/phase), VmRSS, VmHWM (KiB), fds, threads, then METRICS.
SAMPLE_HEAD="t_s	phase	rss_kib	hwm_kib	fds	threads	$(printf '%s\t' "${METRICS[@]}" | sed 's/\t$//; s/responses_total{status="INTERNAL"}/internal_total/')"
sample_line() {
	local rss=- hwm=- thr=- fds m line k v phase
	phase=$(cat "$OUT/phase" 2>/dev/null || echo -)
	while read -r k v _; do
		case $k in
		VmRSS:) rss=$v ;;
		VmHWM:) hwm=$v ;;
		Threads:) thr=$v ;;
		esac
	done <"/proc/$NODE_PID/status" 2>/dev/null || true
	fds=$(fd_count)
	metrics_get "$OUT/.metrics.tmp"
	line="$((EPOCHSECONDS - T_START))	$phase	$rss	$hwm	$fds	$thr"
	for m in "${METRICS[@]}"; do line+="	$(metric "$OUT/.metrics.tmp" "$m")"; done
	echo "$line"
}

sampler() {
	set +e
	while [[ ! -e $OUT/stop-sampler ]]; do
		sample_line >>"$OUT/samples.tsv"
		sleep "$INTERVAL"
	done
}

# FILE: the node's fd table, one "fd kind" a line. Sockets are looked up
# in the node's /proc/PID/net tables by inode: client (accepted on the
# client port), admin (accepted on the admin port), tcp-listen:PORT,
# tcp-out:PORT (connected elsewhere), udp, unix; the rest is the link's
# target with inode numbers dropped (anon_inode:[eventfd], pipe, files).
fd_table() {
	local out=$1 f t
	: >"$out.raw"
	for f in /proc/"$NODE_PID"/fd/*; do
		t=$(readlink "$f" 2>/dev/null) || continue
		echo "${f##*/} $t" >>"$out.raw"
	done
	awk -v cport="$NODE_PORT" -v aport="$ADMIN_PORT" '
		function port(a) { sub(/.*:/, "", a); return strtonum("0x" a) }
		FILENAME ~ /tcp$/ && FNR > 1 {
			lp = port($2); rp = port($3)
			if ($4 == "0A") k = "tcp-listen:" lp
			else if (lp == cport) k = "client"
			else if (lp == aport) k = "admin"
			else k = "tcp-out:" rp
			kind[$10] = k; next
		}
		FILENAME ~ /udp$/ && FNR > 1 { kind[$10] = "udp:" port($2); next }
		FILENAME ~ /unix$/ && FNR > 1 { kind[$7] = "unix"; next }
		FILENAME ~ /raw$/ {
			t = $2
			if (t ~ /^socket:\[/) {
				ino = t; gsub(/[^0-9]/, "", ino)
				t = (ino in kind) ? kind[ino] : "socket(other)"
			} else {
				gsub(/:\[[0-9]+\]$/, "", t)
			}
			print $1, t
		}' "/proc/$NODE_PID/net/tcp" "/proc/$NODE_PID/net/udp" "/proc/$NODE_PID/net/unix" "$out.raw" |
		sort -n >"$out"
	rm -f "$out.raw"
}

# Waits until the node has no client connection and its fd count has not
# moved for 3 s (admin connections of the sampler come and go: the sampler
# is stopped by then). At most LIMIT seconds; 1 when it did not settle.
wait_idle() {
	local limit=$1 i conns last=-1 same=0 n
	for ((i = 0; i < limit * 2; i++)); do
		kill -0 "$NODE_PID" 2>/dev/null || return 1
		metrics_get "$OUT/.metrics.tmp"
		conns=$(metric "$OUT/.metrics.tmp" connections)
		n=$(fd_count)
		if [[ $conns == 0 && $n == "$last" ]]; then
			((++same >= 6)) && return 0
		else
			same=0
		fi
		last=$n
		sleep 0.5
	done
	return 1
}

# ---- the load ---------------------------------------------------------

PASSWORD=soak-password-1
KICK_USERS=10 # 5 friend pairs

# round NAME SCENARIO ARGS...: one bench run; its output in rounds/NAME.txt
# and a line in rounds.tsv: name, exit status, ok or FAIL, the summary.
round() {
	local name=$1 scen=$2 rc=0 f=$OUT/rounds/$1.txt verdict summary
	shift 2
	echo "\$ $BENCH $scen --port $NODE_PORT $*" >"$f"
	"$BENCH" "$scen" --port "$NODE_PORT" "$@" >>"$f" 2>&1 || rc=$?
	read -r verdict summary < <(round_judge "$scen" "$f" "$rc")
	if [[ $scen == offline && $verdict == FAIL ]] && grep -q 'offline: LOGIN: RATE_LIMITED' "$f"; then
		read -r verdict summary < <(offline_follow_up "$f" "$@")
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$((EPOCHSECONDS - T_START))" "$name" "$rc" "$verdict" "$summary" >>"$OUT/rounds.tsv"
}

# round_judge SCENARIO FILE RC: prints "ok|FAIL summary" for one round's output.
round_judge() {
	local scen=$1 f=$2 rc=$3
	awk -v scen="$scen" -v rc="$rc" '
		function num(s, re,   m) { return match(s, re, m) ? m[1] : "" }
		/sent OK .* errors / {
			sent = num($0, "sent OK ([0-9]+)"); err = num($0, "errors ([0-9]+)")
			lost = num($0, "lost connections ([0-9]+)")
		}
		/whole run/ {
			dl = num($0, "delivered ([0-9]+) of"); ex = num($0, "of ([0-9]+)")
			dup = num($0, "duplicates ([0-9]+)"); gaveup = /drain gave up/
		}
		/^login: / { }
		/^  logins / { logins = num($0, "logins ([0-9]+)"); rl = num($0, "RATE_LIMITED ([0-9]+)") }
		/probe failures/ { pf = num($0, "probe failures ([0-9]+)") }
		/^offline: / { msgs = num($0, "offline: ([0-9]+) messages") }
		/drain: LOGIN/ { pushes = num($0, "all ([0-9]+) pushes"); login_ms = num($0, "answered ([0-9.]+) ms") }
		/^connections: / { open = num($0, "([0-9]+) open and answered"); cf = num($0, "([0-9]+) failed") }
		END {
			bad = rc != 0
			if (scen == "chat" || scen == "group") {
				bad = bad || err == "" || err != 0 || lost != 0 || dl != ex || gaveup
				s = sprintf("sent_ok=%s errors=%s lost_conns=%s delivered %s of %s dup=%s%s",
					sent, err, lost, dl, ex, dup, gaveup ? " drain-gave-up" : "")
			} else if (scen == "login") {
				bad = bad || logins == "" || pf != ""
				s = sprintf("logins=%s rate_limited=%s probe_failures=%d", logins, rl, pf)
			} else if (scen == "offline") {
				bad = bad || pushes == "" || pushes != msgs
				s = sprintf("pushed %s of %s login_ms=%s", pushes, msgs, login_ms)
			} else if (scen == "connections") {
				bad = bad || open == "" || cf != 0
				s = sprintf("open=%s failed=%s", open, cf)
			}
			print (bad ? "FAIL" : "ok"), s
		}' "$f"
}

# offline_follow_up FILE BENCH_ARGS...: the offline bench's drain LOGIN was
# shed (RATE_LIMITED "node busy with logins": a login storm or a bench's
# set-up was in flight) and the bench does not retry it. The messages
# are stored all the same: the recipient (PREFIX_1) logs in with the cli,
# retried like any shed login, and must get every one of them pushed.
# Prints "ok|FAIL summary" as round_judge does.
offline_follow_up() {
	local f=$1 prefix="" want i j
	shift
	for ((i = 1; i < $#; i++)); do
		[[ ${!i} == --prefix ]] && { j=$((i + 1)); prefix=${!j}; }
	done
	want=$(sed -n 's/.*offline: storing \([0-9]*\) messages.*/\1/p' "$f")
	cli_start "$f.drain"
	if cli_do "/login ${prefix}_1 bench-password-1" "logged in as"; then
		echo "/wait 50000 $want msg" >&"$CLI_FD"
		if cli_do "/ping" "pong:"; then
			echo "ok drain LOGIN shed (RATE_LIMITED, not retried by the bench); the cli's login got $want of $want pushed"
		else
			echo "FAIL drain LOGIN shed; the cli's login: $(grep '^! waited' "$f.drain" | tail -n 1)"
		fi
	else
		echo "FAIL drain LOGIN shed; the cli's login failed too (see $f.drain)"
	fi
	cli_end
}

# A ringchat-cli session driven one command at a time: the cli reads its
# commands from a fifo and executes each line as it comes, so a login the
# node sheds (RATE_LIMITED "node busy with logins", which the bench retries
# too) can be sent again. cli_start FILE sets CLI_FD, CLI_OUT, CLI_PID and
# CLI_SEEN (output lines already read) in the calling shell.
cli_start() {
	CLI_OUT=$1
	CLI_SEEN=0
	rm -f "$1.in"
	mkfifo "$1.in"
	: >"$1"
	"$CLI" --port "$NODE_PORT" --timeout 60000 >>"$1" 2>&1 <"$1.in" &
	CLI_PID=$!
	exec {CLI_FD}>"$1.in"
}

# cli_do CMD TEXT: sends CMD and waits (60 s at most) for an output line
# holding TEXT (0), or an error line "! ..." (1). An error that is
# RATE_LIMITED sends CMD again after 300 ms, 100 times at most.
cli_do() {
	local cmd=$1 text=$2 try w i lines=() shed
	for ((try = 0; try < 100; try++)); do
		echo "$cmd" >&"$CLI_FD"
		shed=0
		for ((w = 0; w < 1200; w++)); do
			mapfile -t -s "$CLI_SEEN" lines <"$CLI_OUT"
			for ((i = 0; i < ${#lines[@]}; i++)); do
				if [[ ${lines[i]} == *"$text"* ]]; then
					CLI_SEEN=$((CLI_SEEN + i + 1))
					return 0
				elif [[ ${lines[i]} == "! "*RATE_LIMITED* ]]; then
					CLI_SEEN=$((CLI_SEEN + i + 1))
					shed=1
					break 2
				elif [[ ${lines[i]} == "! "* ]]; then
					CLI_SEEN=$((CLI_SEEN + i + 1))
					return 1
				fi
			done
			sleep 0.05
		done
		((shed)) || return 1
		sleep 0.3
	done
	return 1
}

# Ends the session: the cli gets EOF, runs what is left and exits.
cli_end() {
	exec {CLI_FD}>&-
	wait "$CLI_PID" 2>/dev/null || true
	rm -f "$CLI_OUT.in"
}

# kick_setup PREFIX: signs up the kick users PREFIX_0..N-1 and makes 2i and
# 2i+1 friends. Sessions in OUT/kick/setup-PREFIX-*.
kick_setup() {
	local p=$1 i ids=() line ok=0
	mkdir -p "$OUT/kick"
	cli_start "$OUT/kick/setup-$p-signup.txt"
	for ((i = 0; i < KICK_USERS; i++)); do
		cli_do "/signup ${p}_$i $PASSWORD" "signed up" || break
		line=$(grep "^signed up ${p}_$i:" "$CLI_OUT")
		ids+=("$(sed -n 's/.*user_id \([0-9]*\).*/\1/p' <<<"$line")")
	done
	cli_end
	((${#ids[@]} == KICK_USERS)) || return 1
	for ((i = 0; i < KICK_USERS; i += 2)); do
		ok=0
		cli_start "$OUT/kick/setup-$p-$i.txt"
		cli_do "/login ${p}_$i $PASSWORD" "logged in as" &&
			cli_do "/add ${ids[i + 1]}" "friend request sent" &&
			cli_do "/logout" "logged out" &&
			cli_do "/login ${p}_$((i + 1)) $PASSWORD" "logged in as" &&
			cli_do "/accept ${ids[i]}" "are now friends" && ok=1
		cli_end
		((ok)) || return 1
	done
}

# kick_setup, with a line in rounds.tsv when it fails; 1 then.
kick_prepare() {
	kick_setup "$1" && return 0
	printf '%s\tkick-setup-%s\t1\tFAIL\tsignups or friendships failed\n' "$((EPOCHSECONDS - T_START))" "$1" >>"$OUT/rounds.tsv"
	return 1
}

# kick_cycle PREFIX N: every kick user logs in on connection A; once all
# are in, each logs in again on connection B, which kicks A (A must see
# PUSH_KICKED, A's friend a presence change), and logs out there (the
# token revoked, the user offline). A line in rounds.tsv.
kick_cycle() {
	local p=$1 n=$2 d=$OUT/kick/$2 i w fails=0 in pids=()
	mkdir -p "$d"
	for ((i = 0; i < KICK_USERS; i++)); do
		(
			cli_start "$d/a$i.txt"
			if cli_do "/login ${p}_$i $PASSWORD" "logged in as"; then
				touch "$d/a$i.in-ok"
				cli_do "/wait 60000 1 kicked" "kicked:" && touch "$d/a$i.ok"
			fi
			touch "$d/a$i.done"
			cli_end
		) &
		pids+=($!)
	done
	# B may only log in once A has: else B is the one kicked.
	for ((w = 0; w < 1200; w++)); do
		in=0
		for ((i = 0; i < KICK_USERS; i++)); do
			[[ -e $d/a$i.in-ok || -e $d/a$i.done ]] && ((++in))
		done
		((in == KICK_USERS)) && break
		sleep 0.1
	done
	for ((i = 0; i < KICK_USERS; i++)); do
		(
			cli_start "$d/b$i.txt"
			cli_do "/login ${p}_$i $PASSWORD" "logged in as" &&
				cli_do "/logout" "logged out" && touch "$d/b$i.ok"
			cli_end
		) &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	for ((i = 0; i < KICK_USERS; i++)); do
		[[ -e $d/a$i.ok ]] || ((++fails))
		[[ -e $d/b$i.ok ]] || ((++fails))
	done
	printf '%s\tkick-%s\t0\t%s\t%s\n' "$((EPOCHSECONDS - T_START))" "$n" \
		"$( ((fails == 0)) && echo ok || echo FAIL)" \
		"$KICK_USERS users logged in twice and out; $fails of $((2 * KICK_USERS)) sessions failed" \
		>>"$OUT/rounds.tsv"
}

running() { [[ ! -e $OUT/stop ]]; }

loop_group_offline() {
	local n=0
	set +e
	while running; do
		((++n))
		round "group-$n" group --groups 4 --members 25 --rate 200 --tick-us 1000 --duration 10 --prefix "g$n"
		running || break
		round "offline-$n" offline --messages 2000 --window 64 --prefix "o$n"
		sleep 5
	done
}

loop_login_connections() {
	local n=0
	set +e
	while running; do
		((++n))
		round "login-$n" login --users 200 --connections 50 --prefix "l$n"
		running || break
		round "connections-$n" connections --connections 2000 --duration 3
		sleep 5
	done
}

loop_kick() {
	local n=0
	set +e
	kick_prepare k || return
	while running; do
		((++n))
		kick_cycle k "$n"
		sleep 2
	done
}

printf 't_s\tround\trc\tverdict\tsummary\n' >"$OUT/rounds.tsv"
echo "$SAMPLE_HEAD" >"$OUT/samples.tsv"
echo start >"$OUT/phase"
sample_line >>"$OUT/samples.tsv"
START_FDS=$(fd_count)
sampler &
BG+=($!)

# 1. priming: a small round of everything, for the links opened on first use.
echo prime >"$OUT/phase"
perf_note "priming: one small round of each load"
round prime-chat chat --users 20 --rate 200 --duration 2 --prefix pc
round prime-group group --groups 2 --members 5 --rate 50 --duration 2 --prefix pg
round prime-login login --users 20 --connections 10 --prefix pl
round prime-offline offline --messages 100 --prefix po
round prime-connections connections --connections 50 --duration 1
kick_prepare kp && kick_cycle kp 0

echo idle >"$OUT/phase"
wait_idle 120 || perf_note "the node did not go idle after priming (see samples.tsv)"
touch "$OUT/stop-sampler" # the baseline's fd table without a sampler's admin connection
wait "${BG[0]}" 2>/dev/null || true
BG=()
wait_idle 30 || true
fd_table "$OUT/fds-baseline.txt"
BASE_FDS=$(wc -l <"$OUT/fds-baseline.txt")
metrics_get "$OUT/metrics-baseline.txt"
rm -f "$OUT/stop-sampler"
sample_line | sed 's/\tidle\t/\tbaseline\t/' >>"$OUT/samples.tsv"
sampler &
BG+=($!)
perf_note "baseline: $BASE_FDS descriptors; load for $DURATION s"

# 2. the load.
echo load >"$OUT/phase"
T_LOAD=$((EPOCHSECONDS - T_START))
CHAT_ARGS=(--users 1000 --rate 2000 --tick-us 1000 --duration "$DURATION" --prefix chat)
echo "\$ $BENCH chat --port $NODE_PORT ${CHAT_ARGS[*]}" | tee -a "$OUT/command.txt" >"$OUT/rounds/chat.txt"
"$BENCH" chat --port "$NODE_PORT" "${CHAT_ARGS[@]}" >>"$OUT/rounds/chat.txt" 2>&1 &
CHAT_PID=$!
BG+=("$CHAT_PID")
loop_group_offline &
L1=$!
loop_login_connections &
L2=$!
loop_kick &
L3=$!
BG+=("$L1" "$L2" "$L3")
# The chat bench ends by itself (set-up + warm-up + DURATION + drain); a
# hung one is stopped 300 s after that, and counts as failed.
for ((w = 0; w < DURATION + 300; w++)); do
	kill -0 "$CHAT_PID" 2>/dev/null || break
	kill -0 "$NODE_PID" 2>/dev/null || break
	sleep 1
done
if kill -0 "$CHAT_PID" 2>/dev/null; then
	perf_note "the chat bench did not end: stopping it"
	kill "$CHAT_PID" 2>/dev/null || true
fi
CHAT_RC=0
wait "$CHAT_PID" || CHAT_RC=$?
read -r verdict summary < <(round_judge chat "$OUT/rounds/chat.txt" "$CHAT_RC")
printf '%s\tchat\t%s\t%s\t%s\n' "$((EPOCHSECONDS - T_START))" "$CHAT_RC" "$verdict" "$summary" >>"$OUT/rounds.tsv"
touch "$OUT/stop"
perf_note "load over; waiting for the rounds in progress"
wait "$L1" "$L2" "$L3" 2>/dev/null || true
T_LOAD_END=$((EPOCHSECONDS - T_START))
echo drain >"$OUT/phase"

# 3. the end.
NODE_ALIVE=1
kill -0 "$NODE_PID" 2>/dev/null || NODE_ALIVE=0
IDLE=1
wait_idle 180 || IDLE=0
touch "$OUT/stop-sampler"
wait "${BG[0]}" 2>/dev/null || true
BG=()
wait_idle 30 || true
if ((NODE_ALIVE)); then
	fd_table "$OUT/fds-end.txt"
	metrics_get "$OUT/metrics-end.txt"
	sample_line | sed 's/\tdrain\t/\tend\t/' >>"$OUT/samples.tsv"
else
	: >"$OUT/fds-end.txt"
	: >"$OUT/metrics-end.txt"
fi
END_FDS=$(wc -l <"$OUT/fds-end.txt")

# ---- the verdict ------------------------------------------------------

kinds() { awk '{ n[$2]++ } END { for (k in n) printf "%s %d\n", k, n[k] }' "$1" | LC_ALL=C sort; }
{
	echo "baseline (idle after priming) and end (idle after the load): descriptors by kind"
	LC_ALL=C join -a1 -a2 -e 0 -o 0,1.2,2.2 <(kinds "$OUT/fds-baseline.txt") <(kinds "$OUT/fds-end.txt") |
		awk 'BEGIN { printf "  %-28s %8s %8s\n", "kind", "baseline", "end" }
			{ printf "  %-28s %8d %8d%s\n", $1, $2, $3, $2 != $3 ? "   <--" : "" }'
	echo
	echo "baseline table:"
	sed 's/^/  /' "$OUT/fds-baseline.txt"
	echo "end table:"
	sed 's/^/  /' "$OUT/fds-end.txt"
} >"$OUT/fds.txt"

# RSS: WARM, the quarters' medians, the end of the load, the idle end.
RSS_REPORT=$(awk -F'\t' -v t0="$T_LOAD" -v t1="$T_LOAD_END" -v warm="$WARMUP" '
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	NR == 1 || $3 == "-" { next }
	$2 == "baseline" { base = $3 }
	$2 == "end" { endr = $3; endh = $4 }
	$2 == "load" && $1 >= t0 + warm {
		if (w == "") { w = $3; wt = $1 }
		n++; t[n] = $1; r[n] = $3; last = $3; hwm = $4
	}
	END {
		if (n < 4 || w == "") { print "samples 0"; exit }
		span = t[n] - t[1]
		for (i = 1; i <= n; i++) {
			q = span > 0 ? int(4 * (t[i] - t[1]) / span) + 1 : 1
			if (q > 4) q = 4
			c[q]++; v[q, c[q]] = r[i]
		}
		rising = 1
		for (q = 1; q <= 4; q++) {
			delete a; for (i = 1; i <= c[q]; i++) a[i] = v[q, i]
			med[q] = c[q] ? median(a, c[q]) : 0
			if (q > 1 && !(med[q] > med[q - 1])) rising = 0
		}
		leak = rising && med[4] > 1.2 * w
		printf "samples %d\nbase %d\nwarm %d\nwarm_t %d\nq %d %d %d %d\nload_end %d\nend %d\nhwm %d\nend_hwm %d\nrising %d\nleak %d\n",
			n, base, w, wt - t0, med[1], med[2], med[3], med[4], last, endr, hwm, endh, rising, leak
	}' "$OUT/samples.tsv")
rv() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' <<<"$RSS_REPORT"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
growth() { # FROM TO (KiB): "+X.X MiB (+Y.Y %)"
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f MiB (%+.1f %%)", (b - a) / 1024, (a > 0 ? 100 * (b - a) / a : 0) }'
}

# The per-minute table of docs/benchmarks.md.
awk -F'\t' -v t0="$T_LOAD" '
	NR == 1 { next }
	{ rel = $1 - t0 }
	$2 == "baseline" || $2 == "end" || ($2 == "load" && rel >= next_min) || ($2 == "drain" && !drain_done) {
		if ($2 == "load") next_min = (int(rel / 60) + 1) * 60
		if ($2 == "drain") drain_done = 1
		label = $2 == "load" || $2 == "drain" ? sprintf("%d:%02d", rel / 60, rel % 60) : $2
		printf "| %s | %s | %.1f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s |\n", label, $2,
			$3 / 1024, $4 / 1024, $5, $6, $7, $10, $11, $12, $14, $15, $16, $17
	}' "$OUT/samples.tsv" >"$OUT/.minute.body"
{
	echo "| t (load) | phase | RSS MiB | HWM MiB | fds | threads | connections | logins | kicks | msgs accepted | commit rows | mysql / redis errors, INTERNAL |"
	echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	cat "$OUT/.minute.body"
} >"$OUT/samples-minute.md"
rm -f "$OUT/.minute.body" "$OUT/.metrics.tmp"

FAIL=0
{
	echo "soak: $DURATION s of load (chat at 2000 msgs/s throughout, rounds of group + offline," \
		"login + connections, kick cycles), samples every $INTERVAL s; load from t=$T_LOAD s to t=$T_LOAD_END s"
	echo
	if ((NODE_ALIVE)); then
		echo "node: alive at the end"
	else
		echo "node: DIED during the soak (see node.log)"
		FAIL=1
	fi
	((IDLE)) || echo "node: did not reach 0 connections with a steady fd count within 180 s of the load's end"
	echo
	if ((NODE_ALIVE && END_FDS == BASE_FDS)); then
		echo "fds: ok: $BASE_FDS at baseline (idle after priming), $END_FDS at the end (idle)"
	else
		echo "fds: FAIL: $BASE_FDS at baseline (idle after priming), $END_FDS at the end"
		FAIL=1
	fi
	awk '/^  kind/,/^$/' "$OUT/fds.txt" | sed '/^$/d'
	echo "  fresh node, before priming: $START_FDS (its MariaDB and Redis links open on first use); every sample: samples.tsv"
	echo
	if [[ $(rv samples) == 0 ]]; then
		echo "rss: no samples after the warm-up (run longer)"
	else
		read -r q1 q2 q3 q4 <<<"$(rv q)"
		echo "rss: baseline $(mib "$(rv base)") MiB; after the warm-up (t+$(rv warm_t) s of load) $(mib "$(rv warm)") MiB"
		echo "  medians of the four quarters after it: $(mib "$q1") $(mib "$q2") $(mib "$q3") $(mib "$q4") MiB" \
			"($( (($(rv rising))) && echo "rising in every quarter" || echo "not rising in every quarter"))"
		echo "  end of the load: $(mib "$(rv load_end)") MiB, $(growth "$(rv warm)" "$(rv load_end)") since the warm-up"
		echo "  idle end: $(mib "$(rv end)") MiB, $(growth "$(rv warm)" "$(rv end)") since the warm-up;" \
			"VmHWM $(mib "$(rv end_hwm)") MiB"
		if (($(rv leak))); then
			echo "rss: FAIL: a steady climb over 20 % after the warm-up"
			FAIL=1
		else
			echo "rss: ok (fails only on a rise in every quarter ending over 20 % above the warm-up)"
		fi
	fi
	echo
	nr=$(($(wc -l <"$OUT/rounds.tsv") - 1))
	nbad=$(awk -F'\t' 'NR > 1 && $4 != "ok"' "$OUT/rounds.tsv" | wc -l)
	echo "rounds: $nr, $nbad failed"
	awk -F'\t' 'NR > 1 {
		kind = $2; sub(/-[0-9]+$/, "", kind)
		n[kind]++; if ($4 != "ok") bad[kind]++
		if (kind == "chat" || $4 != "ok") print "  " $2 " (t=" $1 " s): " $4 " " $5
	}
	END { for (k in n) printf "  %-12s %3d rounds, %d failed\n", k, n[k], bad[k] }' "$OUT/rounds.tsv"
	((nbad == 0)) || FAIL=1
	echo
	echo "node log: $(grep -c ' error ' "$OUT/node.log" || true) error lines, $(grep -c ' warn ' "$OUT/node.log" || true) warn lines"
	grep -E ' (error|warn) ' "$OUT/node.log" | sed -E 's/^[^ ]+ //; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -n 10 | sed 's/^/  /'
	echo
	echo "verdict: $( ((FAIL)) && echo FAIL || echo PASS)"
} | tee "$OUT/verdict.txt"
grep -q '^verdict: PASS' "$OUT/verdict.txt" && FAIL=0 || FAIL=1
echo
cat "$OUT/samples-minute.md"
perf_note "results in $OUT"
exit "$FAIL"
