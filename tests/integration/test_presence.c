/*
 * test_presence.c - PUSH_PRESENCE and online flags against a real
 * ringchatd with MariaDB and Redis: a friend logging in, logging out,
 * dropping its connection, being kicked by a newer login (no offline
 * push), and the online flag FRIEND_LIST reports.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define PUSH_MS 3000
#define NO_PUSH_MS 400

static struct node *pr_node;

struct pr_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static int pr_setup(void **state)
{
	(void)state;
	pr_node = node_start(NULL);
	return pr_node ? 0 : -1;
}

static int pr_teardown(void **state)
{
	(void)state;
	return node_stop(pr_node) == 0 ? 0 : -1;
}

static void pr_befriend(struct pr_user *a, struct pr_user *b)
{
	char json[64];

	snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)b->id);
	cJSON_Delete(tc_call_ok(a->c, CMD_FRIEND_REQUEST, "%s", json));
	cJSON_Delete(tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, PUSH_MS));
	snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)a->id);
	cJSON_Delete(tc_call_ok(b->c, CMD_FRIEND_ACCEPT, "%s", json));
	cJSON_Delete(tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, PUSH_MS));
}

/* Waits for PUSH_PRESENCE about user; returns its online flag. */
static bool pr_expect_presence(struct rc_client *c, int64_t user)
{
	cJSON *p = tc_expect_push(c, CMD_PUSH_PRESENCE, PUSH_MS);
	const cJSON *online = cJSON_GetObjectItemCaseSensitive(p, "online");
	bool v;

	assert_non_null(p);
	assert_int_equal(tc_json_int(p, "user_id"), user);
	assert_true(cJSON_IsBool(online));
	v = cJSON_IsTrue(online);
	cJSON_Delete(p);
	return v;
}

static struct rc_client *pr_login(const char *name)
{
	struct rc_client *c = tc_connect(pr_node);
	char json[128];

	snprintf(json, sizeof(json), "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		 TC_PASSWORD);
	cJSON_Delete(tc_call_ok(c, CMD_LOGIN, "%s", json));
	return c;
}

/* The online flag FRIEND_LIST shows for friend id. */
static bool pr_listed_online(struct rc_client *c, int64_t id)
{
	cJSON *list = tc_call_ok(c, CMD_FRIEND_LIST, NULL);
	const cJSON *f;
	bool online = false, found = false;

	cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(list, "friends"))
	{
		if (tc_json_int(f, "user_id") == id) {
			found = true;
			online = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "online"));
		}
	}
	cJSON_Delete(list);
	assert_true(found);
	return online;
}

static void test_login_logout_disconnect(void **state)
{
	struct pr_user a, b;

	(void)state;
	a.c = tc_signup_login_as(pr_node, "pra", a.name, &a.id);
	b.c = tc_signup_login_as(pr_node, "prb", b.name, &b.id);
	pr_befriend(&a, &b);
	assert_true(pr_listed_online(a.c, b.id));

	/* LOGOUT: the friend hears "offline", the list agrees. */
	cJSON_Delete(tc_call_ok(b.c, CMD_LOGOUT, NULL));
	rc_close(b.c);
	assert_false(pr_expect_presence(a.c, b.id));
	assert_false(pr_listed_online(a.c, b.id));

	/* LOGIN: "online". */
	b.c = pr_login(b.name);
	assert_true(pr_expect_presence(a.c, b.id));
	assert_true(pr_listed_online(a.c, b.id));

	/* A dropped connection (no LOGOUT) is an offline too. */
	rc_close(b.c);
	assert_false(pr_expect_presence(a.c, b.id));
	assert_false(pr_listed_online(a.c, b.id));
	rc_close(a.c);
}

static void test_kick_sends_no_offline(void **state)
{
	struct pr_user a, b;
	struct rc_client *b2;

	(void)state;
	a.c = tc_signup_login_as(pr_node, "prka", a.name, &a.id);
	b.c = tc_signup_login_as(pr_node, "prkb", b.name, &b.id);
	pr_befriend(&a, &b);

	/* B logs in again elsewhere: the old session is kicked, the friend
	 * hears B is online (the new session), never offline. */
	b2 = pr_login(b.name);
	cJSON_Delete(tc_expect_push(b.c, CMD_PUSH_KICKED, PUSH_MS));
	assert_true(pr_expect_presence(a.c, b.id));
	tc_expect_no_push(a.c, CMD_PUSH_PRESENCE, NO_PUSH_MS);
	assert_true(pr_listed_online(a.c, b.id));
	rc_close(b.c);
	tc_expect_no_push(a.c, CMD_PUSH_PRESENCE, NO_PUSH_MS);
	assert_true(pr_listed_online(a.c, b.id));

	rc_close(b2);
	assert_false(pr_expect_presence(a.c, b.id));
	rc_close(a.c);
}

static void test_not_friends_hear_nothing(void **state)
{
	struct pr_user a, b;

	(void)state;
	a.c = tc_signup_login_as(pr_node, "prna", a.name, &a.id);
	b.c = tc_signup_login_as(pr_node, "prnb", b.name, &b.id);
	rc_close(b.c);
	tc_expect_no_push(a.c, CMD_PUSH_PRESENCE, NO_PUSH_MS);
	rc_close(a.c);
}

/* A node that shuts down marks its users offline in the shared Redis at
 * once: a friend on another node sees them offline, without waiting for
 * the presence TTL (90 s) to run out. */
static void test_node_stop_marks_offline(void **state)
{
	struct node *other = node_start(NULL);
	struct pr_user a, b;
	char json[64];

	(void)state;
	assert_non_null(other);
	a.c = tc_signup_login_as(other, "prsa", a.name, &a.id);
	b.c = tc_signup_login_as(pr_node, "prsb", b.name, &b.id);
	/* befriend across the nodes: the request's push does not cross
	 * nodes (that is the cluster layer's), the stored request does */
	snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)b.id);
	cJSON_Delete(tc_call_ok(a.c, CMD_FRIEND_REQUEST, "%s", json));
	snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)a.id);
	cJSON_Delete(tc_call_ok(b.c, CMD_FRIEND_ACCEPT, "%s", json));
	assert_true(pr_listed_online(b.c, a.id));

	assert_int_equal(node_stop(other), 0);
	rc_close(a.c);
	assert_false(pr_listed_online(b.c, a.id));
	rc_close(b.c);
}

/* ---- Redis outage: presence refresh with replies owed ---------------------- */

#define PR_REFRESH_S 1
#define PR_OUTAGE_MS 2500  /* longer than the refresh period: it runs meanwhile */
#define PR_RECOVER_MS 5000 /* "within a few seconds" of Redis coming back */

static int pr_restart_redis(void **state)
{
	(void)state;
	return services_start("redis") == 0 ? 0 : -1;
}

/*
 * One worker whose presence refresh (every second) runs while Redis is
 * down: once Redis is back, that worker must serve a LOGIN again within a
 * few seconds, and its Redis link must never have been left with replies
 * owed (kv.c logs "pipelined replies are pending" when a later command
 * meets such a link, and fails it).
 */
static void test_redis_outage_refresh(void **state)
{
	struct node *n = node_start("--workers 1 --presence-refresh-s %d --cluster-route off",
				    PR_REFRESH_S);
	char name[TC_NAME_MAX], other[TC_NAME_MAX], out[64], *login;
	struct rc_client *online, *c;
	int64_t id, deadline;
	uint32_t code;
	cJSON *r, *o;

	(void)state;
	assert_non_null(n);
	online = tc_signup_login_as(n, "prOut", name, &id);
	c = tc_connect(n);
	tc_unique_name("prOut2", other);
	tc_expect(c, CMD_SIGNUP, ST_OK, "{\"username\":\"%s\",\"password\":\"%s\"}", other,
		  TC_PASSWORD);
	/* The entry lives 3 refresh periods. */
	if (tc_redis_cli(out, sizeof(out), "TTL rc:on:%lld", (long long)id) == 0) {
		assert_true(atoi(out) >= 1);
		assert_true(atoi(out) <= 3 * PR_REFRESH_S);
	}

	assert_int_equal(services_stop("redis"), 0);
	tc_sleep_ms(PR_OUTAGE_MS);
	assert_int_equal(services_start("redis"), 0);

	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "username", other);
	cJSON_AddStringToObject(o, "password", TC_PASSWORD);
	login = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	deadline = tc_now_ms() + PR_RECOVER_MS;
	for (;;) {
		r = tc_call(c, CMD_LOGIN, login, &code);
		cJSON_Delete(r);
		if (code == ST_OK)
			break;
		if (code != ST_INTERNAL)
			fail_msg("LOGIN after the outage: code %u", code);
		if (tc_now_ms() > deadline)
			fail_msg("LOGIN still failing %d ms after Redis came back", PR_RECOVER_MS);
		tc_sleep_ms(100);
	}
	free(login);
	/* The refresh puts the online user's entry back (Redis lost it). */
	deadline = tc_now_ms() + PR_RECOVER_MS;
	for (;;) {
		assert_int_equal(tc_redis_cli(out, sizeof(out), "EXISTS rc:on:%lld", (long long)id),
				 0);
		if (strcmp(out, "1") == 0)
			break;
		if (tc_now_ms() > deadline)
			fail_msg("presence of user %lld not restored", (long long)id);
		tc_sleep_ms(100);
	}
	tc_expect(online, CMD_PING, ST_OK, NULL);
	assert_false(node_log_contains(n, "pipelined replies are pending"));
	rc_close(online);
	rc_close(c);
	assert_int_equal(node_stop(n), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_login_logout_disconnect),
		cmocka_unit_test(test_kick_sends_no_offline),
		cmocka_unit_test(test_not_friends_hear_nothing),
		cmocka_unit_test(test_node_stop_marks_offline),
		/* last: it stops the shared Redis (the teardown restarts it) */
		cmocka_unit_test_teardown(test_redis_outage_refresh, pr_restart_redis),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, pr_setup, pr_teardown));
}
