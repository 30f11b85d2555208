/*
 * test_unread_defer.c - the held-back "unread" mark of 1:1 messages
 * (unread_defer_ms), seen from the outside: whatever the node keeps in
 * memory, a message pushed and not acknowledged comes again at the
 * recipient's next LOGIN or RESUME (right away, after the due time, after
 * a SIGKILL or a SIGTERM of the node), and a message acknowledged does
 * not (right away, after the due time, after a clean stop, 1,000 at once).
 *
 * A long delay (60 s) makes a redelivery explainable only by the flush at
 * login or by crash recovery; a short one (200 ms) lets the due time pass
 * inside the test.
 *
 * Needs the services (scripts/services.sh start; RINGCHAT_MYSQL_SOCKET and
 * RINGCHAT_REDIS_SOCKET from `services.sh env`). The SIGKILL test runs
 * last: after a crash the node may give back unread marks of messages
 * already acknowledged (at least once), and no later test here should see
 * that.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define UD_PUSH_MS 5000
/* How long "nothing more is pushed" waits after a login. */
#define UD_NO_PUSH_MS 1000
#define UD_LONG_MS 60000
#define UD_SHORT_MS 200
/* Longer than twice UD_SHORT_MS: the due time has surely passed. */
#define UD_PAST_DUE_MS 600
/* A test relying on UD_LONG_MS not having passed must finish within this. */
#define UD_LONG_BUDGET_MS 40000
#define UD_MAX_PUSHES 64
/* Rate limits out of the way, and the delay under test. */
#define UD_FLAGS "--rate-msgs-per-s 1000000 --rate-burst 1000000 --unread-defer-ms %d"

/* Nodes of the running test; a test that fails leaves them to the
 * teardown, so that no two nodes with the same node id run at once. */
static struct node *ud_nodes[2];
static int ud_nnodes;

struct ud_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
	char token[128];
};

/* A node with unread_defer_ms = defer_ms; fails the test when none. */
static struct node *ud_node_start(int defer_ms)
{
	struct node *n;

	assert_true(ud_nnodes < (int)(sizeof(ud_nodes) / sizeof(ud_nodes[0])));
	n = node_start(UD_FLAGS, defer_ms);
	assert_non_null(n);
	ud_nodes[ud_nnodes++] = n;
	return n;
}

/* Stops (SIGTERM) whatever the test left running. */
static int ud_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < ud_nnodes; i++)
		node_stop(ud_nodes[i]);
	ud_nnodes = 0;
	return 0;
}

static void ud_close(struct ud_user *u)
{
	if (u->c)
		rc_close(u->c);
	u->c = NULL;
}

static const char *ud_str(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsString(v))
		fail_msg("field \"%s\" missing or not a string", key);
	return v->valuestring;
}

/* A new connection to n, logged in as u with LOGIN; the earlier one, if
 * any, is closed first (the node may not have seen that yet). */
static void ud_login(struct node *n, struct ud_user *u)
{
	cJSON *r;

	ud_close(u);
	u->c = tc_connect(n);
	r = tc_call_ok(u->c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name,
		       TC_PASSWORD);
	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	snprintf(u->token, sizeof(u->token), "%s", ud_str(r, "token"));
	cJSON_Delete(r);
}

/* A new connection to n, logged in as u with RESUME of its last token. */
static void ud_resume(struct node *n, struct ud_user *u)
{
	cJSON *r;

	ud_close(u);
	u->c = tc_connect(n);
	r = tc_call_ok(u->c, CMD_RESUME, "{\"token\":\"%s\"}", u->token);
	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	cJSON_Delete(r);
}

/* MSG_SEND of text from a to b, answered OK; returns the msg_id. */
static int64_t ud_send(struct ud_user *a, const struct ud_user *b, const char *text)
{
	cJSON *r =
	    tc_call_expect(a->c, CMD_MSG_SEND, ST_OK, "{\"to\":%lld,\"type\":0,\"text\":\"%s\"}",
			   (long long)b->id, text);
	int64_t id = tc_json_int(r, "msg_id");

	cJSON_Delete(r);
	return id;
}

/* Sends text from a to the online b and waits for b's push of it. */
static int64_t ud_send_pushed(struct ud_user *a, struct ud_user *b, const char *text)
{
	int64_t id = ud_send(a, b, text);
	cJSON *p = tc_expect_push(b->c, CMD_PUSH_MSG, UD_PUSH_MS);

	if (tc_json_int(p, "msg_id") != id || strcmp(ud_str(p, "text"), text) != 0)
		fail_msg("live push: msg_id %lld \"%s\", expected %lld \"%s\"",
			 (long long)tc_json_int(p, "msg_id"), ud_str(p, "text"), (long long)id,
			 text);
	cJSON_Delete(p);
	return id;
}

/* MSG_ACK of ids[0..n) in one request, answered OK. */
static void ud_ack(struct ud_user *u, const int64_t *ids, int n)
{
	size_t cap = 32 + (size_t)n * 22, off;
	char *json = malloc(cap);

	assert_non_null(json);
	off = (size_t)snprintf(json, cap, "{\"msg_ids\":[");
	for (int i = 0; i < n; i++)
		off += (size_t)snprintf(json + off, cap - off, "%s%lld", i ? "," : "",
					(long long)ids[i]);
	snprintf(json + off, cap - off, "]}");
	assert_int_equal(tc_call_code(u->c, CMD_MSG_ACK, json), ST_OK);
	free(json);
}

/* Fails unless no PUSH_MSG comes within UD_NO_PUSH_MS, naming what came. */
static void ud_expect_none(struct rc_client *c, const char *when)
{
	struct rc_frame f;
	int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, UD_NO_PUSH_MS);

	if (rc == 0)
		fail_msg("%s: message pushed again: %s", when, f.payload);
	if (rc != -ETIMEDOUT)
		fail_msg("%s: connection lost while waiting: %s", when, strerror(-rc));
}

/* Two new users on n, friends, both online (b logged in with a token). */
static void ud_pair(struct node *n, struct ud_user *a, struct ud_user *b, const char *prefix)
{
	a->c = tc_signup_login_as(n, prefix, a->name, &a->id);
	b->c = tc_signup_login_as(n, prefix, b->name, &b->id);
	tc_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b->id);
	cJSON_Delete(tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, UD_PUSH_MS));
	tc_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a->id);
	cJSON_Delete(tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, UD_PUSH_MS));
	/* a token for RESUME, and a session that is b's current one */
	ud_login(n, b);
	/* the pushes of a login may follow its response: let them be over
	 * (none here) before anything is sent, or a message sent now could
	 * come twice (live and as unacked at login), which at least once
	 * allows but the tests below would take for a redelivery */
	ud_expect_none(b->c, "the first login of a new user");
}

/* Reads the pushes of a login: exactly ids[0..n), in that order, then
 * nothing more. */
static void ud_expect_exactly(struct rc_client *c, const int64_t *ids, int n, const char *when)
{
	for (int i = 0; i < n; i++) {
		struct rc_frame f;
		int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, UD_PUSH_MS);

		if (rc)
			fail_msg("%s: push %d of %d (msg_id %lld) did not come: %s", when, i, n,
				 (long long)ids[i], strerror(-rc));
		if (tc_json_int(f.json, "msg_id") != ids[i])
			fail_msg("%s: push %d is %s, expected msg_id %lld", when, i, f.payload,
				 (long long)ids[i]);
		rc_frame_free(&f);
	}
	ud_expect_none(c, when);
}

/* Reads PUSH_MSGs until none comes for UD_NO_PUSH_MS (the first may take
 * UD_PUSH_MS); returns how many, their ids in out[0..max). */
static int ud_collect(struct rc_client *c, int64_t *out, int max)
{
	int n = 0;

	for (;;) {
		struct rc_frame f;
		int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, n ? UD_NO_PUSH_MS : UD_PUSH_MS);

		if (rc == -ETIMEDOUT)
			return n;
		if (rc)
			fail_msg("connection lost while reading pushes: %s", strerror(-rc));
		if (n == max)
			fail_msg("more than %d pushes; the last: %s", max, f.payload);
		out[n++] = tc_json_int(f.json, "msg_id");
		rc_frame_free(&f);
	}
}

static void ud_within(int64_t t0, const char *what)
{
	int64_t took = tc_now_ms() - t0;

	if (took > UD_LONG_BUDGET_MS)
		fail_msg("%s took %lld ms: too close to unread_defer_ms %d to prove anything", what,
			 (long long)took, UD_LONG_MS);
}

/* Reads n live pushes "<prefix>0".. in order, with the msg_ids ids[]. */
static void ud_expect_live(struct rc_client *c, int n, const char *prefix, const int64_t *ids)
{
	char want[64];

	for (int i = 0; i < n; i++) {
		struct rc_frame f;
		int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, UD_PUSH_MS);

		if (rc)
			fail_msg("push %d of %d did not come: %s", i, n, strerror(-rc));
		snprintf(want, sizeof(want), "%s%d", prefix, i);
		if (strcmp(ud_str(f.json, "text"), want) != 0 ||
		    tc_json_int(f.json, "msg_id") != ids[i])
			fail_msg("push %d is %s, expected \"%s\" msg_id %lld", i, f.payload, want,
				 (long long)ids[i]);
		rc_frame_free(&f);
	}
}

/* ---- 1. flush at login ---------------------------------------------------- */

/*
 * Pushed, not acked, and the recipient comes back at once (close + LOGIN,
 * LOGIN while the old session is open, close + RESUME): every unacked
 * message is pushed again, oldest first, the one acked is not. With a
 * 60 s delay only the flush at login can have written the marks.
 */
static void test_login_flushes(void **state)
{
	struct ud_user a = {0}, b = {0};
	struct rc_client *old;
	int64_t ids[8], t0;
	struct node *n;

	(void)state;
	n = ud_node_start(UD_LONG_MS);
	ud_pair(n, &a, &b, "lf");
	t0 = tc_now_ms();

	/* one sent while b is away, pushed at its login and not acked */
	ud_close(&b);
	tc_sleep_ms(200);
	ids[0] = ud_send(&a, &b, "off0");
	ud_login(n, &b);
	ud_expect_exactly(b.c, ids, 1, "login after an offline send");

	/* three live ones; the middle one is acked */
	ids[1] = ud_send_pushed(&a, &b, "live1");
	ids[2] = ud_send_pushed(&a, &b, "live2");
	ids[3] = ud_send_pushed(&a, &b, "live3");
	ud_ack(&b, &ids[2], 1);
	ud_login(n, &b);
	ids[2] = ids[3];
	ud_expect_exactly(b.c, ids, 3, "close and LOGIN right after live pushes");

	/* LOGIN on a second connection while the first is still open */
	ids[3] = ud_send_pushed(&a, &b, "live4");
	old = b.c;
	b.c = NULL;
	ud_login(n, &b);
	ud_expect_exactly(b.c, ids, 4, "LOGIN while the pushed session is open");
	rc_close(old);

	/* RESUME */
	ids[4] = ud_send_pushed(&a, &b, "live5");
	ud_resume(n, &b);
	ud_expect_exactly(b.c, ids, 5, "close and RESUME right after a live push");
	ud_within(t0, "the flush test");

	/* acked now, whether flushed or not: never again */
	ud_ack(&b, ids, 5);
	ud_login(n, &b);
	ud_expect_none(b.c, "LOGIN after acking the flushed messages");
	ud_close(&a);
	ud_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- 2. ack absorbed ------------------------------------------------------ */

/* Acked right after the push, LOGIN at once (delay 60 s): nothing. */
static void test_ack_then_login(void **state)
{
	struct ud_user a = {0}, b = {0};
	struct node *n;
	int64_t id[3];

	(void)state;
	n = ud_node_start(UD_LONG_MS);
	ud_pair(n, &a, &b, "ai");
	id[0] = ud_send_pushed(&a, &b, "a0");
	ud_ack(&b, id, 1);
	ud_login(n, &b);
	ud_expect_none(b.c, "LOGIN right after an ack");

	/* two more acked together, then RESUME */
	id[1] = ud_send_pushed(&a, &b, "a1");
	id[2] = ud_send_pushed(&a, &b, "a2");
	ud_ack(&b, &id[1], 2);
	ud_resume(n, &b);
	ud_expect_none(b.c, "RESUME right after an ack");
	ud_close(&a);
	ud_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* Delay 200 ms: acked at once then LOGIN after the due time, and acked
 * after the due time then LOGIN at once: nothing either way. */
static void test_ack_short_delay(void **state)
{
	struct ud_user a = {0}, b = {0};
	struct node *n;
	int64_t id;

	(void)state;
	n = ud_node_start(UD_SHORT_MS);
	ud_pair(n, &a, &b, "as");

	id = ud_send_pushed(&a, &b, "early");
	ud_ack(&b, &id, 1);
	tc_sleep_ms(UD_PAST_DUE_MS);
	ud_login(n, &b);
	ud_expect_none(b.c, "LOGIN past the due time of a message acked at once");

	/* the mark is written by now; the ack must remove it */
	id = ud_send_pushed(&a, &b, "late");
	tc_sleep_ms(UD_PAST_DUE_MS);
	ud_ack(&b, &id, 1);
	ud_login(n, &b);
	ud_expect_none(b.c, "LOGIN right after an ack that came past the due time");
	tc_sleep_ms(UD_PAST_DUE_MS);
	ud_login(n, &b);
	ud_expect_none(b.c, "LOGIN later still");
	ud_close(&a);
	ud_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- 3. due time ---------------------------------------------------------- */

/*
 * Delay 200 ms: pushed, not acked, the recipient stays past the due time
 * and then comes back: pushed. Sent while it is away: pushed at the next
 * login, whether that is before or after the due time.
 */
static void test_due_time(void **state)
{
	struct ud_user a = {0}, b = {0};
	struct node *n;
	int64_t ids[3];

	(void)state;
	n = ud_node_start(UD_SHORT_MS);
	ud_pair(n, &a, &b, "dt");

	ids[0] = ud_send_pushed(&a, &b, "stay");
	tc_sleep_ms(UD_PAST_DUE_MS);
	ud_login(n, &b);
	ud_expect_exactly(b.c, ids, 1, "LOGIN after staying past the due time");

	/* offline, LOGIN at once */
	ud_close(&b);
	tc_sleep_ms(200);
	ids[1] = ud_send(&a, &b, "away1");
	ud_login(n, &b);
	ud_expect_exactly(b.c, ids, 2, "LOGIN right after an offline send");

	/* offline, LOGIN past the due time */
	ud_close(&b);
	tc_sleep_ms(200);
	ids[2] = ud_send(&a, &b, "away2");
	tc_sleep_ms(UD_PAST_DUE_MS);
	ud_login(n, &b);
	ud_expect_exactly(b.c, ids, 3, "LOGIN past the due time of an offline send");

	ud_ack(&b, ids, 3);
	ud_login(n, &b);
	ud_expect_none(b.c, "LOGIN after acking everything");
	ud_close(&a);
	ud_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- 6. a burst acked at once --------------------------------------------- */

/*
 * Delay 60 s: 1,000 pipelined messages to an online recipient, acked in
 * one MSG_ACK; then 1,000 more acked in three: nothing at the next login.
 */
static void test_burst_acked(void **state)
{
	enum { N = 1000 };
	struct ud_user a = {0}, b = {0};
	int64_t *ids = calloc(N, sizeof(*ids)), t0;
	struct node *n;

	(void)state;
	assert_non_null(ids);
	n = ud_node_start(UD_LONG_MS);
	ud_pair(n, &a, &b, "bu");
	t0 = tc_now_ms();

	tc_send_many(a.c, b.id, false, N, "x", ids);
	ud_expect_live(b.c, N, "x", ids);
	ud_ack(&b, ids, N);
	ud_login(n, &b);
	ud_expect_none(b.c, "LOGIN after 1,000 pushes acked in one MSG_ACK");

	tc_send_many(a.c, b.id, false, N, "y", ids);
	ud_expect_live(b.c, N, "y", ids);
	ud_ack(&b, ids, 400);
	ud_ack(&b, ids + 400, 400);
	ud_ack(&b, ids + 800, N - 800);
	ud_resume(n, &b);
	ud_expect_none(b.c, "RESUME after 1,000 pushes acked in three MSG_ACKs");
	ud_within(t0, "the burst test");
	ud_close(&a);
	ud_close(&b);
	assert_int_equal(node_stop(n), 0);
	free(ids);
}

/* ---- 5. clean stop -------------------------------------------------------- */

/*
 * Delay 60 s, SIGTERM with marks held back: after the restart the unacked
 * messages are pushed at login, the acked ones (before and after them)
 * are not.
 */
static void test_clean_stop(void **state)
{
	struct ud_user a = {0}, b = {0};
	int64_t acked[2], unacked[2];
	struct node *n1, *n2;

	(void)state;
	n1 = ud_node_start(UD_LONG_MS);
	ud_pair(n1, &a, &b, "cs");
	acked[0] = ud_send_pushed(&a, &b, "acked0");
	ud_ack(&b, &acked[0], 1);
	unacked[0] = ud_send_pushed(&a, &b, "keep0");
	acked[1] = ud_send_pushed(&a, &b, "acked1");
	ud_ack(&b, &acked[1], 1);
	unacked[1] = ud_send_pushed(&a, &b, "keep1");
	assert_int_equal(node_stop(n1), 0);
	ud_close(&a);
	ud_close(&b);

	n2 = ud_node_start(UD_LONG_MS);
	ud_login(n2, &b);
	ud_expect_exactly(b.c, unacked, 2, "LOGIN after a SIGTERM and a restart");
	ud_close(&b);
	assert_int_equal(node_stop(n2), 0);
}

/* ---- 4. crash ------------------------------------------------------------- */

/*
 * Delay 60 s, SIGKILL with marks held back: a new node (same id, same
 * database) pushes every unacked message at login, oldest first. Acked
 * ones may come too (at least once), nothing else may.
 */
static void test_crash_recovery(void **state)
{
	enum { N = 10 };
	struct ud_user a = {0}, b = {0};
	int64_t ids[N], acked[N], got[UD_MAX_PUSHES];
	int nacked = 0, ngot, k;
	struct node *n1, *n2;
	char text[16];

	(void)state;
	n1 = ud_node_start(UD_LONG_MS);
	ud_pair(n1, &a, &b, "cr");
	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof(text), "c%d", i);
		ids[i] = ud_send_pushed(&a, &b, text);
	}
	/* every third is acked; the others only pushed */
	for (int i = 0; i < N; i += 3)
		acked[nacked++] = ids[i];
	ud_ack(&b, acked, nacked);
	assert_int_equal(node_kill(n1), 128 + SIGKILL);
	ud_close(&a);
	ud_close(&b);

	n2 = ud_node_start(UD_LONG_MS);
	ud_login(n2, &b);
	ngot = ud_collect(b.c, got, UD_MAX_PUSHES);
	k = 0;
	for (int j = 0; j < ngot; j++) {
		if (j > 0 && got[j] <= got[j - 1])
			fail_msg("after the crash: push %d has msg_id %lld after %lld (not oldest "
				 "first)",
				 j, (long long)got[j], (long long)got[j - 1]);
		while (k < N && ids[k] < got[j]) {
			if (k % 3 != 0)
				fail_msg("after the crash: unacked c%d (msg_id %lld) not pushed "
					 "(%d pushes came)",
					 k, (long long)ids[k], ngot);
			k++;
		}
		if (k == N || ids[k] != got[j])
			fail_msg("after the crash: msg_id %lld pushed, never sent to this user",
				 (long long)got[j]);
		k++;
	}
	for (; k < N; k++)
		if (k % 3 != 0)
			fail_msg("after the crash: unacked c%d (msg_id %lld) not pushed (%d pushes "
				 "came)",
				 k, (long long)ids[k], ngot);

	/* acked now, on the new node: never again */
	ud_ack(&b, got, ngot);
	ud_login(n2, &b);
	ud_expect_none(b.c, "LOGIN after acking what the crash gave back");
	ud_close(&b);
	assert_int_equal(node_stop(n2), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_login_flushes, ud_teardown),
	    cmocka_unit_test_teardown(test_ack_then_login, ud_teardown),
	    cmocka_unit_test_teardown(test_ack_short_delay, ud_teardown),
	    cmocka_unit_test_teardown(test_due_time, ud_teardown),
	    cmocka_unit_test_teardown(test_burst_acked, ud_teardown),
	    cmocka_unit_test_teardown(test_clean_stop, ud_teardown),
	    cmocka_unit_test_teardown(test_crash_recovery, ud_teardown),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, NULL, NULL));
}
