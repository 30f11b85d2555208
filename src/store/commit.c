/*
 * commit.c - the group-commit writer (contract in commit.h).
 *
 * The writer thread owns its struct db, the batch arrays, the held unread
 * marks (unread_set) and the "down" flag; each worker owns the producer
 * end of its in queue, the consumer end of its done queue and its inflight
 * count. Nothing else is shared but the queues, the sleeping flag and the
 * statistics.
 *
 * Once, first: give the marks held at an unclean stop back (commit_recover;
 * until it succeeds, marks are written with their messages). Then, one turn
 * of the loop:
 *
 *   pace: a partial batch starts no sooner than commit_interval_us after
 *     │   the previous one
 *   gather ── nothing ──► marks or rows due? a batch of no items writes them;
 *     │                   else sleep (sleeping → notified, as in worker.h)
 *     │                   until a submit or the next due mark
 *     │ up to commit_batch_max items, lanes round-robin; when acks came,
 *     │ one more sweep (up to twice the limit) so that rows the acked
 *     │ messages need join the same transaction
 *     ▼
 *   relay only, in memory: hold the new pushed rows, settle acks of held
 *     │  rows, take the due and flushed ones out to be written; nothing
 *     │  else to do ──► hand back, no transaction
 *     ▼
 *   attempt: INSERT rows in chunks · plan the marks (hold new ones, settle
 *     │      acks in memory, take due and flushed ones) · INSERT unread ·
 *     │      DELETE acked unread · floor (node_state) · COMMIT; the held set
 *     │      follows the transaction (unread_set_commit / _abort)
 *     │ duplicate or rejected row ──► again, row by row (once)
 *     │ link lost, deadlock, ... ──► again after a back-off, until
 *     │                               COMMIT_RETRY_MS (one try while down)
 *     ▼
 *   hand back: every item to its worker's done queue, in batch order;
 *   wake each worker that got something
 *
 * A chunk of message rows is one array-bound execution of a one-row INSERT
 * (db_exec_bulk): one round trip, and MariaDB parses and plans it once.
 * Against a server without bulk operations, statement shapes are kept few
 * so that the statement cache stays warm: a chunk of k rows runs as
 * INSERTs of the powers of two that add up to k (1000 = 512 + 256 + 128 +
 * 64 + 32 + 8), at most 11 distinct INSERTs and 11 statements a chunk.
 *
 * The unread rows of the batch's 1:1 messages go in one INSERT IGNORE, and
 * the batch's acks come out of them in one DELETE ... IN: both are padded
 * to a power of two with a repeated row, which changes nothing for them.
 * Only when some acked id was not an unread 1:1 message of its acker (a
 * group message, mostly) do the pairs go through a per-connection
 * temporary table that the group read-cursor statement joins. No SQL is
 * ever built from values.
 *
 * The connection runs with autocommit = 0 (db_set_txn_only): BEGIN costs
 * no round trip, so a batch of 1:1 messages and acks is three to a dozen
 * statements, COMMIT included.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "ringchat/clock.h"
#include "ringchat/commit.h"
#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/ids.h"
#include "ringchat/log.h"
#include "ringchat/protocol.h"
#include "ringchat/spsc.h"
#include "ringchat/unread_set.h"

#define COMMIT_QUEUE_MIN 4096	 /* items per lane, at least */
#define COMMIT_IDLE_POLL_MS 1000 /* sleep bound when idle (stop is also a wake) */
#define COMMIT_RECOVER_RETRY_MS 1000 /* after a failed recovery or due-only batch */
#define COMMIT_FLOOR_RAISE_MS 1000 /* raise the stored floor at most this often */
#define COMMIT_UNREAD_HELD_MAX 65536 /* unread marks held at once (more: written at once) */
/* Relay: set entries held at once, a 1:1 row taking one and a group row
 * one per member owing an ack (more: written at once). A group of 50
 * acking in batches every ~100 ms at 8,000 sends a second keeps about
 * 40,000 out; four times the stored bound leaves room for bursts. */
#define COMMIT_RELAY_HELD_ENTRIES (4u * COMMIT_UNREAD_HELD_MAX)
#define COMMIT_BACKOFF_MIN_MS 50
#define COMMIT_BACKOFF_MAX_MS 800
#define COMMIT_MSG_COLS 8
#define COMMIT_CMID_COLS 3
/* 2^16 recent group messages (1 MiB): at 3,000 group sends a second the
 * last ~20 s, far longer than members take to ack */
#define COMMIT_GCACHE_BITS 16
#define COMMIT_GCACHE_SLOTS (1u << COMMIT_GCACHE_BITS)
#define COMMIT_CURSOR_COLS 3
#define COMMIT_PARAMS_MAX                                                                          \
	(COMMIT_CHUNK_ROWS * COMMIT_MSG_COLS > COMMIT_ACK_CHUNK * 2                                \
	     ? COMMIT_CHUNK_ROWS * COMMIT_MSG_COLS                                                 \
	     : COMMIT_ACK_CHUNK * 2)

_Static_assert(COMMIT_PARAMS_MAX <= DB_MULTI_MAX_PARAMS, "a chunk must fit one statement");
_Static_assert(COMMIT_CHUNK_ROWS * COMMIT_CMID_COLS <= COMMIT_PARAMS_MAX,
	       "a chunk's client_msg_ids must fit one statement");
/* padding a chunk to the next power of two must stay within params */
_Static_assert((COMMIT_ACK_CHUNK & (COMMIT_ACK_CHUNK - 1)) == 0 &&
		   (COMMIT_CHUNK_ROWS & (COMMIT_CHUNK_ROWS - 1)) == 0,
	       "chunks are powers of two");

/* One worker's pair of queues. */
struct commit_lane {
	struct spsc in;				   /* worker → writer */
	struct spsc done;			   /* writer → worker */
	alignas(SPSC_CACHELINE) uint32_t inflight; /* worker thread only */
	bool touched;				   /* writer only: got items back in this turn */
};

struct commit_writer {
	void (*wake)(int lane); /* tells a worker it has completions */
	struct commit_lane *lanes;
	int nlanes;
	uint32_t cap;	      /* per lane, power of two */
	uint32_t batch_limit; /* commit_batch_max */
	uint64_t interval_ns; /* commit_interval_us */
	bool bulk;	      /* commit_bulk: message rows by db_exec_bulk */
	pthread_t thread;
	bool started;
	alignas(SPSC_CACHELINE) _Atomic int sleeping; /* set by the writer before it blocks */
	int wake_fd;
	_Atomic bool stopping;

	/* writer thread only */
	struct db *db;
	bool down; /* the last batch failed: one attempt per batch */
	uint64_t last_start_ns; /* of the last batch, for interval_ns */
	int next_lane;
	struct commit_item **batch; /* 2 * batch_limit */
	struct commit_item **rows;  /* the batch's INSERT items, in order */
	struct commit_item **acks;  /* the batch's ACK items, in order */
	uint32_t nbatch, nrows, nacks;
	struct db_param *params; /* COMMIT_PARAMS_MAX */

	/* held-back unread marks (see commit.h); uset NULL when off */
	struct unread_set *uset;
	uint64_t defer_ms;
	/* durability relay: uset holds whole rows (struct commit_held), see
	 * commit.h; marks are never held alone */
	bool relay;
	uint64_t held_bytes;	      /* memory of the rows in uset and in out */
	struct commit_held **out;     /* taken from uset, written by the next commit */
	uint32_t nout, out_cap;
	struct unread_pair *rpairs;   /* this batch's acks that uset did not settle */
	uint32_t nrpairs, rpairs_cap;
	uint32_t rows_cap;	      /* of rows: the batch's and out */
	int node_id;
	bool recovered;		   /* commit_recover has run */
	bool final_flush;	   /* stopping: write every mark still held */
	uint64_t retry_at_ms;	   /* next recovery / due-only attempt after a failure */
	int64_t floor_stored;	   /* node_state.unread_floor as last stored; -1 none */
	uint64_t floor_stored_ms;  /* when it was stored (monotonic) */
	struct commit_item **flushes; /* the batch's COMMIT_FLUSH_UNREAD items */
	uint32_t nflushes;
	struct unread_pair *upairs; /* this attempt's unread rows to write */
	uint32_t nupairs, upairs_cap;
	struct unread_pair *apairs; /* this attempt's acks for the database */
	uint32_t napairs, apairs_cap;
	uint64_t plan_held, plan_absorbed;
	/* 1:1 rows of failed batches whose COMMIT reported a lost link: they
	 * may be stored although their senders heard 12, and their held
	 * marks went with the abort. The next transaction gives those that
	 * are stored their unread rows (a retry with the same client_msg_id
	 * resolves to the stored row and would add no mark). */
	struct unread_pair *doubt;
	uint32_t ndoubt, doubt_cap;
	bool commit_unknown; /* this batch: some COMMIT's outcome was unknown */
	_Atomic uint64_t lose_commits_until_ms; /* test hook, see commit.h */

	/* group messages this writer committed lately, msg_id -> group_id
	 * (direct-mapped: a newer id takes an older one's slot), so that an
	 * ack of one moves its member's cursor by primary key instead of
	 * going through the temporary table and a join with messages */
	struct commit_gslot *gcache; /* COMMIT_GCACHE_SLOTS; NULL: not used */
	bool bulk_now;		     /* this attempt may use db_exec_bulk */
	struct commit_gack *gacks;   /* this attempt's cursor moves */
	uint32_t ngacks, gacks_cap;
	struct commit_gack *glow;    /* this attempt's group rows: smallest id per group */
	uint32_t nglow, glow_cap;

	/* statistics, read by commit_stats_get from any thread */
	_Atomic uint64_t st_batches, st_rows, st_acks, st_failed, st_retries;
	_Atomic uint64_t st_last, st_max, st_lat_total, st_lat_max;
	_Atomic uint64_t st_lat_bucket[COMMIT_LAT_BUCKETS + 1], st_turns;
	_Atomic uint64_t st_cursor_moves;
};

static struct commit_writer cw;

struct commit_gslot {
	int64_t msg_id, group_id;
};

/* A held row (relay): the writer's own copy of a submitted row. A 1:1
 * row has one set entry (its recipient), a group row one per member
 * owing an ack, all pointing here. */
struct commit_held {
	struct commit_item ci; /* text and cmid point into data */
	size_t bytes;	       /* counted in cw.held_bytes */
	uint32_t owing;	       /* set entries that point here */
	bool taken;	       /* queued for writing once: never again */
	bool in_out;	       /* in cw.out now */
	char data[];
};

/* What a member owing an ack costs in the set: its entry and its slots
 * in the set's two tables (counted in cw.held_bytes). */
#define COMMIT_HELD_MEMBER_BYTES 96

struct commit_gack {
	int64_t group_id, user_id, msg_id; /* msg_id: the largest acked */
};

/* A batch is the floor of a stored send's latency: the tail of this
 * histogram is what the senders' OKs wait for. */
const uint32_t commit_lat_bucket_us[COMMIT_LAT_BUCKETS] = {
    500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 250000, 1000000,
};

#define COMMIT_INS_MSG_PREFIX                                                                      \
	"INSERT INTO messages (msg_id, conversation_id, from_id, to_id, group_id, type, text, "    \
	"send_time) VALUES "
#define COMMIT_INS_MSG_ROW "(?, ?, ?, ?, ?, ?, ?, ?)"
#define COMMIT_INS_MSG_FMT "lllllibl"
/* the same row as one statement, for db_exec_bulk */
static const char COMMIT_SQL_INS_MSG_ONE[] = COMMIT_INS_MSG_PREFIX COMMIT_INS_MSG_ROW;
/* The idempotency key of a message sent with a client_msg_id (see
 * sql/schema.sql, table message_client_ids), in the message's own
 * transaction and before its row: a duplicate key here is a retry. */
#define COMMIT_INS_CMID_PREFIX                                                                     \
	"INSERT INTO message_client_ids (from_id, client_msg_id, msg_id) VALUES "
#define COMMIT_INS_CMID_ROW "(?, ?, ?)"
#define COMMIT_INS_CMID_FMT "lbl"
static const char COMMIT_SQL_INS_CMID_ONE[] = COMMIT_INS_CMID_PREFIX COMMIT_INS_CMID_ROW;
/* a member's group cursor, for db_exec_bulk: GREATEST never moves it
 * back, and a user who is not a member has no row to change */
static const char COMMIT_SQL_CURSOR_ONE[] =
    "UPDATE group_members SET read_msg_id = GREATEST(read_msg_id, ?) "
    "WHERE group_id = ? AND user_id = ?";
#define COMMIT_CURSOR_FMT "lll"
/* A group message committed after a member's cursor passed its msg_id
 * (ids are assigned before the commit): the cursor goes back to just
 * below it, so the member's login pushes it (and again what lies between:
 * at least once). Members whose cursor is below it are not touched. */
static const char COMMIT_SQL_CURSOR_LOWER[] =
    "UPDATE group_members SET read_msg_id = ? WHERE group_id = ? AND read_msg_id >= ?";

static const struct db_multi commit_ins_msg = {
    .prefix = COMMIT_INS_MSG_PREFIX,
    .row = COMMIT_INS_MSG_ROW,
    .row_fmt = COMMIT_INS_MSG_FMT,
};

static const struct db_multi commit_ins_cmid = {
    .prefix = COMMIT_INS_CMID_PREFIX,
    .row = COMMIT_INS_CMID_ROW,
    .row_fmt = COMMIT_INS_CMID_FMT,
};

/* One row per 1:1 message its recipient has not acknowledged (see
 * sql/schema.sql, table unread). */
static const struct db_multi commit_ins_unread = {
    .prefix = "INSERT IGNORE INTO unread (to_id, msg_id) VALUES ",
    .row = "(?, ?)",
    .row_fmt = "ll",
};

/* The common case of a batch's acks, in one statement per chunk: 1:1
 * messages addressed to the acknowledging user stop being unread. The
 * range optimiser reads a row-constructor IN list on the primary key as
 * that many point lookups. */
static const struct db_multi commit_del_unread = {
    .prefix = "DELETE FROM unread WHERE (to_id, msg_id) IN (",
    .row = "(?, ?)",
    .suffix = ")",
    .row_fmt = "ll",
};

static const struct db_multi commit_ins_ack = {
    .prefix = "INSERT IGNORE INTO rc_acks (mid, uid) VALUES ",
    .row = "(?, ?)",
    .row_fmt = "ll",
};

/* Lives as long as the connection; CREATE ... TEMPORARY does not end the
 * transaction, so it runs inside it and a new link gets a new table.
 * ENGINE = MEMORY, not InnoDB: the table is emptied before every batch,
 * and InnoDB keeps deleted rows (delete-marked, awaiting purge) in its
 * B-tree, so the join scanned an ever longer index and batch latency grew
 * without bound under a steady ack load (measured: 14 ms -> 200+ ms per
 * batch within a minute). A MEMORY table frees rows on DELETE. It is not
 * transactional, which is harmless: every attempt clears it first. */
static const char COMMIT_SQL_ACK_TABLE[] =
    "CREATE TEMPORARY TABLE IF NOT EXISTS rc_acks ("
    "mid BIGINT UNSIGNED NOT NULL, uid BIGINT UNSIGNED NOT NULL, "
    "PRIMARY KEY (mid, uid)) ENGINE = MEMORY";
static const char COMMIT_SQL_ACK_CLEAR[] = "DELETE FROM rc_acks";
/* The largest acked msg_id per (member, group); GREATEST never moves a
 * cursor back. A member acking messages of a group it is not in has no
 * row to join, so nothing happens. */
static const char COMMIT_SQL_ACK_GROUP[] =
    "UPDATE group_members gm JOIN ("
    "SELECT a.uid AS uid, m.group_id AS gid, MAX(m.msg_id) AS mx "
    "FROM rc_acks a JOIN messages m ON m.msg_id = a.mid "
    "WHERE m.group_id <> 0 GROUP BY a.uid, m.group_id) t "
    "ON gm.group_id = t.gid AND gm.user_id = t.uid "
    "SET gm.read_msg_id = GREATEST(gm.read_msg_id, t.mx)";
static const char COMMIT_SQL_FLOOR[] =
    "INSERT INTO node_state (node_id, unread_floor) VALUES (?, ?) "
    "ON DUPLICATE KEY UPDATE unread_floor = VALUES(unread_floor)";
/* The 1:1 messages of this node above the floor (msg_id holds the node
 * id: see ids.h); a range scan of the primary key from the floor on. */
#define COMMIT_STR(x) #x
#define COMMIT_XSTR(x) COMMIT_STR(x)
static const char COMMIT_SQL_RECOVER[] =
    "INSERT IGNORE INTO unread (to_id, msg_id) SELECT to_id, msg_id FROM messages "
    "WHERE msg_id > ? AND to_id <> 0 AND ((msg_id >> " COMMIT_XSTR(IDS_SEQ_BITS) ") & " COMMIT_XSTR(
	IDS_NODE_MAX) ") = ?";
/* The doubtful rows (cw.doubt) that are stored get their marks; the
 * others were never committed and need none. */
static const struct db_multi commit_ins_doubt = {
    .prefix = "INSERT IGNORE INTO unread (to_id, msg_id) SELECT to_id, msg_id FROM messages "
	      "WHERE (to_id, msg_id) IN (",
    .row = "(?, ?)",
    .suffix = ")",
    .row_fmt = "ll",
};
static const char COMMIT_SQL_BY_ID[] =
    "SELECT from_id, conversation_id, send_time FROM messages WHERE msg_id = ?";
/* The message a client_msg_id was first stored with: one primary-key
 * lookup in each table. */
static const char COMMIT_SQL_BY_CLIENT_ID[] =
    "SELECT c.msg_id, m.conversation_id, m.send_time FROM message_client_ids c "
    "JOIN messages m ON m.msg_id = c.msg_id WHERE c.from_id = ? AND c.client_msg_id = ?";
/* A key whose message row is missing (not written by this writer, which
 * stores both in one transaction): it is taken over by the row at hand. */
static const char COMMIT_SQL_CMID_TAKE[] =
    "UPDATE message_client_ids SET msg_id = ? WHERE from_id = ? AND client_msg_id = ?";
/* The key of a row that could not be stored after all (msg_id collision). */
static const char COMMIT_SQL_CMID_DROP[] =
    "DELETE FROM message_client_ids WHERE from_id = ? AND client_msg_id = ? AND msg_id = ?";

/* Results of one attempt besides 0 and the enum db_error values. */
#define COMMIT_AGAIN_ROW_BY_ROW 1

static void commit_kick(int fd)
{
	uint64_t one = 1;

	while (write(fd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

static void commit_drain_fd(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
}

static void commit_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void commit_stat_max(_Atomic uint64_t *slot, uint64_t v)
{
	uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);

	while (v > old && !atomic_compare_exchange_weak_explicit(
			      slot, &old, v, memory_order_relaxed, memory_order_relaxed))
		;
}

/* ---- worker side ---------------------------------------------------------- */

uint32_t commit_capacity(void)
{
	return cw.cap;
}

bool commit_defers_unread(void)
{
	return cw.uset != NULL;
}

bool commit_has_room(int lane)
{
	return cw.lanes[lane].inflight < cw.cap;
}

uint32_t commit_inflight(int lane)
{
	return cw.started ? cw.lanes[lane].inflight : 0;
}

bool commit_submit(int lane, struct commit_item *it)
{
	struct commit_lane *l = &cw.lanes[lane];

	if (l->inflight >= cw.cap)
		return false;
	it->origin = (uint16_t)lane;
	it->status = ST_OK;
	it->stored_other = false;
	it->error = NULL;
	/* cannot be full: inflight counts everything in both queues */
	if (!spsc_push(&l->in, it))
		return false;
	l->inflight++;
	/* Dekker with the writer's sleep: our push, fence, then its flag
	 * (pairs with the fence after it sets sleeping). */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&cw.sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&cw.sleeping, 0, memory_order_acq_rel))
		commit_kick(cw.wake_fd);
	return true;
}

struct commit_item *commit_take(int lane)
{
	struct commit_lane *l;
	struct commit_item *it;

	if (!cw.started)
		return NULL;
	l = &cw.lanes[lane];
	it = spsc_pop(&l->done);
	if (it)
		l->inflight--;
	return it;
}

void commit_test_lose_commits_until(uint64_t mono_ms)
{
	atomic_store_explicit(&cw.lose_commits_until_ms, mono_ms, memory_order_relaxed);
}

void commit_stats_get(struct commit_stats *out)
{
	out->batches = atomic_load_explicit(&cw.st_batches, memory_order_relaxed);
	out->rows = atomic_load_explicit(&cw.st_rows, memory_order_relaxed);
	out->acks = atomic_load_explicit(&cw.st_acks, memory_order_relaxed);
	out->failed_items = atomic_load_explicit(&cw.st_failed, memory_order_relaxed);
	out->retries = atomic_load_explicit(&cw.st_retries, memory_order_relaxed);
	out->last_batch_items = atomic_load_explicit(&cw.st_last, memory_order_relaxed);
	out->max_batch_items = atomic_load_explicit(&cw.st_max, memory_order_relaxed);
	out->latency_ns_total = atomic_load_explicit(&cw.st_lat_total, memory_order_relaxed);
	out->latency_ns_max = atomic_load_explicit(&cw.st_lat_max, memory_order_relaxed);
	out->cursor_moves = atomic_load_explicit(&cw.st_cursor_moves, memory_order_relaxed);
	/* turns first: a batch counted between the two reads shows up in
	 * the buckets, so no bucket ever exceeds the count */
	out->turns = atomic_load_explicit(&cw.st_turns, memory_order_acquire);
	for (int i = 0; i < COMMIT_LAT_BUCKETS; i++) {
		uint64_t below = i ? out->latency_le[i - 1] : 0;

		out->latency_le[i] =
		    below + atomic_load_explicit(&cw.st_lat_bucket[i], memory_order_relaxed);
		if (out->latency_le[i] > out->turns)
			out->latency_le[i] = out->turns;
	}
}

/* ---- writer: gathering ---------------------------------------------------- */

/*
 * Pops items into the batch until limit; returns whether any is an ack or
 * a flush. Either wants the rows submitted before it on other lanes in
 * the same batch (the caller sweeps again): a row pushed live must be
 * held before its ack comes, and a login's flush must find the rows
 * pushed to the connection it replaces (relay) or their marks (stored).
 */
static bool commit_gather(uint32_t limit)
{
	bool acks = false;

	for (int k = 0; k < cw.nlanes && cw.nbatch < limit; k++) {
		struct commit_lane *l = &cw.lanes[(cw.next_lane + k) % cw.nlanes];
		struct commit_item *it;

		while (cw.nbatch < limit && (it = spsc_pop(&l->in))) {
			cw.batch[cw.nbatch++] = it;
			if (it->kind == COMMIT_ACK || it->kind == COMMIT_FLUSH_UNREAD)
				acks = true;
		}
	}
	/* start elsewhere next time, so no lane always waits behind another */
	cw.next_lane = (cw.next_lane + 1) % cw.nlanes;
	return acks;
}

static uint32_t commit_lanes_size(void)
{
	uint32_t n = 0;

	for (int i = 0; i < cw.nlanes; i++)
		n += spsc_size(&cw.lanes[i].in);
	return n;
}

/*
 * Under a steady trickle a commit would follow every few rows, and the
 * fixed cost of each (round trips, the log flush) would be paid again and
 * again: measured at 20k msgs/s, a commit every ~1 ms, and MariaDB plus
 * the writer burning CPU the rest of the node needs. So a batch starts no
 * sooner than interval_ns after the previous one, unless a full batch is
 * waiting; when the last one started longer ago, nothing waits.
 */
static void commit_pace(void)
{
	uint64_t now, due;

	if (!cw.interval_ns || !cw.last_start_ns)
		return;
	now = clock_mono_ns();
	due = cw.last_start_ns + cw.interval_ns;
	if (now >= due || commit_lanes_size() >= cw.batch_limit ||
	    atomic_load_explicit(&cw.stopping, memory_order_acquire))
		return;
	struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(due - now)};

	nanosleep(&ts, NULL);
}

static bool commit_lanes_empty(void)
{
	return commit_lanes_size() == 0;
}

/* ---- writer: one attempt -------------------------------------------------- */

static void commit_fill_row(struct db_param *p, const struct commit_item *it)
{
	p[0] = DB_L(it->msg_id);
	p[1] = DB_L(it->conversation_id);
	p[2] = DB_L(it->from_id);
	p[3] = DB_L(it->to_id);
	p[4] = DB_L(it->group_id);
	p[5] = DB_I(it->type);
	p[6] = DB_B(it->text, it->text_len);
	p[7] = DB_L(it->send_time);
}

static void commit_fill_cmid(struct db_param *p, const struct commit_item *it)
{
	p[0] = DB_L(it->from_id);
	p[1] = DB_B(it->cmid, it->cmid_len);
	p[2] = DB_L(it->msg_id);
}

/*
 * The idempotency keys of the rows of rows[from, from + n) that carry a
 * client_msg_id, sent as their message rows are. They go first: a retry
 * fails the statement with a duplicate key before any message row of the
 * chunk is written. Rows without one cost nothing here.
 */
static int commit_insert_cmids(uint32_t from, uint32_t n)
{
	uint32_t k = 0;
	int64_t rc;

	for (uint32_t i = 0; i < n; i++)
		if (cw.rows[from + i]->cmid)
			commit_fill_cmid(&cw.params[COMMIT_CMID_COLS * k++], cw.rows[from + i]);
	if (!k)
		return 0;
	if (cw.bulk_now) {
		rc =
		    db_exec_bulk(cw.db, COMMIT_SQL_INS_CMID_ONE, COMMIT_INS_CMID_FMT, k, cw.params);
		return rc < 0 ? (int)rc : 0;
	}
	for (uint32_t size = COMMIT_CHUNK_ROWS, off = 0; size; size >>= 1) {
		if (!(k & size))
			continue;
		rc = db_exec_multi(cw.db, &commit_ins_cmid, size,
				   &cw.params[COMMIT_CMID_COLS * off]);
		if (rc < 0)
			return (int)rc;
		off += size;
	}
	return 0;
}

/*
 * Inserts rows[from, from + n), their client_msg_ids first: in one
 * array-bound execution each where the server has them (a round trip and
 * a parse per chunk, see db_exec_bulk), else as statements of power-of-two
 * sizes.
 */
static int commit_insert_chunk(uint32_t from, uint32_t n)
{
	int rc = commit_insert_cmids(from, n);

	if (rc)
		return rc;
	if (cw.bulk_now) {
		for (uint32_t i = 0; i < n; i++)
			commit_fill_row(&cw.params[i * COMMIT_MSG_COLS], cw.rows[from + i]);
		int64_t rc =
		    db_exec_bulk(cw.db, COMMIT_SQL_INS_MSG_ONE, COMMIT_INS_MSG_FMT, n, cw.params);

		return rc < 0 ? (int)rc : 0;
	}
	for (uint32_t size = COMMIT_CHUNK_ROWS; size; size >>= 1) {
		if (!(n & size))
			continue;
		for (uint32_t i = 0; i < size; i++)
			commit_fill_row(&cw.params[i * COMMIT_MSG_COLS], cw.rows[from + i]);
		int64_t rc = db_exec_multi(cw.db, &commit_ins_msg, size, cw.params);

		if (rc < 0)
			return (int)rc;
		from += size;
	}
	return 0;
}

static int commit_insert_all(void)
{
	uint32_t i = 0;

	while (i < cw.nrows) {
		uint32_t n = 0;
		size_t bytes = 0;
		int rc;

		/* a chunk: up to COMMIT_CHUNK_ROWS rows and about
		 * COMMIT_CHUNK_BYTES of text (a packet must stay below the
		 * server's max_allowed_packet), at least one row */
		while (i + n < cw.nrows && n < COMMIT_CHUNK_ROWS &&
		       (n == 0 || bytes + cw.rows[i + n]->text_len <= COMMIT_CHUNK_BYTES)) {
			bytes += cw.rows[i + n]->text_len + cw.rows[i + n]->cmid_len;
			n++;
		}
		rc = commit_insert_chunk(i, n);
		if (rc)
			return rc;
		i += n;
	}
	return 0;
}

static void commit_fail_item(struct commit_item *it, const char *why)
{
	it->status = ST_INTERNAL;
	it->error = why;
}

/*
 * A message row hit a duplicate msg_id: decides whether it is stored
 * already (see commit.h). Returns 0 (outcome set on it) or a negative enum
 * db_error when the lookup itself failed.
 */
static int commit_resolve_dup(struct commit_item *it)
{
	struct db_rows *rows;

	rows = db_query(cw.db, COMMIT_SQL_BY_ID, "l", it->msg_id);
	if (!rows)
		return db_last_error(cw.db);
	/* this very message, stored by an earlier attempt: same sender, same
	 * conversation, same millisecond (a msg_id repeated by a restarted
	 * node would not match all three) */
	if (db_rows_count(rows) == 1 && db_cell_i64(rows, 0, 0) == it->from_id &&
	    db_cell_i64(rows, 0, 1) == it->conversation_id &&
	    db_cell_i64(rows, 0, 2) == it->send_time) {
		db_rows_free(rows);
		return 0;
	}
	db_rows_free(rows);
	log_error("commit: msg_id %" PRId64 " of user %" PRId64 " is taken by another message",
		  it->msg_id, it->from_id);
	commit_fail_item(it, "message id collision; send it again");
	return 0;
}

/*
 * The client_msg_id of it is stored already (its key hit a duplicate):
 * finds the message it was stored with (see commit.h). *stored is set
 * when that message is stored, this one's row must then not be written:
 * it is OK, as the earlier message (stored_other), or as itself when an
 * earlier attempt of this batch did commit. A key whose message row is
 * missing is not expected (both go in one transaction); it is given to
 * this row, which is then written (*stored false). Returns 0 or a
 * negative enum db_error.
 */
static int commit_resolve_cmid(struct commit_item *it, bool *stored)
{
	struct db_rows *rows;
	int64_t rc;

	rows = db_query(cw.db, COMMIT_SQL_BY_CLIENT_ID, "lb", it->from_id, it->cmid,
			(size_t)it->cmid_len);
	if (!rows)
		return db_last_error(cw.db);
	*stored = db_rows_count(rows) == 1;
	if (*stored) {
		int64_t id = db_cell_i64(rows, 0, 0);

		/* never reset: an item resolved by an earlier attempt carries
		 * the first message's msg_id and finds it again here */
		if (id != it->msg_id)
			it->stored_other = true;
		it->msg_id = id;
		it->conversation_id = db_cell_i64(rows, 0, 1);
		it->send_time = db_cell_i64(rows, 0, 2);
		db_rows_free(rows);
		return 0;
	}
	db_rows_free(rows);
	log_warn("commit: client_msg_id of user %" PRId64 " stored without its message; "
		 "it names message %" PRId64 " now",
		 it->from_id, it->msg_id);
	rc = db_exec(cw.db, COMMIT_SQL_CMID_TAKE, "llb", it->msg_id, it->from_id, it->cmid,
		     (size_t)it->cmid_len);
	return rc < 0 ? (int)rc : 0;
}

/*
 * The batch again, one row at a time, each row's key before the row, so
 * that a duplicate (a retry, an earlier attempt that did commit, a msg_id
 * collision) is told apart and settles that row alone.
 */
static int commit_insert_row_by_row(void)
{
	for (uint32_t i = 0; i < cw.nrows; i++) {
		struct commit_item *it = cw.rows[i];
		int64_t rc;
		int ret;

		if (it->cmid) {
			bool stored = false;

			commit_fill_cmid(cw.params, it);
			rc = db_exec_multi(cw.db, &commit_ins_cmid, 1, cw.params);
			if (rc == DB_ERR_DUP) {
				if ((ret = commit_resolve_cmid(it, &stored)))
					return ret;
				if (stored)
					continue;
			} else if (rc < 0) {
				return (int)rc;
			}
		}
		commit_fill_row(cw.params, it);
		rc = db_exec_multi(cw.db, &commit_ins_msg, 1, cw.params);
		if (rc >= 0)
			continue;
		/* Anything but a duplicate ends the attempt: a deadlock has
		 * already rolled the whole transaction back, and going on
		 * would commit the rest as if nothing happened. Rows are
		 * checked before they get here, so a row the server refuses
		 * for itself is not expected; if one ever is, its batch fails
		 * at the deadline and its sender hears so. */
		if (rc != DB_ERR_DUP)
			return (int)rc;
		if ((ret = commit_resolve_dup(it)))
			return ret;
		/* a collision stores nothing of the row: nor its key */
		if (it->cmid && it->status != ST_OK &&
		    (rc = db_exec(cw.db, COMMIT_SQL_CMID_DROP, "lbl", it->from_id, it->cmid,
				  (size_t)it->cmid_len, it->msg_id)) < 0)
			return (int)rc;
	}
	return 0;
}

/*
 * Runs m, whose rows are pairs, over the first n pairs of cw.params as ONE
 * statement: the list is padded to the next power of two with copies of
 * its last pair, so a statement of any length has one of a few shapes
 * (the statement cache stays warm) and costs one round trip. Only for
 * statements a repeated pair does not change: INSERT IGNORE, DELETE ...
 * IN. Returns the rows affected or a negative db error.
 */
static int64_t commit_exec_pairs_padded(const struct db_multi *m, uint32_t n)
{
	uint32_t size = 1;

	while (size < n)
		size <<= 1;
	for (uint32_t k = n; k < size; k++) {
		cw.params[2 * k] = cw.params[2 * (n - 1)];
		cw.params[2 * k + 1] = cw.params[2 * (n - 1) + 1];
	}
	return db_exec_multi(cw.db, m, size, cw.params);
}

/* ---- writer: unread marks and acks ------------------------------------------ */

/* Room for `more` pairs after the n in *v (cw.upairs or cw.apairs). */
static bool commit_pairs_reserve(struct unread_pair **v, uint32_t *cap, uint32_t n, uint32_t more)
{
	uint32_t want = *cap ? *cap : 1024;
	struct unread_pair *p;

	if (n + more <= *cap)
		return true;
	while (want < n + more)
		want *= 2;
	p = realloc(*v, (size_t)want * sizeof(*p));
	if (!p)
		return false;
	*v = p;
	*cap = want;
	return true;
}

/*
 * Runs m over pairs[0, n) in statements of at most chunk pairs, each
 * padded (commit_exec_pairs_padded); swap puts the msg_id first. Returns
 * the rows affected, added up, or a negative db error.
 */
static int64_t commit_exec_pairs(const struct db_multi *m, const struct unread_pair *pairs,
				 uint32_t n, uint32_t chunk, bool swap)
{
	int64_t rc, affected = 0;

	for (uint32_t off = 0; off < n; off += chunk) {
		uint32_t k = n - off < chunk ? n - off : chunk;

		for (uint32_t i = 0; i < k; i++) {
			cw.params[2 * i + swap] = DB_L(pairs[off + i].to_id);
			cw.params[2 * i + !swap] = DB_L(pairs[off + i].msg_id);
		}
		rc = commit_exec_pairs_padded(m, k);
		if (rc < 0)
			return rc;
		affected += rc;
	}
	return affected;
}

/* Marks are held back now (rows can still be written at once: set full). */
static bool commit_holding(void)
{
	return cw.uset && !cw.relay && cw.recovered && !cw.final_flush;
}

/*
 * Decides this attempt's unread rows and acks (staged in cw.uset; see
 * unread_set.h): cw.upairs gets the rows to write, cw.apairs the acks the
 * database must apply. Returns 0 or -ENOMEM.
 */
/* ---- recent group messages and their acks ------------------------------- */

static struct commit_gslot *commit_gslot_of(int64_t msg_id)
{
	/* Fibonacci hashing: msg_ids are sequential in their low bits */
	return &cw.gcache[((uint64_t)msg_id * 0x9E3779B97F4A7C15ull) >> (64 - COMMIT_GCACHE_BITS)];
}

/* The group of msg_id if this writer committed it lately, else 0. */
static int64_t commit_gcache_group(int64_t msg_id)
{
	const struct commit_gslot *s = commit_gslot_of(msg_id);

	return s->msg_id == msg_id ? s->group_id : 0;
}

/* Remembers the group rows of a committed batch. */
static void commit_gcache_note_batch(void)
{
	for (uint32_t i = 0; i < cw.nrows; i++) {
		const struct commit_item *it = cw.rows[i];

		if (it->group_id && it->status == ST_OK)
			*commit_gslot_of(it->msg_id) =
			    (struct commit_gslot){.msg_id = it->msg_id, .group_id = it->group_id};
	}
}

/* Adds user's ack of msg_id in group; an item's acks of one group, the
 * usual case, fold into one entry as they come. */
static int commit_gack_add(uint32_t item_start, int64_t user, int64_t group, int64_t msg_id)
{
	struct commit_gack *last = cw.ngacks > item_start ? &cw.gacks[cw.ngacks - 1] : NULL;

	if (last && last->group_id == group && last->user_id == user) {
		if (msg_id > last->msg_id)
			last->msg_id = msg_id;
		return 0;
	}
	if (cw.ngacks == cw.gacks_cap) {
		uint32_t ncap = cw.gacks_cap ? 2 * cw.gacks_cap : 256;
		struct commit_gack *n = realloc(cw.gacks, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		cw.gacks = n;
		cw.gacks_cap = ncap;
	}
	cw.gacks[cw.ngacks++] =
	    (struct commit_gack){.group_id = group, .user_id = user, .msg_id = msg_id};
	return 0;
}

static int commit_gack_cmp(const void *a, const void *b)
{
	const struct commit_gack *x = a, *y = b;

	if (x->group_id != y->group_id)
		return x->group_id < y->group_id ? -1 : 1;
	if (x->user_id != y->user_id)
		return x->user_id < y->user_id ? -1 : 1;
	return 0;
}

/* One entry per (group, user) with the largest id: an UPDATE that matched
 * one row twice in a statement would keep only one of the values. */
static void commit_gacks_merge(void)
{
	uint32_t out = 0;

	if (cw.ngacks < 2)
		return;
	qsort(cw.gacks, cw.ngacks, sizeof(*cw.gacks), commit_gack_cmp);
	for (uint32_t i = 1; i < cw.ngacks; i++) {
		struct commit_gack *o = &cw.gacks[out];

		if (!commit_gack_cmp(o, &cw.gacks[i])) {
			if (cw.gacks[i].msg_id > o->msg_id)
				o->msg_id = cw.gacks[i].msg_id;
		} else {
			cw.gacks[++out] = cw.gacks[i];
		}
	}
	cw.ngacks = out + 1;
}

/* Moves the cursors of cw.gacks: one primary-key UPDATE each, sent as
 * array-bound executions. */
static int commit_apply_cursors(void)
{
	const uint32_t chunk = COMMIT_PARAMS_MAX / COMMIT_CURSOR_COLS;

	for (uint32_t from = 0; from < cw.ngacks; from += chunk) {
		uint32_t n = cw.ngacks - from < chunk ? cw.ngacks - from : chunk;

		for (uint32_t i = 0; i < n; i++) {
			const struct commit_gack *g = &cw.gacks[from + i];

			cw.params[3 * i] = DB_L(g->msg_id);
			cw.params[3 * i + 1] = DB_L(g->group_id);
			cw.params[3 * i + 2] = DB_L(g->user_id);
		}
		int64_t rc =
		    db_exec_bulk(cw.db, COMMIT_SQL_CURSOR_ONE, COMMIT_CURSOR_FMT, n, cw.params);

		if (rc < 0)
			return (int)rc;
	}
	return 0;
}

/* An ack for the database (cw.apairs has room): a group message's cursor
 * move when the writer knows its group, else a pair. 0 or -ENOMEM. */
static int commit_plan_ack(uint32_t item_start, int64_t user, int64_t id)
{
	int64_t group;

	if (cw.bulk_now && (group = commit_gcache_group(id)))
		return commit_gack_add(item_start, user, group, id);
	cw.apairs[cw.napairs++] = (struct unread_pair){.to_id = user, .msg_id = id};
	return 0;
}

static int commit_plan_unread(uint64_t now_ms)
{
	bool hold = commit_holding();

	cw.nupairs = cw.napairs = cw.ngacks = 0;
	cw.plan_held = cw.plan_absorbed = 0;
	for (uint32_t i = 0; i < cw.nrows; i++) {
		const struct commit_item *it = cw.rows[i];

		/* A retry resolved to an earlier message (stored_other) had its
		 * mark then, and it may since have been acked. */
		if (!it->to_id || it->stored_other || it->status != ST_OK)
			continue;
		if (hold && !it->mark_now &&
		    unread_set_add(cw.uset, it->to_id, it->msg_id, now_ms + cw.defer_ms)) {
			cw.plan_held++;
			continue;
		}
		if (!commit_pairs_reserve(&cw.upairs, &cw.upairs_cap, cw.nupairs, 1))
			return -ENOMEM;
		cw.upairs[cw.nupairs++] =
		    (struct unread_pair){.to_id = it->to_id, .msg_id = it->msg_id};
	}
	/* relay (rows held): commit_relay_prepare took them, and settled
	 * the acks it could; the others are in cw.rpairs */
	if (cw.uset && !cw.relay) {
		uint32_t room = unread_set_count(cw.uset);

		if (!commit_pairs_reserve(&cw.upairs, &cw.upairs_cap, cw.nupairs, room))
			return -ENOMEM;
		for (uint32_t f = 0; f < cw.nflushes; f++)
			cw.nupairs += unread_set_take_user(cw.uset, cw.flushes[f]->from_id,
							   cw.upairs + cw.nupairs, room);
		cw.nupairs += unread_set_take_due(cw.uset, cw.final_flush ? UINT64_MAX : now_ms,
						  cw.upairs + cw.nupairs, room);
	}
	if (cw.relay && cw.uset) {
		if (!commit_pairs_reserve(&cw.apairs, &cw.apairs_cap, 0, cw.nrpairs))
			return -ENOMEM;
		for (uint32_t k = 0; k < cw.nrpairs; k++)
			if (commit_plan_ack(0, cw.rpairs[k].to_id, cw.rpairs[k].msg_id))
				return -ENOMEM;
		commit_gacks_merge();
		return 0;
	}
	for (uint32_t a = 0; a < cw.nacks; a++) {
		const struct commit_item *it = cw.acks[a];
		uint32_t item_start = cw.ngacks;

		if (!commit_pairs_reserve(&cw.apairs, &cw.apairs_cap, cw.napairs, it->nacks))
			return -ENOMEM;
		for (uint32_t k = 0; k < it->nacks; k++) {
			int64_t id = it->ack_ids[k];

			if (cw.uset && unread_set_cancel(cw.uset, it->from_id, id)) {
				cw.plan_absorbed++;
				continue;
			}
			if (commit_plan_ack(item_start, it->from_id, id))
				return -ENOMEM;
		}
	}
	commit_gacks_merge();
	return 0;
}

/*
 * Puts back below each of the batch's group messages the cursors that are
 * already past it (COMMIT_SQL_CURSOR_LOWER): one statement per group with
 * the group's smallest new msg_id, in group order (writers of other nodes
 * lock the same rows in the same order). Runs after the batch's acks, so
 * an ack in the same batch cannot lift a cursor over the row again.
 * Returns 0, -ENOMEM or a negative db error.
 */
static int commit_lower_cursors(void)
{
	cw.nglow = 0;
	for (uint32_t i = 0; i < cw.nrows; i++) {
		const struct commit_item *it = cw.rows[i];

		if (!it->group_id || it->status != ST_OK || it->stored_other)
			continue;
		if (cw.nglow == cw.glow_cap) {
			uint32_t ncap = cw.glow_cap ? 2 * cw.glow_cap : 256;
			struct commit_gack *n = realloc(cw.glow, ncap * sizeof(*n));

			if (!n)
				return -ENOMEM;
			cw.glow = n;
			cw.glow_cap = ncap;
		}
		cw.glow[cw.nglow++] = (struct commit_gack){.group_id = it->group_id,
							   .msg_id = it->msg_id};
	}
	if (!cw.nglow)
		return 0;
	qsort(cw.glow, cw.nglow, sizeof(*cw.glow), commit_gack_cmp);
	uint32_t out = 0;

	for (uint32_t i = 1; i < cw.nglow; i++) {
		if (cw.glow[i].group_id == cw.glow[out].group_id) {
			if (cw.glow[i].msg_id < cw.glow[out].msg_id)
				cw.glow[out].msg_id = cw.glow[i].msg_id;
		} else {
			cw.glow[++out] = cw.glow[i];
		}
	}
	cw.nglow = out + 1;
	for (uint32_t from = 0; from < cw.nglow; from += COMMIT_PARAMS_MAX / 3) {
		uint32_t n = cw.nglow - from < COMMIT_PARAMS_MAX / 3 ? cw.nglow - from
								       : COMMIT_PARAMS_MAX / 3;
		int64_t rc;

		for (uint32_t i = 0; i < n; i++) {
			const struct commit_gack *g = &cw.glow[from + i];

			cw.params[3 * i] = DB_L(g->msg_id - 1);
			cw.params[3 * i + 1] = DB_L(g->group_id);
			cw.params[3 * i + 2] = DB_L(g->msg_id);
		}
		if (cw.bulk_now) {
			rc = db_exec_bulk(cw.db, COMMIT_SQL_CURSOR_LOWER, "lll", n, cw.params);
		} else {
			rc = 0;
			for (uint32_t i = 0; i < n && rc >= 0; i++)
				rc = db_exec(cw.db, COMMIT_SQL_CURSOR_LOWER, "lll",
					     cw.params[3 * i].l, cw.params[3 * i + 1].l,
					     cw.params[3 * i + 2].l);
		}
		if (rc < 0)
			return (int)rc;
	}
	return 0;
}

static int commit_apply_acks(void)
{
	int64_t rc;

	if (cw.ngacks && (rc = commit_apply_cursors()))
		return (int)rc;
	if (!cw.napairs)
		return 0;
	rc = commit_exec_pairs(&commit_del_unread, cw.apairs, cw.napairs, COMMIT_ACK_CHUNK, false);
	if (rc < 0)
		return (int)rc;
	/* When every pair deleted an unread row, every acked id was a 1:1
	 * message addressed to its acker: none is a group message, and the
	 * group statement (a join with a GROUP BY, over a temporary table
	 * filled first) is skipped. Otherwise (group messages, ids acked
	 * twice, unknown ids) it runs; it is exact either way. */
	if ((uint64_t)rc == cw.napairs)
		return 0;
	if ((rc = db_exec(cw.db, COMMIT_SQL_ACK_TABLE, NULL)) < 0 ||
	    (rc = db_exec(cw.db, COMMIT_SQL_ACK_CLEAR, NULL)) < 0)
		return (int)rc;
	rc = commit_exec_pairs(&commit_ins_ack, cw.apairs, cw.napairs, COMMIT_ACK_CHUNK, true);
	if (rc < 0)
		return (int)rc;
	rc = db_exec(cw.db, COMMIT_SQL_ACK_GROUP, NULL);
	return rc < 0 ? (int)rc : 0;
}

/* The floor this transaction stores (see commit.h): just below the
 * smallest held mark, or 0 when none is held, which spares the next start
 * any scan. Entries whose removal is staged still count: a lower floor
 * only makes a recovery redo more. */
static int64_t commit_floor(void)
{
	int64_t min = unread_set_min_id(cw.uset);

	return min ? min - 1 : 0;
}

/*
 * Whether this transaction must store floor. It must when a held mark
 * lies below the stored floor (or the stored one says "none held"): a
 * crash would miss it. Raising the floor is optional, a lower one only
 * makes a recovery redo more, so it is done at most every
 * COMMIT_FLOOR_RAISE_MS: under load the floor rises with every batch, and
 * one statement per batch would be paid for nothing.
 */
static bool commit_floor_due(int64_t floor, uint64_t now_ms)
{
	int64_t stored = cw.floor_stored;

	if (floor == stored)
		return false;
	if (stored < 0 || (floor > 0 && (stored == 0 || floor < stored)))
		return true;
	return now_ms - cw.floor_stored_ms >= COMMIT_FLOOR_RAISE_MS || cw.final_flush;
}

/* Returns 0 (committed), COMMIT_AGAIN_ROW_BY_ROW or a negative db error. */
static int commit_attempt(bool row_by_row)
{
	int64_t floor = -1;
	int rc;

	/* stored_other stays: an item resolved to an earlier message carries
	 * that message's msg_id from then on, and the next attempt finds it
	 * by that id as if it were its own */
	for (uint32_t i = 0; i < cw.nbatch; i++) {
		cw.batch[i]->status = ST_OK;
		cw.batch[i]->error = NULL;
	}
	for (uint32_t i = 0; i < cw.nout; i++) {
		cw.out[i]->ci.status = ST_OK;
		cw.out[i]->ci.error = NULL;
	}
	rc = db_begin(cw.db);
	if (rc)
		return rc;
	cw.bulk_now = cw.bulk && db_bulk_capable(cw.db);
	rc = row_by_row ? commit_insert_row_by_row() : commit_insert_all();
	if (rc) {
		/* outside row-by-row a refused row takes the multi-row
		 * statement with it: find out which row it was */
		if (!row_by_row && rc != DB_ERR_DOWN) {
			log_debug("commit: batch insert failed (%s); retrying row by row",
				  db_errmsg(cw.db));
			rc = COMMIT_AGAIN_ROW_BY_ROW;
		}
		goto out_rollback;
	}
	/* from here on any failure ends the attempt: a deadlock has rolled
	 * the transaction back already */
	if (cw.ndoubt) {
		int64_t n = commit_exec_pairs(&commit_ins_doubt, cw.doubt, cw.ndoubt,
					      COMMIT_CHUNK_ROWS, false);

		if (n < 0) {
			rc = (int)n;
			goto out_rollback;
		}
	}
	rc = commit_plan_unread(clock_mono_ms());
	if (!rc && cw.nupairs)
		rc = (int)commit_exec_pairs(&commit_ins_unread, cw.upairs, cw.nupairs,
					    COMMIT_CHUNK_ROWS, false);
	if (rc < 0)
		goto out_abort;
	rc = commit_apply_acks();
	if (!rc)
		rc = commit_lower_cursors();
	if (rc)
		goto out_abort;
	if (cw.uset && !cw.relay && cw.recovered) {
		floor = commit_floor();
		if (!commit_floor_due(floor, clock_mono_ms()))
			floor = -1;
		else if ((rc = (int)db_exec(cw.db, COMMIT_SQL_FLOOR, "il", cw.node_id, floor)) < 0)
			goto out_abort;
	}
	rc = db_commit(cw.db);
	if (!rc && clock_mono_ms() <
		       atomic_load_explicit(&cw.lose_commits_until_ms, memory_order_relaxed))
		rc = DB_ERR_DOWN; /* test hook: it landed, as if the answer were lost */
	if (rc) {
		cw.commit_unknown = true;
		if (cw.uset) {
			unread_set_abort(cw.uset);
			/* a COMMIT that lost its link may have landed: the stored
			 * floor is unknown, so the next batch writes it again */
			if (floor >= 0)
				cw.floor_stored = -1;
		}
		return rc;
	}
	if (cw.ndoubt) {
		log_info("commit: %u messages whose commit was in doubt have their unread marks",
			 cw.ndoubt);
		cw.ndoubt = 0;
	}
	if (cw.gcache)
		commit_gcache_note_batch();
	atomic_fetch_add_explicit(&cw.st_cursor_moves, cw.ngacks, memory_order_relaxed);
	if (cw.uset) {
		unread_set_commit(cw.uset);
		if (floor >= 0) {
			cw.floor_stored = floor;
			cw.floor_stored_ms = clock_mono_ms();
		}
	}
	counter_add(unread_deferred, cw.plan_held);
	counter_add(unread_absorbed, cw.plan_absorbed);
	counter_add(unread_written, cw.nupairs);
	return 0;

out_abort:
	if (cw.uset)
		unread_set_abort(cw.uset);
	if (rc == -ENOMEM)
		rc = DB_ERR_OTHER;
out_rollback:
	db_rollback(cw.db);
	return rc;
}

/*
 * Gives the messages above this node's stored floor their unread rows
 * back (see commit.h). Until it has succeeded, marks are written with
 * their messages. Returns 0 or a negative db error.
 */
static int commit_recover(void)
{
	struct db_rows *rows;
	int64_t floor, n;
	int rc;

	rc = db_begin(cw.db);
	if (rc)
		return rc;
	rows = db_query(cw.db, "SELECT unread_floor FROM node_state WHERE node_id = ?", "i",
			cw.node_id);
	if (!rows) {
		rc = db_last_error(cw.db);
		goto out_rollback;
	}
	if (db_rows_count(rows) == 0) {
		/* this node never held a mark back */
		db_rows_free(rows);
		cw.floor_stored = -1;
		goto out_commit;
	}
	floor = db_cell_i64(rows, 0, 0);
	db_rows_free(rows);
	cw.floor_stored = floor;
	if (floor == 0) /* the last stop held nothing */
		goto out_commit;
	n = db_exec(cw.db, COMMIT_SQL_RECOVER, "li", floor, cw.node_id);
	if (n < 0) {
		rc = (int)n;
		goto out_rollback;
	}
	/* nothing is held now: a crash before the next batch redoes nothing */
	if ((rc = (int)db_exec(cw.db, COMMIT_SQL_FLOOR, "il", cw.node_id, (int64_t)0)) < 0)
		goto out_rollback;
	if (n > 0) {
		counter_add(unread_recovered, (uint64_t)n);
		log_warn("commit: restored %" PRId64 " unread marks held at an unclean stop "
			 "(1:1 messages of node %d after msg_id %" PRId64 "); acked ones among them "
			 "are pushed again",
			 n, cw.node_id, floor);
	}
out_commit:
	rc = db_commit(cw.db);
	if (!rc) {
		cw.recovered = true;
		if (cw.floor_stored > 0)
			cw.floor_stored = 0;
	}
	return rc;

out_rollback:
	db_rollback(cw.db);
	return rc;
}

/* ---- writer: one batch ---------------------------------------------------- */

/*
 * The batch failed, and one of its COMMITs lost its link: it may have
 * landed. Its 1:1 rows are kept (cw.doubt) until a transaction settles
 * them (see struct commit_writer). Without held marks every mark went in
 * the same transaction as its row, so nothing can be missing.
 */
static void commit_note_doubt(void)
{
	if (!cw.uset || cw.relay)
		return;
	for (uint32_t i = 0; i < cw.nrows; i++) {
		const struct commit_item *it = cw.rows[i];

		if (!it->to_id || it->stored_other)
			continue;
		if (cw.ndoubt >= COMMIT_UNREAD_HELD_MAX ||
		    !commit_pairs_reserve(&cw.doubt, &cw.doubt_cap, cw.ndoubt, 1)) {
			log_error("commit: message %" PRId64 " may be stored without its unread "
				  "mark (too many commits in doubt)",
				  it->msg_id);
			continue;
		}
		cw.doubt[cw.ndoubt++] =
		    (struct unread_pair){.to_id = it->to_id, .msg_id = it->msg_id};
	}
}

/* ---- writer: held rows (relay) --------------------------------------------- */

static void commit_held_free(struct commit_held *h)
{
	cw.held_bytes -= h->bytes;
	free(h);
}

/* One set entry of h left the set (acked or taken): frees h when it was
 * the last and h is not waiting in cw.out. */
static void commit_held_release(struct commit_held *h)
{
	if (--h->owing == 0 && !h->in_out)
		commit_held_free(h);
}

/* The members of group row it who owe an ack: owe_ids but the sender. */
static uint32_t commit_owing(const struct commit_item *it)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < it->nowe; i++)
		n += it->owe_ids[i] != it->from_id;
	return n;
}

/*
 * Holds the pushed row it in uset (see commit.h): copies it, due
 * unread_defer_ms from now, with one entry for a 1:1 row's recipient or
 * for each group member owing an ack. false when it does not fit: the
 * caller writes it at once.
 */
static bool commit_relay_hold(const struct commit_item *it, uint64_t now_ms)
{
	size_t cmid_len = it->cmid ? it->cmid_len : 0;
	uint32_t owing = it->group_id ? commit_owing(it) : 1;
	size_t size = sizeof(struct commit_held) + it->text_len + 1 + cmid_len;
	size_t bytes = size + (it->group_id ? (size_t)owing * COMMIT_HELD_MEMBER_BYTES : 0);
	uint64_t due = now_ms + cw.defer_ms;
	struct commit_held *h;
	uint32_t added = 0;

	/* a group row nobody owes an ack (the sender alone) is written */
	if ((!it->to_id && !it->group_id) || !owing || cw.nout >= COMMIT_UNREAD_HELD_MAX ||
	    cw.held_bytes + bytes > COMMIT_RELAY_HELD_BYTES)
		return false;
	h = malloc(size);
	if (!h)
		return false;
	h->ci = *it;
	h->ci.hold_row = false;
	h->ci.owe_ids = NULL; /* the worker's: never kept */
	h->ci.nowe = 0;
	h->ci.text = memcpy(h->data, it->text, it->text_len);
	h->data[it->text_len] = '\0';
	h->ci.cmid = it->cmid ? memcpy(h->data + it->text_len + 1, it->cmid, cmid_len) : NULL;
	h->bytes = bytes;
	h->owing = owing;
	h->taken = h->in_out = false;
	if (!it->group_id) {
		if (!unread_set_add_row(cw.uset, it->to_id, it->msg_id, due, h)) {
			free(h);
			return false;
		}
	} else {
		for (uint32_t i = 0; i < it->nowe; i++) {
			if (it->owe_ids[i] == it->from_id)
				continue;
			if (!unread_set_add_row(cw.uset, it->owe_ids[i], it->msg_id, due, h))
				break;
			added++;
		}
		if (added < owing) {
			/* set full, or a member listed twice: written at once;
			 * the entries added in this stage go without a trace */
			for (uint32_t i = 0; i < it->nowe && added; i++)
				if (it->owe_ids[i] != it->from_id &&
				    unread_set_cancel_row(cw.uset, it->owe_ids[i], it->msg_id) == h)
					added--;
			free(h);
			return false;
		}
	}
	cw.held_bytes += bytes;
	return true;
}

/* Moves the held rows of pairs[0, n) (taken from uset) to cw.out, each
 * once: a group row's other entries only let go of it. */
static void commit_relay_take(const struct unread_pair *pairs, uint32_t n)
{
	if (cw.nout + n > cw.out_cap) {
		uint32_t cap = cw.out_cap ? cw.out_cap : 256;
		struct commit_held **o;

		while (cap < cw.nout + n)
			cap *= 2;
		o = realloc(cw.out, (size_t)cap * sizeof(*o));
		if (!o) {
			/* their only copy: losing them silently is not an option */
			log_error("commit: out of memory; %u held messages not stored", n);
			for (uint32_t i = 0; i < n; i++)
				if (pairs[i].row)
					commit_held_release(pairs[i].row);
			return;
		}
		cw.out = o;
		cw.out_cap = cap;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct commit_held *h = pairs[i].row;

		if (!h)
			continue;
		if (!h->taken) {
			h->taken = h->in_out = true;
			cw.out[cw.nout++] = h;
		}
		commit_held_release(h);
	}
}

/*
 * Relay, before the batch's transaction, in memory and for good (uset is
 * committed here, whatever the transaction does later): holds the batch's
 * pushed rows, settles the acks of held rows (those rows are freed: never
 * written), and takes the rows of the batch's flushes and the due ones
 * (all at the final flush) to cw.out. Then cw.rows is the rows to insert:
 * the batch's others and cw.out; cw.rpairs the acks for the database.
 * Order matters: an ack in the same batch as its row, or as the row's
 * flush, settles it first.
 */
static void commit_relay_prepare(uint64_t now_ms)
{
	uint32_t keep = 0, room;
	uint64_t held = 0, absorbed = 0;

	for (uint32_t i = 0; i < cw.nrows; i++) {
		struct commit_item *it = cw.rows[i];

		if (it->hold_row && !cw.final_flush && commit_relay_hold(it, now_ms)) {
			held++;
			continue;
		}
		it->hold_row = false; /* written now: its outcome is the batch's */
		cw.rows[keep++] = it;
		/* Members got it before this commit and ack it in the same
		 * batch as often as not: known here, their acks move cursors
		 * by primary key instead of through the temporary table. The
		 * mapping is true whether or not the row commits. */
		if (it->group_id)
			*commit_gslot_of(it->msg_id) = (struct commit_gslot){
			    .msg_id = it->msg_id, .group_id = it->group_id};
	}
	cw.nrows = keep;

	cw.nrpairs = 0;
	for (uint32_t a = 0; a < cw.nacks; a++) {
		const struct commit_item *it = cw.acks[a];

		if (!commit_pairs_reserve(&cw.rpairs, &cw.rpairs_cap, cw.nrpairs, it->nacks)) {
			log_error("commit: out of memory; acks of user %" PRId64 " not applied "
				  "(their messages come again)", it->from_id);
			continue;
		}
		for (uint32_t k = 0; k < it->nacks; k++) {
			int64_t id = it->ack_ids[k];
			struct commit_held *h = unread_set_cancel_row(cw.uset, it->from_id, id);

			if (h && !h->taken) {
				/* the set never touches the row: the last ack
				 * frees it, and it is never written */
				commit_held_release(h);
				absorbed++;
				continue;
			}
			/* a group row written since (another member's flush):
			 * this ack moves the member's cursor like any other */
			if (h)
				commit_held_release(h);
			cw.rpairs[cw.nrpairs++] =
			    (struct unread_pair){.to_id = it->from_id, .msg_id = id};
		}
	}

	/* upairs is scratch until commit_plan_unread fills it */
	room = unread_set_count(cw.uset);
	if (room && commit_pairs_reserve(&cw.upairs, &cw.upairs_cap, 0, room)) {
		uint32_t n;

		for (uint32_t f = 0; f < cw.nflushes; f++) {
			n = unread_set_take_user(cw.uset, cw.flushes[f]->from_id, cw.upairs, room);
			commit_relay_take(cw.upairs, n);
		}
		n = unread_set_take_due(cw.uset, cw.final_flush ? UINT64_MAX : now_ms, cw.upairs,
					room);
		commit_relay_take(cw.upairs, n);
	}
	unread_set_commit(cw.uset);
	counter_add(unread_deferred, held);
	counter_add(unread_absorbed, absorbed);

	if (cw.nrows + cw.nout > cw.rows_cap) {
		uint32_t cap = cw.rows_cap;
		struct commit_item **r;

		while (cap < cw.nrows + cw.nout)
			cap *= 2;
		r = realloc(cw.rows, (size_t)cap * sizeof(*r));
		if (!r)
			return; /* cw.out waits for a batch with room */
		cw.rows = r;
		cw.rows_cap = cap;
	}
	for (uint32_t i = 0; i < cw.nout; i++) {
		const struct commit_item *ci = &cw.out[i]->ci;

		cw.rows[cw.nrows++] = &cw.out[i]->ci;
		if (ci->group_id) /* as above: acks in this batch find it */
			*commit_gslot_of(ci->msg_id) =
			    (struct commit_gslot){.msg_id = ci->msg_id, .group_id = ci->group_id};
	}
}

/* Relay: the transaction that wrote cw.out committed. Returns how many
 * of its rows are stored. */
static uint32_t commit_relay_written(void)
{
	uint32_t ok = 0;

	for (uint32_t i = 0; i < cw.nout; i++) {
		struct commit_held *h = cw.out[i];

		if (h->ci.status == ST_OK)
			ok++;
		else
			log_error("commit: held message %" PRId64 " of user %" PRId64
				  " not stored: %s",
				  h->ci.msg_id, h->ci.from_id, h->ci.error);
		h->in_out = false;
		if (!h->owing) /* else members' entries still point here */
			commit_held_free(h);
	}
	cw.nout = 0;
	return ok;
}

/* Relay, after the last turn: the rows still in memory are lost. */
static void commit_relay_drop_all(void)
{
	struct unread_pair p[256];
	uint32_t n, lost = cw.nout;

	while ((n = unread_set_take_due(cw.uset, UINT64_MAX, p, 256))) {
		unread_set_commit(cw.uset);
		for (uint32_t i = 0; i < n; i++) {
			struct commit_held *h = p[i].row;

			if (!h)
				continue;
			if (!h->taken) {
				h->taken = true;
				lost++;
			}
			commit_held_release(h);
		}
	}
	for (uint32_t i = 0; i < cw.nout; i++) {
		cw.out[i]->in_out = false;
		commit_held_free(cw.out[i]); /* no entry is left: all taken above */
	}
	cw.nout = 0;
	if (lost)
		log_error("commit: %u messages pushed but not acknowledged could not be stored "
			  "at stop: lost",
			  lost);
}

/* Runs the batch; false when it needed no transaction (relay: all settled
 * in memory, every item ST_OK). */
static bool commit_run_batch(void)
{
	uint64_t start = clock_mono_ms(), deadline;
	unsigned backoff = COMMIT_BACKOFF_MIN_MS;
	bool row_by_row = false;
	uint64_t committed_rows = 0, committed_acks = 0;
	int rc;

	cw.nrows = cw.nacks = cw.nflushes = 0;
	cw.commit_unknown = false;
	for (uint32_t i = 0; i < cw.nbatch; i++) {
		if (cw.batch[i]->kind == COMMIT_ACK)
			cw.acks[cw.nacks++] = cw.batch[i];
		else if (cw.batch[i]->kind == COMMIT_FLUSH_UNREAD)
			cw.flushes[cw.nflushes++] = cw.batch[i];
		else
			cw.rows[cw.nrows++] = cw.batch[i];
	}
	if (cw.relay && cw.uset) {
		commit_relay_prepare(start);
		if (!cw.nrows && !cw.nrpairs)
			return false; /* all settled in memory: every item is ST_OK */
	}
	/* while down, one attempt: the senders learn of the outage at once */
	deadline = start + (cw.down ? 0 : COMMIT_RETRY_MS);
	for (;;) {
		rc = commit_attempt(row_by_row);
		if (rc == 0)
			break;
		if (rc == COMMIT_AGAIN_ROW_BY_ROW && !row_by_row) {
			row_by_row = true;
			continue;
		}
		counter_inc(commit_errors);
		counter_inc(mysql_errors);
		atomic_fetch_add_explicit(&cw.st_retries, 1, memory_order_relaxed);
		if (clock_mono_ms() + backoff > deadline)
			break;
		log_debug("commit: batch of %u failed (%s); retrying in %u ms", cw.nbatch,
			  db_errmsg(cw.db), backoff);
		commit_sleep_ms(backoff);
		backoff = backoff * 2 > COMMIT_BACKOFF_MAX_MS ? COMMIT_BACKOFF_MAX_MS : backoff * 2;
	}
	if (rc) {
		const char *why = rc == DB_ERR_DOWN ? "storage unavailable; not sent, try again"
						    : "storage error; not sent, try again";

		if (!cw.down)
			log_error("commit: batch of %u items failed after %" PRIu64 " ms: %s",
				  cw.nbatch, clock_mono_ms() - start, db_errmsg(cw.db));
		cw.down = true;
		if (cw.commit_unknown)
			commit_note_doubt();
		/* held rows are kept, and so is cw.out: the next commit writes it */
		uint32_t failed = 0;

		for (uint32_t i = 0; i < cw.nbatch; i++) {
			if (!cw.batch[i]->hold_row) {
				commit_fail_item(cw.batch[i], why);
				failed++;
			}
		}
		atomic_fetch_add_explicit(&cw.st_failed, failed, memory_order_relaxed);
		return true;
	}
	if (cw.down)
		log_info("commit: storage is back; batches commit again");
	cw.down = false;
	if (cw.nout)
		committed_rows += commit_relay_written();
	for (uint32_t i = 0; i < cw.nbatch; i++) {
		struct commit_item *it = cw.batch[i];

		if (it->status != ST_OK) {
			atomic_fetch_add_explicit(&cw.st_failed, 1, memory_order_relaxed);
		} else if (it->kind == COMMIT_ACK) {
			committed_acks++;
		} else if (it->kind == COMMIT_INSERT_MSG && !it->hold_row) {
			committed_rows++; /* a held row is not written (yet) */
		}
	}
	counter_inc(commit_batches);
	counter_add(commit_rows, committed_rows);
	atomic_fetch_add_explicit(&cw.st_batches, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&cw.st_rows, committed_rows, memory_order_relaxed);
	atomic_fetch_add_explicit(&cw.st_acks, committed_acks, memory_order_relaxed);
	return true;
}

/* Every item back to its worker, in batch order (so in each worker's
 * submission order); then one wake per worker. */
static void commit_hand_back(void)
{
	for (uint32_t i = 0; i < cw.nbatch; i++) {
		struct commit_item *it = cw.batch[i];
		struct commit_lane *l = &cw.lanes[it->origin];

		/* never full (see commit.h); a bug would spin here, not lose it */
		while (!spsc_push(&l->done, it)) {
			cw.wake(it->origin);
			sched_yield();
		}
		l->touched = true;
	}
	for (int i = 0; i < cw.nlanes; i++) {
		if (cw.lanes[i].touched) {
			cw.lanes[i].touched = false;
			cw.wake(i);
		}
	}
	cw.nbatch = 0;
}

/* One batch (possibly of no items, for due marks): run, hand back, stats. */
static void commit_turn(void)
{
	uint64_t t0 = clock_mono_ns(), ns;

	cw.last_start_ns = t0;
	atomic_store_explicit(&cw.st_last, cw.nbatch, memory_order_relaxed);
	commit_stat_max(&cw.st_max, cw.nbatch);
	if (!commit_run_batch()) {
		/* memory only: no batch latency to report */
		commit_hand_back();
		return;
	}
	commit_hand_back();
	ns = clock_mono_ns() - t0;
	atomic_fetch_add_explicit(&cw.st_lat_total, ns, memory_order_relaxed);
	commit_stat_max(&cw.st_lat_max, ns);
	int b = 0;

	while (b < COMMIT_LAT_BUCKETS && ns > (uint64_t)commit_lat_bucket_us[b] * 1000u)
		b++;
	atomic_fetch_add_explicit(&cw.st_lat_bucket[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&cw.st_turns, 1, memory_order_release);
}

/* How long the idle writer may sleep: until the next due mark, if any. */
static int commit_idle_ms(uint64_t now)
{
	uint64_t due;

	if (!cw.uset || (!unread_set_count(cw.uset) && !cw.nout))
		return COMMIT_IDLE_POLL_MS;
	due = unread_set_next_due(cw.uset);
	if (due < cw.retry_at_ms || cw.nout)
		due = cw.retry_at_ms; /* cw.out: written rows failed, try again */
	if (due <= now)
		return 0;
	return due - now < COMMIT_IDLE_POLL_MS ? (int)(due - now) : COMMIT_IDLE_POLL_MS;
}

static void *commit_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "writer");
	if (db_thread_init())
		log_warn("commit: MySQL thread set-up failed");
	for (;;) {
		uint64_t now = clock_mono_ms();

		if (cw.uset && !cw.recovered && now >= cw.retry_at_ms && commit_recover()) {
			/* every second while the storage is down: once is news */
			static struct log_gate gate;

			log_limited(&gate, LOG_WARN,
				    "commit: cannot restore unread marks yet (%s); until then marks "
				    "are written with their messages",
				    db_errmsg(cw.db));
			cw.retry_at_ms = now + COMMIT_RECOVER_RETRY_MS;
		}
		if (commit_lanes_size())
			commit_pace();
		if (commit_gather(cw.batch_limit))
			commit_gather(2 * cw.batch_limit);
		if (cw.nbatch) {
			commit_turn();
			continue;
		}
		if (cw.uset && now >= cw.retry_at_ms &&
		    (unread_set_next_due(cw.uset) <= now || cw.ndoubt || cw.nout)) {
			/* due marks of recipients that never acked: a batch of
			 * no items writes them; after a failure, wait a while */
			commit_turn();
			if (cw.down)
				cw.retry_at_ms = now + COMMIT_RECOVER_RETRY_MS;
			continue;
		}
		if (atomic_load_explicit(&cw.stopping, memory_order_acquire) &&
		    commit_lanes_empty()) {
			if (cw.uset && (unread_set_count(cw.uset) || cw.ndoubt || cw.nout)) {
				cw.final_flush = true;
				commit_turn();
				if (cw.ndoubt)
					log_error("commit: %u messages whose commit was in doubt may "
						  "lack their unread marks",
						  cw.ndoubt);
				if (cw.relay)
					commit_relay_drop_all();
				else if (unread_set_count(cw.uset))
					log_warn("commit: %u unread marks not written at stop; the next "
						 "start restores them",
						 unread_set_count(cw.uset));
			}
			break;
		}
		/* Dekker with commit_submit: flag, fence, re-check the lanes. */
		atomic_store_explicit(&cw.sleeping, 1, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		if (!commit_lanes_empty() ||
		    atomic_load_explicit(&cw.stopping, memory_order_acquire)) {
			atomic_store_explicit(&cw.sleeping, 0, memory_order_relaxed);
			continue;
		}
		struct pollfd pfd = {.fd = cw.wake_fd, .events = POLLIN};

		poll(&pfd, 1, commit_idle_ms(now));
		commit_drain_fd(cw.wake_fd);
		atomic_store_explicit(&cw.sleeping, 0, memory_order_relaxed);
	}
	db_close(cw.db);
	cw.db = NULL;
	db_thread_end();
	return NULL;
}

/* ---- start / stop --------------------------------------------------------- */

static void commit_free(void)
{
	if (cw.lanes) {
		for (int i = 0; i < cw.nlanes; i++) {
			spsc_destroy(&cw.lanes[i].in);
			spsc_destroy(&cw.lanes[i].done);
		}
		free(cw.lanes);
	}
	if (cw.wake_fd != -1)
		close(cw.wake_fd);
	free(cw.batch);
	free(cw.rows);
	free(cw.acks);
	free(cw.params);
	free(cw.flushes);
	free(cw.upairs);
	free(cw.apairs);
	free(cw.doubt);
	free(cw.gacks);
	free(cw.glow);
	free(cw.gcache);
	free(cw.out);
	free(cw.rpairs);
	unread_set_free(cw.uset);
	db_close(cw.db);
	memset(&cw, 0, sizeof(cw));
}

int commit_start(const struct config *cfg, int nlanes, void (*wake)(int lane))
{
	size_t lanes_bytes;
	uint32_t cap = COMMIT_QUEUE_MIN;
	int ret;

	memset(&cw, 0, sizeof(cw));
	cw.wake_fd = -1;
	cw.wake = wake;
	cw.nlanes = nlanes;
	cw.batch_limit = cfg->commit_batch_max > 0 ? (uint32_t)cfg->commit_batch_max : 1;
	cw.interval_ns = (uint64_t)cfg->commit_interval_us * 1000;
	cw.bulk = cfg->commit_bulk != 0;
	/* a lane holds every item its worker has out, and a worker may fill
	 * a couple of batches while one commits */
	while (cap < 2 * cw.batch_limit || cap < (uint32_t)cfg->queue_depth)
		cap <<= 1;
	cw.cap = cap;
	lanes_bytes = (sizeof(struct commit_lane) * (size_t)cw.nlanes + SPSC_CACHELINE - 1) /
		      SPSC_CACHELINE * SPSC_CACHELINE;
	cw.lanes = aligned_alloc(SPSC_CACHELINE, lanes_bytes);
	cw.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	cw.batch = calloc(2 * (size_t)cw.batch_limit, sizeof(*cw.batch));
	cw.rows = calloc(2 * (size_t)cw.batch_limit, sizeof(*cw.rows));
	cw.rows_cap = 2 * cw.batch_limit;
	cw.acks = calloc(2 * (size_t)cw.batch_limit, sizeof(*cw.acks));
	cw.params = calloc(COMMIT_PARAMS_MAX, sizeof(*cw.params));
	cw.flushes = calloc(2 * (size_t)cw.batch_limit, sizeof(*cw.flushes));
	cw.gcache = calloc(COMMIT_GCACHE_SLOTS, sizeof(*cw.gcache));
	cw.node_id = cfg->node_id;
	cw.floor_stored = -1;
	/* stored: marks are held; relay: whole rows of pushed messages (see
	 * commit.h) */
	cw.relay = cfg->durability == DURABILITY_RELAY;
	if (cfg->unread_defer_ms > 0) {
		cw.defer_ms = (uint64_t)cfg->unread_defer_ms;
		cw.uset =
		    unread_set_new(cw.relay ? COMMIT_RELAY_HELD_ENTRIES : COMMIT_UNREAD_HELD_MAX);
		if (!cw.uset) {
			ret = -ENOMEM;
			goto out_free;
		}
	}
	cw.db = db_open(cfg);
	if (cw.db)
		db_set_txn_only(cw.db);
	if (!cw.lanes || cw.wake_fd == -1 || !cw.batch || !cw.rows || !cw.acks || !cw.params ||
	    !cw.flushes || !cw.gcache || !cw.db) {
		ret = -ENOMEM;
		goto out_free;
	}
	memset(cw.lanes, 0, lanes_bytes);
	for (int i = 0; i < cw.nlanes; i++) {
		if (spsc_init(&cw.lanes[i].in, cap) || spsc_init(&cw.lanes[i].done, cap)) {
			ret = -ENOMEM;
			goto out_free;
		}
	}
	ret = pthread_create(&cw.thread, NULL, commit_main, NULL);
	if (ret) {
		log_error("commit: cannot start the writer thread: %s", strerror(ret));
		ret = -ret;
		goto out_free;
	}
	cw.started = true;
	log_info("commit: writer started, batches of up to %u items, %u items per worker",
		 cw.batch_limit, cw.cap);
	return 0;

out_free:
	commit_free();
	return ret;
}

void commit_stop(void)
{
	struct commit_stats st;

	if (!cw.started)
		return;
	atomic_store_explicit(&cw.stopping, true, memory_order_release);
	commit_kick(cw.wake_fd);
	pthread_join(cw.thread, NULL);
	commit_stats_get(&st);
	log_info("commit: stopped after %" PRIu64 " batches, %" PRIu64 " rows, %" PRIu64
		 " acks, %" PRIu64 " failed items, average batch latency %" PRIu64 " us",
		 st.batches, st.rows, st.acks, st.failed_items,
		 st.batches ? st.latency_ns_total / st.batches / 1000 : 0);
	for (int i = 0; i < cw.nlanes; i++)
		if (spsc_size(&cw.lanes[i].done))
			log_warn("commit: %u completions of worker %d were never taken",
				 spsc_size(&cw.lanes[i].done), i);
	commit_free();
}
