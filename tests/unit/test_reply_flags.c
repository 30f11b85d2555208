/*
 * test_reply_flags.c - what the I/O thread learns from a worker's output
 * (handoff.h): every reply, immediate or deferred, carries OUT_REPLY (the
 * I/O thread counts unanswered frames per connection with it), the OK of
 * a LOGIN or RESUME also OUT_LOGGED_IN (it clears the login deadline),
 * and pushes carry neither.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake_worker.h"
#include "ringchat/outbox.h"
#include "ringchat/protocol.h"
#include "ringchat/session.h"

static struct worker *w;

static uint32_t take_flags(uint16_t cmd, uint32_t code)
{
	struct fake_frame f;

	if (!fake_take(&f))
		fail_msg("nothing sent (expected cmd %u code %u)", cmd, code);
	assert_int_equal(f.hdr.cmd, cmd);
	assert_int_equal(f.hdr.code, code);
	fake_frame_free(&f);
	return f.flags;
}

static void test_flags(void **state)
{
	uint64_t conn = CONN_REF(3, 1);
	struct session *s = session_of(conn);
	struct req r = { .w = w, .s = s, .conn = conn, .cmd = CMD_PING, .seq = 1 };
	struct pending_reply *p;

	(void)state;
	session_open(s, conn, 0, 0);
	reply_ok(&r, NULL);
	assert_int_equal(take_flags(CMD_PING, ST_OK), OUT_REPLY);

	/* a LOGIN answered later (the hasher): its OK logs the connection in */
	r = (struct req){ .w = w, .s = s, .conn = conn, .cmd = CMD_LOGIN, .seq = 2 };
	p = reply_defer(&r);
	assert_non_null(p);
	/* a reply queued behind it is still a reply */
	r = (struct req){ .w = w, .s = s, .conn = conn, .cmd = CMD_PING, .seq = 3 };
	reply_ok(&r, NULL);
	outbox_push(w, conn, CMD_PUSH_MSG, NULL); /* pushes do not wait */
	assert_int_equal(take_flags(CMD_PUSH_MSG, 0), 0);
	reply_complete(w, p, ST_OK, NULL);
	assert_int_equal(take_flags(CMD_LOGIN, ST_OK), OUT_REPLY | OUT_LOGGED_IN);
	assert_int_equal(take_flags(CMD_PING, ST_OK), OUT_REPLY);

	/* a failed LOGIN or RESUME does not */
	r = (struct req){ .w = w, .s = s, .conn = conn, .cmd = CMD_LOGIN, .seq = 4 };
	p = reply_defer(&r);
	reply_complete(w, p, ST_AUTH_FAILED, reply_error_payload("no"));
	assert_int_equal(take_flags(CMD_LOGIN, ST_AUTH_FAILED), OUT_REPLY);
	r = (struct req){ .w = w, .s = s, .conn = conn, .cmd = CMD_RESUME, .seq = 5 };
	reply_err(&r, ST_AUTH_FAILED, "unknown token");
	assert_int_equal(take_flags(CMD_RESUME, ST_AUTH_FAILED), OUT_REPLY);
	/* an immediate RESUME OK does */
	r = (struct req){ .w = w, .s = s, .conn = conn, .cmd = CMD_RESUME, .seq = 6 };
	reply_ok(&r, NULL);
	assert_int_equal(take_flags(CMD_RESUME, ST_OK), OUT_REPLY | OUT_LOGGED_IN);
	session_close(w, s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flags),
	};
	int rc;

	w = fake_worker_new(1, NULL);
	if (session_table_init(16, 1))
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	session_table_destroy();
	fake_worker_free();
	return rc;
}
