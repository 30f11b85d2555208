/*
 * test_limits.c - the limits a client meets, with their defaults or set
 * small: the per-connection request rate (every messaging test raises it
 * out of the way, so it is tested here as shipped), the recipient rate of
 * GROUP_SEND fan-out, and the login push budget counted as encoded bytes.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#include "ringchat/frame.h"

#define LIM_PUSH_MS 5000
#define LIM_QUIET_MS 500

struct lim_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static void lim_put_frame(uint8_t *buf, size_t cap, size_t *off, uint16_t cmd, uint32_t seq)
{
	struct frame_hdr h = {.magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = cmd,
			      .seq = seq};

	assert_true(*off + FRAME_HDR_BYTES <= cap);
	frame_hdr_encode(buf + *off, &h);
	*off += FRAME_HDR_BYTES;
}

/* ---- the default request limiter ------------------------------------------- */

#define LIM_BURST 2000 /* rate_burst's default */
#define LIM_PINGS 3000

/*
 * Defaults (2000/s, bursts of 2000): 3000 PINGs in one write. The first
 * 2000 are answered OK (the burst), later ones 8 RATE_LIMITED with a
 * retry_after_ms, in request order; after the hinted wait a PING is OK.
 */
static void test_default_request_limiter(void **state)
{
	struct node *n = node_start(NULL);
	struct rc_client *c;
	size_t cap = (size_t)LIM_PINGS * FRAME_HDR_BYTES, off = 0;
	uint8_t *buf = malloc(cap);
	int ok = 0, limited = 0, first_limited = -1;
	int64_t retry = 0;

	(void)state;
	assert_non_null(n);
	assert_non_null(buf);
	c = tc_connect(n);
	for (uint32_t i = 0; i < LIM_PINGS; i++)
		lim_put_frame(buf, cap, &off, CMD_PING, 1000 + i);
	assert_int_equal(rc_send_raw(c, buf, off), 0);
	free(buf);
	for (int i = 0; i < LIM_PINGS; i++) {
		struct rc_frame f;

		assert_int_equal(rc_recv(c, &f, 10000), 0);
		assert_int_equal(f.hdr.seq, 1000 + (uint32_t)i);
		if (f.hdr.code == ST_OK) {
			ok++;
		} else {
			assert_int_equal(f.hdr.code, ST_RATE_LIMITED);
			if (first_limited < 0)
				first_limited = i;
			retry = tc_json_int(f.json, "retry_after_ms");
			assert_true(retry >= 1 && retry <= 1000);
			limited++;
		}
		rc_frame_free(&f);
	}
	print_message("%d OK, %d RATE_LIMITED, the first at #%d\n", ok, limited, first_limited);
	/* The whole burst passes; then the bucket is empty and refills at
	 * 2/ms, so far from all of the rest pass. */
	assert_true(first_limited >= LIM_BURST);
	assert_true(limited >= (LIM_PINGS - LIM_BURST) / 2);
	tc_sleep_ms((int)retry);
	tc_expect(c, CMD_PING, ST_OK, NULL);
	/* the node's only client: the counter is exactly what it was told */
	assert_int_equal(tc_metric(n, "ringchat_rate_limited_total"), limited);
	rc_close(c);
	assert_int_equal(node_stop(n), 0);
}

/* ---- GROUP_SEND fan-out ----------------------------------------------------- */

#define LIM_MEMBERS 5	  /* owner + 4: each send reaches 4 */
#define LIM_RCPT_RATE 100 /* recipients per second */
#define LIM_RCPT_BURST 200

/*
 * The request limit alone would let these sends through (they are far
 * below 2000); the recipient bucket (200, refilled at 100/s) stops a
 * connection sending to 4 members after about 50, with a retry hint, and
 * lets it go on after the hinted wait.
 */
static void test_group_fanout_rate(void **state)
{
	struct node *n = node_start("--rate-recipients-per-s %d --rate-recipients-burst %d",
				    LIM_RCPT_RATE, LIM_RCPT_BURST);
	struct lim_user u[LIM_MEMBERS];
	int64_t gid, retry = 0;
	int sent = 0, i;
	uint32_t code;
	cJSON *r;

	(void)state;
	assert_non_null(n);
	for (i = 0; i < LIM_MEMBERS; i++)
		u[i].c = tc_signup_login_as(n, "fan", u[i].name, &u[i].id);
	r = tc_call_ok(u[0].c, CMD_GROUP_CREATE, "{\"name\":\"fan-out\"}");
	gid = tc_json_int(r, "group_id");
	cJSON_Delete(r);
	for (i = 1; i < LIM_MEMBERS; i++)
		tc_expect(u[i].c, CMD_GROUP_JOIN, ST_OK, "{\"group_id\":%lld}", (long long)gid);

	for (i = 0; i < 200; i++) {
		char json[128];

		snprintf(json, sizeof(json), "{\"group_id\":%lld,\"type\":0,\"text\":\"m%d\"}",
			 (long long)gid, i);
		r = tc_call(u[0].c, CMD_GROUP_SEND, json, &code);
		if (code == ST_RATE_LIMITED) {
			const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");

			assert_true(cJSON_IsString(e) && strstr(e->valuestring, "recipients"));
			retry = tc_json_int(r, "retry_after_ms");
			cJSON_Delete(r);
			break;
		}
		assert_int_equal(code, ST_OK);
		cJSON_Delete(r);
		sent++;
	}
	print_message("%d group sends to %d members before RATE_LIMITED\n", sent,
		      LIM_MEMBERS - 1);
	assert_true(sent >= LIM_RCPT_BURST / (LIM_MEMBERS - 1));
	assert_true(sent < 150);
	/* 4 tokens at 100/s: a few tens of ms at most. */
	assert_true(retry >= 1 && retry <= 1000);
	tc_sleep_ms((int)retry);
	tc_expect(u[0].c, CMD_GROUP_SEND, ST_OK, "{\"group_id\":%lld,\"type\":0,\"text\":\"again\"}",
		  (long long)gid);
	/* A PING is not a fan-out: the request bucket still has room. */
	tc_expect(u[0].c, CMD_PING, ST_OK, NULL);
	for (i = 0; i < LIM_MEMBERS; i++)
		rc_close(u[i].c);
	assert_int_equal(node_stop(n), 0);
}

/* ---- the login push budget counts encoded bytes ------------------------------ */

#define LIM_OUT_LIMIT 65536 /* the smallest out_limit_bytes */
#define LIM_CTRL_CHARS 4000 /* each \u0001 is 6 bytes in JSON: ~24 KB a push */
#define LIM_BACKLOG 6

/*
 * Messages of control characters are six times longer on the wire than
 * stored. Counted raw, one login would push them all (about 144 KB) into
 * a 64 KiB output limit and close the connection at every login. Counted
 * encoded, each login pushes what fits in half the limit, the connection
 * stays open, and acking and logging in again brings the rest.
 */
static void test_login_push_counts_encoded(void **state)
{
	struct node *n = node_start("--out-limit-bytes %d --rate-msgs-per-s 1000000 "
				    "--rate-burst 1000000",
				    LIM_OUT_LIMIT);
	struct lim_user a, b;
	size_t tlen = LIM_CTRL_CHARS * 6 + 128;
	char *json = malloc(tlen), *p;
	int64_t got[LIM_BACKLOG];
	int ngot = 0, logins = 0;

	(void)state;
	assert_non_null(n);
	assert_non_null(json);
	a.c = tc_signup_login_as(n, "pushA", a.name, &a.id);
	b.c = tc_signup_login_as(n, "pushB", b.name, &b.id);
	tc_expect(a.c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)b.id);
	tc_expect(b.c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a.id);
	rc_close(b.c);

	p = json + snprintf(json, tlen, "{\"to\":%lld,\"type\":0,\"text\":\"", (long long)b.id);
	for (int i = 0; i < LIM_CTRL_CHARS; i++)
		p += sprintf(p, "\\u0001");
	strcpy(p, "\"}");
	for (int i = 0; i < LIM_BACKLOG; i++) {
		uint32_t code;
		cJSON *r = tc_call(a.c, CMD_MSG_SEND, json, &code);

		assert_int_equal(code, ST_OK);
		cJSON_Delete(r);
	}
	free(json);

	while (ngot < LIM_BACKLOG) {
		char ack[512];
		int this_login = 0, off;
		struct rc_frame f;
		cJSON *r;

		assert_true(++logins <= LIM_BACKLOG + 2);
		b.c = tc_connect(n);
		r = tc_call_ok(b.c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", b.name,
			       TC_PASSWORD);
		cJSON_Delete(r);
		off = snprintf(ack, sizeof(ack), "{\"msg_ids\":[");
		while (rc_wait_push(b.c, CMD_PUSH_MSG, &f, this_login ? LIM_QUIET_MS : LIM_PUSH_MS) ==
		       0) {
			int64_t id = tc_json_int(f.json, "msg_id");
			const cJSON *t = cJSON_GetObjectItemCaseSensitive(f.json, "text");

			assert_true(cJSON_IsString(t));
			assert_int_equal(strlen(t->valuestring), LIM_CTRL_CHARS);
			assert_int_equal(t->valuestring[0], '\x01');
			bool seen = false;

			rc_frame_free(&f);
			/* at least once: an ack still on its way may let one
			 * come again */
			for (int k = 0; k < ngot; k++)
				seen = seen || got[k] == id;
			if (!seen) {
				assert_true(ngot < LIM_BACKLOG);
				got[ngot++] = id;
			}
			off += snprintf(ack + off, sizeof(ack) - (size_t)off, "%s%lld",
					this_login ? "," : "", (long long)id);
			this_login++;
		}
		/* The connection survived its login pushes. */
		tc_expect(b.c, CMD_PING, ST_OK, NULL);
		assert_true(this_login >= 1);
		snprintf(ack + off, sizeof(ack) - (size_t)off, "]}");
		tc_expect(b.c, CMD_MSG_ACK, ST_OK, "%s", ack);
		rc_close(b.c);
	}
	print_message("%d messages over %d logins\n", ngot, logins);
	assert_true(logins > 1);
	assert_false(node_log_contains(n, "event=out_limit"));
	rc_close(a.c);
	assert_int_equal(node_stop(n), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_default_request_limiter),
	    cmocka_unit_test(test_group_fanout_rate),
	    cmocka_unit_test(test_login_push_counts_encoded),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, NULL, NULL));
}
