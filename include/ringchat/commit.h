/*
 * commit.h - the group-commit writer: one thread with its own MySQL
 * connection that turns the message rows and acknowledgements of every
 * worker into few, large transactions.
 *
 *   worker w ──in[w] (SPSC)──►  writer  ──done[w] (SPSC)──► worker w
 *                               gather ≤ commit_batch_max items from all
 *                               queues; BEGIN; multi-row INSERTs; ack
 *                               UPDATEs; COMMIT once; hand every item back
 *                               to its worker with its outcome
 *
 * Items are owned by the submitting worker's module; the writer only
 * borrows them between commit_submit and commit_take, fills in status /
 * error / stored_other, and hands each back to the worker that submitted
 * it, in that worker's submission order. A worker never has more than
 * commit_capacity() items out, so the writer's hand-back never finds a
 * full queue and never waits.
 *
 * Outcome of an item: ST_OK means its row (or its acks) is committed.
 * Anything else is ST_INTERNAL with a static reason, and nothing of the
 * item is stored: a transaction that did not commit is retried with
 * back-off for COMMIT_RETRY_MS (storage down, deadlock), then failed.
 * After a failed batch the writer is "down": later batches get one
 * attempt each (so callers hear of an outage at once instead of waiting
 * again) until one succeeds.
 *
 * Commit unknown: a COMMIT that lost its link may have landed although
 * its items are answered ST_INTERNAL. With marks held back, the marks of
 * such a batch's 1:1 rows are not lost with it: the writer keeps the rows
 * and its next transaction writes an unread row for each that is stored
 * (a retry with the same client_msg_id then resolves to it, stored_other,
 * and adds no mark of its own). So a message that is stored is always
 * delivered or marked.
 *
 * Duplicates: an item with a client_msg_id also writes its key, a row of
 * message_client_ids, before the message rows of its chunk and in the
 * same transaction; items without one write none. A batch whose INSERTs
 * hit a duplicate key is rolled back and redone row by row, each row's key
 * before the row. A row whose msg_id is already stored with the same
 * sender, conversation and send_time (an earlier attempt of this batch
 * that did commit although COMMIT reported a lost link) is OK; a msg_id
 * stored with anything else is a collision and fails that row alone (its
 * key is not kept). A row whose (from_id, client_msg_id) is stored under
 * another msg_id is OK with stored_other set and msg_id, conversation_id
 * and send_time replaced by the stored row's: the message was sent
 * before, and this row is not written.
 *
 * Acks (COMMIT_ACK) run after the batch's INSERTs, in the same
 * transaction, so acknowledging a message pushed before its row was
 * committed works when both meet in one batch; the writer sweeps the
 * queues once more when a batch holds acks to make that the usual case.
 * An acked 1:1 message addressed to the acker stops being unread; for
 * group messages the member's read_msg_id cursor moves up to the largest
 * acked msg_id of each group (never down by an ack). Ids that match
 * nothing are ignored.
 *
 * Late group messages: msg_ids are assigned before the commit, so a group
 * row can be committed after a member acked a higher id (its batch was
 * retried, its worker waited for room, its node's clock lags) and would
 * lie below that member's cursor, never pushed at login. So each batch,
 * after its acks, puts every cursor at or above one of its group rows'
 * msg_id back to just below it: that member's next login pushes the row
 * (and again what lies between: at least once). Cursors below are not
 * touched, so the usual batch changes no member row.
 *
 * Held-back unread marks (unread_defer_ms > 0, stored mode): the unread
 * row of a committed 1:1 message is held in memory (unread_set.h) for
 * unread_defer_ms; an ack within that time settles it there, and no row
 * is written or deleted. Otherwise the row is written when due. Before
 * a LOGIN/RESUME reads the unread rows of a user, it submits
 * COMMIT_FLUSH_UNREAD for that user: its completion (ST_OK) means every
 * mark held for the user is stored. Each transaction also stores a floor
 * (table node_state): every 1:1 message of this node above it whose mark
 * was held. When the writer starts, it first gives those messages their
 * unread rows back, so an unclean stop loses no mark; acked messages
 * among them come again (at least once, as the contract allows). A clean
 * stop writes every mark still held.
 *
 * Held-back rows (durability relay, unread_defer_ms > 0): a 1:1 message
 * pushed to its recipient is submitted with hold_row set, and the writer
 * keeps a copy of the whole row, message and unread mark, in the same set
 * instead of inserting it; the item comes back at once with ST_OK. An ack
 * within unread_defer_ms drops the copy: nothing is ever written for that
 * message. When it is due, when a COMMIT_FLUSH_UNREAD names its recipient
 * (a login, a kick, a close in a cluster), or at a clean stop, the writer
 * inserts the message and its unread row in one transaction, retried until
 * it commits (the recipient's next login pushes it).
 *
 * A group row is held the same way when every member but the sender was
 * online at send time (owe_ids): one set entry per member who owes an
 * ack, all sharing the copy. Each member's ack (local or forwarded)
 * removes that member's entry and reaches no database; the last one drops
 * the copy, and nothing is written: no row, no cursor moved. When the
 * entries are due with members still owing, or a COMMIT_FLUSH_UNREAD names
 * one of them, or at a clean stop, the row is inserted once, and its
 * cursor-lowering step (below) puts the cursors already past it back below
 * it: every member gets it at the next login. Members whose entries are
 * left ack into the database from then on. A member that acked before the write (in memory) gets it
 * again at its next login unless a later ack moves its cursor past it:
 * at least once.
 *
 * A row that does not fit (the set's 262,144 entries, a group row taking
 * one per member owing, or COMMIT_RELAY_HELD_BYTES of memory held, the
 * member entries counted, or the set's bound on stages, unread_set.h) is
 * written at once, hold_row cleared. No floor is stored for held
 * rows: a crash loses the rows held at that moment (rows, not marks: there
 * is nothing in MariaDB to give back), and that is all it loses. A batch
 * that only holds rows and settles acks in memory runs no transaction.
 *
 * Threads: commit_start/commit_stop on the main thread (before workers
 * start / after they stopped); commit_submit, commit_take, commit_has_room
 * and commit_inflight only on the worker thread that owns the lane; commit_stats_get
 * anywhere.
 */
#ifndef RINGCHAT_COMMIT_H
#define RINGCHAT_COMMIT_H

#include <stdbool.h>
#include <stdint.h>

struct config;

#define COMMIT_RETRY_MS 3000	      /* retry a failing transaction this long */
#define COMMIT_CHUNK_ROWS 1024	      /* message rows of one INSERT statement, at most */
#define COMMIT_CHUNK_BYTES (4u << 20) /* text bytes of one INSERT statement (approx.) */
#define COMMIT_ACK_CHUNK 4096	      /* acked ids of one statement, at most */
#define COMMIT_RELAY_HELD_BYTES (64u << 20) /* memory of held rows (relay), at most */

enum commit_kind {
	COMMIT_INSERT_MSG = 1, /* store one message row */
	COMMIT_ACK,	       /* mark ack_ids read for user from_id */
	COMMIT_FLUSH_UNREAD,   /* write user from_id's held-back unread marks */
};

struct commit_item {
	uint8_t kind;		     /* enum commit_kind */
	uint8_t status;		     /* writer: ST_OK or ST_INTERNAL */
	bool stored_other;	     /* writer: stored before under another msg_id */
	bool mark_now;		     /* 1:1: write the unread mark with the row, never
				      * hold it (the recipient's ack will reach another
				      * node's writer) */
	bool hold_row;		     /* relay, row pushed to its recipient (1:1) or to
				      * every member but the sender (group, owe_ids):
				      * keep the whole row in memory until acked or
				      * due (above). Still set when the item comes
				      * back: it was held; cleared: it was written like
				      * any other row */
	uint16_t origin;	     /* the submitting worker's id (set by commit_submit) */
	const char *error;	     /* writer: static reason when status != ST_OK */

	/* COMMIT_INSERT_MSG: the row. to_id 0 for group rows, group_id 0 for
	 * 1:1 rows. cmid NULL when the message has no client_msg_id. */
	int64_t msg_id;
	int64_t conversation_id;
	int64_t from_id; /* also the acknowledging user of COMMIT_ACK */
	int64_t to_id;
	int64_t group_id;
	int64_t send_time;
	int type;
	uint32_t text_len;
	uint32_t cmid_len;
	const char *text;
	const char *cmid;

	/* COMMIT_ACK */
	const int64_t *ack_ids;
	uint32_t nacks;

	/* COMMIT_INSERT_MSG of a group row with hold_row: the members who owe
	 * an ack (from_id, if listed, is skipped). Borrowed: read by the
	 * writer only before the item comes back; never kept. */
	const int64_t *owe_ids;
	uint32_t nowe;
};

/* Upper bounds of the batch latency histogram, in microseconds (+Inf after). */
#define COMMIT_LAT_BUCKETS 10
extern const uint32_t commit_lat_bucket_us[COMMIT_LAT_BUCKETS];

struct commit_stats {
	uint64_t batches;	   /* transactions committed */
	uint64_t rows;		   /* message rows committed */
	uint64_t acks;		   /* ack items committed */
	uint64_t failed_items;	   /* items answered ST_INTERNAL */
	uint64_t retries;	   /* failed attempts that were retried or gave up */
	uint64_t last_batch_items; /* size of the most recent batch */
	uint64_t max_batch_items;
	uint64_t latency_ns_total; /* sum over batches: gather to hand-back */
	uint64_t latency_ns_max;
	uint64_t cursor_moves; /* group acks settled by primary key (recent group messages) */
	/* Batches by latency: latency_le[i] is how many took at most
	 * commit_lat_bucket_us[i] (cumulative, as Prometheus wants it);
	 * turns counts them all. */
	uint64_t latency_le[COMMIT_LAT_BUCKETS];
	uint64_t turns;
};

/*
 * Creates the queues (one pair per lane: a worker, numbered 0..nlanes-1,
 * each of commit_capacity() items) and starts the writer thread with its
 * own struct db. wake(lane) is called on the writer thread after it handed
 * completions to that lane: it must wake the lane's worker (and not
 * block). Storage being down is no error here. Returns 0 or -errno.
 */
int commit_start(const struct config *cfg, int nlanes, void (*wake)(int lane));

/*
 * Drains and stops: the writer commits everything still queued, hands it
 * back, then exits; the caller's workers must have stopped submitting.
 * Items handed back but never taken are lost with the queues, so stop
 * workers only after commit_inflight() is 0 for each. No-op if not
 * started.
 */
void commit_stop(void);

/* Items a worker may have out at once. */
uint32_t commit_capacity(void);

/* True when unread marks or rows are held back (see above): a login must
 * submit COMMIT_FLUSH_UNREAD before it reads the user's unread rows, and
 * in relay mode a pushed 1:1 row may be submitted with hold_row. */
bool commit_defers_unread(void);

/* True when lane may submit one more item. */
bool commit_has_room(int lane);

/*
 * Hands it to the writer (and wakes it). Returns false, leaving it with
 * the caller, when lane already has commit_capacity() items out.
 */
bool commit_submit(int lane, struct commit_item *it);

/* The next item handed back to lane (oldest first), or NULL. */
struct commit_item *commit_take(int lane);

/* Items lane submitted and has not taken back yet. */
uint32_t commit_inflight(int lane);

void commit_stats_get(struct commit_stats *out);

/* Tests only, any thread: until clock_mono_ms() reaches mono_ms, every
 * COMMIT that succeeds is treated as one whose answer was lost (the link
 * died after the server committed). 0 turns it off. */
void commit_test_lose_commits_until(uint64_t mono_ms);

#endif
