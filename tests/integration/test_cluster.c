/*
 * test_cluster.c - three nodes that act as one service, routing through
 * Redis (cluster_route redis): 1:1 messages both ways, a burst of 500 in
 * order, friend request and accept pushes, presence, a kick across nodes,
 * offline messages at a login on another node (including the marks the
 * first node's writer held), group fan-out to members on three nodes with
 * one copy per node per message, a node killed with SIGKILL (its users
 * fall offline, messages to them arrive at their next login elsewhere,
 * it restarts with its id once the lease lapses), and a second node with
 * a live node's id exiting 2. Run once per cluster_route: redis, and udp
 * (the same behaviour over the node link; RINGCHAT_CLUSTER_ROUTE=udp).
 *
 * Needs the services (scripts/services.sh start and env).
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CL_PUSH_MS 5000
#define CL_NO_PUSH_MS 400
#define CL_TTL_MS 1000 /* node_ttl_ms of the test nodes: a dead node is seen quickly */
#define CL_NODES 3
#define CL_SECRET "test-cluster-secret-of-at-least-32-bytes"
/* node ids 21..23 (redis) or 24..26 (udp): apart from other tests' nodes */
static int CL_ID0 = 21;
/* cluster_route of this run: RINGCHAT_CLUSTER_ROUTE (redis by default) */
static const char *cl_route = "redis";

static struct node *cl_nodes[CL_NODES];

static const char *cl_args(int i)
{
	static char buf[CL_NODES][256];

	snprintf(buf[i], sizeof(buf[i]),
		 "--cluster-route %s --node-id %d --node-ttl-ms %d --rate-msgs-per-s 100000 "
		 "--rate-burst 100000 --cluster-secret %s",
		 cl_route, CL_ID0 + i, CL_TTL_MS, CL_SECRET);
	return buf[i];
}

static struct node *cl_start(int i)
{
	struct node *n = node_start("%s", cl_args(i));

	if (!n)
		fail_msg("node %d did not start", CL_ID0 + i);
	return n;
}

/* Waits until every node sees the others up (ringchat_cluster_peers_up). */
static void cl_wait_peers(int count)
{
	for (int i = 0; i < CL_NODES; i++) {
		int64_t deadline = tc_now_ms() + 5 * CL_TTL_MS;

		if (!cl_nodes[i])
			continue;
		while (tc_metric(cl_nodes[i], "ringchat_cluster_peers_up") != count) {
			if (tc_now_ms() > deadline)
				fail_msg("node %d sees %lld peers up, want %d", CL_ID0 + i,
					 (long long)tc_metric(cl_nodes[i], "ringchat_cluster_peers_up"),
					 count);
			tc_sleep_ms(50);
		}
	}
}

struct cl_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static void cl_user_new(struct cl_user *u, int node, const char *prefix)
{
	u->c = tc_signup_login_as(cl_nodes[node], prefix, u->name, &u->id);
}

static void cl_user_close(struct cl_user *u)
{
	if (u->c)
		rc_close(u->c);
	u->c = NULL;
}

/* u logs in again on node (a new connection; pushes stay queued). */
static void cl_login(struct cl_user *u, int node)
{
	cJSON *r;

	u->c = tc_connect(cl_nodes[node]);
	r = tc_call_ok(u->c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name,
		       TC_PASSWORD);
	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	cJSON_Delete(r);
}

/* a asks b, b accepts: both pushes cross when they are on two nodes. */
static void cl_befriend(struct cl_user *a, struct cl_user *b)
{
	cJSON *p;

	tc_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld,\"remark\":\"hi\"}",
		  (long long)b->id);
	p = tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, CL_PUSH_MS);
	assert_int_equal(tc_json_int(p, "from"), a->id);
	cJSON_Delete(p);
	tc_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a->id);
	p = tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, CL_PUSH_MS);
	assert_int_equal(tc_json_int(p, "user_id"), b->id);
	cJSON_Delete(p);
}

static int64_t cl_send(struct cl_user *from, int64_t to, const char *text)
{
	cJSON *r = tc_call_expect(from->c, CMD_MSG_SEND, ST_OK,
				  "{\"to\":%lld,\"type\":0,\"text\":\"%s\"}", (long long)to, text);
	int64_t id = tc_json_int(r, "msg_id");

	cJSON_Delete(r);
	return id;
}

/* The next PUSH_MSG of u: asserts its sender, id (if not 0) and text. */
static void cl_expect_msg(struct cl_user *u, int64_t from, int64_t msg_id, const char *text)
{
	cJSON *p = tc_expect_push(u->c, CMD_PUSH_MSG, CL_PUSH_MS);
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");

	assert_int_equal(tc_json_int(p, "from"), from);
	if (msg_id)
		assert_int_equal(tc_json_int(p, "msg_id"), msg_id);
	if (!cJSON_IsString(t) || strcmp(t->valuestring, text))
		fail_msg("PUSH_MSG text %s, want %s", cJSON_IsString(t) ? t->valuestring : "?",
			 text);
	cJSON_Delete(p);
}

static void test_one_to_one_both_ways(void **state)
{
	struct cl_user a, b;
	int64_t to_b, to_a;

	(void)state;
	cl_user_new(&a, 0, "cla");
	cl_user_new(&b, 1, "clb");
	cl_befriend(&a, &b);
	to_b = cl_send(&a, b.id, "hello from node 21");
	cl_expect_msg(&b, a.id, to_b, "hello from node 21");
	to_a = cl_send(&b, a.id, "and back from 22");
	cl_expect_msg(&a, b.id, to_a, "and back from 22");
	/* acked on the recipient's node: the sender's node, whose writer
	 * holds the unread mark, hears of it, so the mark is never written
	 * and nothing comes again at a later login (after unread_defer_ms) */
	tc_expect(b.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}", (long long)to_b);
	tc_expect(a.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}", (long long)to_a);
	tc_sleep_ms(1500);
	cl_user_close(&a);
	cl_user_close(&b);
	cl_login(&b, 2);
	cl_login(&a, 1);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, CL_NO_PUSH_MS);
	tc_expect_no_push(a.c, CMD_PUSH_MSG, CL_NO_PUSH_MS);
	cl_user_close(&a);
	cl_user_close(&b);
}

static void test_burst_in_order(void **state)
{
	enum { N = 500 };
	static int64_t ids[N];
	struct cl_user a, b;
	char text[32];

	(void)state;
	cl_user_new(&a, 1, "clba");
	cl_user_new(&b, 2, "clbb");
	cl_befriend(&a, &b);
	tc_send_many(a.c, b.id, false, N, "m", ids);
	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof(text), "m%d", i);
		cl_expect_msg(&b, a.id, ids[i], text);
	}
	tc_expect_no_push(b.c, CMD_PUSH_MSG, CL_NO_PUSH_MS);
	cl_user_close(&a);
	cl_user_close(&b);
}

static void test_presence(void **state)
{
	struct cl_user a, b;
	cJSON *p;

	(void)state;
	cl_user_new(&a, 0, "clpa");
	cl_user_new(&b, 2, "clpb");
	cl_befriend(&a, &b);
	cl_user_close(&a);
	p = tc_expect_push(b.c, CMD_PUSH_PRESENCE, CL_PUSH_MS);
	assert_int_equal(tc_json_int(p, "user_id"), a.id);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "online")));
	cJSON_Delete(p);
	cl_login(&a, 1);
	p = tc_expect_push(b.c, CMD_PUSH_PRESENCE, CL_PUSH_MS);
	assert_int_equal(tc_json_int(p, "user_id"), a.id);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "online")));
	cJSON_Delete(p);
	/* FRIEND_LIST on a third node sees a online */
	p = tc_call_ok(b.c, CMD_FRIEND_LIST, NULL);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(p, "friends"), 0), "online")));
	cJSON_Delete(p);
	cl_user_close(&a);
	cl_user_close(&b);
}

static void test_kick_across_nodes(void **state)
{
	struct cl_user a, b;
	struct rc_client *old;
	struct rc_frame f;
	cJSON *p;
	int rc;

	(void)state;
	cl_user_new(&a, 0, "clka");
	cl_user_new(&b, 2, "clkb");
	cl_befriend(&a, &b);
	old = a.c;
	cl_login(&a, 1);
	p = tc_expect_push(old, CMD_PUSH_KICKED, CL_PUSH_MS);
	cJSON_Delete(p);
	/* then the old connection is closed */
	do {
		rc = rc_recv(old, &f, CL_PUSH_MS);
		if (rc == 0)
			rc_frame_free(&f);
	} while (rc == 0);
	assert_true(rc != -ETIMEDOUT);
	rc_close(old);
	/* a kick is no logout: b hears of the new login (online), and of no
	 * offline in between */
	p = tc_expect_push(b.c, CMD_PUSH_PRESENCE, CL_PUSH_MS);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "online")));
	cJSON_Delete(p);
	tc_expect_no_push(b.c, CMD_PUSH_PRESENCE, CL_NO_PUSH_MS);
	/* and messages now reach the new session, on node 22 */
	int64_t id = cl_send(&b, a.id, "after the kick");

	cl_expect_msg(&a, b.id, id, "after the kick");
	cl_user_close(&a);
	cl_user_close(&b);
}

static void test_offline_at_login_elsewhere(void **state)
{
	struct cl_user a, b, c;
	int64_t held[5], off[3];
	char text[32];

	(void)state;
	cl_user_new(&a, 0, "cloa");
	cl_user_new(&b, 0, "clob"); /* same node as a: its marks are held there */
	cl_user_new(&c, 2, "cloc");
	cl_befriend(&a, &b);
	cl_befriend(&c, &a);
	for (int i = 0; i < 5; i++) {
		snprintf(text, sizeof(text), "held%d", i);
		held[i] = cl_send(&b, a.id, text);
		cl_expect_msg(&a, b.id, held[i], text); /* pushed, never acked */
	}
	/* a moves to node 22 at once, well within unread_defer_ms: node 21
	 * must store the marks it holds before 22 reads them */
	struct rc_client *kicked = a.c;

	cl_login(&a, 1);
	rc_close(kicked);
	for (int i = 0; i < 5; i++) {
		snprintf(text, sizeof(text), "held%d", i);
		cl_expect_msg(&a, b.id, held[i], text);
	}
	/* offline now; c (node 23) writes to it; a logs in on node 21 */
	cl_user_close(&a);
	for (int i = 0; i < 3; i++) {
		snprintf(text, sizeof(text), "off%d", i);
		off[i] = cl_send(&c, a.id, text);
	}
	cl_login(&a, 0);
	for (int i = 0; i < 5; i++) {
		snprintf(text, sizeof(text), "held%d", i);
		cl_expect_msg(&a, b.id, held[i], text); /* still unacked */
	}
	for (int i = 0; i < 3; i++) {
		snprintf(text, sizeof(text), "off%d", i);
		cl_expect_msg(&a, c.id, off[i], text);
	}
	tc_expect(a.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld]}",
		  (long long)held[0], (long long)held[1], (long long)held[2], (long long)held[3],
		  (long long)held[4], (long long)off[0], (long long)off[1], (long long)off[2]);
	cl_user_close(&a);
	cl_login(&a, 2); /* acked on node 21: none comes again on node 23 */
	tc_expect_no_push(a.c, CMD_PUSH_MSG, CL_NO_PUSH_MS);
	cl_user_close(&a);
	cl_user_close(&b);
	cl_user_close(&c);
}

static void test_group_three_nodes(void **state)
{
	enum { PER_NODE = 2, MSGS = 20 };
	struct cl_user u[CL_NODES * PER_NODE];
	int64_t gid, fwd0[CL_NODES], fwd1[CL_NODES], ids[MSGS];
	char text[32];
	cJSON *r;

	(void)state;
	for (int i = 0; i < CL_NODES * PER_NODE; i++)
		cl_user_new(&u[i], i % CL_NODES, "clg");
	r = tc_call_ok(u[0].c, CMD_GROUP_CREATE, "{\"name\":\"three nodes\"}");
	gid = tc_json_int(r, "group_id");
	cJSON_Delete(r);
	for (int i = 1; i < CL_NODES * PER_NODE; i++)
		tc_expect(u[i].c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)gid);
	for (int n = 0; n < CL_NODES; n++)
		fwd0[n] = tc_metric(cl_nodes[n], "ringchat_cluster_pushes_forwarded_total");
	tc_send_many(u[0].c, gid, true, MSGS, "g", ids);
	for (int i = 1; i < CL_NODES * PER_NODE; i++) {
		for (int k = 0; k < MSGS; k++) {
			cJSON *p = tc_expect_push(u[i].c, CMD_PUSH_MSG, CL_PUSH_MS);

			snprintf(text, sizeof(text), "g%d", k);
			assert_int_equal(tc_json_int(p, "msg_id"), ids[k]);
			assert_int_equal(tc_json_int(p, "group_id"), gid);
			assert_string_equal(cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring,
					    text);
			cJSON_Delete(p);
		}
	}
	tc_expect_no_push(u[0].c, CMD_PUSH_MSG, CL_NO_PUSH_MS);
	for (int n = 0; n < CL_NODES; n++)
		fwd1[n] = tc_metric(cl_nodes[n], "ringchat_cluster_pushes_forwarded_total");
	/* one copy per other node per message, never one per member */
	assert_int_equal(fwd1[0] - fwd0[0], (CL_NODES - 1) * MSGS);
	assert_int_equal(fwd1[1] - fwd0[1], 0);
	assert_int_equal(fwd1[2] - fwd0[2], 0);
	for (int i = 0; i < CL_NODES * PER_NODE; i++)
		cl_user_close(&u[i]);
}

static void test_node_killed(void **state)
{
	struct cl_user a, b;
	int64_t ids[3];
	char text[32];
	int64_t t0;
	cJSON *p;

	(void)state;
	cl_user_new(&a, 1, "clxa");
	cl_user_new(&b, 0, "clxb");
	cl_befriend(&a, &b);
	assert_int_equal(node_kill(cl_nodes[1]), 128 + 9);
	rc_close(a.c);
	a.c = NULL;
	/* its users fall offline within the TTL */
	t0 = tc_now_ms();
	for (;;) {
		p = tc_call_ok(b.c, CMD_FRIEND_LIST, NULL);
		bool online = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
		    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(p, "friends"), 0), "online"));

		cJSON_Delete(p);
		if (!online)
			break;
		if (tc_now_ms() - t0 > 4 * CL_TTL_MS)
			fail_msg("a user of the killed node still online after %d ms", 4 * CL_TTL_MS);
		tc_sleep_ms(50);
	}
	for (int i = 0; i < 3; i++) {
		snprintf(text, sizeof(text), "while down %d", i);
		ids[i] = cl_send(&b, a.id, text);
	}
	cl_login(&a, 2);
	for (int i = 0; i < 3; i++) {
		snprintf(text, sizeof(text), "while down %d", i);
		cl_expect_msg(&a, b.id, ids[i], text);
	}
	/* the id is free once its lease lapsed: the node restarts with it */
	t0 = tc_now_ms();
	while (!(cl_nodes[1] = node_start("%s", cl_args(1)))) {
		if (tc_now_ms() - t0 > 4 * CL_TTL_MS)
			fail_msg("node %d did not restart within %d ms", CL_ID0 + 1, 4 * CL_TTL_MS);
		tc_sleep_ms(200);
	}
	cl_wait_peers(CL_NODES - 1);
	cl_user_close(&a);
	cl_user_close(&b);
}

/*
 * Redis stopped and started again (it keeps no data here): local delivery
 * and storage go on meanwhile, and a message sent across nodes during the
 * outage reaches its recipient once Redis is back.
 */
static void test_redis_outage(void **state)
{
	struct cl_user a, b, c;
	int64_t local, cross;

	(void)state;
	cl_user_new(&a, 0, "clra");
	cl_user_new(&b, 1, "clrb");
	cl_user_new(&c, 0, "clrc");
	cl_befriend(&a, &b);
	cl_befriend(&c, &a);
	assert_int_equal(services_stop("redis"), 0);
	local = cl_send(&c, a.id, "local during the outage");
	cl_expect_msg(&a, c.id, local, "local during the outage");
	cross = cl_send(&b, a.id, "across during the outage");
	assert_int_equal(services_start("redis"), 0);
	/* at least once: the queued push, or the push again after recovery */
	cl_expect_msg(&a, b.id, cross, "across during the outage");
	for (int n = 0; n < CL_NODES; n++)
		assert_true(node_log_wait(cl_nodes[n], "Redis reachable again", 10000));
	cl_wait_peers(CL_NODES - 1);
	/* and the cluster routes as before */
	cross = cl_send(&b, a.id, "after the outage");
	for (;;) {
		cJSON *p = tc_expect_push(a.c, CMD_PUSH_MSG, 10000);
		int64_t id = tc_json_int(p, "msg_id");

		cJSON_Delete(p);
		if (id == cross)
			break; /* earlier ones may come again: at least once */
	}
	cl_user_close(&a);
	cl_user_close(&b);
	cl_user_close(&c);
}

static void test_duplicate_id_exits_2(void **state)
{
	char out[4096], want[64];
	int status;

	(void)state;
	status = node_run(out, sizeof(out), 10000,
			  "--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --cluster-route %s "
			  "--node-id %d --cluster-secret %s --redis-socket %s --mysql-socket %s",
			  cl_route, CL_ID0, CL_SECRET, getenv("RINGCHAT_REDIS_SOCKET"),
			  getenv("RINGCHAT_MYSQL_SOCKET"));
	assert_int_equal(status, 2);
	snprintf(want, sizeof(want), "node_id %d is held by a live node", CL_ID0);
	if (!strstr(out, want) || !strstr(out, "'node_id'"))
		fail_msg("exit 2 without naming the id and its holder: %s", out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_to_one_both_ways),
		cmocka_unit_test(test_burst_in_order),
		cmocka_unit_test(test_presence),
		cmocka_unit_test(test_kick_across_nodes),
		cmocka_unit_test(test_offline_at_login_elsewhere),
		cmocka_unit_test(test_group_three_nodes),
		cmocka_unit_test(test_duplicate_id_exits_2),
		cmocka_unit_test(test_redis_outage),
		cmocka_unit_test(test_node_killed),
	};
	int failures;

	harness_init();
	if (getenv("RINGCHAT_CLUSTER_ROUTE") && !strcmp(getenv("RINGCHAT_CLUSTER_ROUTE"), "udp")) {
		cl_route = "udp";
		CL_ID0 = 24;
	}
	for (int i = 0; i < CL_NODES; i++)
		cl_nodes[i] = cl_start(i);
	cl_wait_peers(CL_NODES - 1);
	failures = cmocka_run_group_tests(tests, NULL, NULL);
	for (int i = 0; i < CL_NODES; i++)
		if (cl_nodes[i] && node_stop(cl_nodes[i]) != 0)
			failures++; /* a leak under ASan, a crash at stop */
	return harness_done(failures);
}
