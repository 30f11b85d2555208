/*
 * commit.c - the group-commit writer (contract in commit.h).
 *
 * The writer thread owns its struct db, the batch arrays and the "down"
 * flag; each worker owns the producer end of its in queue, the consumer
 * end of its done queue and its inflight count. Nothing else is shared
 * but the queues, the sleeping flag and the statistics.
 *
 * One turn of the loop:
 *
 *   gather ── nothing ──► sleep (sleeping → notified, as in worker.h)
 *     │ up to commit_batch_max items, lanes round-robin; when acks came,
 *     │ one more sweep (up to twice the limit) so that rows the acked
 *     │ messages need join the same transaction
 *     ▼
 *   attempt: BEGIN · INSERT rows in chunks · acks · COMMIT
 *     │ duplicate or rejected row ──► again, row by row (once)
 *     │ link lost, deadlock, ... ──► again after a back-off, until
 *     │                               COMMIT_RETRY_MS (one try while down)
 *     ▼
 *   hand back: every item to its worker's done queue, in batch order;
 *   wake each worker that got something
 *
 * Statement shapes are kept few so that the statement cache stays warm: a
 * chunk of k rows runs as INSERTs of the powers of two that add up to k
 * (1000 = 512 + 256 + 128 + 64 + 32 + 8), so at most 11 distinct INSERTs
 * exist, and a chunk costs at most 11 statements inside one transaction.
 *
 * Acks go through a per-connection temporary table: the batch's (msg_id,
 * user) pairs are inserted like message rows, then two set-based UPDATEs
 * join it, so a batch of any number of acks costs five statements and no
 * SQL is ever built from values.
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
#include "ringchat/log.h"
#include "ringchat/protocol.h"
#include "ringchat/spsc.h"
#include "ringchat/worker.h"

#define COMMIT_QUEUE_MIN 4096	 /* items per lane, at least */
#define COMMIT_IDLE_POLL_MS 1000 /* sleep bound when idle (stop is also a wake) */
#define COMMIT_BACKOFF_MIN_MS 50
#define COMMIT_BACKOFF_MAX_MS 800
#define COMMIT_MSG_COLS 9
#define COMMIT_PARAMS_MAX                                                                          \
	(COMMIT_CHUNK_ROWS * COMMIT_MSG_COLS > COMMIT_ACK_CHUNK * 2                                \
	     ? COMMIT_CHUNK_ROWS * COMMIT_MSG_COLS                                                 \
	     : COMMIT_ACK_CHUNK * 2)

_Static_assert(COMMIT_PARAMS_MAX <= DB_MULTI_MAX_PARAMS, "a chunk must fit one statement");

/* One worker's pair of queues. */
struct commit_lane {
	struct spsc in;				   /* worker → writer */
	struct spsc done;			   /* writer → worker */
	alignas(SPSC_CACHELINE) uint32_t inflight; /* worker thread only */
	bool touched;				   /* writer only: got items back in this turn */
};

struct commit_writer {
	struct worker_pool *pool;
	struct commit_lane *lanes;
	int nlanes;
	uint32_t cap;	      /* per lane, power of two */
	uint32_t batch_limit; /* commit_batch_max */
	pthread_t thread;
	bool started;
	alignas(SPSC_CACHELINE) _Atomic int sleeping; /* set by the writer before it blocks */
	int wake_fd;
	_Atomic bool stopping;

	/* writer thread only */
	struct db *db;
	bool down; /* the last batch failed: one attempt per batch */
	int next_lane;
	struct commit_item **batch; /* 2 * batch_limit */
	struct commit_item **rows;  /* the batch's INSERT items, in order */
	struct commit_item **acks;  /* the batch's ACK items, in order */
	uint32_t nbatch, nrows, nacks;
	struct db_param *params; /* COMMIT_PARAMS_MAX */

	/* statistics, read by commit_stats_get from any thread */
	_Atomic uint64_t st_batches, st_rows, st_acks, st_failed, st_retries;
	_Atomic uint64_t st_last, st_max, st_lat_total, st_lat_max;
};

static struct commit_writer cw;

static const struct db_multi commit_ins_msg = {
    .prefix = "INSERT INTO messages (msg_id, conversation_id, from_id, to_id, group_id, "
	      "type, text, send_time, client_msg_id) VALUES ",
    .row = "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
    .row_fmt = "llllliblb",
};

/* One row per 1:1 message its recipient has not acknowledged (see
 * sql/schema.sql, table unread). */
static const struct db_multi commit_ins_unread = {
    .prefix = "INSERT IGNORE INTO unread (to_id, msg_id) VALUES ",
    .row = "(?, ?)",
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
/* 1:1 messages addressed to the acknowledging user stop being unread.
 * Group messages have no unread row (their members keep read cursors). */
static const char COMMIT_SQL_ACK_DIRECT[] =
    "DELETE u FROM unread u JOIN rc_acks a ON u.to_id = a.uid AND u.msg_id = a.mid";
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
static const char COMMIT_SQL_BY_ID[] =
    "SELECT from_id, conversation_id, send_time FROM messages WHERE msg_id = ?";
static const char COMMIT_SQL_BY_CLIENT_ID[] =
    "SELECT msg_id, conversation_id, send_time FROM messages "
    "WHERE from_id = ? AND client_msg_id = ?";

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

bool commit_has_room(struct worker *w)
{
	return cw.lanes[w->id].inflight < cw.cap;
}

uint32_t commit_inflight(struct worker *w)
{
	return cw.started ? cw.lanes[w->id].inflight : 0;
}

bool commit_submit(struct worker *w, struct commit_item *it)
{
	struct commit_lane *l = &cw.lanes[w->id];

	if (l->inflight >= cw.cap)
		return false;
	it->origin = (uint16_t)w->id;
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

struct commit_item *commit_take(struct worker *w)
{
	struct commit_lane *l;
	struct commit_item *it;

	if (!cw.started)
		return NULL;
	l = &cw.lanes[w->id];
	it = spsc_pop(&l->done);
	if (it)
		l->inflight--;
	return it;
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
}

/* ---- writer: gathering ---------------------------------------------------- */

/* Pops items into the batch until limit; returns whether any is an ack. */
static bool commit_gather(uint32_t limit)
{
	bool acks = false;

	for (int k = 0; k < cw.nlanes && cw.nbatch < limit; k++) {
		struct commit_lane *l = &cw.lanes[(cw.next_lane + k) % cw.nlanes];
		struct commit_item *it;

		while (cw.nbatch < limit && (it = spsc_pop(&l->in))) {
			cw.batch[cw.nbatch++] = it;
			if (it->kind == COMMIT_ACK)
				acks = true;
		}
	}
	/* start elsewhere next time, so no lane always waits behind another */
	cw.next_lane = (cw.next_lane + 1) % cw.nlanes;
	return acks;
}

static bool commit_lanes_empty(void)
{
	for (int i = 0; i < cw.nlanes; i++)
		if (spsc_size(&cw.lanes[i].in))
			return false;
	return true;
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
	p[8] = DB_B(it->cmid, it->cmid ? it->cmid_len : 0);
}

/* Inserts rows[from, from + n) as statements of power-of-two sizes. */
static int commit_insert_chunk(uint32_t from, uint32_t n)
{
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
 * A row hit a duplicate key: decides whether it is stored already (see
 * commit.h). Returns 0 (outcome set on it) or a negative enum db_error
 * when the lookups themselves failed.
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
	if (it->cmid) {
		rows = db_query(cw.db, COMMIT_SQL_BY_CLIENT_ID, "lb", it->from_id, it->cmid,
				(size_t)it->cmid_len);
		if (!rows)
			return db_last_error(cw.db);
		if (db_rows_count(rows) == 1) {
			int64_t id = db_cell_i64(rows, 0, 0);

			it->stored_other = id != it->msg_id;
			it->msg_id = id;
			it->conversation_id = db_cell_i64(rows, 0, 1);
			it->send_time = db_cell_i64(rows, 0, 2);
			db_rows_free(rows);
			return 0;
		}
		db_rows_free(rows);
	}
	log_error("commit: msg_id %" PRId64 " of user %" PRId64 " is taken by another message",
		  it->msg_id, it->from_id);
	commit_fail_item(it, "message id collision; send it again");
	return 0;
}

static int commit_insert_row_by_row(void)
{
	for (uint32_t i = 0; i < cw.nrows; i++) {
		struct commit_item *it = cw.rows[i];
		int64_t rc;

		commit_fill_row(cw.params, it);
		rc = db_exec_multi(cw.db, &commit_ins_msg, 1, cw.params);
		if (rc >= 0)
			continue;
		if (rc == DB_ERR_DUP) {
			int ret = commit_resolve_dup(it);

			if (ret)
				return ret;
			continue;
		}
		/* Anything else ends the attempt: a deadlock has already
		 * rolled the whole transaction back, and going on would
		 * commit the rest as if nothing happened. Rows are checked
		 * before they get here, so a row the server refuses for
		 * itself is not expected; if one ever is, its batch fails
		 * at the deadline and its sender hears so. */
		return (int)rc;
	}
	return 0;
}

/*
 * The unread rows of this batch's 1:1 messages, as power-of-two statements
 * like the messages themselves. A retry resolved to an earlier message
 * (stored_other) already had its row, and it may since have been acked.
 */
static int commit_insert_unread(void)
{
	uint32_t n = 0;
	int64_t rc;

	for (uint32_t i = 0; i < cw.nrows; i++) {
		const struct commit_item *it = cw.rows[i];

		if (!it->to_id || it->stored_other)
			continue;
		cw.params[2 * n] = DB_L(it->to_id);
		cw.params[2 * n + 1] = DB_L(it->msg_id);
		if (++n < COMMIT_CHUNK_ROWS)
			continue;
		rc = db_exec_multi(cw.db, &commit_ins_unread, n, cw.params);
		if (rc < 0)
			return (int)rc;
		n = 0;
	}
	for (uint32_t size = COMMIT_CHUNK_ROWS, off = 0; size && n; size >>= 1) {
		if (!(n & size))
			continue;
		rc = db_exec_multi(cw.db, &commit_ins_unread, size, cw.params + 2 * off);
		if (rc < 0)
			return (int)rc;
		off += size;
	}
	return 0;
}

/* Fills rc_acks. Returns the rows it holds (duplicates collapse) or a
 * negative db error. */
static int64_t commit_ack_rows(void)
{
	uint32_t n = 0;
	int64_t rc, held = 0;

	for (uint32_t a = 0; a < cw.nacks; a++) {
		const struct commit_item *it = cw.acks[a];

		for (uint32_t k = 0; k < it->nacks; k++) {
			cw.params[2 * n] = DB_L(it->ack_ids[k]);
			cw.params[2 * n + 1] = DB_L(it->from_id);
			if (++n < COMMIT_ACK_CHUNK)
				continue;
			rc = db_exec_multi(cw.db, &commit_ins_ack, n, cw.params);
			if (rc < 0)
				return rc;
			held += rc;
			n = 0;
		}
	}
	/* the rest as power-of-two statements, as for message rows */
	for (uint32_t size = COMMIT_ACK_CHUNK, off = 0; size && n; size >>= 1) {
		if (!(n & size))
			continue;
		rc = db_exec_multi(cw.db, &commit_ins_ack, size, cw.params + 2 * off);
		if (rc < 0)
			return rc;
		held += rc;
		off += size;
	}
	return held;
}

static int commit_apply_acks(void)
{
	int64_t rc, held;

	if ((rc = db_exec(cw.db, COMMIT_SQL_ACK_TABLE, NULL)) < 0 ||
	    (rc = db_exec(cw.db, COMMIT_SQL_ACK_CLEAR, NULL)) < 0)
		return (int)rc;
	held = commit_ack_rows();
	if (held < 0)
		return (int)held;
	rc = db_exec(cw.db, COMMIT_SQL_ACK_DIRECT, NULL);
	if (rc < 0)
		return (int)rc;
	/* The UPDATE counts the rows it matched (CLIENT_FOUND_ROWS): when
	 * every acked id was an unread 1:1 message addressed to its acker,
	 * none can be a group message, and the group statement (a join with
	 * a GROUP BY) is skipped. Otherwise it runs; it is exact either way. */
	if (rc == held)
		return 0;
	rc = db_exec(cw.db, COMMIT_SQL_ACK_GROUP, NULL);
	return rc < 0 ? (int)rc : 0;
}

/* Returns 0 (committed), COMMIT_AGAIN_ROW_BY_ROW or a negative db error. */
static int commit_attempt(bool row_by_row)
{
	int rc;

	/* stored_other stays: an item resolved to an earlier message carries
	 * that message's msg_id from then on, and the next attempt finds it
	 * by that id as if it were its own */
	for (uint32_t i = 0; i < cw.nbatch; i++) {
		cw.batch[i]->status = ST_OK;
		cw.batch[i]->error = NULL;
	}
	rc = db_begin(cw.db);
	if (rc)
		return rc;
	rc = row_by_row ? commit_insert_row_by_row() : commit_insert_all();
	if (!rc)
		rc = commit_insert_unread();
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
	if (cw.nacks) {
		/* any failure here ends the attempt, for the reason above */
		rc = commit_apply_acks();
		if (rc)
			goto out_rollback;
	}
	return db_commit(cw.db);

out_rollback:
	db_rollback(cw.db);
	return rc;
}

/* ---- writer: one batch ---------------------------------------------------- */

static void commit_run_batch(void)
{
	uint64_t start = clock_mono_ms(), deadline;
	unsigned backoff = COMMIT_BACKOFF_MIN_MS;
	bool row_by_row = false;
	uint64_t committed_rows = 0, committed_acks = 0;
	int rc;

	cw.nrows = cw.nacks = 0;
	for (uint32_t i = 0; i < cw.nbatch; i++) {
		if (cw.batch[i]->kind == COMMIT_ACK)
			cw.acks[cw.nacks++] = cw.batch[i];
		else
			cw.rows[cw.nrows++] = cw.batch[i];
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
		for (uint32_t i = 0; i < cw.nbatch; i++)
			commit_fail_item(cw.batch[i], why);
		atomic_fetch_add_explicit(&cw.st_failed, cw.nbatch, memory_order_relaxed);
		return;
	}
	if (cw.down)
		log_info("commit: storage is back; batches commit again");
	cw.down = false;
	for (uint32_t i = 0; i < cw.nbatch; i++) {
		struct commit_item *it = cw.batch[i];

		if (it->status != ST_OK)
			atomic_fetch_add_explicit(&cw.st_failed, 1, memory_order_relaxed);
		else if (it->kind == COMMIT_ACK)
			committed_acks++;
		else
			committed_rows++;
	}
	counter_inc(commit_batches);
	counter_add(commit_rows, committed_rows);
	atomic_fetch_add_explicit(&cw.st_batches, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&cw.st_rows, committed_rows, memory_order_relaxed);
	atomic_fetch_add_explicit(&cw.st_acks, committed_acks, memory_order_relaxed);
}

/* Every item back to its worker, in batch order (so in each worker's
 * submission order); then one wake per worker. */
static void commit_hand_back(void)
{
	struct worker_pool *p = cw.pool;

	for (uint32_t i = 0; i < cw.nbatch; i++) {
		struct commit_item *it = cw.batch[i];
		struct commit_lane *l = &cw.lanes[it->origin];

		/* never full (see commit.h); a bug would spin here, not lose it */
		while (!spsc_push(&l->done, it)) {
			worker_wake(&p->workers[it->origin]);
			sched_yield();
		}
		l->touched = true;
	}
	for (int i = 0; i < cw.nlanes; i++) {
		if (cw.lanes[i].touched) {
			cw.lanes[i].touched = false;
			worker_wake(&p->workers[i]);
		}
	}
	cw.nbatch = 0;
}

static void *commit_main(void *arg)
{
	(void)arg;
	if (db_thread_init())
		log_warn("commit: MySQL thread set-up failed");
	for (;;) {
		uint64_t t0;

		if (commit_gather(cw.batch_limit))
			commit_gather(2 * cw.batch_limit);
		if (cw.nbatch) {
			uint64_t ns;

			atomic_store_explicit(&cw.st_last, cw.nbatch, memory_order_relaxed);
			commit_stat_max(&cw.st_max, cw.nbatch);

			t0 = clock_mono_ns();
			commit_run_batch();
			commit_hand_back();
			ns = clock_mono_ns() - t0;
			atomic_fetch_add_explicit(&cw.st_lat_total, ns, memory_order_relaxed);
			commit_stat_max(&cw.st_lat_max, ns);
			continue;
		}
		if (atomic_load_explicit(&cw.stopping, memory_order_acquire) &&
		    commit_lanes_empty())
			break;
		/* Dekker with commit_submit: flag, fence, re-check the lanes. */
		atomic_store_explicit(&cw.sleeping, 1, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		if (!commit_lanes_empty() ||
		    atomic_load_explicit(&cw.stopping, memory_order_acquire)) {
			atomic_store_explicit(&cw.sleeping, 0, memory_order_relaxed);
			continue;
		}
		struct pollfd pfd = {.fd = cw.wake_fd, .events = POLLIN};

		poll(&pfd, 1, COMMIT_IDLE_POLL_MS);
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
	if (cw.wake_fd > 0)
		close(cw.wake_fd);
	free(cw.batch);
	free(cw.rows);
	free(cw.acks);
	free(cw.params);
	db_close(cw.db);
	memset(&cw, 0, sizeof(cw));
}

int commit_start(struct worker_pool *pool)
{
	const struct config *cfg = pool->cfg;
	size_t lanes_bytes;
	uint32_t cap = COMMIT_QUEUE_MIN;
	int ret;

	memset(&cw, 0, sizeof(cw));
	cw.pool = pool;
	cw.nlanes = pool->n;
	cw.batch_limit = cfg->commit_batch_max > 0 ? (uint32_t)cfg->commit_batch_max : 1;
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
	cw.acks = calloc(2 * (size_t)cw.batch_limit, sizeof(*cw.acks));
	cw.params = calloc(COMMIT_PARAMS_MAX, sizeof(*cw.params));
	cw.db = db_open(cfg);
	if (!cw.lanes || cw.wake_fd == -1 || !cw.batch || !cw.rows || !cw.acks || !cw.params ||
	    !cw.db) {
		if (cw.wake_fd == -1)
			cw.wake_fd = 0;
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
