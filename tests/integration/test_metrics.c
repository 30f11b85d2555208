/*
 * test_metrics.c - GET /metrics on the admin port of a real ringchatd, as a
 * Prometheus scraper sees it: a raw HTTP/1.0 request, a 200 with the text
 * format whose counters follow the requests the test made, and 404 for any
 * other path.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Whole responses are small (a few KiB); anything bigger is a bug. */

struct metrics_state {
	struct node *node;
};

/* The body after the blank line that ends the head; fails if there is none. */
static const char *metrics_body(const char *resp)
{
	const char *b = strstr(resp, "\r\n\r\n");

	if (!b)
		fail_msg("no end of the response head in: %.200s", resp);
	return b + 4;
}

/*
 * Value of the sample line "name value" (name may carry {labels}) in a
 * Prometheus text body; fails the test when the line is missing.
 */
static unsigned long long metrics_value(const char *body, const char *name)
{
	size_t nlen = strlen(name);
	const char *p = body;
	char *end;
	unsigned long long v;

	for (;;) {
		p = strstr(p, name);
		if (!p)
			fail_msg("no sample \"%s\" in the metrics", name);
		/* A whole sample name at the start of a line, then a space. */
		if ((p == body || p[-1] == '\n') && p[nlen] == ' ')
			break;
		p += nlen;
	}
	errno = 0;
	v = strtoull(p + nlen + 1, &end, 10);
	if (errno || end == p + nlen + 1 || (*end != '\n' && *end != '\0'))
		fail_msg("sample \"%s\" has no integer value", name);
	return v;
}

static int metrics_setup(void **state)
{
	struct metrics_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	s->node = node_start(NULL);
	if (!s->node) {
		free(s);
		return -1;
	}
	*state = s;
	return 0;
}

static int metrics_teardown(void **state)
{
	struct metrics_state *s = *state;
	int status = s && s->node ? node_stop(s->node) : 0;

	free(s);
	/* a node that ends badly (a leak under ASan, a crash at stop) fails */
	return status == 0 ? 0 : -1;
}

/* Counters follow what a client did: frames, PINGs by command, status. */
static void test_metrics_counts_requests(void **state)
{
	struct metrics_state *s = *state;
	struct rc_client *c = tc_connect(s->node);
	char *resp;
	const char *body;
	int i;

	for (i = 0; i < 7; i++)
		cJSON_Delete(tc_call_ok(c, CMD_PING, NULL));
	/* Not logged in: one response with that status. */
	assert_int_equal(tc_call_code(c, CMD_FRIEND_LIST, NULL), ST_NOT_LOGGED_IN);

	resp = tc_admin_http(s->node, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
	if (strncmp(resp, "HTTP/1.0 200", 12) != 0)
		fail_msg("expected a 200, got: %.200s", resp);
	if (!strstr(resp, "Content-Type: text/plain"))
		fail_msg("no text/plain content type in: %.300s", resp);
	body = metrics_body(resp);
	assert_non_null(strstr(body, "# TYPE ringchat_frames_in_total counter\n"));
	assert_non_null(strstr(body, "# TYPE ringchat_connections gauge\n"));
	/* 8 frames came from the client, and nothing else talked to the node
	 * (this test runs first, on a node of its own). */
	assert_int_equal(metrics_value(body, "ringchat_frames_in_total"), 8);
	assert_int_equal(metrics_value(body, "ringchat_requests_total{cmd=\"PING\"}"), 7);
	assert_int_equal(metrics_value(body, "ringchat_requests_total{cmd=\"FRIEND_LIST\"}"), 1);
	assert_int_equal(metrics_value(body, "ringchat_responses_total{status=\"NOT_LOGGED_IN\"}"),
			 1);
	assert_int_equal(metrics_value(body, "ringchat_responses_total{status=\"OK\"}"), 7);
	/* The admin connection is not a client connection. */
	assert_int_equal(metrics_value(body, "ringchat_connections"), 1);
	free(resp);

	/* The gauge goes back down once the client leaves. */
	rc_close(c);
	for (i = 0;; i++) {
		unsigned long long open;

		resp = tc_admin_http(s->node, "GET /metrics HTTP/1.0\r\n\r\n");
		open = metrics_value(metrics_body(resp), "ringchat_connections");
		free(resp);
		if (open == 0)
			break;
		if (i >= 100)
			fail_msg("ringchat_connections still %llu 2 s after the close", open);
		tc_sleep_ms(20);
	}
}

/* The PING count keeps counting across scrapes (a counter, not a gauge). */
static void test_metrics_counter_grows(void **state)
{
	struct metrics_state *s = *state;
	struct rc_client *c = tc_connect(s->node);
	unsigned long long before, after;
	char *resp;
	int i;

	resp = tc_admin_http(s->node, "GET /metrics HTTP/1.0\r\n\r\n");
	before = metrics_value(metrics_body(resp), "ringchat_requests_total{cmd=\"PING\"}");
	free(resp);
	for (i = 0; i < 3; i++)
		cJSON_Delete(tc_call_ok(c, CMD_PING, NULL));
	resp = tc_admin_http(s->node, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
	after = metrics_value(metrics_body(resp), "ringchat_requests_total{cmd=\"PING\"}");
	free(resp);
	assert_int_equal(after, before + 3);
	rc_close(c);
}

/* Only /metrics is served: another path is a 404 and no metrics leak. */
static void test_metrics_other_path_404(void **state)
{
	struct metrics_state *s = *state;
	char *resp = tc_admin_http(s->node, "GET /other HTTP/1.0\r\n\r\n");

	if (strncmp(resp, "HTTP/1.0 404", 12) != 0)
		fail_msg("expected a 404 for /other, got: %.200s", resp);
	assert_null(strstr(resp, "ringchat_frames_in_total"));
	free(resp);

	resp = tc_admin_http(s->node, "GET /metricsfoo HTTP/1.0\r\n\r\n");
	if (strncmp(resp, "HTTP/1.0 404", 12) != 0)
		fail_msg("expected a 404 for /metricsfoo, got: %.200s", resp);
	free(resp);

	/* The admin listener is still up after the 404s. */
	resp = tc_admin_http(s->node, "GET /metrics HTTP/1.0\r\n\r\n");
	assert_int_equal(strncmp(resp, "HTTP/1.0 200", 12), 0);
	free(resp);
}

/* A histogram's count, once it reaches at least `want` (the writer counts a
 * batch just after handing its OKs back); fails after 5 s. */
static unsigned long long metrics_batches_at_least(struct node *n, unsigned long long want)
{
	int64_t deadline = tc_now_ms() + TC_ADMIN_TIMEOUT_MS;

	for (;;) {
		char *resp = tc_admin_http(n, "GET /metrics HTTP/1.0\r\n\r\n");
		unsigned long long v =
		    metrics_value(metrics_body(resp), "ringchat_commit_batch_seconds_count");

		free(resp);
		if (v >= want)
			return v;
		if (tc_now_ms() > deadline)
			fail_msg("ringchat_commit_batch_seconds_count stayed at %llu, want %llu", v,
				 want);
		tc_sleep_ms(20);
	}
}

/*
 * The group-commit latency histogram follows real sends: the count grows
 * with the batches, the buckets are cumulative and never exceed the count,
 * +Inf equals it, and _sum is there.
 */
static void test_metrics_commit_histogram(void **state)
{
	static const char *const le[] = {"0.0005", "0.001", "0.002", "0.005", "0.01",
					 "0.02",   "0.05",  "0.1",   "0.25",  "1"};
	struct metrics_state *s = *state;
	int64_t ida, idb;
	struct rc_client *a = tc_signup_login(s->node, "mh", &ida);
	struct rc_client *b = tc_signup_login(s->node, "mh", &idb);
	unsigned long long before, after, prev = 0;
	const char *body;
	char *resp, name[96];

	before = metrics_batches_at_least(s->node, 0);
	tc_expect(a, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}", (long long)idb);
	cJSON_Delete(tc_expect_push(b, CMD_PUSH_FRIEND_REQUEST, TC_ADMIN_TIMEOUT_MS));
	tc_expect(b, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)ida);
	cJSON_Delete(tc_expect_push(a, CMD_PUSH_FRIEND_ACCEPTED, TC_ADMIN_TIMEOUT_MS));
	tc_send_many(a, idb, false, 200, "hist", NULL);
	metrics_batches_at_least(s->node, before + 1);

	resp = tc_admin_http(s->node, "GET /metrics HTTP/1.0\r\n\r\n");
	body = metrics_body(resp);
	assert_non_null(strstr(body, "# TYPE ringchat_commit_batch_seconds histogram\n"));
	after = metrics_value(body, "ringchat_commit_batch_seconds_count");
	assert_true(after > before);
	for (size_t i = 0; i < sizeof(le) / sizeof(le[0]); i++) {
		unsigned long long v;

		snprintf(name, sizeof(name), "ringchat_commit_batch_seconds_bucket{le=\"%s\"}", le[i]);
		v = metrics_value(body, name);
		if (v < prev || v > after)
			fail_msg("%s is %llu: below the bucket before (%llu) or above the count (%llu)",
				 name, v, prev, after);
		prev = v;
	}
	assert_int_equal(metrics_value(body, "ringchat_commit_batch_seconds_bucket{le=\"+Inf\"}"),
			 after);
	assert_non_null(strstr(body, "\nringchat_commit_batch_seconds_sum "));
	free(resp);
	rc_close(a);
	rc_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_metrics_counts_requests),
	    cmocka_unit_test(test_metrics_counter_grows),
	    cmocka_unit_test(test_metrics_other_path_404),
	    cmocka_unit_test(test_metrics_commit_histogram),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, metrics_setup, metrics_teardown));
}
