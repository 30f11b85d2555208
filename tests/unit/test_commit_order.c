/*
 * test_commit_order.c - the group-commit writer against the real MariaDB:
 * items come back to the worker that submitted them, in its submission
 * order, each with the right outcome; rows are really there; a
 * client_msg_id sent twice (in one batch or later) is stored once and both
 * answers carry the first msg_id, and only messages sent with one have a
 * key in message_client_ids; a msg_id taken by another message fails only
 * its own row (and leaves no key); acks mark 1:1 rows of their recipient only and move a
 * group member's cursor up, never down. With unread marks held back
 * (unread_defer_ms), an ack in time writes nothing, a mark not acked is
 * written when due, a login flush writes its user's marks at once, a
 * clean stop writes what is left and leaves no floor to recover. A batch
 * whose COMMIT landed but was reported lost keeps its rows' marks. A group
 * message committed after a higher id was acked stays above the cursor.
 *
 * The test thread plays the workers of both lanes (commit.c only needs
 * lane numbers and a wake-up callback, which polling makes unneeded). Users
 * and groups are random ids far above real ones; their rows are deleted
 * at the end. Without RINGCHAT_MYSQL_SOCKET or a server it exits 77.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ringchat/clock.h"
#include "ringchat/commit.h"
#include "ringchat/config.h"
#include "ringchat/db.h"
#include "ringchat/ids.h"
#include "ringchat/protocol.h"

#define SKIP 77
#define TAKE_TIMEOUT_MS 15000

static struct config cfg;
#define LANES 2
static struct db *db;
static int64_t user_base; /* this run's users: user_base + 0..99 */

static int64_t user(int k)
{
	return user_base + k;
}

static struct commit_item *msg_item(int64_t from, int64_t to, int64_t group, const char *text,
				    const char *cmid)
{
	struct commit_item *it = calloc(1, sizeof(*it));

	assert_non_null(it);
	it->kind = COMMIT_INSERT_MSG;
	it->msg_id = ids_next();
	it->conversation_id = group ? group : from + to; /* any value: not checked here */
	it->from_id = from;
	it->to_id = to;
	it->group_id = group;
	it->send_time = (int64_t)clock_epoch_ms();
	it->type = 0;
	it->text = text;
	it->text_len = (uint32_t)strlen(text);
	if (cmid) {
		it->cmid = cmid;
		it->cmid_len = (uint32_t)strlen(cmid);
	}
	return it;
}

static struct commit_item *ack_item(int64_t user_id, const int64_t *ids, uint32_t n)
{
	struct commit_item *it = calloc(1, sizeof(*it));

	assert_non_null(it);
	it->kind = COMMIT_ACK;
	it->from_id = user_id;
	it->ack_ids = ids;
	it->nacks = n;
	return it;
}

/* take() polls: the writer's wake-up is not needed here. */
static void test_wake(int lane)
{
	(void)lane;
}

static void submit(int lane, struct commit_item *it)
{
	assert_true(commit_submit(lane, it));
}

/* The next item handed back to lane (fails after a timeout). */
static struct commit_item *take(int lane)
{
	int64_t deadline = (int64_t)clock_mono_ms() + TAKE_TIMEOUT_MS;
	struct commit_item *it;

	while (!(it = commit_take(lane))) {
		if ((int64_t)clock_mono_ms() > deadline)
			fail_msg("lane %d: nothing handed back in %d ms", lane, TAKE_TIMEOUT_MS);
		usleep(500);
	}
	return it;
}

static int64_t query_int(const char *sql, int64_t arg)
{
	struct db_rows *rows = db_query(db, sql, "l", arg);
	int64_t v;

	assert_non_null(rows);
	v = db_rows_count(rows) ? db_cell_i64(rows, 0, 0) : -1;
	db_rows_free(rows);
	return v;
}

/* Rows of from in message_client_ids. */
static int64_t keys_of(int64_t from)
{
	return query_int("SELECT COUNT(*) FROM message_client_ids WHERE from_id = ?", from);
}

/* 600 items from two workers, interleaved: each worker gets its own back,
 * in order, all stored. */
static void test_order_per_worker(void **state)
{
	enum { N = 600 };
	struct commit_item *items[N];
	int next[2] = {0, 0};

	(void)state;
	for (int i = 0; i < N; i++) {
		items[i] =
		    msg_item(user(i % 2), user(10), 0, i % 7 ? "short" : "a longer text", NULL);
		submit(i % 2, items[i]);
	}
	for (int lane = 0; lane < 2; lane++) {
		for (int k = 0; k < N / 2; k++) {
			struct commit_item *it = take(lane);

			/* the k-th item this lane submitted */
			while (next[lane] < N && next[lane] % 2 != lane)
				next[lane]++;
			assert_ptr_equal(it, items[next[lane]]);
			next[lane]++;
			assert_int_equal(it->status, ST_OK);
			assert_false(it->stored_other);
		}
		assert_int_equal(commit_inflight(lane), 0);
		assert_null(commit_take(lane));
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(
		    query_int("SELECT from_id FROM messages WHERE msg_id = ?", items[i]->msg_id),
		    items[i]->from_id);
		free(items[i]);
	}
	/* sent without client_msg_ids: no keys */
	assert_int_equal(keys_of(user(0)), 0);
	assert_int_equal(keys_of(user(1)), 0);
}

static void test_client_msg_id_once(void **state)
{
	struct commit_item *a, *b, *c;
	char cmid[32];

	(void)state;
	snprintf(cmid, sizeof(cmid), "once-%lld", (long long)user_base);
	a = msg_item(user(20), user(21), 0, "first", cmid);
	b = msg_item(user(20), user(21), 0, "first", cmid);
	int64_t first = a->msg_id;

	/* likely one batch: the insert fails as a whole and is redone row by row */
	submit(0, a);
	submit(0, b);
	assert_ptr_equal(take(0), a);
	assert_ptr_equal(take(0), b);
	assert_int_equal(a->status, ST_OK);
	assert_false(a->stored_other);
	assert_int_equal(b->status, ST_OK);
	assert_true(b->stored_other);
	assert_int_equal(b->msg_id, first);
	assert_int_equal(b->send_time, a->send_time);

	/* later, from the other worker (a retry after a reconnect) */
	c = msg_item(user(20), user(21), 0, "first", cmid);
	submit(1, c);
	assert_ptr_equal(take(1), c);
	assert_int_equal(c->status, ST_OK);
	assert_true(c->stored_other);
	assert_int_equal(c->msg_id, first);
	assert_int_equal(query_int("SELECT COUNT(*) FROM messages WHERE from_id = ?", user(20)), 1);
	assert_int_equal(keys_of(user(20)), 1);
	assert_int_equal(
	    query_int("SELECT msg_id FROM message_client_ids WHERE from_id = ?", user(20)), first);
	free(a);
	free(b);
	free(c);
}

/* The same msg_id from another sender: that row fails, its neighbours in
 * the batch are stored. The same msg_id from the same sender (a retry of
 * a row whose commit was in doubt) is OK. */
static void test_collision_fails_only_its_row(void **state)
{
	struct commit_item *a, *x, *b, *again, *other;

	(void)state;
	a = msg_item(user(30), user(31), 0, "a", NULL);
	submit(0, a);
	assert_ptr_equal(take(0), a);
	assert_int_equal(a->status, ST_OK);

	x = msg_item(user(32), user(31), 0, "x", NULL);
	x->msg_id = a->msg_id;
	b = msg_item(user(33), user(31), 0, "b", NULL);
	again = msg_item(user(30), user(31), 0, "a", NULL);
	again->msg_id = a->msg_id;
	again->send_time = a->send_time;
	/* the same sender's other message under a repeated msg_id */
	other = msg_item(user(30), user(31), 0, "other", NULL);
	other->msg_id = a->msg_id;
	other->send_time = a->send_time - 1;
	submit(1, x);
	submit(1, b);
	submit(1, again);
	submit(1, other);
	assert_ptr_equal(take(1), x);
	assert_ptr_equal(take(1), b);
	assert_ptr_equal(take(1), again);
	assert_ptr_equal(take(1), other);
	assert_int_equal(x->status, ST_INTERNAL);
	assert_non_null(x->error);
	assert_int_equal(b->status, ST_OK);
	assert_int_equal(again->status, ST_OK);
	assert_false(again->stored_other);
	assert_int_equal(other->status, ST_INTERNAL);
	assert_int_equal(query_int("SELECT from_id FROM messages WHERE msg_id = ?", a->msg_id),
			 user(30));
	assert_int_equal(query_int("SELECT COUNT(*) FROM messages WHERE msg_id = ?", b->msg_id), 1);
	free(a);
	free(x);
	free(b);
	free(again);
	free(other);
}

/* A batch of rows with and without client_msg_ids, and a retry of one of
 * them: only the rows sent with one get a key, each naming its own row;
 * the retry is stored once. */
static void test_client_ids_mixed(void **state)
{
	enum { N = 40 };
	struct commit_item *items[N + 1];
	char cmids[N][40];

	(void)state;
	for (int i = 0; i < N; i++) {
		snprintf(cmids[i], sizeof(cmids[i]), "mix-%lld-%d", (long long)user_base, i);
		items[i] = msg_item(user(40), user(41), 0, "m", i % 4 ? NULL : cmids[i]);
		submit(0, items[i]);
	}
	items[N] = msg_item(user(40), user(41), 0, "m", cmids[8]);
	submit(0, items[N]);
	for (int i = 0; i <= N; i++) {
		assert_ptr_equal(take(0), items[i]);
		assert_int_equal(items[i]->status, ST_OK);
		assert_int_equal(items[i]->stored_other, i == N);
	}
	assert_int_equal(items[N]->msg_id, items[8]->msg_id);
	assert_int_equal(items[N]->send_time, items[8]->send_time);
	assert_int_equal(query_int("SELECT COUNT(*) FROM messages WHERE from_id = ?", user(40)), N);
	assert_int_equal(keys_of(user(40)), N / 4);
	for (int i = 0; i < N; i++)
		assert_int_equal(
		    query_int("SELECT from_id FROM message_client_ids WHERE msg_id = ?",
			      items[i]->msg_id),
		    i % 4 ? -1 : user(40));
	for (int i = 0; i <= N; i++)
		free(items[i]);
}

/* A row with a client_msg_id whose msg_id is taken fails alone and leaves
 * no key behind: the client's next send with that client_msg_id is stored
 * as a new message. */
static void test_collision_leaves_no_key(void **state)
{
	struct commit_item *a, *x, *b, *y;
	char cmid[40];

	(void)state;
	snprintf(cmid, sizeof(cmid), "coll-%lld", (long long)user_base);
	a = msg_item(user(50), user(51), 0, "a", NULL);
	submit(0, a);
	assert_ptr_equal(take(0), a);
	assert_int_equal(a->status, ST_OK);

	x = msg_item(user(52), user(51), 0, "x", cmid);
	x->msg_id = a->msg_id;
	b = msg_item(user(52), user(51), 0, "b", NULL);
	submit(0, x);
	submit(0, b);
	assert_ptr_equal(take(0), x);
	assert_ptr_equal(take(0), b);
	assert_int_equal(x->status, ST_INTERNAL);
	assert_int_equal(b->status, ST_OK);
	assert_int_equal(keys_of(user(52)), 0);

	y = msg_item(user(52), user(51), 0, "x", cmid);
	submit(1, y);
	assert_ptr_equal(take(1), y);
	assert_int_equal(y->status, ST_OK);
	assert_false(y->stored_other);
	assert_int_equal(
	    query_int("SELECT msg_id FROM message_client_ids WHERE from_id = ?", user(52)),
	    y->msg_id);
	assert_int_equal(query_int("SELECT COUNT(*) FROM messages WHERE from_id = ?", user(52)), 2);
	free(a);
	free(x);
	free(b);
	free(y);
}

/* A key whose message row is missing (the writer never leaves one: both
 * are in one transaction) names the next message sent with it. */
static void test_orphan_key_taken_over(void **state)
{
	struct commit_item *m;
	char cmid[40];
	int64_t id;

	(void)state;
	snprintf(cmid, sizeof(cmid), "orphan-%lld", (long long)user_base);
	assert_int_equal(db_exec(db,
				 "INSERT INTO message_client_ids (from_id, client_msg_id, msg_id) "
				 "VALUES (?, ?, 1)",
				 "lb", user(55), cmid, strlen(cmid)),
			 1);
	m = msg_item(user(55), user(56), 0, "m", cmid);
	id = m->msg_id;
	submit(0, m);
	assert_ptr_equal(take(0), m);
	assert_int_equal(m->status, ST_OK);
	assert_false(m->stored_other);
	assert_int_equal(m->msg_id, id);
	assert_int_equal(
	    query_int("SELECT msg_id FROM message_client_ids WHERE from_id = ?", user(55)), id);
	assert_int_equal(query_int("SELECT COUNT(*) FROM messages WHERE msg_id = ?", id), 1);
	free(m);
}

/*
 * The same rules with commit_bulk off: message rows as power-of-two
 * multi-row INSERTs, the path for servers and proxies without bulk
 * executions. Fresh users, since these tests assume none of their rows.
 */
static void test_multi_row_path(void **state)
{
	int64_t saved = user_base;

	commit_stop();
	cfg.commit_bulk = 0;
	assert_int_equal(commit_start(&cfg, LANES, test_wake), 0);
	user_base += 1000;
	test_order_per_worker(state);
	test_client_msg_id_once(state);
	test_collision_fails_only_its_row(state);
	test_client_ids_mixed(state);
	test_collision_leaves_no_key(state);
	test_orphan_key_taken_over(state);
	user_base = saved;
	commit_stop();
	cfg.commit_bulk = 1;
	assert_int_equal(commit_start(&cfg, LANES, test_wake), 0);
}

static void test_acks(void **state)
{
	int64_t u = user(40), other = user(41), g = user(50);
	struct commit_item *m1, *m2, *g1, *g2, *g3, *ack;
	struct commit_stats st;
	uint64_t moves;
	int64_t ids[3];

	(void)state;
	assert_true(db_exec(db,
			    "INSERT INTO group_members (group_id, user_id, read_msg_id) "
			    "VALUES (?, ?, 0)",
			    "ll", g, u) == 1);
	m1 = msg_item(other, u, 0, "to u", NULL);
	m2 = msg_item(u, other, 0, "to other", NULL);
	g1 = msg_item(other, 0, g, "g1", NULL);
	g2 = msg_item(other, 0, g, "g2", NULL);
	g3 = msg_item(other, 0, g, "g3", NULL);
	/* acked once committed, as messages are pushed only then (an ack in
	 * the batch of an older group row would put the cursor back below
	 * that row: test_cursor_keeps_late_message) */
	ids[0] = m1->msg_id;
	ids[1] = m2->msg_id; /* u sent it: not u's to mark */
	ids[2] = g2->msg_id;
	ack = ack_item(u, ids, 3);
	submit(0, m1);
	submit(0, m2);
	submit(0, g1);
	submit(0, g2);
	submit(0, g3);
	for (int i = 0; i < 5; i++)
		assert_int_equal(take(0)->status, ST_OK);
	submit(0, ack);
	assert_int_equal(take(0)->status, ST_OK);
	assert_int_equal(query_int("SELECT COUNT(*) = 0 FROM unread WHERE msg_id = ?", m1->msg_id), 1);
	assert_int_equal(query_int("SELECT COUNT(*) = 0 FROM unread WHERE msg_id = ?", m2->msg_id), 0);
	assert_int_equal(query_int("SELECT read_msg_id FROM group_members WHERE group_id = ?", g),
			 g2->msg_id);

	/* an older one again: the cursor stays; ids of nothing are ignored */
	ids[0] = g1->msg_id;
	ids[1] = 9007199254740991LL;
	ack->nacks = 2;
	submit(1, ack);
	assert_ptr_equal(take(1), ack);
	assert_int_equal(ack->status, ST_OK);
	assert_int_equal(query_int("SELECT read_msg_id FROM group_members WHERE group_id = ?", g),
			 g2->msg_id);
	/* g3 was committed in an earlier batch, so the writer knows its group
	 * and moves the cursor by primary key; g1 in the same ack is older */
	ids[0] = g1->msg_id;
	ids[1] = g3->msg_id;
	ack->nacks = 2;
	commit_stats_get(&st);
	moves = st.cursor_moves;
	submit(0, ack);
	assert_int_equal(take(0)->status, ST_OK);
	assert_int_equal(query_int("SELECT read_msg_id FROM group_members WHERE group_id = ?", g),
			 g3->msg_id);
	commit_stats_get(&st);
	assert_int_equal(st.cursor_moves, moves + 1); /* both acks fold into one move */
	/* the same acks from a user outside the group change nothing and
	 * make no member */
	ack->from_id = user(42);
	submit(1, ack);
	assert_int_equal(take(1)->status, ST_OK);
	assert_int_equal(query_int("SELECT COUNT(*) FROM group_members WHERE group_id = ?", g), 1);
	/* its own recipient does mark m2 */
	ids[0] = m2->msg_id;
	ack->from_id = other;
	ack->nacks = 1;
	submit(1, ack);
	assert_int_equal(take(1)->status, ST_OK);
	assert_int_equal(query_int("SELECT COUNT(*) = 0 FROM unread WHERE msg_id = ?", m2->msg_id), 1);
	db_exec(db, "DELETE FROM group_members WHERE group_id = ?", "l", g);
	free(m1);
	free(m2);
	free(g1);
	free(g2);
	free(g3);
	free(ack);
}

static void test_stats(void **state)
{
	struct commit_stats st;

	(void)state;
	commit_stats_get(&st);
	assert_true(st.batches > 0);
	assert_true(st.rows >= 600);
	assert_true(st.max_batch_items >= 1 && st.max_batch_items <= 2u * 64);
	assert_true(st.failed_items >= 2);
}

/* Rows of unread for msg_id (0 or 1). */
static int64_t unread_rows(int64_t msg_id)
{
	return query_int("SELECT COUNT(*) FROM unread WHERE msg_id = ?", msg_id);
}

static void test_held_marks(void **state)
{
	int64_t u = user(60), other = user(61), ids[1];
	struct commit_item *m1, *m2, *m3, *m4, *ack, *flush;
	int64_t deadline;

	(void)state;
	commit_stop();
	cfg.unread_defer_ms = 300;
	assert_int_equal(commit_start(&cfg, LANES, test_wake), 0);
	assert_true(commit_defers_unread());

	m1 = msg_item(other, u, 0, "not acked: written when due", NULL);
	m2 = msg_item(other, u, 0, "acked in time: never written", NULL);
	m3 = msg_item(u, other, 0, "flushed by a login of other", NULL);
	submit(0, m1);
	submit(1, m2);
	submit(0, m3);
	assert_int_equal(take(0)->status, ST_OK);
	assert_int_equal(take(1)->status, ST_OK);
	assert_int_equal(take(0)->status, ST_OK);
	assert_int_equal(query_int("SELECT COUNT(*) FROM messages WHERE msg_id = ?", m1->msg_id), 1);
	assert_int_equal(unread_rows(m1->msg_id), 0);
	assert_int_equal(unread_rows(m2->msg_id), 0);
	assert_int_equal(unread_rows(m3->msg_id), 0);

	ids[0] = m2->msg_id;
	ack = ack_item(u, ids, 1);
	submit(1, ack);
	assert_int_equal(take(1)->status, ST_OK);

	flush = calloc(1, sizeof(*flush));
	assert_non_null(flush);
	flush->kind = COMMIT_FLUSH_UNREAD;
	flush->from_id = other;
	submit(1, flush);
	assert_int_equal(take(1)->status, ST_OK);
	assert_int_equal(unread_rows(m3->msg_id), 1);
	assert_int_equal(unread_rows(m1->msg_id), 0); /* u did not log in */

	deadline = (int64_t)clock_mono_ms() + TAKE_TIMEOUT_MS;
	while (unread_rows(m1->msg_id) == 0 && (int64_t)clock_mono_ms() < deadline)
		usleep(20000);
	assert_int_equal(unread_rows(m1->msg_id), 1);
	assert_int_equal(unread_rows(m2->msg_id), 0);

	/* a clean stop writes what is held and stores "nothing held" */
	m4 = msg_item(other, u, 0, "held at stop", NULL);
	submit(0, m4);
	assert_int_equal(take(0)->status, ST_OK);
	assert_int_equal(unread_rows(m4->msg_id), 0);
	commit_stop();
	assert_int_equal(unread_rows(m4->msg_id), 1);
	assert_int_equal(query_int("SELECT unread_floor FROM node_state WHERE node_id = ?", 3), 0);

	cfg.unread_defer_ms = 0;
	assert_int_equal(commit_start(&cfg, LANES, test_wake), 0);
	assert_false(commit_defers_unread());
	db_exec(db, "DELETE FROM unread WHERE to_id IN (?, ?)", "ll", u, other);
	free(m1);
	free(m2);
	free(m3);
	free(m4);
	free(ack);
	free(flush);
}

/*
 * The COMMIT lands but its answer is lost, and so is every retry's for
 * COMMIT_RETRY_MS: the sender hears 12 although the row is stored. The
 * client sends again with the same client_msg_id, which resolves to the
 * stored row. The held mark of that row must not be lost with the failed
 * batch: after a login flush the recipient has an unread row for it.
 */
static void test_commit_unknown_keeps_mark(void **state)
{
	int64_t u = user(70), other = user(71);
	struct commit_item *m, *again, *flush;
	char cmid[32];

	(void)state;
	commit_stop();
	cfg.unread_defer_ms = 60000; /* never due during the test */
	assert_int_equal(commit_start(&cfg, LANES, test_wake), 0);
	snprintf(cmid, sizeof(cmid), "doubt-%lld", (long long)user_base);

	m = msg_item(other, u, 0, "committed, answer lost", cmid);
	commit_test_lose_commits_until(clock_mono_ms() + COMMIT_RETRY_MS + 2000);
	submit(0, m);
	assert_ptr_equal(take(0), m);
	assert_int_equal(m->status, ST_INTERNAL);
	commit_test_lose_commits_until(0);
	assert_int_equal(query_int("SELECT COUNT(*) FROM messages WHERE msg_id = ?", m->msg_id), 1);

	again = msg_item(other, u, 0, "committed, answer lost", cmid);
	submit(1, again);
	assert_ptr_equal(take(1), again);
	assert_int_equal(again->status, ST_OK);
	assert_true(again->stored_other);
	assert_int_equal(again->msg_id, m->msg_id);

	flush = calloc(1, sizeof(*flush));
	assert_non_null(flush);
	flush->kind = COMMIT_FLUSH_UNREAD;
	flush->from_id = u;
	submit(0, flush);
	assert_int_equal(take(0)->status, ST_OK);
	assert_int_equal(unread_rows(m->msg_id), 1);

	commit_stop();
	cfg.unread_defer_ms = 0;
	assert_int_equal(commit_start(&cfg, LANES, test_wake), 0);
	db_exec(db, "DELETE FROM unread WHERE to_id IN (?, ?)", "ll", u, other);
	free(m);
	free(again);
	free(flush);
}

/*
 * msg_ids are assigned before the commit: a group message with a lower id
 * can be committed after a higher one was pushed and acked (held back, or
 * from a node whose clock lags). A member's login pushes the messages
 * above its cursor (login_push.c); the late one must be among them,
 * whether the cursor was moved by primary key (the writer knew the group
 * of the acked id) or through the join (it did not).
 */
static void test_cursor_keeps_late_message(void **state)
{
	int64_t u = user(80), other = user(81), ids[1];
	struct commit_item *late, *high, *ack;
	static const char login_sql[] =
	    "SELECT COUNT(*) FROM messages m JOIN group_members gm ON gm.group_id = m.group_id "
	    "WHERE gm.user_id = ? AND m.msg_id > gm.read_msg_id AND m.msg_id = ?";

	(void)state;
	for (int path = 0; path < 2; path++) {
		int64_t g = user(82 + path);

		assert_true(db_exec(db,
				    "INSERT INTO group_members (group_id, user_id, read_msg_id) "
				    "VALUES (?, ?, 0)",
				    "ll", g, u) == 1);
		late = msg_item(other, 0, g, "assigned first, committed last", NULL);
		high = msg_item(other, 0, g, "committed and acked first", NULL);
		assert_true(late->msg_id < high->msg_id);
		submit(0, high);
		assert_int_equal(take(0)->status, ST_OK);
		ids[0] = high->msg_id;
		ack = ack_item(u, ids, 1);
		if (path == 1) {
			/* a new writer does not know high's group: the ack
			 * takes the exact way, the join */
			commit_stop();
			assert_int_equal(commit_start(&cfg, LANES, test_wake), 0);
		}
		submit(1, ack);
		assert_int_equal(take(1)->status, ST_OK);
		assert_true(query_int("SELECT read_msg_id FROM group_members WHERE group_id = ?", g) >
			    0);
		submit(0, late);
		assert_int_equal(take(0)->status, ST_OK);
		struct db_rows *rows = db_query(db, login_sql, "ll", u, late->msg_id);

		assert_non_null(rows);
		if (db_cell_i64(rows, 0, 0) != 1)
			fail_msg("path %d: the late message %lld is below the cursor", path,
				 (long long)late->msg_id);
		db_rows_free(rows);
		db_exec(db, "DELETE FROM group_members WHERE group_id = ?", "l", g);
		free(late);
		free(high);
		free(ack);
	}
}

int main(void)
{
	const char *socket = getenv("RINGCHAT_MYSQL_SOCKET");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_per_worker),
	    cmocka_unit_test(test_client_msg_id_once),
	    cmocka_unit_test(test_collision_fails_only_its_row),
	    cmocka_unit_test(test_client_ids_mixed),
	    cmocka_unit_test(test_collision_leaves_no_key),
	    cmocka_unit_test(test_orphan_key_taken_over),
	    cmocka_unit_test(test_acks),
	    cmocka_unit_test(test_stats),
	    /* restarts the writer: after test_stats, which reads its totals */
	    cmocka_unit_test(test_multi_row_path),
	    cmocka_unit_test(test_held_marks),
	    cmocka_unit_test(test_commit_unknown_keeps_mark),
	    cmocka_unit_test(test_cursor_keeps_late_message),
	};
	int rc;

	if (!socket || !socket[0]) {
		printf("RINGCHAT_MYSQL_SOCKET not set (scripts/test.sh sets it): skipped\n");
		return SKIP;
	}
	config_defaults(&cfg);
	snprintf(cfg.mysql_socket, sizeof(cfg.mysql_socket), "%s", socket);
	cfg.commit_batch_max = 64;
	cfg.queue_depth = 64;
	/* marks written with their messages, except in test_held_marks */
	cfg.unread_defer_ms = 0;
	cfg.node_id = 3; /* as ids_init below: the floor is kept per node */
	if (db_global_init() || db_thread_init())
		return 1;
	db = db_open(&cfg);
	if (!db)
		return 1;
	if (db_ping(db)) {
		printf("MariaDB at %s does not answer (%s): skipped\n", socket, db_errmsg(db));
		db_close(db);
		return SKIP;
	}
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	/* far above any real id, still an exact double */
	user_base = ((int64_t)1 << 50) + ((int64_t)(rand() & 0xffffff) << 8);
	if (ids_init(3) || commit_start(&cfg, LANES, test_wake))
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	commit_stop();
	db_exec(db, "DELETE FROM messages WHERE from_id BETWEEN ? AND ?", "ll", user(0), user(1099));
	db_exec(db, "DELETE FROM message_client_ids WHERE from_id BETWEEN ? AND ?", "ll", user(0),
		user(1099));
	db_close(db);
	db_thread_end();
	db_global_end();
	return rc;
}
