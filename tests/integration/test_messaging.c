/*
 * test_messaging.c - MSG_SEND, GROUP_SEND, MSG_ACK and HISTORY against a
 * real ringchatd with MariaDB and Redis: the push and the reply of a
 * send, conversation ids, a pipelined burst of 1,000 arriving complete
 * and in order, 10,000 messages stored for an offline user and pushed at
 * its login (and not again once acknowledged), client_msg_id retries,
 * refusals, group fan-out, the group read cursor, and HISTORY paging.
 *
 * Needs the services (scripts/services.sh start; RINGCHAT_MYSQL_SOCKET and
 * RINGCHAT_REDIS_SOCKET from `services.sh env`).
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

/* How long a push may take to arrive, and how long "none came" waits. */
#define MSG_PUSH_MS 5000
#define MSG_NO_PUSH_MS 500

/* The node, with the default rate limits (no test but the 10,000 sends
 * needs more); test_offline_ten_thousand puts its own node here for its
 * run, with the limits raised, and msg_bulk_teardown puts this one back. */
static struct node *msg_node, *msg_default_node, *msg_bulk_node;

struct msg_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static void msg_user_new(struct msg_user *u, const char *prefix)
{
	u->c = tc_signup_login_as(msg_node, prefix, u->name, &u->id);
}

static void msg_user_close(struct msg_user *u)
{
	if (u->c)
		rc_close(u->c);
	u->c = NULL;
}

/* A new connection, logged in as u (pushes of the login stay queued). */
static void msg_user_login(struct msg_user *u)
{
	cJSON *r;

	msg_user_close(u);
	u->c = tc_connect(msg_node);
	r = tc_call_ok(u->c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name,
		       TC_PASSWORD);
	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	cJSON_Delete(r);
}


static const char *msg_str(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsString(v))
		fail_msg("field \"%s\" missing or not a string", key);
	return v->valuestring;
}

static bool msg_has(const cJSON *obj, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(obj, key) != NULL;
}

/* a asks b, b accepts; the social pushes are consumed. */
static void msg_befriend(struct msg_user *a, struct msg_user *b)
{
	tc_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b->id);
	cJSON_Delete(tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, MSG_PUSH_MS));
	tc_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a->id);
	cJSON_Delete(tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, MSG_PUSH_MS));
}

/* MSG_SEND of text to `to`; returns the OK payload (caller frees). */
static cJSON *msg_send_ok(struct msg_user *from, int64_t to, const char *text)
{
	return tc_call_expect(from->c, CMD_MSG_SEND, ST_OK, "{\"to\":%lld,\"type\":0,\"text\":\"%s\"}",
			(long long)to, text);
}

/* Asserts a PUSH_MSG payload carries exactly this message. */
static void msg_assert_push(const cJSON *p, int64_t msg_id, int64_t conv, int64_t from, int64_t to,
			    int64_t group_id, int type, const char *text)
{
	if (msg_id)
		assert_int_equal(tc_json_int(p, "msg_id"), msg_id);
	if (conv)
		assert_int_equal(tc_json_int(p, "conversation_id"), conv);
	assert_int_equal(tc_json_int(p, "from"), from);
	if (group_id) {
		assert_int_equal(tc_json_int(p, "group_id"), group_id);
		assert_false(msg_has(p, "to"));
	} else {
		assert_int_equal(tc_json_int(p, "to"), to);
		assert_false(msg_has(p, "group_id"));
	}
	assert_int_equal(tc_json_int(p, "type"), type);
	assert_string_equal(msg_str(p, "text"), text);
	assert_true(tc_json_int(p, "send_time") > 0);
}

/* Reads n PUSH_MSGs on c and asserts they carry texts "<prefix>0" ..
 * "<prefix>n-1" in that order, with increasing msg_ids (equal to ids[]
 * when given). */
static void msg_expect_pushes(struct rc_client *c, int n, const char *prefix, const int64_t *ids)
{
	int64_t prev = 0;
	char want[64];

	for (int i = 0; i < n; i++) {
		struct rc_frame f;
		int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, MSG_PUSH_MS);
		int64_t id;

		if (rc)
			fail_msg("push %d of %d did not come: %s", i, n, strerror(-rc));
		snprintf(want, sizeof(want), "%s%d", prefix, i);
		id = tc_json_int(f.json, "msg_id");
		if (strcmp(msg_str(f.json, "text"), want) != 0)
			fail_msg("push %d carries \"%s\", expected \"%s\"", i,
				 msg_str(f.json, "text"), want);
		if (id <= prev)
			fail_msg("push %d: msg_id %lld after %lld", i, (long long)id,
				 (long long)prev);
		if (ids && id != ids[i])
			fail_msg("push %d: msg_id %lld, the send answered %lld", i, (long long)id,
				 (long long)ids[i]);
		prev = id;
		rc_frame_free(&f);
	}
}

/* MSG_ACKs ids[0..n) in chunks of 1000, waiting for each OK. */
static void msg_ack_all(struct rc_client *c, const int64_t *ids, int n)
{
	for (int i = 0; i < n; i += 1000) {
		int k = n - i < 1000 ? n - i : 1000;
		size_t cap = 32 + (size_t)k * 22, off;
		char *json = malloc(cap);

		assert_non_null(json);
		off = (size_t)snprintf(json, cap, "{\"msg_ids\":[");
		for (int j = 0; j < k; j++)
			off += (size_t)snprintf(json + off, cap - off, "%s%lld", j ? "," : "",
						(long long)ids[i + j]);
		snprintf(json + off, cap - off, "]}");
		assert_int_equal(tc_call_code(c, CMD_MSG_ACK, json), ST_OK);
		free(json);
	}
}

static int64_t msg_group_create(struct msg_user *owner)
{
	cJSON *r = tc_call_expect(owner->c, CMD_GROUP_CREATE, ST_OK, "{\"name\":\"talk\"}");
	int64_t id = tc_json_int(r, "group_id");

	cJSON_Delete(r);
	return id;
}

/* ---- 1:1 ------------------------------------------------------------------ */

static void test_send_push_and_reply(void **state)
{
	struct msg_user a, b;
	int64_t before = 0, id1, conv1, t1;
	cJSON *r, *p;

	(void)state;
	msg_user_new(&a, "ma");
	msg_user_new(&b, "mb");
	msg_befriend(&a, &b);

	r = tc_call_expect(a.c, CMD_MSG_SEND, ST_OK,
		     "{\"to\":%lld,\"type\":0,\"text\":\"h\\u00e9llo \\\"w\\\" \\u4e16\"}",
		     (long long)b.id);
	id1 = tc_json_int(r, "msg_id");
	conv1 = tc_json_int(r, "conversation_id");
	t1 = tc_json_int(r, "send_time");
	assert_true(id1 > 0 && id1 <= 9007199254740991LL);
	assert_true(conv1 > 0 && conv1 <= 9007199254740991LL);
	assert_true(t1 > 1767225600000LL); /* epoch ms, after 2026-01-01 */
	cJSON_Delete(r);

	p = tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS);
	msg_assert_push(p, id1, conv1, a.id, b.id, 0, 0, "h\xc3\xa9llo \"w\" \xe4\xb8\x96");
	assert_int_equal(tc_json_int(p, "send_time"), t1);
	cJSON_Delete(p);
	/* the sender does not get its own message pushed */
	tc_expect_no_push(a.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);

	/* the other direction: same conversation, a later msg_id, other types */
	r = tc_call_expect(b.c, CMD_MSG_SEND, ST_OK,
		     "{\"to\":%lld,\"type\":2,\"text\":\"https://img.example/1.png\"}",
		     (long long)a.id);
	assert_int_equal(tc_json_int(r, "conversation_id"), conv1);
	assert_true(tc_json_int(r, "msg_id") > id1);
	before = tc_json_int(r, "msg_id");
	cJSON_Delete(r);
	p = tc_expect_push(a.c, CMD_PUSH_MSG, MSG_PUSH_MS);
	msg_assert_push(p, before, conv1, b.id, a.id, 0, 2, "https://img.example/1.png");
	cJSON_Delete(p);

	/* another pair has another conversation */
	struct msg_user c;

	msg_user_new(&c, "mc");
	msg_befriend(&a, &c);
	r = msg_send_ok(&a, c.id, "x");
	assert_int_not_equal(tc_json_int(r, "conversation_id"), conv1);
	cJSON_Delete(r);
	msg_user_close(&a);
	msg_user_close(&b);
	msg_user_close(&c);
}

static void test_send_refusals(void **state)
{
	struct msg_user a, b, stranger;
	char *big;
	size_t max = 4096;

	(void)state;
	msg_user_new(&a, "ra");
	msg_user_new(&b, "rb");
	msg_user_new(&stranger, "rs");
	msg_befriend(&a, &b);

	/* not a friend: 6; nobody with that id: 5 */
	tc_expect(a.c, CMD_MSG_SEND, ST_FORBIDDEN, "{\"to\":%lld,\"type\":0,\"text\":\"hi\"}",
		   (long long)stranger.id);
	tc_expect(a.c, CMD_MSG_SEND, ST_NOT_FOUND,
		   "{\"to\":9007199254740991,\"type\":0,\"text\":\"hi\"}");
	tc_expect_no_push(stranger.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);
	/* HISTORY follows the same rule */
	tc_expect(a.c, CMD_HISTORY, ST_FORBIDDEN, "{\"with\":%lld}", (long long)stranger.id);
	tc_expect(a.c, CMD_HISTORY, ST_NOT_FOUND, "{\"with\":9007199254740991}");

	/* bad fields: 1 */
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST, "{\"type\":0,\"text\":\"hi\"}");
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST, "{\"to\":%lld,\"text\":\"hi\"}",
		   (long long)b.id);
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST, "{\"to\":%lld,\"type\":3,\"text\":\"hi\"}",
		   (long long)b.id);
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST, "{\"to\":%lld,\"type\":0,\"text\":\"\"}",
		   (long long)b.id);
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST, "{\"to\":%lld,\"type\":0}", (long long)b.id);
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST, "{\"to\":-4,\"type\":0,\"text\":\"hi\"}");
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST,
		   "{\"to\":\"%lld\",\"type\":0,\"text\":\"hi\"}", (long long)b.id);
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST,
		   "{\"to\":%lld,\"type\":0,\"text\":\"hi\",\"client_msg_id\":\"%065d\"}",
		   (long long)b.id, 0);
	/* text of exactly text_max bytes passes, one more does not */
	big = malloc(max + 2);
	assert_non_null(big);
	memset(big, 'x', max + 1);
	big[max] = '\0';
	cJSON_Delete(msg_send_ok(&a, b.id, big));
	cJSON_Delete(tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS));
	big[max] = 'x';
	big[max + 1] = '\0';
	tc_expect(a.c, CMD_MSG_SEND, ST_BAD_REQUEST, "{\"to\":%lld,\"type\":0,\"text\":\"%s\"}",
		   (long long)b.id, big);
	free(big);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);

	/* after FRIEND_DELETE the pair may no longer talk, at once */
	tc_expect(a.c, CMD_FRIEND_DELETE, ST_OK, "{\"user_id\":%lld}", (long long)b.id);
	tc_expect(a.c, CMD_MSG_SEND, ST_FORBIDDEN, "{\"to\":%lld,\"type\":0,\"text\":\"hi\"}",
		   (long long)b.id);
	tc_expect(b.c, CMD_MSG_SEND, ST_FORBIDDEN, "{\"to\":%lld,\"type\":0,\"text\":\"hi\"}",
		   (long long)a.id);
	msg_user_close(&a);
	msg_user_close(&b);
	msg_user_close(&stranger);
}

/* 1,000 pipelined sends: the sender's responses in request order, the
 * recipient's pushes complete and in order. */
static void test_burst_in_order(void **state)
{
	struct msg_user a, b;
	int64_t *ids = calloc(1000, sizeof(*ids));

	(void)state;
	assert_non_null(ids);
	msg_user_new(&a, "ba");
	msg_user_new(&b, "bb");
	msg_befriend(&a, &b);
	tc_send_many(a.c, b.id, false, 1000, "burst", ids);
	msg_expect_pushes(b.c, 1000, "burst", ids);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);
	free(ids);
	msg_user_close(&a);
	msg_user_close(&b);
}

/* 10,000 messages for a user who is not logged in: all of them at its
 * login, oldest first; once acknowledged, none at the next login. */
static void test_offline_ten_thousand(void **state)
{
	enum { N = 10000 };
	struct msg_user a, b;
	int64_t *ids = calloc(N, sizeof(*ids));

	(void)state;
	assert_non_null(ids);
	/* 10,000 sends at once from one connection: the volume needs it */
	msg_bulk_node = node_start("--rate-msgs-per-s 1000000 --rate-burst 1000000");
	assert_non_null(msg_bulk_node);
	msg_node = msg_bulk_node;
	msg_user_new(&a, "oa");
	msg_user_new(&b, "ob");
	msg_befriend(&a, &b);
	msg_user_close(&b);
	/* the node needs a moment to see the close; until then a push could
	 * still go to the dead connection, which changes nothing here */
	tc_sleep_ms(200);

	tc_send_many(a.c, b.id, false, N, "off", ids);
	msg_user_login(&b);
	msg_expect_pushes(b.c, N, "off", ids);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);

	/* not acknowledged yet: a new login gets them again */
	msg_user_login(&b);
	msg_expect_pushes(b.c, N, "off", ids);

	msg_ack_all(b.c, ids, N);
	msg_user_login(&b);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, 1000);

	/* the sender acking its own messages changes nothing for b */
	free(ids);
	msg_user_close(&a);
	msg_user_close(&b);
}

/* Acks are per recipient: a message is marked read only by its own
 * recipient, and an ack of unknown ids is harmless. */
static void test_ack_only_own(void **state)
{
	struct msg_user a, b;
	int64_t id;
	cJSON *r;

	(void)state;
	msg_user_new(&a, "ka");
	msg_user_new(&b, "kb");
	msg_befriend(&a, &b);
	msg_user_close(&b);
	r = msg_send_ok(&a, b.id, "k0");
	id = tc_json_int(r, "msg_id");
	cJSON_Delete(r);
	/* the sender acks it: not its message to mark */
	tc_expect(a.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld,9007199254740991]}", (long long)id);
	msg_user_login(&b);
	msg_expect_pushes(b.c, 1, "k", NULL);
	tc_expect(b.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}", (long long)id);
	msg_user_login(&b);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);
	/* bad acks */
	tc_expect(b.c, CMD_MSG_ACK, ST_BAD_REQUEST, "{\"msg_ids\":[]}");
	tc_expect(b.c, CMD_MSG_ACK, ST_BAD_REQUEST, "{\"msg_ids\":[0]}");
	tc_expect(b.c, CMD_MSG_ACK, ST_BAD_REQUEST, "{\"msg_ids\":5}");
	msg_user_close(&a);
	msg_user_close(&b);
}

/* Acking a message right when its push arrives (before its row may be
 * committed) still marks it read. */
static void test_ack_on_push(void **state)
{
	struct msg_user a, b;

	(void)state;
	msg_user_new(&a, "pa");
	msg_user_new(&b, "pb");
	msg_befriend(&a, &b);
	for (int i = 0; i < 20; i++) {
		char json[96];
		cJSON *p;

		snprintf(json, sizeof(json), "{\"to\":%lld,\"type\":0,\"text\":\"p%d\"}",
			 (long long)b.id, i);
		assert_int_equal(rc_send(a.c, CMD_MSG_SEND, 5000000u + (uint32_t)i, json), 0);
		p = tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS);
		tc_expect(b.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}",
			   (long long)tc_json_int(p, "msg_id"));
		cJSON_Delete(p);
	}
	/* one left unacked: it, and only it, comes again at the next login */
	cJSON_Delete(msg_send_ok(&a, b.id, "keep0"));
	cJSON_Delete(tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS));
	msg_user_login(&b);
	msg_expect_pushes(b.c, 1, "keep", NULL);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, 1000);
	msg_user_close(&a);
	msg_user_close(&b);
}

/* The same client_msg_id from the same user: the first msg_id again, one
 * push; another id or another user is another message. */
static void test_client_msg_id_retry(void **state)
{
	struct msg_user a, b, c;
	int64_t id1, conv1, t1;
	cJSON *r, *p;
	const char *fmt = "{\"to\":%lld,\"type\":0,\"text\":\"%s\",\"client_msg_id\":\"%s\"}";

	(void)state;
	msg_user_new(&a, "ca");
	msg_user_new(&b, "cb");
	msg_user_new(&c, "cc");
	msg_befriend(&a, &b);
	msg_befriend(&c, &b);

	r = tc_call_expect(a.c, CMD_MSG_SEND, ST_OK, fmt, (long long)b.id, "once", "k-1");
	id1 = tc_json_int(r, "msg_id");
	conv1 = tc_json_int(r, "conversation_id");
	t1 = tc_json_int(r, "send_time");
	cJSON_Delete(r);
	p = tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS);
	msg_assert_push(p, id1, conv1, a.id, b.id, 0, 0, "once");
	cJSON_Delete(p);

	/* the retry: same answer, no second push (from the same and from a
	 * new connection) */
	r = tc_call_expect(a.c, CMD_MSG_SEND, ST_OK, fmt, (long long)b.id, "once", "k-1");
	assert_int_equal(tc_json_int(r, "msg_id"), id1);
	assert_int_equal(tc_json_int(r, "conversation_id"), conv1);
	assert_int_equal(tc_json_int(r, "send_time"), t1);
	cJSON_Delete(r);
	msg_user_login(&a);
	r = tc_call_expect(a.c, CMD_MSG_SEND, ST_OK, fmt, (long long)b.id, "once", "k-1");
	assert_int_equal(tc_json_int(r, "msg_id"), id1);
	cJSON_Delete(r);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);

	/* ids compare byte for byte; another user's id is its own */
	r = tc_call_expect(a.c, CMD_MSG_SEND, ST_OK, fmt, (long long)b.id, "twice", "K-1");
	assert_int_not_equal(tc_json_int(r, "msg_id"), id1);
	cJSON_Delete(r);
	p = tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS);
	assert_string_equal(msg_str(p, "text"), "twice");
	cJSON_Delete(p);
	r = tc_call_expect(c.c, CMD_MSG_SEND, ST_OK, fmt, (long long)b.id, "other", "k-1");
	assert_int_not_equal(tc_json_int(r, "msg_id"), id1);
	cJSON_Delete(r);
	p = tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS);
	assert_string_equal(msg_str(p, "text"), "other");
	cJSON_Delete(p);

	/* the recipient's login shows the message once */
	msg_user_login(&b);
	for (int i = 0; i < 3; i++)
		cJSON_Delete(tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS));
	tc_expect_no_push(b.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);
	msg_user_close(&a);
	msg_user_close(&b);
	msg_user_close(&c);
}

/* Many sends with client_msg_ids pipelined with retries of each other:
 * every retry answers its first msg_id, and each message arrives once. */
static void test_client_msg_id_pipelined(void **state)
{
	enum { N = 200 };
	struct msg_user a, b;
	int64_t first[N];
	uint32_t seq = 7000000u;
	char json[160];

	(void)state;
	msg_user_new(&a, "qa");
	msg_user_new(&b, "qb");
	msg_befriend(&a, &b);
	/* each message twice in a row, pipelined: the second often meets the
	 * first still in flight */
	for (int i = 0; i < N; i++) {
		snprintf(json, sizeof(json),
			 "{\"to\":%lld,\"type\":0,\"text\":\"q%d\",\"client_msg_id\":\"q-%d\"}",
			 (long long)b.id, i, i);
		assert_int_equal(rc_send(a.c, CMD_MSG_SEND, seq + 2 * (uint32_t)i, json), 0);
		assert_int_equal(rc_send(a.c, CMD_MSG_SEND, seq + 2 * (uint32_t)i + 1, json), 0);
	}
	for (int i = 0; i < 2 * N; i++) {
		struct rc_frame f;

		assert_int_equal(rc_recv(a.c, &f, TC_SEND_MS), 0);
		if (f.hdr.seq == 0) {
			rc_frame_free(&f);
			i--;
			continue;
		}
		assert_int_equal(f.hdr.seq, seq + (uint32_t)i);
		assert_int_equal(f.hdr.code, ST_OK);
		if (i % 2 == 0)
			first[i / 2] = tc_json_int(f.json, "msg_id");
		else
			assert_int_equal(tc_json_int(f.json, "msg_id"), first[i / 2]);
		rc_frame_free(&f);
	}
	/* the pushes may repeat a msg_id (at least once), but every message
	 * comes, in order, under its first msg_id */
	int next = 0;

	while (next < N) {
		cJSON *p = tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS);
		int64_t id = tc_json_int(p, "msg_id");

		if (next > 0 && id == first[next - 1]) {
			cJSON_Delete(p);
			continue;
		}
		assert_int_equal(id, first[next]);
		next++;
		cJSON_Delete(p);
	}
	msg_user_close(&a);
	msg_user_close(&b);
}

/* ---- groups ------------------------------------------------------------------ */

static void test_group_fanout(void **state)
{
	enum { M = 5 };
	struct msg_user owner, m[M], outsider;
	int64_t g, id, conv;
	cJSON *r, *p;

	(void)state;
	msg_user_new(&owner, "go");
	msg_user_new(&outsider, "gx");
	g = msg_group_create(&owner);
	for (int i = 0; i < M; i++) {
		msg_user_new(&m[i], "gm");
		tc_expect(m[i].c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	}
	/* member 0 is offline */
	msg_user_close(&m[0]);
	tc_sleep_ms(200);

	r = tc_call_expect(owner.c, CMD_GROUP_SEND, ST_OK,
		     "{\"group_id\":%lld,\"type\":1,\"text\":\"ftp://f\"}", (long long)g);
	id = tc_json_int(r, "msg_id");
	conv = tc_json_int(r, "conversation_id");
	cJSON_Delete(r);
	for (int i = 1; i < M; i++) {
		p = tc_expect_push(m[i].c, CMD_PUSH_MSG, MSG_PUSH_MS);
		msg_assert_push(p, id, conv, owner.id, 0, g, 1, "ftp://f");
		cJSON_Delete(p);
	}
	tc_expect_no_push(owner.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);
	tc_expect_no_push(outsider.c, CMD_PUSH_MSG, 1);

	/* a member's message reaches the owner and the others, not itself */
	r = tc_call_expect(m[1].c, CMD_GROUP_SEND, ST_OK,
		     "{\"group_id\":%lld,\"type\":0,\"text\":\"from m1\"}", (long long)g);
	assert_int_equal(tc_json_int(r, "conversation_id"), conv);
	cJSON_Delete(r);
	p = tc_expect_push(owner.c, CMD_PUSH_MSG, MSG_PUSH_MS);
	assert_string_equal(msg_str(p, "text"), "from m1");
	cJSON_Delete(p);
	for (int i = 2; i < M; i++)
		cJSON_Delete(tc_expect_push(m[i].c, CMD_PUSH_MSG, MSG_PUSH_MS));
	tc_expect_no_push(m[1].c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);

	/* the offline member gets both at login, in order */
	msg_user_login(&m[0]);
	p = tc_expect_push(m[0].c, CMD_PUSH_MSG, MSG_PUSH_MS);
	msg_assert_push(p, id, conv, owner.id, 0, g, 1, "ftp://f");
	cJSON_Delete(p);
	p = tc_expect_push(m[0].c, CMD_PUSH_MSG, MSG_PUSH_MS);
	assert_string_equal(msg_str(p, "text"), "from m1");
	cJSON_Delete(p);
	tc_expect_no_push(m[0].c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);

	/* refusals: not a member 6, no such group 5, dissolved 5 */
	tc_expect(outsider.c, CMD_GROUP_SEND, ST_FORBIDDEN,
		   "{\"group_id\":%lld,\"type\":0,\"text\":\"hi\"}", (long long)g);
	tc_expect(outsider.c, CMD_HISTORY, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	tc_expect(owner.c, CMD_GROUP_SEND, ST_NOT_FOUND,
		   "{\"group_id\":9007199254740991,\"type\":0,\"text\":\"hi\"}");
	tc_expect(owner.c, CMD_HISTORY, ST_NOT_FOUND, "{\"group_id\":9007199254740991}");
	tc_expect(owner.c, CMD_GROUP_DISSOLVE, ST_OK, "{\"group_id\":%lld}", (long long)g);
	tc_expect(owner.c, CMD_GROUP_SEND, ST_NOT_FOUND,
		   "{\"group_id\":%lld,\"type\":0,\"text\":\"hi\"}", (long long)g);
	tc_expect(m[2].c, CMD_GROUP_SEND, ST_NOT_FOUND,
		   "{\"group_id\":%lld,\"type\":0,\"text\":\"hi\"}", (long long)g);
	msg_user_close(&owner);
	msg_user_close(&outsider);
	for (int i = 0; i < M; i++)
		msg_user_close(&m[i]);
}

/* MSG_ACK of group messages moves the member's cursor: acked ones are not
 * pushed at the next login, later ones are; the cursor never moves back. */
static void test_group_ack_cursor(void **state)
{
	struct msg_user a, b;
	int64_t g, ids[4];

	(void)state;
	msg_user_new(&a, "ua");
	msg_user_new(&b, "ub");
	g = msg_group_create(&a);
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	msg_user_close(&b);
	tc_sleep_ms(200);
	tc_send_many(a.c, g, true, 4, "g", ids);

	msg_user_login(&b);
	msg_expect_pushes(b.c, 4, "g", ids);
	/* acking the third covers the first two as well (a cursor) */
	tc_expect(b.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}", (long long)ids[2]);
	msg_user_login(&b);
	{
		cJSON *p = tc_expect_push(b.c, CMD_PUSH_MSG, MSG_PUSH_MS);

		assert_int_equal(tc_json_int(p, "msg_id"), ids[3]);
		cJSON_Delete(p);
	}
	tc_expect_no_push(b.c, CMD_PUSH_MSG, MSG_NO_PUSH_MS);
	/* acking an older one again does not bring anything back */
	tc_expect(b.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld,%lld]}", (long long)ids[3],
		   (long long)ids[0]);
	msg_user_login(&b);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, 1000);
	msg_user_close(&a);
	msg_user_close(&b);
}

/* ---- HISTORY ------------------------------------------------------------------- */

static void msg_assert_history(struct rc_client *c, const char *query, const int64_t *want, int n)
{
	cJSON *r = tc_call_expect(c, CMD_HISTORY, ST_OK, "%s", query);
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(r, "messages"), *it;
	int i = 0;

	assert_true(cJSON_IsArray(arr));
	if (cJSON_GetArraySize(arr) != n)
		fail_msg("HISTORY %s: %d messages, expected %d", query, cJSON_GetArraySize(arr), n);
	cJSON_ArrayForEach(it, arr)
	{
		assert_int_equal(tc_json_int(it, "msg_id"), want[i]);
		i++;
	}
	cJSON_Delete(r);
}

static void test_history_paging(void **state)
{
	enum { N = 7 };
	struct msg_user a, b, c;
	int64_t ids[N], desc[N], g, gids[3], gdesc[3];
	char q[160];
	cJSON *r;

	(void)state;
	msg_user_new(&a, "ha");
	msg_user_new(&b, "hb");
	msg_user_new(&c, "hc");
	msg_befriend(&a, &b);
	msg_befriend(&a, &c);
	/* nothing said yet */
	snprintf(q, sizeof(q), "{\"with\":%lld}", (long long)b.id);
	msg_assert_history(a.c, q, NULL, 0);

	tc_send_many(a.c, b.id, false, N, "h", ids);
	for (int i = 0; i < N; i++)
		desc[i] = ids[N - 1 - i];
	/* a message to c is not in a's history with b */
	cJSON_Delete(msg_send_ok(&a, c.id, "not here"));

	/* both sides see the same history, newest first, default limit */
	msg_assert_history(a.c, q, desc, N);
	snprintf(q, sizeof(q), "{\"with\":%lld}", (long long)a.id);
	msg_assert_history(b.c, q, desc, N);

	/* pages of 3 with before_id (exclusive) */
	snprintf(q, sizeof(q), "{\"with\":%lld,\"limit\":3}", (long long)b.id);
	msg_assert_history(a.c, q, desc, 3);
	snprintf(q, sizeof(q), "{\"with\":%lld,\"limit\":3,\"before_id\":%lld}", (long long)b.id,
		 (long long)desc[2]);
	msg_assert_history(a.c, q, desc + 3, 3);
	snprintf(q, sizeof(q), "{\"with\":%lld,\"limit\":3,\"before_id\":%lld}", (long long)b.id,
		 (long long)desc[5]);
	msg_assert_history(a.c, q, desc + 6, 1);
	snprintf(q, sizeof(q), "{\"with\":%lld,\"before_id\":%lld}", (long long)b.id,
		 (long long)desc[6]);
	msg_assert_history(a.c, q, NULL, 0);

	/* entries are whole messages, as in PUSH_MSG */
	r = tc_call_expect(a.c, CMD_HISTORY, ST_OK, "{\"with\":%lld,\"limit\":1}", (long long)b.id);
	msg_assert_push(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "messages"), 0),
			desc[0], 0, a.id, b.id, 0, 0, "h6");
	cJSON_Delete(r);

	/* bad queries */
	tc_expect(a.c, CMD_HISTORY, ST_BAD_REQUEST, "{}");
	tc_expect(a.c, CMD_HISTORY, ST_BAD_REQUEST, "{\"with\":%lld,\"group_id\":1}",
		   (long long)b.id);
	tc_expect(a.c, CMD_HISTORY, ST_BAD_REQUEST, "{\"with\":%lld,\"limit\":0}",
		   (long long)b.id);
	tc_expect(a.c, CMD_HISTORY, ST_BAD_REQUEST, "{\"with\":%lld,\"limit\":201}",
		   (long long)b.id);
	tc_expect(a.c, CMD_HISTORY, ST_BAD_REQUEST, "{\"with\":%lld,\"before_id\":0}",
		   (long long)b.id);

	/* a group's history, for members */
	g = msg_group_create(&a);
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	snprintf(q, sizeof(q), "{\"group_id\":%lld}", (long long)g);
	msg_assert_history(b.c, q, NULL, 0);
	tc_send_many(a.c, g, true, 3, "gh", gids);
	for (int i = 0; i < 3; i++)
		gdesc[i] = gids[2 - i];
	msg_assert_history(b.c, q, gdesc, 3);
	snprintf(q, sizeof(q), "{\"group_id\":%lld,\"limit\":2,\"before_id\":%lld}", (long long)g,
		 (long long)gdesc[0]);
	msg_assert_history(a.c, q, gdesc + 1, 2);
	tc_expect(c.c, CMD_HISTORY, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	msg_user_close(&a);
	msg_user_close(&b);
	msg_user_close(&c);
}

static void test_messaging_needs_login(void **state)
{
	struct rc_client *c = tc_connect(msg_node);

	(void)state;
	assert_int_equal(tc_call_code(c, CMD_MSG_SEND, "{\"to\":1,\"type\":0,\"text\":\"x\"}"),
			 ST_NOT_LOGGED_IN);
	assert_int_equal(
	    tc_call_code(c, CMD_GROUP_SEND, "{\"group_id\":1,\"type\":0,\"text\":\"x\"}"),
	    ST_NOT_LOGGED_IN);
	assert_int_equal(tc_call_code(c, CMD_MSG_ACK, "{\"msg_ids\":[1]}"), ST_NOT_LOGGED_IN);
	assert_int_equal(tc_call_code(c, CMD_HISTORY, "{\"with\":1}"), ST_NOT_LOGGED_IN);
	rc_close(c);
}

static int msg_setup(void **state)
{
	(void)state;
	msg_node = msg_default_node = node_start(NULL);
	return msg_node ? 0 : -1;
}

/* Stops test_offline_ten_thousand's node (a non-zero exit fails the test)
 * and gives the other tests theirs back. */
static int msg_bulk_teardown(void **state)
{
	int status = msg_bulk_node ? node_stop(msg_bulk_node) : 0;

	(void)state;
	msg_bulk_node = NULL;
	msg_node = msg_default_node;
	return status == 0 ? 0 : -1;
}

static int msg_teardown(void **state)
{
	(void)state;
	return node_stop(msg_node) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_messaging_needs_login),
	    cmocka_unit_test(test_send_push_and_reply),
	    cmocka_unit_test(test_send_refusals),
	    cmocka_unit_test(test_burst_in_order),
	    cmocka_unit_test_teardown(test_offline_ten_thousand, msg_bulk_teardown),
	    cmocka_unit_test(test_ack_only_own),
	    cmocka_unit_test(test_ack_on_push),
	    cmocka_unit_test(test_client_msg_id_retry),
	    cmocka_unit_test(test_client_msg_id_pipelined),
	    cmocka_unit_test(test_group_fanout),
	    cmocka_unit_test(test_group_ack_cursor),
	    cmocka_unit_test(test_history_paging),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, msg_setup, msg_teardown));
}
