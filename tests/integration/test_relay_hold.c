/*
 * test_relay_hold.c - durability relay: a message pushed to its recipient
 * and never acknowledged is not lost. The node holds its row in memory
 * for unread_defer_ms and then writes it (or writes it at once when the
 * recipient logs in again, here or on another node, or at a clean stop),
 * so the recipient's next login pushes it. A message acknowledged within
 * that time is never written (HISTORY does not have it): relay keeps its
 * speed: a burst acknowledged in time costs no write at all.
 *
 * "Pushed, never acked" is a recipient whose session stays open and reads
 * the push but sends no MSG_ACK: to the node that is exactly a half-open
 * connection (the push was handed to the socket, no ack ever comes).
 *
 * Needs the services (scripts/services.sh start; RINGCHAT_MYSQL_SOCKET and
 * RINGCHAT_REDIS_SOCKET from `services.sh env`).
 */
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RH_PUSH_MS 5000
/* How long "nothing more is pushed" waits after a login. */
#define RH_NO_PUSH_MS 1000
#define RH_LONG_MS 60000
#define RH_SHORT_MS 1000 /* the default: an ack "at once" is surely in time */
/* How long a row due after RH_SHORT_MS may take to show in HISTORY. */
#define RH_WRITE_MS 5000
/* A test relying on RH_LONG_MS not having passed must finish within this. */
#define RH_LONG_BUDGET_MS 40000
#define RH_FLAGS                                                                                   \
	"--durability relay --rate-msgs-per-s 1000000 --rate-burst 1000000 --unread-defer-ms %d"
#define RH_SECRET "relay-hold-test-secret-of-at-least-32-bytes"
#define RH_TTL_MS 1000
/* node ids of the cluster test: apart from other tests' nodes */
/* node ids apart from the other tests' (faults 11..16, link 17..18, cluster 21..26) */
#define RH_ID_A 7
#define RH_ID_B 8
#define RH_ID_C 9

static struct node *rh_nodes[3];
static int rh_nnodes;

struct rh_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static struct node *rh_track(struct node *n)
{
	assert_non_null(n);
	assert_true(rh_nnodes < (int)(sizeof(rh_nodes) / sizeof(rh_nodes[0])));
	rh_nodes[rh_nnodes++] = n;
	return n;
}

/* A relay node with unread_defer_ms = defer_ms. */
static struct node *rh_node_start(int defer_ms)
{
	return rh_track(node_start(RH_FLAGS, defer_ms));
}

static int rh_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < rh_nnodes; i++)
		node_stop(rh_nodes[i]);
	rh_nnodes = 0;
	return 0;
}

static void rh_close(struct rh_user *u)
{
	if (u->c)
		rc_close(u->c);
	u->c = NULL;
}

/* A new connection to n, logged in as u; the earlier one, if any, stays
 * open when keep_old (the node kicks it), else it is closed first. */
static void rh_login(struct node *n, struct rh_user *u, bool keep_old)
{
	struct rc_client *old = u->c;
	cJSON *r;

	if (!keep_old)
		rh_close(u);
	u->c = tc_connect(n);
	r = tc_call_ok(u->c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name,
		       TC_PASSWORD);
	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	cJSON_Delete(r);
	if (keep_old && old)
		rc_close(old);
}

/* Fails unless no PUSH_MSG comes within RH_NO_PUSH_MS, naming what came. */
static void rh_expect_none(struct rc_client *c, const char *when)
{
	struct rc_frame f;
	int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, RH_NO_PUSH_MS);

	if (rc == 0)
		fail_msg("%s: message pushed: %s", when, f.payload);
	if (rc != -ETIMEDOUT)
		fail_msg("%s: connection lost while waiting: %s", when, strerror(-rc));
}

/* Two new users, a on na and b on nb, friends; b then logs in again (its
 * current session), with no push pending. */
static void rh_pair(struct node *na, struct node *nb, struct rh_user *a, struct rh_user *b,
		    const char *prefix)
{
	a->c = tc_signup_login_as(na, prefix, a->name, &a->id);
	b->c = tc_signup_login_as(nb, prefix, b->name, &b->id);
	tc_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b->id);
	cJSON_Delete(tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, RH_PUSH_MS));
	tc_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a->id);
	cJSON_Delete(tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, RH_PUSH_MS));
	rh_login(nb, b, false);
	rh_expect_none(b->c, "the first login of a new user");
}

/* Checks a PUSH_MSG payload: msg_id id and text. */
static void rh_check_push(const cJSON *p, int64_t id, const char *text, const char *when)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");

	if (tc_json_int(p, "msg_id") != id || !cJSON_IsString(t) || strcmp(t->valuestring, text))
		fail_msg("%s: push of msg_id %lld \"%s\", expected %lld \"%s\"", when,
			 (long long)tc_json_int(p, "msg_id"),
			 cJSON_IsString(t) ? t->valuestring : "?", (long long)id, text);
}

/* MSG_SEND of text from a to b (client_msg_id cmid unless NULL), answered
 * OK; returns the msg_id. */
static int64_t rh_send(struct rh_user *a, const struct rh_user *b, const char *text,
		       const char *cmid)
{
	cJSON *r;
	int64_t id;

	if (cmid)
		r = tc_call_expect(a->c, CMD_MSG_SEND, ST_OK,
				   "{\"to\":%lld,\"type\":0,\"text\":\"%s\","
				   "\"client_msg_id\":\"%s\"}",
				   (long long)b->id, text, cmid);
	else
		r = tc_call_expect(a->c, CMD_MSG_SEND, ST_OK,
				   "{\"to\":%lld,\"type\":0,\"text\":\"%s\"}", (long long)b->id,
				   text);
	id = tc_json_int(r, "msg_id");
	cJSON_Delete(r);
	return id;
}

/* Sends text from a to the online b and reads b's push of it (b does not
 * acknowledge it: the caller decides). */
static int64_t rh_send_pushed(struct rh_user *a, struct rh_user *b, const char *text)
{
	int64_t id = rh_send(a, b, text, NULL);
	cJSON *p = tc_expect_push(b->c, CMD_PUSH_MSG, RH_PUSH_MS);

	rh_check_push(p, id, text, "live push");
	cJSON_Delete(p);
	return id;
}

static void rh_ack(struct rh_user *u, int64_t id)
{
	tc_expect(u->c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}", (long long)id);
}

/* Reads the pushes of a login: exactly ids[0..n), in that order, then
 * nothing more. */
static void rh_expect_exactly(struct rc_client *c, const int64_t *ids, int n, const char *when)
{
	for (int i = 0; i < n; i++) {
		struct rc_frame f;
		int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, RH_PUSH_MS);

		if (rc)
			fail_msg("%s: push %d of %d (msg_id %lld) did not come: %s", when, i, n,
				 (long long)ids[i], strerror(-rc));
		if (tc_json_int(f.json, "msg_id") != ids[i])
			fail_msg("%s: push %d is %s, expected msg_id %lld", when, i, f.payload,
				 (long long)ids[i]);
		rc_frame_free(&f);
	}
	rh_expect_none(c, when);
}

/*
 * The msg_ids of u's HISTORY with the user `with` (or of group gid when
 * gid != 0), newest first, into ids[0..max); returns how many. This is
 * what the messages table holds for that conversation.
 */
static int rh_history(struct rh_user *u, int64_t with, int64_t gid, int64_t *ids, int max)
{
	cJSON *r, *m;
	int n = 0;

	if (gid)
		r = tc_call_ok(u->c, CMD_HISTORY, "{\"group_id\":%lld}", (long long)gid);
	else
		r = tc_call_ok(u->c, CMD_HISTORY, "{\"with\":%lld}", (long long)with);
	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(r, "messages"))
	{
		if (n == max)
			fail_msg("HISTORY: more than %d messages", max);
		ids[n++] = tc_json_int(m, "msg_id");
	}
	cJSON_Delete(r);
	return n;
}

static bool rh_has(const int64_t *ids, int n, int64_t id)
{
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* Waits up to RH_WRITE_MS until HISTORY (u with `with`) has msg_id id;
 * returns the history then. */
static int rh_wait_stored(struct rh_user *u, int64_t with, int64_t id, int64_t *ids, int max,
			  const char *what)
{
	int64_t deadline = tc_now_ms() + RH_WRITE_MS;
	int n;

	while (!rh_has(ids, n = rh_history(u, with, 0, ids, max), id)) {
		if (tc_now_ms() > deadline)
			fail_msg("%s: msg_id %lld not stored %d ms after its hold time ended "
				 "(HISTORY has %d messages)",
				 what, (long long)id, RH_WRITE_MS, n);
		tc_sleep_ms(50);
	}
	return n;
}

static void rh_within(int64_t t0, const char *what)
{
	int64_t took = tc_now_ms() - t0;

	if (took > RH_LONG_BUDGET_MS)
		fail_msg("%s took %lld ms: too close to unread_defer_ms %d to prove anything", what,
			 (long long)took, RH_LONG_MS);
}

/* ---- 1. the hold time ends -------------------------------------------------- */

/*
 * Hold 1 s. One message acked at once, one never acked while its
 * recipient's session stays open: the unacked one is stored by the end of
 * the hold time (HISTORY, before any new login), the acked one never is,
 * and the recipient's next login pushes only the unacked one.
 */
static void test_unacked_stored_when_due(void **state)
{
	struct rh_user a = {0}, b = {0};
	int64_t acked, unacked, hist[16];
	struct node *n;
	int nh;

	(void)state;
	n = rh_node_start(RH_SHORT_MS);
	rh_pair(n, n, &a, &b, "rd");
	acked = rh_send_pushed(&a, &b, "acked");
	rh_ack(&b, acked);
	unacked = rh_send_pushed(&a, &b, "unacked");

	/* b's session is still open and silent: a half-open connection */
	nh = rh_wait_stored(&a, b.id, unacked, hist, 16, "pushed, never acked");
	/* written after the acked one was due: its absence is final */
	if (rh_has(hist, nh, acked))
		fail_msg("a message acked within the hold time was written");
	assert_int_equal(nh, 1);
	assert_int_equal(tc_metric(n, "ringchat_unread_absorbed_total"), 1);

	rh_login(n, &b, true);
	rh_expect_exactly(b.c, &unacked, 1, "LOGIN after the hold time");
	rh_ack(&b, unacked);
	rh_login(n, &b, false);
	rh_expect_none(b.c, "LOGIN after acking the stored message");
	assert_int_equal(rh_history(&a, b.id, 0, hist, 16), 1);
	rh_close(&a);
	rh_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- 2. a burst acked in time: no write at all ----------------------------- */

/*
 * Hold 60 s: 500 pipelined messages pushed and acked in one MSG_ACK, then
 * one left unacked, then the recipient logs in again: its login flushes
 * every message still held for it, and exactly the unacked one is stored
 * and pushed. The node has written one message row in all: relay writes
 * nothing for what was acknowledged in time.
 */
static void test_acked_burst_not_written(void **state)
{
	enum { N = 500 };
	struct rh_user a = {0}, b = {0};
	int64_t *ids = calloc(N, sizeof(*ids)), last, hist[16], t0;
	size_t cap = 32 + (size_t)N * 22, off;
	char *json = malloc(cap);
	struct node *n;

	(void)state;
	assert_non_null(ids);
	assert_non_null(json);
	n = rh_node_start(RH_LONG_MS);
	rh_pair(n, n, &a, &b, "rb");
	t0 = tc_now_ms();
	tc_send_many(a.c, b.id, false, N, "x", ids);
	for (int i = 0; i < N; i++) {
		struct rc_frame f;
		int rc = rc_wait_push(b.c, CMD_PUSH_MSG, &f, RH_PUSH_MS);

		if (rc)
			fail_msg("push %d of %d did not come: %s", i, N, strerror(-rc));
		if (tc_json_int(f.json, "msg_id") != ids[i])
			fail_msg("push %d is %s, expected msg_id %lld", i, f.payload,
				 (long long)ids[i]);
		rc_frame_free(&f);
	}
	off = (size_t)snprintf(json, cap, "{\"msg_ids\":[");
	for (int i = 0; i < N; i++)
		off += (size_t)snprintf(json + off, cap - off, "%s%lld", i ? "," : "",
					(long long)ids[i]);
	snprintf(json + off, cap - off, "]}");
	assert_int_equal(tc_call_code(b.c, CMD_MSG_ACK, json), ST_OK);
	last = rh_send_pushed(&a, &b, "unacked");
	rh_login(n, &b, true);
	rh_expect_exactly(b.c, &last, 1, "LOGIN after a burst acked in time");
	rh_within(t0, "the burst test");

	assert_int_equal(rh_history(&a, b.id, 0, hist, 16), 1);
	assert_int_equal(hist[0], last);
	assert_int_equal(tc_metric(n, "ringchat_commit_rows_total"), 1);
	assert_int_equal(tc_metric(n, "ringchat_unread_absorbed_total"), N);
	rh_close(&a);
	rh_close(&b);
	assert_int_equal(node_stop(n), 0);
	free(json);
	free(ids);
}

/* ---- 3. the recipient comes back within the hold time --------------------- */

/*
 * Hold 60 s: pushed, not acked, and the recipient logs in again at once
 * (on a new connection, the old one still open; then close + LOGIN): only
 * the flush at login can have stored the message, and it is pushed. The
 * acked one is neither pushed nor stored.
 */
static void test_login_flushes_held(void **state)
{
	struct rh_user a = {0}, b = {0};
	int64_t acked, ids[2], hist[16], t0;
	struct node *n;
	int nh;

	(void)state;
	n = rh_node_start(RH_LONG_MS);
	rh_pair(n, n, &a, &b, "rl");
	t0 = tc_now_ms();
	acked = rh_send_pushed(&a, &b, "acked");
	rh_ack(&b, acked);
	ids[0] = rh_send_pushed(&a, &b, "held0");
	rh_login(n, &b, true);
	rh_expect_exactly(b.c, ids, 1, "LOGIN while the pushed session is open");

	ids[1] = rh_send_pushed(&a, &b, "held1");
	rh_login(n, &b, false);
	rh_expect_exactly(b.c, ids, 2, "close and LOGIN right after a live push");
	rh_within(t0, "the flush test");

	nh = rh_history(&a, b.id, 0, hist, 16);
	if (nh != 2 || !rh_has(hist, nh, ids[0]) || !rh_has(hist, nh, ids[1]))
		fail_msg("HISTORY has %d messages, expected the 2 flushed ones", nh);
	tc_expect(b.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld,%lld]}", (long long)ids[0],
		  (long long)ids[1]);
	rh_login(n, &b, false);
	rh_expect_none(b.c, "LOGIN after acking the flushed messages");
	rh_close(&a);
	rh_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- 4. clean stop ------------------------------------------------------------ */

/*
 * Hold 60 s, SIGTERM while a pushed message is held: the stop stores it,
 * and the recipient gets it at its login on the restarted node. The one
 * acked before the stop is not stored.
 */
static void test_clean_stop_stores_held(void **state)
{
	struct rh_user a = {0}, b = {0};
	int64_t acked, unacked, hist[16];
	struct node *n1, *n2;
	int nh;

	(void)state;
	n1 = rh_node_start(RH_LONG_MS);
	rh_pair(n1, n1, &a, &b, "rs");
	acked = rh_send_pushed(&a, &b, "acked");
	rh_ack(&b, acked);
	unacked = rh_send_pushed(&a, &b, "unacked");
	rh_close(&a);
	rh_close(&b);
	assert_int_equal(node_stop(n1), 0);

	n2 = rh_node_start(RH_LONG_MS);
	rh_login(n2, &b, false);
	rh_expect_exactly(b.c, &unacked, 1, "LOGIN after a SIGTERM and a restart");
	rh_login(n2, &a, false);
	nh = rh_history(&a, b.id, 0, hist, 16);
	if (nh != 1 || hist[0] != unacked)
		fail_msg("HISTORY has %d messages (first %lld), expected only %lld", nh,
			 nh ? (long long)hist[0] : 0LL, (long long)unacked);
	rh_close(&a);
	rh_close(&b);
	assert_int_equal(node_stop(n2), 0);
}

/* ---- 5. client_msg_id retry --------------------------------------------------- */

/*
 * Hold 1 s: a send with a client_msg_id and its retry are one message:
 * one answer, one push, one stored row once the hold time ends, one push
 * at the next login.
 */
static void test_retry_is_one_message(void **state)
{
	struct rh_user a = {0}, b = {0};
	int64_t id, again, hist[16];
	struct node *n;
	cJSON *p;

	(void)state;
	n = rh_node_start(RH_SHORT_MS);
	rh_pair(n, n, &a, &b, "rr");
	id = rh_send(&a, &b, "once", "cmid-1");
	p = tc_expect_push(b.c, CMD_PUSH_MSG, RH_PUSH_MS);
	rh_check_push(p, id, "once", "live push");
	cJSON_Delete(p);
	again = rh_send(&a, &b, "once", "cmid-1");
	assert_int_equal(again, id);
	rh_expect_none(b.c, "a retry with the same client_msg_id");

	assert_int_equal(rh_wait_stored(&a, b.id, id, hist, 16, "a retried message"), 1);
	rh_login(n, &b, true);
	rh_expect_exactly(b.c, &id, 1, "LOGIN after the hold time of a retried message");
	rh_close(&a);
	rh_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- 6. groups ------------------------------------------------------------------ */

/*
 * One integer from sql (a single-value SELECT) run as root on the node's
 * database over RINGCHAT_MYSQL_SOCKET, or a short text into out when out
 * is not NULL (then the return value is 0). Fails the test when the
 * client cannot run.
 */
static int64_t rh_sql(const char *sql, char *out, size_t out_size)
{
	const char *sock = getenv("RINGCHAT_MYSQL_SOCKET");
	char cmd[1024], buf[1024] = "";
	FILE *p;

	if (!sock || !sock[0])
		fail_msg("RINGCHAT_MYSQL_SOCKET is not set (scripts/services.sh env)");
	snprintf(cmd, sizeof(cmd),
		 "mariadb --no-defaults --socket='%s' --user=root -N -B ringchat -e \"%s\"", sock,
		 sql);
	p = popen(cmd, "r");
	if (!p)
		fail_msg("cannot run the mariadb client");
	if (!fgets(buf, sizeof(buf), p))
		buf[0] = '\0';
	if (pclose(p) != 0)
		fail_msg("mariadb failed on: %s", sql);
	buf[strcspn(buf, "\n")] = '\0';
	if (out) {
		snprintf(out, out_size, "%s", buf);
		return 0;
	}
	return strtoll(buf, NULL, 10);
}

/* Rows of the messages table with msg_id id: 0 or 1. */
static int64_t rh_rows_of(int64_t id)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM messages WHERE msg_id = %lld",
		 (long long)id);
	return rh_sql(sql, NULL, 0);
}

/* Every member's read cursor of group gid, as one text. */
static void rh_cursors(int64_t gid, char *out, size_t out_size)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "SELECT GROUP_CONCAT(user_id, ':', read_msg_id ORDER BY user_id) "
		 "FROM group_members WHERE group_id = %lld",
		 (long long)gid);
	rh_sql(sql, out, out_size);
}

/* Waits until the node's metric name reaches want (exactly). */
static void rh_wait_metric(struct node *n, const char *name, int64_t want)
{
	int64_t deadline = tc_now_ms() + RH_WRITE_MS, v;

	while ((v = tc_metric(n, name)) != want) {
		if (v > want || tc_now_ms() > deadline)
			fail_msg("%s is %lld, expected %lld", name, (long long)v, (long long)want);
		tc_sleep_ms(20);
	}
}

/*
 * A group made by u[0] on n[0] with u[1..k) joining (each on n[i]), every
 * member then logged in afresh with nothing pending. Returns the group id.
 */
static int64_t rh_group(struct node *const *n, struct rh_user *u, int k, const char *prefix)
{
	int64_t gid;
	cJSON *r;

	for (int i = 0; i < k; i++)
		u[i].c = tc_signup_login_as(n[i], prefix, u[i].name, &u[i].id);
	r = tc_call_ok(u[0].c, CMD_GROUP_CREATE, "{\"name\":\"relay hold\"}");
	gid = tc_json_int(r, "group_id");
	cJSON_Delete(r);
	for (int i = 1; i < k; i++)
		tc_expect(u[i].c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)gid);
	for (int i = 0; i < k; i++) {
		rh_login(n[i], &u[i], false);
		rh_expect_none(u[i].c, "the first login of a new member");
	}
	return gid;
}

/* GROUP_SEND of text by u[0]; every member in u[1..k) that is online
 * (c != NULL) reads its push. Returns the msg_id. */
static int64_t rh_group_send(struct rh_user *u, int k, int64_t gid, const char *text)
{
	cJSON *r =
	    tc_call_ok(u[0].c, CMD_GROUP_SEND, "{\"group_id\":%lld,\"type\":0,\"text\":\"%s\"}",
		       (long long)gid, text);
	int64_t id = tc_json_int(r, "msg_id");

	cJSON_Delete(r);
	for (int i = 1; i < k; i++) {
		cJSON *p;

		if (!u[i].c)
			continue;
		p = tc_expect_push(u[i].c, CMD_PUSH_MSG, RH_PUSH_MS);
		rh_check_push(p, id, text, "group push");
		cJSON_Delete(p);
	}
	return id;
}

/*
 * Hold 60 s, three members online: a group message acked in time by both
 * members other than the sender is never written: no row, no cursor
 * moved, nothing pushed at any member's next login, the sender's included
 * (the sender owes no ack: its login flush writes nothing).
 */
static void test_group_acked_not_written(void **state)
{
	struct rh_user u[3] = {0};
	char before[256], after[256];
	int64_t gid, id, t0, hist[4];
	struct node *n, *ns[3];

	(void)state;
	n = rh_node_start(RH_LONG_MS);
	ns[0] = ns[1] = ns[2] = n;
	gid = rh_group(ns, u, 3, "ga");
	rh_cursors(gid, before, sizeof(before));
	t0 = tc_now_ms();
	id = rh_group_send(u, 3, gid, "all acked");
	rh_ack(&u[1], id);
	rh_ack(&u[2], id);
	rh_wait_metric(n, "ringchat_unread_absorbed_total", 2);
	for (int i = 0; i < 3; i++) {
		rh_login(n, &u[i], true);
		rh_expect_none(u[i].c, "LOGIN after a group message every member acked");
	}
	rh_within(t0, "the acked group test");

	assert_int_equal(rh_rows_of(id), 0);
	assert_int_equal(rh_history(&u[0], 0, gid, hist, 4), 0);
	assert_int_equal(tc_metric(n, "ringchat_commit_rows_total"), 0);
	assert_int_equal(tc_metric(n, "ringchat_unread_absorbed_total"), 2);
	rh_cursors(gid, after, sizeof(after));
	assert_string_equal(after, before);
	for (int i = 0; i < 3; i++)
		rh_close(&u[i]);
	assert_int_equal(node_stop(n), 0);
}

/*
 * Hold 1 s: one member acks, the other reads the push and stays silent.
 * When the hold time ends the row is written, and the silent member gets
 * it at its next login; nothing else of the group is written.
 */
static void test_group_unacked_written_when_due(void **state)
{
	struct rh_user u[3] = {0};
	int64_t gid, id, hist[4];
	struct node *n, *ns[3];

	(void)state;
	n = rh_node_start(RH_SHORT_MS);
	ns[0] = ns[1] = ns[2] = n;
	gid = rh_group(ns, u, 3, "gd");
	id = rh_group_send(u, 3, gid, "one silent");
	rh_ack(&u[1], id);
	rh_wait_metric(n, "ringchat_unread_absorbed_total", 1);
	assert_int_equal(rh_rows_of(id), 0); /* still held: 1 s is not over */

	for (int64_t deadline = tc_now_ms() + RH_SHORT_MS + RH_WRITE_MS; rh_rows_of(id) != 1;
	     tc_sleep_ms(50))
		if (tc_now_ms() > deadline)
			fail_msg("a group message a member never acked is not stored when due");
	assert_int_equal(rh_history(&u[0], 0, gid, hist, 4), 1);
	assert_int_equal(hist[0], id);
	assert_int_equal(tc_metric(n, "ringchat_commit_rows_total"), 1);
	rh_login(n, &u[2], true);
	rh_expect_exactly(u[2].c, &id, 1, "the silent member's LOGIN after the hold time");
	rh_ack(&u[2], id);
	rh_login(n, &u[2], false);
	rh_expect_none(u[2].c, "LOGIN after acking the stored group message");
	for (int i = 0; i < 3; i++)
		rh_close(&u[i]);
	assert_int_equal(node_stop(n), 0);
}

/*
 * Hold 60 s: a member that logs in again while it owes an ack flushes the
 * held group row: it is written, and pushed to that member at once.
 */
static void test_group_login_flushes_held(void **state)
{
	struct rh_user u[3] = {0};
	int64_t gid, id, t0;
	struct node *n, *ns[3];

	(void)state;
	n = rh_node_start(RH_LONG_MS);
	ns[0] = ns[1] = ns[2] = n;
	gid = rh_group(ns, u, 3, "gl");
	t0 = tc_now_ms();
	id = rh_group_send(u, 3, gid, "flushed");
	rh_ack(&u[1], id);
	rh_wait_metric(n, "ringchat_unread_absorbed_total", 1);
	assert_int_equal(rh_rows_of(id), 0);
	rh_login(n, &u[2], true);
	rh_expect_exactly(u[2].c, &id, 1, "a member's LOGIN while it owes an ack");
	assert_int_equal(rh_rows_of(id), 1);
	rh_within(t0, "the group flush test");
	assert_int_equal(tc_metric(n, "ringchat_commit_rows_total"), 1);
	for (int i = 0; i < 3; i++)
		rh_close(&u[i]);
	assert_int_equal(node_stop(n), 0);
}

/* Waits until GROUP_MEMBERS (asked by u) shows user_id offline. */
static void rh_wait_offline(struct rh_user *u, int64_t gid, int64_t user_id)
{
	for (int64_t deadline = tc_now_ms() + RH_WRITE_MS;; tc_sleep_ms(20)) {
		cJSON *r =
		    tc_call_ok(u->c, CMD_GROUP_MEMBERS, "{\"group_id\":%lld}", (long long)gid);
		const cJSON *m, *on = NULL;

		cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(r, "members"))
		{
			if (tc_json_int(m, "user_id") == user_id)
				on = cJSON_GetObjectItemCaseSensitive(m, "online");
		}
		if (!on)
			fail_msg("user %lld is not a member of group %lld", (long long)user_id,
				 (long long)gid);
		bool offline = cJSON_IsFalse(on);

		cJSON_Delete(r);
		if (offline)
			return;
		if (tc_now_ms() > deadline)
			fail_msg("user %lld still online after LOGOUT and close",
				 (long long)user_id);
	}
}

/*
 * Hold 60 s, one member logged out at send time: the row is written at
 * once (as in stored mode, the cursors say who needs it), the online
 * member's ack goes to the database, and the absent member gets it at
 * its login.
 */
static void test_group_offline_member_written(void **state)
{
	struct rh_user u[3] = {0};
	int64_t gid, id, t0;
	struct node *n, *ns[3];

	(void)state;
	n = rh_node_start(RH_LONG_MS);
	ns[0] = ns[1] = ns[2] = n;
	gid = rh_group(ns, u, 3, "go");
	tc_expect(u[2].c, CMD_LOGOUT, ST_OK, "{}");
	rh_close(&u[2]);
	rh_wait_offline(&u[0], gid, u[2].id);
	t0 = tc_now_ms();
	id = rh_group_send(u, 3, gid, "to an absent one");
	for (int64_t deadline = tc_now_ms() + RH_WRITE_MS; rh_rows_of(id) != 1; tc_sleep_ms(50))
		if (tc_now_ms() > deadline)
			fail_msg("a group message with a member offline is not written at once");
	rh_ack(&u[1], id);
	rh_login(n, &u[2], false);
	rh_expect_exactly(u[2].c, &id, 1, "the absent member's LOGIN");
	rh_login(n, &u[1], false);
	rh_expect_none(u[1].c, "LOGIN of the member that acked the written message");
	rh_within(t0, "the offline member test");
	assert_int_equal(tc_metric(n, "ringchat_unread_absorbed_total"), 0);
	for (int i = 0; i < 3; i++)
		rh_close(&u[i]);
	assert_int_equal(node_stop(n), 0);
}

/* ---- 7. three nodes ---------------------------------------------------------------- */

static struct node *rh_cluster_node(int id, int defer_ms)
{
	return rh_track(node_start(RH_FLAGS " --cluster-route redis --node-id %d --node-ttl-ms %d "
					    "--cluster-secret %s",
				   defer_ms, id, RH_TTL_MS, RH_SECRET));
}

/* Starts the three nodes A, B and C and waits until each sees the others. */
static void rh_cluster3(struct node *ns[3])
{
	static const int ids[3] = {RH_ID_A, RH_ID_B, RH_ID_C};

	for (int i = 0; i < 3; i++)
		ns[i] = rh_cluster_node(ids[i], RH_LONG_MS);
	for (int i = 0; i < 3; i++) {
		int64_t deadline = tc_now_ms() + 5 * RH_TTL_MS;

		while (tc_metric(ns[i], "ringchat_cluster_peers_up") != 2) {
			if (tc_now_ms() > deadline)
				fail_msg("node %d does not see the two others up", ids[i]);
			tc_sleep_ms(50);
		}
	}
}

static void rh_cluster3_stop(struct node *ns[3])
{
	for (int i = 2; i >= 0; i--)
		assert_int_equal(node_stop(ns[i]), 0);
	rh_nnodes = 0;
}

/*
 * Hold 60 s, sender on node A, recipient on node B: A's writer holds the
 * row. The recipient's ack on B is forwarded to A and drops it (never
 * stored); a message not acked is stored when the recipient logs in again
 * on node C (C asks A to flush), and pushed there.
 */
static void test_cluster_holds_on_minting_node(void **state)
{
	struct rh_user a = {0}, b = {0};
	int64_t acked, unacked, hist[16], t0;
	struct node *ns[3], *na, *nb;
	int nh;

	(void)state;
	rh_cluster3(ns);
	na = ns[0];
	nb = ns[1];
	rh_pair(na, nb, &a, &b, "rc");
	t0 = tc_now_ms();
	acked = rh_send_pushed(&a, &b, "acked");
	rh_ack(&b, acked);
	/* the ack crosses to A, whose writer drops the row */
	for (int64_t deadline = tc_now_ms() + RH_WRITE_MS;
	     tc_metric(na, "ringchat_unread_absorbed_total") != 1; tc_sleep_ms(50))
		if (tc_now_ms() > deadline)
			fail_msg("the ack on node %d did not reach the writer of node %d", RH_ID_B,
				 RH_ID_A);
	unacked = rh_send_pushed(&a, &b, "unacked");

	rh_login(ns[2], &b, true);
	rh_expect_exactly(b.c, &unacked, 1, "LOGIN on a third node");
	rh_within(t0, "the cluster test");
	nh = rh_history(&a, b.id, 0, hist, 16);
	if (nh != 1 || hist[0] != unacked)
		fail_msg("HISTORY has %d messages (first %lld), expected only %lld", nh,
			 nh ? (long long)hist[0] : 0LL, (long long)unacked);
	rh_close(&a);
	rh_close(&b);
	rh_cluster3_stop(ns);
}

/*
 * Hold 60 s, a group of three, one member per node: the sender on A, the
 * others on B and C. Both members' acks (forwarded to A) drop the row A
 * holds: no row anywhere. A second message that B's member leaves unacked
 * is written when that member logs in again on B (B asks A to flush), and
 * pushed to it.
 */
static void test_cluster_group_held_on_minting_node(void **state)
{
	struct rh_user u[3] = {0};
	struct node *ns[3], *na, *nb;
	int64_t gid, acked, unacked, t0;

	(void)state;
	rh_cluster3(ns);
	na = ns[0];
	nb = ns[1];
	gid = rh_group(ns, u, 3, "gc");
	t0 = tc_now_ms();
	acked = rh_group_send(u, 3, gid, "acked on both nodes");
	rh_ack(&u[1], acked);
	rh_ack(&u[2], acked);
	rh_wait_metric(na, "ringchat_unread_absorbed_total", 2);
	assert_int_equal(rh_rows_of(acked), 0);

	unacked = rh_group_send(u, 3, gid, "unacked on node B");
	rh_ack(&u[2], unacked);
	rh_wait_metric(na, "ringchat_unread_absorbed_total", 3);
	rh_login(nb, &u[1], true);
	rh_expect_exactly(u[1].c, &unacked, 1, "LOGIN on node B of the member owing an ack");
	rh_within(t0, "the cluster group test");
	assert_int_equal(rh_rows_of(unacked), 1);
	assert_int_equal(rh_rows_of(acked), 0);
	assert_int_equal(tc_metric(na, "ringchat_commit_rows_total"), 1);
	assert_int_equal(tc_metric(nb, "ringchat_commit_rows_total"), 0);
	assert_int_equal(tc_metric(ns[2], "ringchat_commit_rows_total"), 0);
	for (int i = 0; i < 3; i++)
		rh_close(&u[i]);
	rh_cluster3_stop(ns);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_unacked_stored_when_due, rh_teardown),
	    cmocka_unit_test_teardown(test_acked_burst_not_written, rh_teardown),
	    cmocka_unit_test_teardown(test_login_flushes_held, rh_teardown),
	    cmocka_unit_test_teardown(test_clean_stop_stores_held, rh_teardown),
	    cmocka_unit_test_teardown(test_retry_is_one_message, rh_teardown),
	    cmocka_unit_test_teardown(test_group_acked_not_written, rh_teardown),
	    cmocka_unit_test_teardown(test_group_unacked_written_when_due, rh_teardown),
	    cmocka_unit_test_teardown(test_group_login_flushes_held, rh_teardown),
	    cmocka_unit_test_teardown(test_group_offline_member_written, rh_teardown),
	    cmocka_unit_test_teardown(test_cluster_holds_on_minting_node, rh_teardown),
	    cmocka_unit_test_teardown(test_cluster_group_held_on_minting_node, rh_teardown),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, NULL, NULL));
}
