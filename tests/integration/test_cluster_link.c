/*
 * test_cluster_link.c - the node link under faults, two nodes with
 * cluster_route udp: node B sits behind ringchat-udp-proxy (its
 * link_advertise is the proxy), which drops 10% of the datagrams toward
 * it and duplicates and reorders some; 10,000 messages cross complete
 * and in order. A datagram forged from another socket is counted and
 * dropped. B killed and restarted mid-traffic: every message its sender
 * was told OK reaches the recipient, live or at its next login.
 *
 * Needs the services and RINGCHAT_UDP_PROXY (the proxy binary).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LK_SECRET "test-cluster-secret-of-at-least-32-bytes"
#define LK_TTL_MS 1000
#define LK_PUSH_MS 10000
#define LK_A 17
#define LK_B 18

static struct node *node_a, *node_b;
static pid_t proxy_pid;
static uint16_t b_link_port, proxy_port;

/* The node, or NULL when it did not start (its id's lease may still be
 * held by a killed predecessor). */
static struct node *lk_start(int id, const char *extra)
{
	return node_start("--cluster-route udp --node-id %d --node-ttl-ms %d "
			  "--cluster-secret %s --rate-msgs-per-s 1000000 --rate-burst 1000000 %s",
			  id, LK_TTL_MS, LK_SECRET, extra);
}

static struct node *lk_start_b(void)
{
	char extra[160];

	snprintf(extra, sizeof(extra), "--link-listen 127.0.0.1:%u --link-advertise 127.0.0.1:%u",
		 b_link_port, proxy_port);
	return lk_start(LK_B, extra);
}

static void lk_start_proxy(void)
{
	const char *bin = getenv("RINGCHAT_UDP_PROXY");
	char listen[32], forward[32];

	if (!bin)
		exit(77);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", proxy_port);
	snprintf(forward, sizeof(forward), "127.0.0.1:%u", b_link_port);
	proxy_pid = fork();
	assert_true(proxy_pid >= 0);
	if (proxy_pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		execl(bin, bin, "--listen", listen, "--forward", forward, "--drop", "10", "--dup",
		      "2", "--reorder", "5", "--delay-ms", "1", "--seed", "7", (char *)NULL);
		_exit(127);
	}
}

/* True once each node's link reaches the other (10 s at most). */
static bool lk_wait_up(void)
{
	int64_t deadline = tc_now_ms() + 10000;

	while (tc_metric(node_a, "ringchat_link_peers_up") != 1 ||
	       tc_metric(node_b, "ringchat_link_peers_up") != 1) {
		if (tc_now_ms() > deadline) {
			fprintf(stderr, "the node link never came up both ways\n");
			return false;
		}
		tc_sleep_ms(50);
	}
	return true;
}

struct lk_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static void lk_befriend(struct lk_user *a, struct lk_user *b)
{
	tc_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b->id);
	cJSON_Delete(tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, LK_PUSH_MS));
	tc_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a->id);
	cJSON_Delete(tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, LK_PUSH_MS));
}

static void test_ten_thousand_through_loss(void **state)
{
	enum { N = 10000 };
	static int64_t ids[N];
	struct lk_user a, b;
	int64_t retrans0 = tc_metric(node_a, "ringchat_link_retransmits_total{peer=\"18\"}");

	(void)state;
	a.c = tc_signup_login_as(node_a, "lka", a.name, &a.id);
	b.c = tc_signup_login_as(node_b, "lkb", b.name, &b.id);
	lk_befriend(&a, &b);
	tc_send_many(a.c, b.id, false, N, "x", ids);
	for (int i = 0; i < N; i++) {
		cJSON *p = tc_expect_push(b.c, CMD_PUSH_MSG, LK_PUSH_MS);
		char want[16];

		snprintf(want, sizeof(want), "x%d", i);
		if (tc_json_int(p, "msg_id") != ids[i] ||
		    strcmp(cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring, want))
			fail_msg("push %d: msg_id %lld text %s, want %lld %s", i,
				 (long long)tc_json_int(p, "msg_id"),
				 cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring,
				 (long long)ids[i], want);
		cJSON_Delete(p);
	}
	tc_expect_no_push(b.c, CMD_PUSH_MSG, 300);
	/* the proxy did drop: the link had to send again */
	assert_true(tc_metric(node_a, "ringchat_link_retransmits_total{peer=\"18\"}") > retrans0);
	rc_close(a.c);
	rc_close(b.c);
}

/* A datagram to the link port that does not come from a peer, or does not
 * carry the cluster's MAC, is counted and dropped. */
static void test_forged_datagram(void **state)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(b_link_port) };
	uint8_t d[200];
	int64_t before = tc_metric(node_b, "ringchat_link_unknown_source_total");
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int64_t deadline = tc_now_ms() + 5000;

	(void)state;
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* a header naming node A as sender, with a wrong MAC */
	memset(d, 0, sizeof(d));
	memcpy(d, "RCL1", 4);
	d[4] = 0;
	d[5] = 1; /* version */
	assert_true(fd >= 0);
	assert_int_equal(sendto(fd, d, sizeof(d), 0, (struct sockaddr *)&to, sizeof(to)),
			 (ssize_t)sizeof(d));
	close(fd);
	while (tc_metric(node_b, "ringchat_link_unknown_source_total") +
		       tc_metric(node_b, "ringchat_link_malformed_total") <=
	       before + tc_metric(node_b, "ringchat_link_malformed_total") - 1) {
		if (tc_now_ms() > deadline)
			fail_msg("the forged datagram was not counted");
		tc_sleep_ms(20);
	}
}

static void test_peer_killed_mid_traffic(void **state)
{
	enum { N = 400 };
	static int64_t ids[2 * N];
	static bool seen[2 * N];
	struct lk_user a, b;
	int got = 0;
	int64_t t0;

	(void)state;
	a.c = tc_signup_login_as(node_a, "lkka", a.name, &a.id);
	b.c = tc_signup_login_as(node_b, "lkkb", b.name, &b.id);
	lk_befriend(&a, &b);
	tc_send_many(a.c, b.id, false, N, "k", ids);
	assert_int_equal(node_kill(node_b), 128 + 9);
	rc_close(b.c);
	/* OK means stored: these must reach b, though its node is dead */
	tc_send_many(a.c, b.id, false, N, "l", ids + N);
	t0 = tc_now_ms();
	while (!(node_b = lk_start_b())) {
		if (tc_now_ms() - t0 > 5 * LK_TTL_MS)
			fail_msg("node B did not restart");
		tc_sleep_ms(200);
	}
	assert_true(lk_wait_up());
	b.c = tc_connect(node_b);
	cJSON_Delete(tc_call_ok(b.c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}",
				b.name, TC_PASSWORD));
	while (got < 2 * N) {
		cJSON *p = tc_expect_push(b.c, CMD_PUSH_MSG, LK_PUSH_MS);
		int64_t id = tc_json_int(p, "msg_id");

		cJSON_Delete(p);
		for (int i = 0; i < 2 * N; i++) {
			if (ids[i] == id && !seen[i]) {
				seen[i] = true;
				got++;
			}
		}
	}
	rc_close(a.c);
	rc_close(b.c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ten_thousand_through_loss),
		cmocka_unit_test(test_forged_datagram),
		cmocka_unit_test(test_peer_killed_mid_traffic),
	};
	int failures;

	harness_init();
	b_link_port = (uint16_t)(30000 + getpid() % 15000);
	proxy_port = (uint16_t)(b_link_port + 15000);
	lk_start_proxy();
	node_a = lk_start(LK_A, "");
	node_b = lk_start_b();
	if (!node_a || !node_b)
		return harness_done(1);
	failures = lk_wait_up() ? cmocka_run_group_tests(tests, NULL, NULL) : 1;
	if (node_stop(node_a) != 0 || node_stop(node_b) != 0)
		failures++;
	kill(proxy_pid, SIGTERM);
	waitpid(proxy_pid, NULL, 0);
	return harness_done(failures);
}
