#!/usr/bin/env bash
# cmid_sql.sh - MariaDB's CPU per message row for the two client_msg_id
# layouts, with and without client_msg_ids, straight in SQL (no node).
#
#   tests/perf/cmid_sql.sh [ROWS] [ROUNDS]       # defaults: 200000 rows, 2 rounds
#
# In a scratch database ringchat_cmidbench on the private MariaDB, for each
# round and each case, in this order:
#   old      messages with client_msg_id NULL under UNIQUE KEY
#            uk_messages_client (from_id, client_msg_id) (the schema before)
#   new      messages without the column, no key (sql/schema.sql now)
#   old+cmid the old table, every row with a client_msg_id
#   new+cmid the new table plus a message_client_ids row per message, the
#            key first, both in one transaction (as the writer does)
# fresh tables, 100,000 rows to warm up, then ROWS rows in transactions of
# 1,000 (INSERT ... SELECT from the sequence engine: 500 senders, 64-byte
# texts, increasing msg_ids, as the chat benchmark's rows), measuring
# mariadbd's CPU (utime + stime) over the measured part. Prints us per row.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${1:-200000}
ROUNDS=${2:-2}
CHUNK=1000
DB=ringchat_cmidbench
perf_services_start
MARIADB_PID=$(cat "$ROOT/var/run/mysqld.pid")
mysql_root() {
	mariadb --no-defaults --socket="$RINGCHAT_MYSQL_SOCKET" --user=root "$@"
}
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# tables CASE: the messages table (and message_client_ids) of the case
tables() {
	local cmid_col="" uk=""
	if [[ $1 == old* ]]; then
		cmid_col="client_msg_id VARBINARY(64) NULL DEFAULT NULL,"
		uk=", UNIQUE KEY uk_messages_client (from_id, client_msg_id)"
	fi
	cat <<EOF
DROP TABLE IF EXISTS messages, message_client_ids;
CREATE TABLE messages (
	msg_id BIGINT UNSIGNED NOT NULL, conversation_id BIGINT UNSIGNED NOT NULL,
	from_id BIGINT UNSIGNED NOT NULL, to_id BIGINT UNSIGNED NOT NULL DEFAULT 0,
	group_id BIGINT UNSIGNED NOT NULL DEFAULT 0, type TINYINT UNSIGNED NOT NULL DEFAULT 0,
	text MEDIUMBLOB NOT NULL, send_time BIGINT NOT NULL, $cmid_col
	PRIMARY KEY (msg_id), KEY idx_messages_conv (conversation_id, msg_id) $uk
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
CREATE TABLE message_client_ids (
	from_id BIGINT UNSIGNED NOT NULL, client_msg_id VARBINARY(64) NOT NULL,
	msg_id BIGINT UNSIGNED NOT NULL, PRIMARY KEY (from_id, client_msg_id)
) ENGINE = InnoDB;
EOF
}

# inserts CASE FIRST N: rows FIRST+1 .. FIRST+N in transactions of CHUNK
inserts() {
	local c=$1 first=$2 n=$3 lo
	local cols="msg_id, conversation_id, from_id, to_id, text, send_time"
	local vals="seq, seq % 500 + 1, seq % 500 + 1000, (seq + 1) % 500 + 1000, REPEAT('x', 64), seq"
	for ((lo = first; lo < first + n; lo += CHUNK)); do
		local from="FROM seq_$((lo + 1))_to_$((lo + CHUNK))"
		case $c in
		old | new) echo "INSERT INTO messages ($cols) SELECT $vals $from;" ;;
		old+cmid) echo "INSERT INTO messages ($cols, client_msg_id) SELECT $vals, CONCAT('c-', seq) $from;" ;;
		new+cmid)
			echo "BEGIN;"
			echo "INSERT INTO message_client_ids SELECT seq % 500 + 1000, CONCAT('c-', seq), seq $from;"
			echo "INSERT INTO messages ($cols) SELECT $vals $from;"
			echo "COMMIT;"
			;;
		esac
	done
}

mysql_root -e "CREATE DATABASE IF NOT EXISTS $DB"
for ((r = 1; r <= ROUNDS; r++)); do
	for c in old new old+cmid new+cmid; do
		{ tables "$c"; inserts "$c" 0 100000; } | mysql_root "$DB"
		inserts "$c" 100000 "$ROWS" >"$PERF_DIR/out/cmid_sql.txt"
		t0=$(cpu_ticks "$MARIADB_PID")
		w0=$(date +%s.%N)
		mysql_root "$DB" <"$PERF_DIR/out/cmid_sql.txt"
		w1=$(date +%s.%N)
		t1=$(cpu_ticks "$MARIADB_PID")
		awk -v r="$r" -v c="$c" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$ROWS" \
			-v w="$(echo "$w1 - $w0" | bc)" 'BEGIN {
			printf "round %d  %-9s mariadbd %.2f s cpu, %.2f us per row (wall %.2f s)\n", r, c, t / hz, t / hz / n * 1e6, w }'
	done
done
mysql_root -e "DROP DATABASE $DB"
