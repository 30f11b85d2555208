/*
 * test_net_limits.c - what a slow, idle or greedy client can hold on a real
 * ringchatd: frames held behind a LOGIN that waits for the hasher are
 * bounded (the node stops reading, then serves them all in order), a
 * connection must log in in time, a started frame must be finished in
 * time, and one address cannot open more unauthenticated connections than
 * max_unauth_per_addr. Each test reads the node's /metrics to see which
 * limit acted.
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringchat/frame.h"

/* True once the node closed c (EOF or reset) within ms; pushes and
 * replies before it are skipped. */
static bool closed_within(struct rc_client *c, int ms)
{
	int64_t end = tc_now_ms() + ms;

	while (tc_now_ms() < end) {
		struct rc_frame f;
		int rc = rc_recv(c, &f, 50);

		if (rc == 0) {
			rc_frame_free(&f);
			continue;
		}
		if (rc != -ETIMEDOUT && rc != -EAGAIN)
			return true;
	}
	return false;
}

/* LOGIN waits for a slow hasher while 200 PINGs follow it: the node holds
 * at most max_pending_frames of them (reading pauses), and every reply
 * still comes, in request order. */
static void test_frames_behind_login_bounded(void **state)
{
	struct node *n = node_start("--max-pending-frames 8 --hash-cost 8");
	char name[TC_NAME_MAX], login[128];
	struct rc_client *c;
	struct rc_frame f;
	int64_t uid;

	(void)state;
	assert_non_null(n);
	c = tc_signup_login_as(n, "lim", name, &uid);
	rc_close(c);
	c = tc_connect(n);
	snprintf(login, sizeof(login), "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		 TC_PASSWORD);
	assert_int_equal(rc_send(c, CMD_LOGIN, 1, login), 0);
	for (uint32_t seq = 2; seq <= 201; seq++)
		assert_int_equal(rc_send(c, CMD_PING, seq, NULL), 0);
	for (uint32_t seq = 1; seq <= 201; seq++) {
		int rc;

		do {
			rc = rc_recv(c, &f, 10000);
			if (rc)
				fail_msg("reply %u: %s", seq, strerror(-rc));
			if (f.hdr.seq == 0)
				rc_frame_free(&f); /* a push after the login */
		} while (f.hdr.seq == 0);
		assert_int_equal(f.hdr.seq, seq);
		assert_int_equal(f.hdr.code, ST_OK);
		assert_int_equal(f.hdr.cmd, seq == 1 ? CMD_LOGIN : CMD_PING);
		rc_frame_free(&f);
	}
	assert_true(tc_metric(n, "ringchat_pending_pauses_total") >= 1);
	rc_close(c);
	assert_int_equal(node_stop(n), 0);
}

/* A connection that only PINGs is closed at login_timeout_ms; one that
 * logged in stays. */
static void test_login_timeout(void **state)
{
	struct node *n = node_start("--login-timeout-ms 300");
	struct rc_client *idle, *in;
	int64_t uid, start;

	(void)state;
	assert_non_null(n);
	in = tc_signup_login(n, "lim", &uid);
	idle = tc_connect(n);
	start = tc_now_ms();
	assert_true(closed_within(idle, 3000));
	assert_true(tc_now_ms() - start >= 250);
	assert_int_equal(tc_metric(n, "ringchat_conn_login_timeout_closed_total"), 1);
	tc_sleep_ms(400);
	assert_int_equal(tc_call_code(in, CMD_PING, NULL), ST_OK);
	rc_close(idle);
	rc_close(in);
	assert_int_equal(node_stop(n), 0);
}

/* Half a header, then nothing: closed at frame_timeout_ms, long before
 * the idle timeout. */
static void test_frame_timeout(void **state)
{
	struct node *n = node_start("--frame-timeout-ms 300");
	struct rc_client *c;
	uint8_t *frame;
	size_t len;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	frame = frame_build(CMD_PING, 0, 1, "{}", 2, &len);
	assert_non_null(frame);
	assert_int_equal(rc_send_raw(c, frame, 10), 0);
	assert_true(closed_within(c, 3000));
	assert_int_equal(tc_metric(n, "ringchat_conn_frame_timeout_closed_total"), 1);
	free(frame);
	rc_close(c);
	assert_int_equal(node_stop(n), 0);
}

/* The third connection of 127.0.0.1 not logged in is closed at once. */
static void test_unauth_per_addr(void **state)
{
	struct node *n = node_start("--max-unauth-per-addr 2");
	struct rc_client *a, *b, *c;

	(void)state;
	assert_non_null(n);
	a = tc_connect(n);
	b = tc_connect(n);
	assert_int_equal(tc_call_code(a, CMD_PING, NULL), ST_OK);
	assert_int_equal(tc_call_code(b, CMD_PING, NULL), ST_OK);
	c = rc_connect("127.0.0.1", node_port(n), 2000);
	assert_non_null(c);
	assert_true(closed_within(c, 3000));
	assert_int_equal(tc_metric(n, "ringchat_conn_refused_unauth_total"), 1);
	rc_close(c);
	rc_close(b);
	c = tc_connect(n); /* b's place is free again */
	assert_int_equal(tc_call_code(c, CMD_PING, NULL), ST_OK);
	rc_close(a);
	rc_close(c);
	assert_int_equal(node_stop(n), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frames_behind_login_bounded),
		cmocka_unit_test(test_login_timeout),
		cmocka_unit_test(test_frame_timeout),
		cmocka_unit_test(test_unauth_per_addr),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, NULL, NULL));
}
