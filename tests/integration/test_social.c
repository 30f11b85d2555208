/*
 * test_social.c - friends and chat groups against a real ringchatd with
 * MariaDB and Redis: every command of the social graph, its pushes and its
 * refusals, requests pushed at login, a 1,000-friend FRIEND_LIST, and
 * membership changes racing on two workers.
 *
 * Needs the services (scripts/services.sh start; RINGCHAT_MYSQL_SOCKET and
 * RINGCHAT_REDIS_SOCKET from `services.sh env`). The 1,000-friend test
 * builds its friendships with the mariadb client over that socket.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Node shared by the tests that need no flags of their own. */
static struct node *soc_node;

/* How long a push may take to arrive, and how long "none came" waits. */
#define SOC_PUSH_MS 3000
#define SOC_NO_PUSH_MS 300
/* Larger than any seq rc_call hands out in these tests. */
#define SOC_RAW_SEQ 0x70000000u

struct soc_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static void soc_user_new(struct node *n, struct soc_user *u, const char *prefix)
{
	u->c = tc_signup_login_as(n, prefix, u->name, &u->id);
}

static void soc_user_close(struct soc_user *u)
{
	rc_close(u->c);
	u->c = NULL;
}


/* The element of array arr whose integer field key equals id, or NULL. */
static const cJSON *soc_find(const cJSON *arr, const char *key, int64_t id)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, arr) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, key);

		if (cJSON_IsNumber(v) && (int64_t)v->valuedouble == id)
			return it;
	}
	return NULL;
}

static const cJSON *soc_array(const cJSON *obj, const char *key)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsArray(a))
		fail_msg("field \"%s\" missing or not an array", key);
	return a;
}

static const char *soc_str(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsString(v))
		fail_msg("field \"%s\" missing or not a string", key);
	return v->valuestring;
}

static bool soc_bool(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsBool(v))
		fail_msg("field \"%s\" missing or not a bool", key);
	return cJSON_IsTrue(v);
}

/* Expects PUSH_FRIEND_REQUEST on c from `from` carrying remark. */
static void soc_expect_request_push(struct rc_client *c, const struct soc_user *from,
				    const char *remark)
{
	cJSON *p = tc_expect_push(c, CMD_PUSH_FRIEND_REQUEST, SOC_PUSH_MS);

	assert_int_equal(tc_json_int(p, "from"), from->id);
	assert_string_equal(soc_str(p, "username"), from->name);
	assert_string_equal(soc_str(p, "remark"), remark);
	cJSON_Delete(p);
}

/* Expects PUSH_FRIEND_ACCEPTED on c naming friend. */
static void soc_expect_accepted_push(struct rc_client *c, const struct soc_user *friend)
{
	cJSON *p = tc_expect_push(c, CMD_PUSH_FRIEND_ACCEPTED, SOC_PUSH_MS);

	assert_int_equal(tc_json_int(p, "user_id"), friend->id);
	assert_string_equal(soc_str(p, "username"), friend->name);
	cJSON_Delete(p);
}

/* a asks b, b accepts; both pushes are checked and consumed. */
static void soc_befriend(struct soc_user *a, struct soc_user *b)
{
	tc_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b->id);
	soc_expect_request_push(b->c, a, "");
	tc_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a->id);
	soc_expect_accepted_push(a->c, b);
}

static void soc_login(struct soc_user *u);

static cJSON *soc_friend_list(struct rc_client *c)
{
	return tc_call_expect(c, CMD_FRIEND_LIST, ST_OK, NULL);
}

/* Asserts u's FRIEND_LIST has friend f with this remark and group. */
static void soc_assert_friend(struct soc_user *u, const struct soc_user *f, const char *remark,
			      int64_t group)
{
	cJSON *l = soc_friend_list(u->c);
	const cJSON *e = soc_find(soc_array(l, "friends"), "user_id", f->id);

	if (!e)
		fail_msg("user %lld is not in the friend list of %lld", (long long)f->id,
			 (long long)u->id);
	assert_string_equal(soc_str(e, "username"), f->name);
	assert_string_equal(soc_str(e, "remark"), remark);
	assert_int_equal(tc_json_int(e, "group"), group);
	cJSON_Delete(l);
}

/* Asserts u's FRIEND_LIST holds nf friends and np pending requests. */
static void soc_assert_counts(struct soc_user *u, int nf, int np)
{
	cJSON *l = soc_friend_list(u->c);

	assert_int_equal(cJSON_GetArraySize(soc_array(l, "friends")), nf);
	assert_int_equal(cJSON_GetArraySize(soc_array(l, "pending")), np);
	cJSON_Delete(l);
}

static int64_t soc_group_create(struct rc_client *c, const char *name)
{
	cJSON *r = tc_call_expect(c, CMD_GROUP_CREATE, ST_OK, "{\"name\":\"%s\"}", name);
	int64_t id = tc_json_int(r, "group_id");

	assert_true(id > 0);
	cJSON_Delete(r);
	return id;
}

/* The entry of group_id in c's GROUP_LIST (caller frees *list), or NULL. */
static const cJSON *soc_group_entry(struct rc_client *c, int64_t group_id, cJSON **list)
{
	*list = tc_call_expect(c, CMD_GROUP_LIST, ST_OK, NULL);
	return soc_find(soc_array(*list, "groups"), "group_id", group_id);
}

static int64_t soc_group_owner(struct rc_client *c, int64_t group_id)
{
	cJSON *l;
	const cJSON *e = soc_group_entry(c, group_id, &l);
	int64_t owner;

	if (!e)
		fail_msg("group %lld is not in the member's GROUP_LIST", (long long)group_id);
	owner = tc_json_int(e, "owner");
	cJSON_Delete(l);
	return owner;
}

static bool soc_group_listed(struct rc_client *c, int64_t group_id)
{
	cJSON *l;
	bool found = soc_group_entry(c, group_id, &l) != NULL;

	cJSON_Delete(l);
	return found;
}

/* Reads frames until the response with seq comes; pushes are dropped.
 * Returns its status code. */
static uint32_t soc_await(struct rc_client *c, uint32_t seq)
{
	struct rc_frame f;
	uint32_t code;
	int64_t deadline = tc_now_ms() + TC_CALL_TIMEOUT_MS;

	for (;;) {
		int rc = rc_recv(c, &f, (int)(deadline - tc_now_ms()));

		if (rc)
			fail_msg("no response with seq %u: %s", seq, strerror(-rc));
		if (f.hdr.seq == seq)
			break;
		rc_frame_free(&f);
	}
	code = f.hdr.code;
	rc_frame_free(&f);
	return code;
}

/* ---- friends ------------------------------------------------------------ */

static void test_friend_request_and_accept(void **state)
{
	struct soc_user a, b;
	cJSON *l;
	const cJSON *e;

	(void)state;
	soc_user_new(soc_node, &a, "fra");
	soc_user_new(soc_node, &b, "frb");

	/* The remark is a note to the target, UTF-8 bytes counted. */
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld,\"remark\":\"hi \xc3\xa9\"}",
		   (long long)b.id);
	soc_expect_request_push(b.c, &a, "hi \xc3\xa9");

	/* pending lists requests TO the user, never those it sent. */
	l = soc_friend_list(b.c);
	assert_int_equal(cJSON_GetArraySize(soc_array(l, "friends")), 0);
	assert_int_equal(cJSON_GetArraySize(soc_array(l, "pending")), 1);
	e = soc_find(soc_array(l, "pending"), "user_id", a.id);
	assert_non_null(e);
	assert_string_equal(soc_str(e, "username"), a.name);
	cJSON_Delete(l);
	soc_assert_counts(&a, 0, 0);

	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a.id);
	soc_expect_accepted_push(a.c, &b);
	/* Only the asker hears of the acceptance. */
	tc_expect_no_push(b.c, CMD_PUSH_FRIEND_ACCEPTED, SOC_NO_PUSH_MS);

	/* Both directions, with the defaults, both online. */
	soc_assert_friend(&a, &b, "", 0);
	soc_assert_friend(&b, &a, "", 0);
	soc_assert_counts(&a, 1, 0);
	soc_assert_counts(&b, 1, 0);
	l = soc_friend_list(a.c);
	assert_true(soc_bool(soc_find(soc_array(l, "friends"), "user_id", b.id), "online"));
	cJSON_Delete(l);

	/* The request is gone: accepting it again finds nothing. */
	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)a.id);
	soc_user_close(&a);
	soc_user_close(&b);
}

static void test_friend_request_refusals(void **state)
{
	struct soc_user a, b;
	char remark[64];

	(void)state;
	soc_user_new(soc_node, &a, "frr");
	soc_user_new(soc_node, &b, "frr");

	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":%lld}", (long long)a.id);
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_NOT_FOUND, "{\"user_id\":9007199254740991}");
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":0}");
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":-4}");
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":2.5}");
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":\"%lld\"}",
		   (long long)b.id);
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{}");
	/* 31 bytes, and 16 two-byte characters (32 bytes): too long. */
	memset(remark, 'r', 31);
	remark[31] = '\0';
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":%lld,\"remark\":\"%s\"}",
		   (long long)b.id, remark);
	remark[0] = '\0';
	for (int i = 0; i < 16; i++)
		strcat(remark, "\xc3\xa9");
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":%lld,\"remark\":\"%s\"}",
		   (long long)b.id, remark);
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_BAD_REQUEST, "{\"user_id\":%lld,\"remark\":7}",
		   (long long)b.id);
	/* None of those reached b. */
	tc_expect_no_push(b.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);

	/* A repeated request is OK and stays one request; it is pushed once
	 * (a repeat is no channel of pushes), and a later login shows the
	 * new note. */
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld,\"remark\":\"first\"}",
		   (long long)b.id);
	soc_expect_request_push(b.c, &a, "first");
	remark[0] = '\0';
	for (int i = 0; i < 15; i++)
		strcat(remark, "\xc3\xa9"); /* exactly 30 bytes */
	for (int i = 0; i < 3; i++)
		tc_expect(a.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld,\"remark\":\"%s\"}",
			  (long long)b.id, remark);
	tc_expect_no_push(b.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);
	soc_assert_counts(&b, 0, 1);
	soc_user_close(&b);
	b.c = tc_connect(soc_node);
	soc_login(&b);
	soc_expect_request_push(b.c, &a, remark);
	tc_expect_no_push(b.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);

	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a.id);
	soc_expect_accepted_push(a.c, &b);
	/* Friends already, from either side. */
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_ALREADY_EXISTS, "{\"user_id\":%lld}",
		   (long long)b.id);
	tc_expect(b.c, CMD_FRIEND_REQUEST, ST_ALREADY_EXISTS, "{\"user_id\":%lld}",
		   (long long)a.id);
	tc_expect_no_push(b.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);
	soc_assert_counts(&a, 1, 0);
	soc_assert_counts(&b, 1, 0);
	soc_user_close(&a);
	soc_user_close(&b);
}

static void test_friend_requests_crossing(void **state)
{
	struct soc_user a, b;

	(void)state;
	soc_user_new(soc_node, &a, "frx");
	soc_user_new(soc_node, &b, "frx");
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b.id);
	soc_expect_request_push(b.c, &a, "");
	/* b asks back instead of accepting: that is an acceptance. */
	tc_expect(b.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)a.id);
	soc_expect_accepted_push(a.c, &b);
	soc_expect_accepted_push(b.c, &a);
	tc_expect_no_push(a.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);
	soc_assert_friend(&a, &b, "", 0);
	soc_assert_friend(&b, &a, "", 0);
	soc_assert_counts(&a, 1, 0);
	soc_assert_counts(&b, 1, 0);
	tc_expect(a.c, CMD_FRIEND_ACCEPT, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)b.id);
	soc_user_close(&a);
	soc_user_close(&b);
}

#define SOC_RACE_PAIRS 24

/* Both users of a pair ask each other at the same moment, on connections
 * that land on different workers for about half the pairs. Every pair must
 * end as friends with nothing pending, whichever request ran first. */
static void test_friend_requests_crossing_concurrently(void **state)
{
	struct soc_user u[2 * SOC_RACE_PAIRS];
	char json[64];

	(void)state;
	for (int i = 0; i < 2 * SOC_RACE_PAIRS; i++)
		soc_user_new(soc_node, &u[i], "frc");
	for (int p = 0; p < SOC_RACE_PAIRS; p++) {
		struct soc_user *a = &u[2 * p], *b = &u[2 * p + 1];

		snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)b->id);
		assert_int_equal(rc_send(a->c, CMD_FRIEND_REQUEST, SOC_RAW_SEQ, json), 0);
		snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)a->id);
		assert_int_equal(rc_send(b->c, CMD_FRIEND_REQUEST, SOC_RAW_SEQ, json), 0);
	}
	for (int i = 0; i < 2 * SOC_RACE_PAIRS; i++)
		assert_int_equal(soc_await(u[i].c, SOC_RAW_SEQ), ST_OK);
	for (int p = 0; p < SOC_RACE_PAIRS; p++) {
		soc_assert_friend(&u[2 * p], &u[2 * p + 1], "", 0);
		soc_assert_friend(&u[2 * p + 1], &u[2 * p], "", 0);
		soc_assert_counts(&u[2 * p], 1, 0);
		soc_assert_counts(&u[2 * p + 1], 1, 0);
	}
	for (int i = 0; i < 2 * SOC_RACE_PAIRS; i++)
		soc_user_close(&u[i]);
}

static void test_friend_accept_refusals(void **state)
{
	struct soc_user a, b;

	(void)state;
	soc_user_new(soc_node, &a, "fac");
	soc_user_new(soc_node, &b, "fac");
	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)a.id);
	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)b.id);
	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_NOT_FOUND, "{\"user_id\":9007199254740991}");
	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_BAD_REQUEST, "{\"user_id\":0}");
	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_BAD_REQUEST, "{\"user_id\":null}");
	/* The one who asked cannot accept its own request. */
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b.id);
	soc_expect_request_push(b.c, &a, "");
	tc_expect(a.c, CMD_FRIEND_ACCEPT, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)b.id);
	tc_expect_no_push(b.c, CMD_PUSH_FRIEND_ACCEPTED, SOC_NO_PUSH_MS);
	soc_assert_counts(&a, 0, 0);
	soc_assert_counts(&b, 0, 1);
	soc_user_close(&a);
	soc_user_close(&b);
}

static void test_friend_delete(void **state)
{
	struct soc_user a, b, c;

	(void)state;
	soc_user_new(soc_node, &a, "fdl");
	soc_user_new(soc_node, &b, "fdl");
	soc_user_new(soc_node, &c, "fdl");
	soc_befriend(&a, &b);
	soc_befriend(&a, &c);

	tc_expect(a.c, CMD_FRIEND_DELETE, ST_OK, "{\"user_id\":%lld}", (long long)b.id);
	/* Gone in both directions; the other friendship stays. */
	soc_assert_counts(&a, 1, 0);
	soc_assert_counts(&b, 0, 0);
	soc_assert_friend(&a, &c, "", 0);
	tc_expect(a.c, CMD_FRIEND_DELETE, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)b.id);
	tc_expect(b.c, CMD_FRIEND_DELETE, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)a.id);
	tc_expect(b.c, CMD_FRIEND_DELETE, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)c.id);
	tc_expect(b.c, CMD_FRIEND_DELETE, ST_NOT_FOUND, "{\"user_id\":%lld}", (long long)b.id);
	tc_expect(b.c, CMD_FRIEND_DELETE, ST_NOT_FOUND, "{\"user_id\":9007199254740991}");
	tc_expect(b.c, CMD_FRIEND_DELETE, ST_BAD_REQUEST, "{\"user_id\":-1}");
	tc_expect(b.c, CMD_FRIEND_DELETE, ST_BAD_REQUEST, "{\"user_id\":true}");
	/* Strangers again: a new request is a request, not "already friends". */
	soc_befriend(&b, &a);
	soc_assert_friend(&a, &b, "", 0);
	soc_user_close(&a);
	soc_user_close(&b);
	soc_user_close(&c);
}

static void test_friend_update(void **state)
{
	struct soc_user a, b, c;
	char remark[40];

	(void)state;
	soc_user_new(soc_node, &a, "fup");
	soc_user_new(soc_node, &b, "fup");
	soc_user_new(soc_node, &c, "fup");
	soc_befriend(&a, &b);

	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_OK,
		   "{\"user_id\":%lld,\"remark\":\"Bob \xe2\x98\x83\",\"group\":3}",
		   (long long)b.id);
	soc_assert_friend(&a, &b, "Bob \xe2\x98\x83", 3);
	/* Only this side's row changes. */
	soc_assert_friend(&b, &a, "", 0);
	/* Fields left out keep their values. */
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_OK, "{\"user_id\":%lld,\"group\":-7}",
		   (long long)b.id);
	soc_assert_friend(&a, &b, "Bob \xe2\x98\x83", -7);
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_OK, "{\"user_id\":%lld,\"remark\":\"\"}",
		   (long long)b.id);
	soc_assert_friend(&a, &b, "", -7);
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_OK, "{\"user_id\":%lld}", (long long)b.id);
	soc_assert_friend(&a, &b, "", -7);
	memset(remark, 'x', 30);
	remark[30] = '\0';
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_OK, "{\"user_id\":%lld,\"remark\":\"%s\"}",
		   (long long)b.id, remark);
	soc_assert_friend(&a, &b, remark, -7);

	/* Refusals change nothing. */
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_BAD_REQUEST, "{\"user_id\":%lld,\"remark\":\"%sx\"}",
		   (long long)b.id, remark);
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_BAD_REQUEST, "{\"user_id\":%lld,\"group\":\"2\"}",
		   (long long)b.id);
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_BAD_REQUEST, "{\"user_id\":%lld,\"group\":1.5}",
		   (long long)b.id);
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_BAD_REQUEST,
		   "{\"user_id\":%lld,\"group\":4294967296}", (long long)b.id);
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_BAD_REQUEST, "{\"group\":1}");
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_NOT_FOUND, "{\"user_id\":%lld,\"group\":1}",
		   (long long)c.id);
	tc_expect(a.c, CMD_FRIEND_UPDATE, ST_NOT_FOUND, "{\"user_id\":9007199254740991}");
	soc_assert_friend(&a, &b, remark, -7);
	soc_user_close(&a);
	soc_user_close(&b);
	soc_user_close(&c);
}

/* Signs up on c without logging in. Returns the id. */
static int64_t soc_signup_only(struct rc_client *c, const char *prefix, char name[TC_NAME_MAX])
{
	cJSON *r;
	int64_t id;

	tc_unique_name(prefix, name);
	r = tc_call_ok(c, CMD_SIGNUP, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		       TC_PASSWORD);
	id = tc_json_int(r, "user_id");
	cJSON_Delete(r);
	return id;
}

static void soc_login(struct soc_user *u)
{
	cJSON *r = tc_call_ok(u->c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name,
			      TC_PASSWORD);

	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	cJSON_Delete(r);
}

static void test_pending_requests_pushed_at_login(void **state)
{
	struct soc_user a, c, t;
	struct rc_frame f;

	(void)state;
	soc_user_new(soc_node, &a, "fpa");
	soc_user_new(soc_node, &c, "fpc");
	/* The target exists but is not logged in anywhere. */
	t.c = tc_connect(soc_node);
	t.id = soc_signup_only(t.c, "fpt", t.name);

	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld,\"remark\":\"from a\"}",
		   (long long)t.id);
	tc_expect(c.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld,\"remark\":\"from c\"}",
		   (long long)t.id);
	/* Nothing reaches a connection that has not logged in. */
	tc_expect_no_push(t.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);

	soc_login(&t);
	/* Both, oldest first. */
	soc_expect_request_push(t.c, &a, "from a");
	soc_expect_request_push(t.c, &c, "from c");
	tc_expect_no_push(t.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);
	soc_assert_counts(&t, 0, 2);

	/* Still pending: a later login shows them again; answered ones not. */
	tc_expect(t.c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a.id);
	soc_expect_accepted_push(a.c, &t);
	soc_user_close(&t);
	t.c = tc_connect(soc_node);
	soc_login(&t);
	soc_expect_request_push(t.c, &c, "from c");
	tc_expect_no_push(t.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);
	/* The pushes do not stand in for the reply of a later request. */
	assert_int_equal(rc_call(t.c, CMD_FRIEND_LIST, NULL, &f, TC_CALL_TIMEOUT_MS), 0);
	assert_int_equal(f.hdr.code, ST_OK);
	rc_frame_free(&f);
	soc_user_close(&a);
	soc_user_close(&c);
	soc_user_close(&t);
}

/* ---- 1,000 friends ---------------------------------------------------- */

#define SOC_BULK_FRIENDS 998 /* plus two made through the protocol */

/*
 * Runs sql through the mariadb client on the test socket and returns its
 * batch output (tab-separated, no headers; caller frees), or NULL when the
 * client or the socket is not available. The account is the one
 * scripts/services.sh creates (and the node's default).
 */
static char *soc_mysql(const char *sql)
{
	const char *sock = getenv("RINGCHAT_MYSQL_SOCKET");
	char path[] = "/tmp/ringchat-social-XXXXXX", cmd[1024];
	size_t cap = 1 << 16, used = 0, n;
	char *out;
	FILE *p;
	int fd, status;

	if (!sock || !*sock)
		return NULL;
	fd = mkstemp(path);
	if (fd == -1)
		return NULL;
	if (write(fd, sql, strlen(sql)) != (ssize_t)strlen(sql)) {
		close(fd);
		unlink(path);
		return NULL;
	}
	close(fd);
	snprintf(cmd, sizeof(cmd),
		 "mariadb --socket='%s' -uringchat -pringchat -N -B ringchat < '%s'", sock, path);
	p = popen(cmd, "r");
	out = p ? malloc(cap) : NULL;
	while (out && (n = fread(out + used, 1, cap - used - 1, p)) > 0) {
		used += n;
		if (used + 1 == cap) {
			char *nb = realloc(out, cap *= 2);

			if (!nb)
				free(out);
			out = nb;
		}
	}
	status = p ? pclose(p) : -1;
	unlink(path);
	if (!out)
		return NULL;
	out[used] = '\0';
	if (status != 0) {
		fprintf(stderr, "mariadb failed (%d): %s\n", status, out);
		free(out);
		return NULL;
	}
	return out;
}

static void test_friend_list_thousand(void **state)
{
	struct soc_user hub, f1, f2;
	char base[TC_NAME_MAX], *sql, *out, *line, *save = NULL;
	size_t cap = 64 * (SOC_BULK_FRIENDS + 16), off = 0;
	int64_t ids[SOC_BULK_FRIENDS], t0, ms;
	char names[SOC_BULK_FRIENDS][TC_NAME_MAX];
	int nbulk = 0, seen = 0;
	cJSON *l;
	const cJSON *e, *friends;

	(void)state;
	soc_user_new(soc_node, &hub, "hub");
	soc_user_new(soc_node, &f1, "hf");
	soc_user_new(soc_node, &f2, "hf");
	soc_befriend(&f1, &hub);
	soc_befriend(&hub, &f2);

	/* 998 more users, never logged in, befriended both ways. */
	tc_unique_name("k", base);
	sql = malloc(cap);
	assert_non_null(sql);
	off += (size_t)snprintf(sql + off, cap - off, "INSERT INTO users (username) VALUES ");
	for (int i = 0; i < SOC_BULK_FRIENDS; i++)
		off += (size_t)snprintf(sql + off, cap - off, "%s('%s.%d')", i ? "," : "", base, i);
	off += (size_t)snprintf(
	    sql + off, cap - off,
	    ";\nINSERT INTO friends (user_id, friend_id) SELECT %lld, id FROM users"
	    " WHERE LEFT(username, %zu) = '%s.';\n"
	    "INSERT INTO friends (user_id, friend_id) SELECT id, %lld FROM users"
	    " WHERE LEFT(username, %zu) = '%s.';\n"
	    "SELECT id, username FROM users WHERE LEFT(username, %zu) = '%s.' ORDER BY id;\n",
	    (long long)hub.id, strlen(base) + 1, base, (long long)hub.id, strlen(base) + 1, base,
	    strlen(base) + 1, base);
	assert_true(off < cap);
	out = soc_mysql(sql);
	free(sql);
	if (!out) {
		soc_user_close(&hub);
		soc_user_close(&f1);
		soc_user_close(&f2);
		skip(); /* no mariadb client or socket: cannot build the set-up */
	}
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *tab = strchr(line, '\t');

		assert_non_null(tab);
		assert_true(nbulk < SOC_BULK_FRIENDS);
		ids[nbulk] = strtoll(line, NULL, 10);
		snprintf(names[nbulk], TC_NAME_MAX, "%s", tab + 1);
		nbulk++;
	}
	free(out);
	assert_int_equal(nbulk, SOC_BULK_FRIENDS);

	t0 = tc_now_ms();
	l = soc_friend_list(hub.c);
	ms = tc_now_ms() - t0;
	friends = soc_array(l, "friends");
	assert_int_equal(cJSON_GetArraySize(friends), SOC_BULK_FRIENDS + 2);
	assert_int_equal(cJSON_GetArraySize(soc_array(l, "pending")), 0);
	for (int i = 0; i < nbulk; i++) {
		e = soc_find(friends, "user_id", ids[i]);
		if (!e)
			fail_msg("friend %lld missing from the list", (long long)ids[i]);
		assert_string_equal(soc_str(e, "username"), names[i]);
		assert_string_equal(soc_str(e, "remark"), "");
		assert_int_equal(tc_json_int(e, "group"), 0);
		assert_false(soc_bool(e, "online"));
		seen++;
	}
	e = soc_find(friends, "user_id", f1.id);
	assert_non_null(e);
	assert_string_equal(soc_str(e, "username"), f1.name);
	assert_true(soc_bool(e, "online"));
	e = soc_find(friends, "user_id", f2.id);
	assert_non_null(e);
	assert_true(soc_bool(e, "online"));
	assert_int_equal(seen, SOC_BULK_FRIENDS);
	cJSON_Delete(l);
	/* One query, one Redis round trip: far below a second even here. */
	print_message("FRIEND_LIST of %d friends: %lld ms\n", SOC_BULK_FRIENDS + 2, (long long)ms);
	if (ms > 2000)
		fail_msg("FRIEND_LIST of %d friends took %lld ms", SOC_BULK_FRIENDS + 2,
			 (long long)ms);
	soc_user_close(&hub);
	soc_user_close(&f1);
	soc_user_close(&f2);
}

/* ---- groups ------------------------------------------------------------- */

static void test_group_create_join_list_members(void **state)
{
	struct soc_user a, b;
	char name[80];
	int64_t g, g2;
	cJSON *r;
	const cJSON *m, *e;

	(void)state;
	soc_user_new(soc_node, &a, "gca");
	soc_user_new(soc_node, &b, "gcb");
	g = soc_group_create(a.c, "team \xe2\x98\x83");
	r = tc_call_expect(a.c, CMD_GROUP_LIST, ST_OK, NULL);
	e = soc_find(soc_array(r, "groups"), "group_id", g);
	assert_non_null(e);
	assert_string_equal(soc_str(e, "name"), "team \xe2\x98\x83");
	assert_int_equal(tc_json_int(e, "owner"), a.id);
	cJSON_Delete(r);
	assert_false(soc_group_listed(b.c, g));

	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(soc_group_owner(b.c, g), a.id);

	/* Members in join order, with names and online flags; any member may ask. */
	r = tc_call_expect(b.c, CMD_GROUP_MEMBERS, ST_OK, "{\"group_id\":%lld}", (long long)g);
	m = soc_array(r, "members");
	assert_int_equal(cJSON_GetArraySize(m), 2);
	assert_int_equal(tc_json_int(cJSON_GetArrayItem(m, 0), "user_id"), a.id);
	assert_string_equal(soc_str(cJSON_GetArrayItem(m, 0), "username"), a.name);
	assert_true(soc_bool(cJSON_GetArrayItem(m, 0), "online"));
	assert_int_equal(tc_json_int(cJSON_GetArrayItem(m, 1), "user_id"), b.id);
	assert_string_equal(soc_str(cJSON_GetArrayItem(m, 1), "username"), b.name);
	assert_true(soc_bool(cJSON_GetArrayItem(m, 1), "online"));
	cJSON_Delete(r);

	/* A second group of a: both listed, b in one of them only. */
	g2 = soc_group_create(a.c, "second");
	assert_true(g2 != g);
	assert_true(soc_group_listed(a.c, g));
	assert_true(soc_group_listed(a.c, g2));
	assert_false(soc_group_listed(b.c, g2));

	/* Name: 1..64 bytes of UTF-8. */
	memset(name, 'n', 64);
	name[64] = '\0';
	soc_group_create(a.c, name);
	strcat(name, "n");
	tc_expect(a.c, CMD_GROUP_CREATE, ST_BAD_REQUEST, "{\"name\":\"%s\"}", name);
	name[0] = '\0';
	for (int i = 0; i < 32; i++)
		strcat(name, "\xc3\xa9");
	soc_group_create(a.c, name);
	strcat(name, "\xc3\xa9");
	tc_expect(a.c, CMD_GROUP_CREATE, ST_BAD_REQUEST, "{\"name\":\"%s\"}", name);
	tc_expect(a.c, CMD_GROUP_CREATE, ST_BAD_REQUEST, "{\"name\":\"\"}");
	tc_expect(a.c, CMD_GROUP_CREATE, ST_BAD_REQUEST, "{\"name\":5}");
	tc_expect(a.c, CMD_GROUP_CREATE, ST_BAD_REQUEST, "{}");
	soc_user_close(&a);
	soc_user_close(&b);
}

static void test_group_join_members_refusals(void **state)
{
	struct soc_user a, b, c;
	int64_t g;

	(void)state;
	soc_user_new(soc_node, &a, "gja");
	soc_user_new(soc_node, &b, "gjb");
	soc_user_new(soc_node, &c, "gjc");
	g = soc_group_create(a.c, "refusals");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	tc_expect(b.c, CMD_GROUP_JOIN, ST_ALREADY_EXISTS, "{\"group_id\":%lld}", (long long)g);
	tc_expect(a.c, CMD_GROUP_JOIN, ST_ALREADY_EXISTS, "{\"group_id\":%lld}", (long long)g);
	tc_expect(b.c, CMD_GROUP_JOIN, ST_NOT_FOUND, "{\"group_id\":9007199254740991}");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_BAD_REQUEST, "{\"group_id\":0}");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_BAD_REQUEST, "{\"group_id\":\"1\"}");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_BAD_REQUEST, "{}");

	tc_expect(c.c, CMD_GROUP_MEMBERS, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	tc_expect(c.c, CMD_GROUP_MEMBERS, ST_NOT_FOUND, "{\"group_id\":9007199254740991}");
	tc_expect(c.c, CMD_GROUP_MEMBERS, ST_BAD_REQUEST, "{\"group_id\":-2}");

	tc_expect(c.c, CMD_GROUP_QUIT, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	tc_expect(c.c, CMD_GROUP_QUIT, ST_NOT_FOUND, "{\"group_id\":9007199254740991}");
	tc_expect(c.c, CMD_GROUP_QUIT, ST_BAD_REQUEST, "{\"group_id\":1e300}");
	tc_expect(c.c, CMD_GROUP_DISSOLVE, ST_BAD_REQUEST, "{\"group_id\":0}");
	tc_expect(c.c, CMD_GROUP_DISSOLVE, ST_NOT_FOUND, "{\"group_id\":9007199254740991}");
	soc_user_close(&a);
	soc_user_close(&b);
	soc_user_close(&c);
}

static void test_group_dissolve(void **state)
{
	struct soc_user a, b, c, d;
	cJSON *p;
	int64_t g;

	(void)state;
	soc_user_new(soc_node, &a, "gda");
	soc_user_new(soc_node, &b, "gdb");
	soc_user_new(soc_node, &c, "gdc");
	soc_user_new(soc_node, &d, "gdd");
	g = soc_group_create(a.c, "doomed");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	tc_expect(c.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);

	/* Only the owner: a member and an outsider are refused alike. */
	tc_expect(b.c, CMD_GROUP_DISSOLVE, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	tc_expect(d.c, CMD_GROUP_DISSOLVE, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	assert_true(soc_group_listed(b.c, g));

	tc_expect(a.c, CMD_GROUP_DISSOLVE, ST_OK, "{\"group_id\":%lld}", (long long)g);
	p = tc_expect_push(b.c, CMD_PUSH_GROUP_DISSOLVED, SOC_PUSH_MS);
	assert_int_equal(tc_json_int(p, "group_id"), g);
	cJSON_Delete(p);
	p = tc_expect_push(c.c, CMD_PUSH_GROUP_DISSOLVED, SOC_PUSH_MS);
	assert_int_equal(tc_json_int(p, "group_id"), g);
	cJSON_Delete(p);
	tc_expect_no_push(a.c, CMD_PUSH_GROUP_DISSOLVED, SOC_NO_PUSH_MS);
	tc_expect_no_push(d.c, CMD_PUSH_GROUP_DISSOLVED, 0);

	/* A dissolved group is gone for every command. */
	assert_false(soc_group_listed(a.c, g));
	assert_false(soc_group_listed(b.c, g));
	tc_expect(a.c, CMD_GROUP_MEMBERS, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	tc_expect(b.c, CMD_GROUP_MEMBERS, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	tc_expect(d.c, CMD_GROUP_JOIN, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	tc_expect(b.c, CMD_GROUP_QUIT, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	tc_expect(a.c, CMD_GROUP_DISSOLVE, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	soc_user_close(&a);
	soc_user_close(&b);
	soc_user_close(&c);
	soc_user_close(&d);
}

static void test_group_quit_and_handover(void **state)
{
	struct soc_user a, b, c;
	cJSON *r;
	int64_t g;

	(void)state;
	soc_user_new(soc_node, &a, "gqa");
	soc_user_new(soc_node, &b, "gqb");
	soc_user_new(soc_node, &c, "gqc");
	g = soc_group_create(a.c, "relay");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	tc_expect(c.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);

	/* A member leaves: the owner stays. */
	tc_expect(c.c, CMD_GROUP_QUIT, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_false(soc_group_listed(c.c, g));
	tc_expect(c.c, CMD_GROUP_MEMBERS, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	tc_expect(c.c, CMD_GROUP_QUIT, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(soc_group_owner(a.c, g), a.id);
	/* ... and comes back as the newest member. */
	tc_expect(c.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	r = tc_call_expect(c.c, CMD_GROUP_MEMBERS, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(cJSON_GetArraySize(soc_array(r, "members")), 3);
	assert_int_equal(tc_json_int(cJSON_GetArrayItem(soc_array(r, "members"), 2), "user_id"),
			 c.id);
	cJSON_Delete(r);

	/* The owner leaves: the longest-standing member (b) takes over. */
	tc_expect(a.c, CMD_GROUP_QUIT, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(soc_group_owner(b.c, g), b.id);
	assert_int_equal(soc_group_owner(c.c, g), b.id);
	tc_expect(a.c, CMD_GROUP_DISSOLVE, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	tc_expect(c.c, CMD_GROUP_DISSOLVE, ST_FORBIDDEN, "{\"group_id\":%lld}", (long long)g);
	r = tc_call_expect(b.c, CMD_GROUP_MEMBERS, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(cJSON_GetArraySize(soc_array(r, "members")), 2);
	assert_null(soc_find(soc_array(r, "members"), "user_id", a.id));
	cJSON_Delete(r);

	tc_expect(b.c, CMD_GROUP_QUIT, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(soc_group_owner(c.c, g), c.id);
	/* The last member leaves: the group is dissolved, nobody to tell. */
	tc_expect(c.c, CMD_GROUP_QUIT, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_false(soc_group_listed(c.c, g));
	tc_expect(a.c, CMD_GROUP_JOIN, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	tc_expect(c.c, CMD_GROUP_MEMBERS, ST_NOT_FOUND, "{\"group_id\":%lld}", (long long)g);
	soc_user_close(&a);
	soc_user_close(&b);
	soc_user_close(&c);
}

#define SOC_CAP 3
#define SOC_JOINERS 8
#define SOC_RACE_ROUNDS 4

static void test_group_member_cap(void **state)
{
	struct node *n = node_start("--group-member-cap %d", SOC_CAP);
	struct soc_user owner, u[SOC_JOINERS];
	char json[64];
	int ok = 0, full = 0;
	int64_t g;
	cJSON *r;

	(void)state;
	assert_non_null(n);
	soc_user_new(n, &owner, "gmo");
	for (int i = 0; i < SOC_JOINERS; i++)
		soc_user_new(n, &u[i], "gmu");

	/* Sequential: the cap counts the owner; the refusal says why. */
	g = soc_group_create(owner.c, "small");
	tc_expect(u[0].c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	tc_expect(u[1].c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	r = tc_call_expect(u[2].c, CMD_GROUP_JOIN, ST_FORBIDDEN, "{\"group_id\":%lld}",
			    (long long)g);
	assert_non_null(strstr(soc_str(r, "error"), "full"));
	cJSON_Delete(r);
	tc_expect(u[1].c, CMD_GROUP_QUIT, ST_OK, "{\"group_id\":%lld}", (long long)g);
	tc_expect(u[2].c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);

	/* Concurrent: everyone asks for the last seat at once, from both
	 * workers; exactly one gets it. Rounds, to give the race its chances. */
	for (int round = 0; round < SOC_RACE_ROUNDS; round++) {
		g = soc_group_create(owner.c, "race");
		snprintf(json, sizeof(json), "{\"group_id\":%lld}", (long long)g);
		for (int i = 1; i < SOC_CAP - 1; i++)
			tc_expect(u[i].c, CMD_GROUP_JOIN, ST_OK, "%s", json);
		for (int i = SOC_CAP - 1; i < SOC_JOINERS; i++)
			assert_int_equal(rc_send(u[i].c, CMD_GROUP_JOIN, SOC_RAW_SEQ, json), 0);
		ok = full = 0;
		for (int i = SOC_CAP - 1; i < SOC_JOINERS; i++) {
			uint32_t code = soc_await(u[i].c, SOC_RAW_SEQ);

			if (code == ST_OK)
				ok++;
			else if (code == ST_FORBIDDEN)
				full++;
			else
				fail_msg("concurrent GROUP_JOIN answered %u", code);
		}
		assert_int_equal(ok, 1);
		assert_int_equal(full, SOC_JOINERS - SOC_CAP);
		r = tc_call_expect(owner.c, CMD_GROUP_MEMBERS, ST_OK, "%s", json);
		assert_int_equal(cJSON_GetArraySize(soc_array(r, "members")), SOC_CAP);
		cJSON_Delete(r);
	}

	/* Concurrent quits of the owner and every member: the group ends
	 * dissolved, not as a live group without members or owner. */
	for (int i = 0; i < SOC_JOINERS; i++)
		assert_int_equal(rc_send(u[i].c, CMD_GROUP_QUIT, SOC_RAW_SEQ + 1, json), 0);
	assert_int_equal(rc_send(owner.c, CMD_GROUP_QUIT, SOC_RAW_SEQ + 1, json), 0);
	ok = 0;
	for (int i = 0; i < SOC_JOINERS; i++)
		ok += soc_await(u[i].c, SOC_RAW_SEQ + 1) == ST_OK;
	ok += soc_await(owner.c, SOC_RAW_SEQ + 1) == ST_OK;
	assert_int_equal(ok, SOC_CAP);
	tc_expect(u[0].c, CMD_GROUP_JOIN, ST_NOT_FOUND, "%s", json);

	soc_user_close(&owner);
	for (int i = 0; i < SOC_JOINERS; i++)
		soc_user_close(&u[i]);
	assert_int_equal(node_stop(n), 0);
}

/* A newcomer starts at the group's newest message: older traffic is not
 * pushed to it. Needs the messaging commands; skipped without them. */
static void test_group_join_skips_older_messages(void **state)
{
	struct soc_user a, b;
	struct rc_frame f;
	uint32_t code;
	char json[128];
	int64_t g;

	(void)state;
	soc_user_new(soc_node, &a, "gra");
	soc_user_new(soc_node, &b, "grb");
	g = soc_group_create(a.c, "chatty");
	snprintf(json, sizeof(json), "{\"group_id\":%lld,\"type\":0,\"text\":\"before\"}",
		 (long long)g);
	cJSON_Delete(tc_call(a.c, CMD_GROUP_SEND, json, &code));
	if (code == ST_UNKNOWN_CMD) {
		soc_user_close(&a);
		soc_user_close(&b);
		skip();
	}
	assert_int_equal(code, ST_OK);
	assert_int_equal(tc_call_code(a.c, CMD_GROUP_SEND, json), ST_OK);
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	soc_user_close(&b);
	b.c = tc_connect(soc_node);
	soc_login(&b);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, 1000);
	/* What comes after the join does reach it. */
	snprintf(json, sizeof(json), "{\"group_id\":%lld,\"type\":0,\"text\":\"after\"}",
		 (long long)g);
	assert_int_equal(tc_call_code(a.c, CMD_GROUP_SEND, json), ST_OK);
	assert_int_equal(rc_wait_push(b.c, CMD_PUSH_MSG, &f, SOC_PUSH_MS), 0);
	assert_string_equal(soc_str(f.json, "text"), "after");
	rc_frame_free(&f);
	soc_user_close(&a);
	soc_user_close(&b);
}

/* A change of the graph binds the very next message: no cache answers
 * from the old state. Needs the messaging commands; skipped without them. */
static void test_changes_bind_next_message(void **state)
{
	struct soc_user a, b;
	char msg[128];
	uint32_t code;
	int64_t g;

	(void)state;
	soc_user_new(soc_node, &a, "gma");
	soc_user_new(soc_node, &b, "gmb");
	soc_befriend(&a, &b);
	snprintf(msg, sizeof(msg), "{\"to\":%lld,\"type\":0,\"text\":\"hi\"}", (long long)b.id);
	cJSON_Delete(tc_call(a.c, CMD_MSG_SEND, msg, &code));
	if (code == ST_UNKNOWN_CMD) {
		soc_user_close(&a);
		soc_user_close(&b);
		skip();
	}
	assert_int_equal(code, ST_OK);
	tc_expect(b.c, CMD_FRIEND_DELETE, ST_OK, "{\"user_id\":%lld}", (long long)a.id);
	assert_int_equal(tc_call_code(a.c, CMD_MSG_SEND, msg), ST_FORBIDDEN);
	soc_befriend(&b, &a);
	assert_int_equal(tc_call_code(a.c, CMD_MSG_SEND, msg), ST_OK);

	g = soc_group_create(a.c, "binding");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g);
	snprintf(msg, sizeof(msg), "{\"group_id\":%lld,\"type\":0,\"text\":\"yo\"}", (long long)g);
	assert_int_equal(tc_call_code(b.c, CMD_GROUP_SEND, msg), ST_OK);
	assert_int_equal(tc_call_code(a.c, CMD_GROUP_SEND, msg), ST_OK);
	tc_expect(b.c, CMD_GROUP_QUIT, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(tc_call_code(b.c, CMD_GROUP_SEND, msg), ST_FORBIDDEN);
	tc_expect(a.c, CMD_GROUP_DISSOLVE, ST_OK, "{\"group_id\":%lld}", (long long)g);
	assert_int_equal(tc_call_code(a.c, CMD_GROUP_SEND, msg), ST_NOT_FOUND);
	soc_user_close(&a);
	soc_user_close(&b);
}

static void test_social_needs_login(void **state)
{
	struct rc_client *c = tc_connect(soc_node);

	(void)state;
	assert_int_equal(tc_call_code(c, CMD_FRIEND_LIST, NULL), ST_NOT_LOGGED_IN);
	assert_int_equal(tc_call_code(c, CMD_FRIEND_REQUEST, "{\"user_id\":1}"), ST_NOT_LOGGED_IN);
	assert_int_equal(tc_call_code(c, CMD_GROUP_LIST, NULL), ST_NOT_LOGGED_IN);
	assert_int_equal(tc_call_code(c, CMD_GROUP_CREATE, "{\"name\":\"x\"}"), ST_NOT_LOGGED_IN);
	rc_close(c);
}

/* ---- caps and pages -------------------------------------------------------- */

/* One user of a node of its own (the shared node has the default caps). */
static void soc_user_on(struct node *n, struct soc_user *u, const char *prefix)
{
	soc_user_new(n, u, prefix);
}

/* Asserts code 6 with a reason that contains `what`. */
static void soc_expect_cap(struct rc_client *c, uint16_t cmd, const char *what, const char *fmt,
			   long long id)
{
	char json[128];
	uint32_t code;
	cJSON *r;

	snprintf(json, sizeof(json), fmt, id);
	r = tc_call(c, cmd, json, &code);
	if (code != ST_FORBIDDEN)
		fail_msg("%s %s: code %u, expected 6", rc_cmd_name(cmd), json, code);
	if (!strstr(soc_str(r, "error"), what))
		fail_msg("%s: reason \"%s\" does not name \"%s\"", rc_cmd_name(cmd),
			 soc_str(r, "error"), what);
	cJSON_Delete(r);
}

static void test_social_caps(void **state)
{
	struct node *n = node_start("--friends-max 2 --friend-requests-max 2 "
				    "--groups-created-max 2 --groups-joined-max 3");
	struct soc_user a, b, c, d, t, e[3];
	int64_t g[4];

	(void)state;
	assert_non_null(n);
	soc_user_on(n, &a, "capA");
	soc_user_on(n, &b, "capB");
	soc_user_on(n, &c, "capC");
	soc_user_on(n, &d, "capD");
	soc_user_on(n, &t, "capT");
	for (int i = 0; i < 3; i++)
		soc_user_on(n, &e[i], "capE");

	/* friends_max: a has two friends and may not ask for a third ... */
	soc_befriend(&a, &b);
	soc_befriend(&c, &a);
	soc_expect_cap(a.c, CMD_FRIEND_REQUEST, "friend limit", "{\"user_id\":%lld}",
		       (long long)d.id);
	tc_expect_no_push(d.c, CMD_PUSH_FRIEND_REQUEST, SOC_NO_PUSH_MS);
	/* ... nor accept one, nor make one by crossing a request. */
	tc_expect(d.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)a.id);
	soc_expect_request_push(a.c, &d, "");
	soc_expect_cap(a.c, CMD_FRIEND_ACCEPT, "friend limit", "{\"user_id\":%lld}",
		       (long long)d.id);
	soc_expect_cap(a.c, CMD_FRIEND_REQUEST, "friend limit", "{\"user_id\":%lld}",
		       (long long)d.id);
	soc_assert_counts(&a, 2, 1);
	soc_assert_counts(&d, 0, 0);
	/* Room again after a delete. */
	tc_expect(a.c, CMD_FRIEND_DELETE, ST_OK, "{\"user_id\":%lld}", (long long)b.id);
	tc_expect(a.c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)d.id);
	soc_expect_accepted_push(d.c, &a);

	/* friend_requests_max: t takes two waiting requests, not a third; a
	 * repeat of a waiting one is still fine. */
	tc_expect(e[0].c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)t.id);
	tc_expect(e[1].c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)t.id);
	soc_expect_cap(e[2].c, CMD_FRIEND_REQUEST, "waiting", "{\"user_id\":%lld}",
		       (long long)t.id);
	tc_expect(e[0].c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld,\"remark\":\"again\"}",
		  (long long)t.id);
	soc_assert_counts(&t, 0, 2);
	/* Answering one makes room. */
	tc_expect(t.c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)e[1].id);
	tc_expect(e[2].c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)t.id);

	/* groups_created_max 2, groups_joined_max 3. */
	g[0] = soc_group_create(b.c, "cap-g0");
	g[1] = soc_group_create(b.c, "cap-g1");
	soc_expect_cap(b.c, CMD_GROUP_CREATE, "group limit", "{\"name\":\"cap-g2-%lld\"}", 0);
	g[2] = soc_group_create(c.c, "cap-g2");
	g[3] = soc_group_create(c.c, "cap-g3");
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g[2]);
	soc_expect_cap(b.c, CMD_GROUP_JOIN, "group limit", "{\"group_id\":%lld}",
		       (long long)g[3]);
	/* Quitting one makes room again. */
	tc_expect(b.c, CMD_GROUP_QUIT, ST_OK, "{\"group_id\":%lld}", (long long)g[2]);
	tc_expect(b.c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)g[3]);
	/* Dissolving one it owns lets it create again. */
	tc_expect(b.c, CMD_GROUP_DISSOLVE, ST_OK, "{\"group_id\":%lld}", (long long)g[0]);
	(void)soc_group_create(b.c, "cap-g4");
	(void)g[1];

	soc_user_close(&a);
	soc_user_close(&b);
	soc_user_close(&c);
	soc_user_close(&d);
	soc_user_close(&t);
	for (int i = 0; i < 3; i++)
		soc_user_close(&e[i]);
	assert_int_equal(node_stop(n), 0);
}

#define SOC_PAGE_FRIENDS 5
#define SOC_PAGE_GROUPS 3

/* Reads pages of FRIEND_LIST (or GROUP_LIST) of `limit` through "next"
 * into ids (ascending, none twice); returns how many. */
static int soc_read_pages(struct rc_client *c, uint16_t cmd, const char *arr, const char *key,
			  int limit, int64_t *ids, int max)
{
	int64_t after = 0;
	int n = 0, pages = 0;

	for (;;) {
		cJSON *r = after ? tc_call_expect(c, cmd, ST_OK, "{\"limit\":%d,\"after\":%lld}",
						   limit, (long long)after)
				 : tc_call_expect(c, cmd, ST_OK, "{\"limit\":%d}", limit);
		const cJSON *a = soc_array(r, arr), *it, *next;
		int in_page = 0;

		cJSON_ArrayForEach(it, a) {
			int64_t id = tc_json_int(it, key);

			assert_true(n < max);
			assert_true(n == 0 || id > ids[n - 1]);
			ids[n++] = id;
			in_page++;
		}
		assert_true(in_page <= limit);
		if (cmd == CMD_FRIEND_LIST && after)
			assert_int_equal(cJSON_GetArraySize(soc_array(r, "pending")), 0);
		next = cJSON_GetObjectItemCaseSensitive(r, "next");
		pages++;
		if (!next) {
			cJSON_Delete(r);
			return n;
		}
		assert_int_equal(in_page, limit);
		after = tc_json_int(r, "next");
		assert_int_equal(after, ids[n - 1]);
		cJSON_Delete(r);
		assert_true(pages < 100);
	}
}

static void test_list_pages(void **state)
{
	struct soc_user hub, f[SOC_PAGE_FRIENDS], asker;
	int64_t ids[16], gids[SOC_PAGE_GROUPS];
	cJSON *l;
	int n;

	(void)state;
	soc_user_new(soc_node, &hub, "page");
	soc_user_new(soc_node, &asker, "pageQ");
	for (int i = 0; i < SOC_PAGE_FRIENDS; i++) {
		soc_user_new(soc_node, &f[i], "pageF");
		soc_befriend(&f[i], &hub);
	}
	tc_expect(asker.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)hub.id);
	/* Without a limit: everything, no "next", as before paging. */
	l = soc_friend_list(hub.c);
	assert_int_equal(cJSON_GetArraySize(soc_array(l, "friends")), SOC_PAGE_FRIENDS);
	assert_int_equal(cJSON_GetArraySize(soc_array(l, "pending")), 1);
	assert_null(cJSON_GetObjectItemCaseSensitive(l, "next"));
	cJSON_Delete(l);
	/* Pages of 2: 2 + 2 + 1, each friend once, pending on the first. */
	n = soc_read_pages(hub.c, CMD_FRIEND_LIST, "friends", "user_id", 2, ids, 16);
	assert_int_equal(n, SOC_PAGE_FRIENDS);
	for (int i = 0; i < SOC_PAGE_FRIENDS; i++) {
		bool found = false;

		for (int k = 0; k < n; k++)
			found = found || ids[k] == f[i].id;
		assert_true(found);
	}
	/* A page exactly as large as the list has no "next". */
	l = tc_call_expect(hub.c, CMD_FRIEND_LIST, ST_OK, "{\"limit\":%d}", SOC_PAGE_FRIENDS);
	assert_null(cJSON_GetObjectItemCaseSensitive(l, "next"));
	cJSON_Delete(l);
	tc_expect(hub.c, CMD_FRIEND_LIST, ST_BAD_REQUEST, "{\"limit\":0}");
	tc_expect(hub.c, CMD_FRIEND_LIST, ST_BAD_REQUEST, "{\"limit\":1000001}");
	tc_expect(hub.c, CMD_FRIEND_LIST, ST_BAD_REQUEST, "{\"after\":-1}");
	tc_expect(hub.c, CMD_FRIEND_LIST, ST_BAD_REQUEST, "{\"limit\":\"2\"}");

	for (int i = 0; i < SOC_PAGE_GROUPS; i++)
		gids[i] = soc_group_create(hub.c, "paged");
	n = soc_read_pages(hub.c, CMD_GROUP_LIST, "groups", "group_id", 2, ids, 16);
	assert_int_equal(n, SOC_PAGE_GROUPS);
	for (int i = 0; i < SOC_PAGE_GROUPS; i++)
		assert_int_equal(ids[i], gids[i]);
	tc_expect(hub.c, CMD_GROUP_LIST, ST_BAD_REQUEST, "{\"limit\":0}");

	soc_user_close(&hub);
	soc_user_close(&asker);
	for (int i = 0; i < SOC_PAGE_FRIENDS; i++)
		soc_user_close(&f[i]);
}

static int soc_setup(void **state)
{
	(void)state;
	soc_node = node_start(NULL);
	return soc_node ? 0 : -1;
}

static int soc_teardown(void **state)
{
	(void)state;
	return node_stop(soc_node) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_social_needs_login),
	    cmocka_unit_test(test_friend_request_and_accept),
	    cmocka_unit_test(test_friend_request_refusals),
	    cmocka_unit_test(test_friend_requests_crossing),
	    cmocka_unit_test(test_friend_requests_crossing_concurrently),
	    cmocka_unit_test(test_friend_accept_refusals),
	    cmocka_unit_test(test_friend_delete),
	    cmocka_unit_test(test_friend_update),
	    cmocka_unit_test(test_pending_requests_pushed_at_login),
	    cmocka_unit_test(test_friend_list_thousand),
	    cmocka_unit_test(test_group_create_join_list_members),
	    cmocka_unit_test(test_group_join_members_refusals),
	    cmocka_unit_test(test_group_dissolve),
	    cmocka_unit_test(test_group_quit_and_handover),
	    cmocka_unit_test(test_group_member_cap),
	    cmocka_unit_test(test_group_join_skips_older_messages),
	    cmocka_unit_test(test_changes_bind_next_message),
	    cmocka_unit_test(test_social_caps),
	    cmocka_unit_test(test_list_pages),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, soc_setup, soc_teardown));
}
