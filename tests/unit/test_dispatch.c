/*
 * test_dispatch.c - the contract's check order and the order of replies,
 * on a worker with no storage: unknown command (9) before not logged in
 * (2) before the payload (1) before the rate (8); framing errors answered
 * in turn and then the connection closed; frames of a held session run
 * from the worker loop, in order, once it is resumed; a deferred reply
 * keeps later replies behind it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake_worker.h"
#include "ringchat/dispatch.h"
#include "ringchat/protocol.h"
#include "ringchat/registry.h"
#include "ringchat/session.h"

static struct worker *w;
static uint64_t next_conn = 1;

/* A fresh connection reference (slot k, generation 1). */
static uint64_t new_conn(void)
{
	return CONN_REF(next_conn++, 1);
}

static void send_frame(uint64_t conn, uint16_t cmd, uint32_t seq, const char *json)
{
	dispatch_worker_ops.handle(w, fake_in(conn, IN_FRAME, cmd, seq, json));
}

/* Takes the next reply and checks its cmd, seq and code. */
static void expect(uint64_t conn, uint16_t cmd, uint32_t seq, uint32_t code)
{
	struct fake_frame f;

	if (!fake_take(&f))
		fail_msg("no reply (expected cmd %u seq %u code %u)", cmd, seq, code);
	assert_int_equal(f.conn, conn);
	if (f.hdr.cmd != cmd || f.hdr.seq != seq || f.hdr.code != code)
		fail_msg("expected cmd %u seq %u code %u, got cmd %u seq %u code %u: %s", cmd, seq,
			 code, f.hdr.cmd, f.hdr.seq, f.hdr.code, f.text);
	if (code != ST_OK)
		assert_non_null(cJSON_GetObjectItem(f.json, "error"));
	fake_frame_free(&f);
}

static void expect_nothing(void)
{
	struct fake_frame f;

	if (fake_take(&f))
		fail_msg("unexpected frame cmd %u seq %u code %u", f.hdr.cmd, f.hdr.seq, f.hdr.code);
}

static void close_conn(uint64_t conn)
{
	dispatch_worker_ops.handle(w, fake_in(conn, IN_CLOSED, 0, 0, NULL));
}

static void test_check_order(void **state)
{
	uint64_t c = new_conn();

	(void)state;
	/* 9 comes first, logged in or not, whatever the payload */
	send_frame(c, 999, 1, "not json");
	expect(c, 999, 1, ST_UNKNOWN_CMD);
	send_frame(c, CMD_PUSH_MSG, 2, NULL); /* a push is no request */
	expect(c, CMD_PUSH_MSG, 2, ST_UNKNOWN_CMD);
	/* then 2, before the payload is looked at */
	send_frame(c, CMD_FRIEND_LIST, 3, "[");
	expect(c, CMD_FRIEND_LIST, 3, ST_NOT_LOGGED_IN);
	send_frame(c, CMD_MSG_SEND, 4, NULL);
	expect(c, CMD_MSG_SEND, 4, ST_NOT_LOGGED_IN);
	/* then 1: a command that takes no fields still needs an object */
	send_frame(c, CMD_PING, 5, "[]");
	expect(c, CMD_PING, 5, ST_BAD_REQUEST);
	send_frame(c, CMD_PING, 6, "{} {}");
	expect(c, CMD_PING, 6, ST_BAD_REQUEST);
	send_frame(c, CMD_PING, 7, "{}");
	expect(c, CMD_PING, 7, ST_OK);
	send_frame(c, CMD_PING, 8, NULL);
	expect(c, CMD_PING, 8, ST_OK);
	expect_nothing();
	close_conn(c);
}

static void test_rate_after_payload(void **state)
{
	uint64_t c = new_conn();
	struct fake_frame f;
	int ok = 0;

	(void)state;
	fake_cfg.rate_msgs_per_s = 1;
	fake_cfg.rate_burst = 3;
	for (uint32_t seq = 1; seq <= 4; seq++)
		send_frame(c, CMD_PING, seq, NULL);
	for (uint32_t seq = 1; seq <= 3; seq++)
		expect(c, CMD_PING, seq, ST_OK), ok++;
	assert_true(fake_take(&f));
	assert_int_equal(f.hdr.code, ST_RATE_LIMITED);
	assert_int_equal(f.hdr.seq, 4);
	assert_true(cJSON_GetObjectItem(f.json, "retry_after_ms")->valueint > 0);
	fake_frame_free(&f);
	/* out of tokens: a bad payload is still 1, an unknown command 9 */
	send_frame(c, CMD_PING, 5, "[]");
	expect(c, CMD_PING, 5, ST_BAD_REQUEST);
	send_frame(c, 999, 6, NULL);
	expect(c, 999, 6, ST_UNKNOWN_CMD);
	fake_cfg.rate_msgs_per_s = 2000;
	fake_cfg.rate_burst = 2000;
	close_conn(c);
	assert_int_equal(ok, 3);
}

static void test_bad_frame_after_earlier_replies(void **state)
{
	uint64_t c = new_conn();
	struct in_msg *m;
	struct fake_frame f;

	(void)state;
	send_frame(c, CMD_PING, 1, NULL);
	m = fake_in(c, IN_BAD_FRAME, 0, 0, NULL);
	m->hdr.code = ST_FRAME_TOO_LARGE;
	dispatch_worker_ops.handle(w, m);
	send_frame(c, CMD_PING, 2, NULL); /* after the error: ignored */
	expect(c, CMD_PING, 1, ST_OK);
	assert_true(fake_take(&f));
	assert_int_equal(f.hdr.cmd, 0);
	assert_int_equal(f.hdr.code, ST_FRAME_TOO_LARGE);
	assert_true(f.flags & OUT_CLOSE);
	fake_frame_free(&f);
	expect_nothing();
	close_conn(c);
}

static void test_held_frames_run_from_the_loop(void **state)
{
	uint64_t c = new_conn();
	struct session *s;

	(void)state;
	send_frame(c, CMD_PING, 1, NULL);
	expect(c, CMD_PING, 1, ST_OK);
	s = session_of(c);
	session_hold(s);
	session_hold(s); /* holds nest */
	for (uint32_t seq = 2; seq <= 5; seq++)
		send_frame(c, CMD_PING, seq, NULL);
	expect_nothing();
	session_resume(w, s);
	assert_false(dispatch_worker_ops.poll(w));
	expect_nothing();
	session_resume(w, s);
	/* resume only makes them ready: nothing runs inside it */
	expect_nothing();
	/* a frame arriving now still waits behind the queued ones */
	send_frame(c, CMD_PING, 6, NULL);
	expect_nothing();
	assert_true(dispatch_worker_ops.poll(w));
	for (uint32_t seq = 2; seq <= 6; seq++)
		expect(c, CMD_PING, seq, ST_OK);
	expect_nothing();
	assert_false(dispatch_worker_ops.poll(w));
	close_conn(c);
}

static void test_close_drops_held_frames(void **state)
{
	uint64_t c = new_conn();

	(void)state;
	session_hold(session_of(c));
	send_frame(c, CMD_PING, 1, NULL); /* opens the session, then waits */
	close_conn(c);
	assert_int_equal(session_of(c)->conn, 0);
	assert_false(dispatch_worker_ops.poll(w));
	expect_nothing();
}

static void test_deferred_reply_keeps_order(void **state)
{
	uint64_t c = new_conn();
	struct pending_reply *p;
	struct req r;

	(void)state;
	send_frame(c, CMD_PING, 1, NULL);
	expect(c, CMD_PING, 1, ST_OK);
	r = (struct req){ .w = w, .s = session_of(c), .conn = c, .cmd = CMD_MSG_SEND, .seq = 2 };
	p = reply_defer(&r);
	assert_non_null(p);
	assert_int_equal(dispatch_deferred(), 1);
	send_frame(c, CMD_PING, 3, NULL);
	expect_nothing(); /* waits behind the deferred reply */
	reply_complete_text(w, p, "{\"msg_id\":1}", 12);
	assert_int_equal(dispatch_deferred(), 0);
	expect(c, CMD_MSG_SEND, 2, ST_OK);
	expect(c, CMD_PING, 3, ST_OK);
	/* a deferred reply whose connection closed is dropped when done */
	r.seq = 4;
	r.replied = false;
	p = reply_defer(&r);
	assert_non_null(p);
	close_conn(c);
	reply_complete(w, p, ST_INTERNAL, NULL);
	assert_int_equal(dispatch_deferred(), 0);
	expect_nothing();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_order),
		cmocka_unit_test(test_rate_after_payload),
		cmocka_unit_test(test_bad_frame_after_earlier_replies),
		cmocka_unit_test(test_held_frames_run_from_the_loop),
		cmocka_unit_test(test_close_drops_held_frames),
		cmocka_unit_test(test_deferred_reply_keeps_order),
	};
	int rc;

	w = fake_worker_new(1, &dispatch_worker_ops);
	if (session_table_init(64, 1) || registry_init())
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	registry_destroy();
	session_table_destroy();
	fake_worker_free();
	return rc;
}
