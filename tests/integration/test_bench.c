/*
 * test_bench.c - ringchat-bench's message scenarios against a real node and
 * the real Redis, small and short: every number docs/benchmarks.md quotes
 * comes from these code paths, so each engine (epoll, io_uring), each loop
 * (closed, open with a tick) and each target must deliver what it sends,
 * lose no connection and report it in its JSON line. Not a performance
 * test: only counts are checked, never a rate or a latency.
 */
#include "harness.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define BENCH_OUT_MAX 65536

static char bench_bin[512];

struct bench_state {
	struct node *node;
};

static void bench_find_binary(void)
{
	char dir[sizeof(bench_bin)];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", getenv("RINGCHATD"));
	snprintf(bench_bin, sizeof(bench_bin), "%s/ringchat-bench", dirname(dir));
	if (stat(bench_bin, &st) == -1) {
		fprintf(stderr, "%s: %s: skipping (build it first: ninja src/ringchat-bench)\n",
			bench_bin, strerror(errno));
		exit(77);
	}
}

/*
 * Runs ringchat-bench with args plus --json against the node (and Redis on
 * $RINGCHAT_REDIS_PORT) and returns its JSON lines, one per target, in
 * out[0..*n); fails the test unless it exits 0.
 */
static void bench_run(struct node *node, const char *args, cJSON **out, int max, int *n)
{
	const char *rport = getenv("RINGCHAT_REDIS_PORT");
	char cmd[1024], *buf = malloc(BENCH_OUT_MAX), *line, *save = NULL;
	size_t used;
	FILE *f;
	int st;

	assert_non_null(buf);
	snprintf(cmd, sizeof(cmd), "%s %s --port %u --redis-port %s --json 2>/dev/null", bench_bin,
		 args, node_port(node), rport && *rport ? rport : "16379");
	f = popen(cmd, "r");
	assert_non_null(f);
	used = fread(buf, 1, BENCH_OUT_MAX - 1, f);
	buf[used] = '\0';
	st = pclose(f);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("'%s' exited with %d; output: %.500s", cmd, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
			 buf);
	*n = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cJSON *j = cJSON_Parse(line);

		if (!j)
			fail_msg("not a JSON line from the bench: %.200s", line);
		if (*n == max)
			fail_msg("more than %d JSON lines from the bench", max);
		out[(*n)++] = j;
	}
	free(buf);
}

static double bench_num(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);

	if (!cJSON_IsNumber(v))
		fail_msg("no number \"%s\" in the bench's JSON", key);
	return v->valuedouble;
}

/*
 * What every message run must show: messages answered OK, every one of
 * them delivered (the last ones may land after the measured window ends,
 * hence the 10% slack), no error, no lost connection.
 */
static void bench_check_delivered(const cJSON *j, const char *target)
{
	double ok = bench_num(j, "sent_ok"), dlv = bench_num(j, "delivered");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "target");

	assert_true(cJSON_IsString(t));
	assert_string_equal(t->valuestring, target);
	if (ok < 50 || dlv < 0.9 * ok || dlv > 1.1 * ok)
		fail_msg("%s: %.0f sent OK, %.0f delivered", target, ok, dlv);
	assert_true(bench_num(j, "errors") == 0);
	assert_true(bench_num(j, "lost_connections") == 0);
	assert_true(bench_num(j, "generator_cpu_s") > 0);
}

static int bench_setup(void **state)
{
	struct bench_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	s->node = node_start("--hash-cost 1");
	if (!s->node) {
		free(s);
		return -1;
	}
	*state = s;
	return 0;
}

static int bench_teardown(void **state)
{
	struct bench_state *s = *state;

	if (s && s->node)
		node_stop(s->node);
	free(s);
	return 0;
}

static void bench_free(cJSON **j, int n)
{
	for (int i = 0; i < n; i++)
		cJSON_Delete(j[i]);
}

/* Closed loop with engine, against the node and then Redis pub/sub. */
static void bench_closed_both(struct node *node, const char *engine)
{
	char args[160];
	cJSON *j[2];
	int n;

	snprintf(args, sizeof(args),
		 "chat --users 20 --window 4 --duration 1 --warmup 0 --engine %s --target both",
		 engine);
	bench_run(node, args, j, 2, &n);
	assert_int_equal(n, 2);
	bench_check_delivered(j[0], "ringchat");
	bench_check_delivered(j[1], "redis");
	bench_free(j, n);
}

static void test_bench_chat_closed_epoll_both(void **state)
{
	bench_closed_both(((struct bench_state *)*state)->node, "epoll");
}

static void test_bench_chat_closed_uring_both(void **state)
{
	bench_closed_both(((struct bench_state *)*state)->node, "uring");
}

/*
 * Open loop on a 1 ms tick with io_uring: the schedule is kept (2 s at
 * 400 msgs/s is 800 messages; the slack covers a slow CI box, not a
 * generator that sends at its own pace).
 */
static void test_bench_chat_open_uring_tick(void **state)
{
	struct bench_state *s = *state;
	cJSON *j[1];
	double ok;
	int n;

	bench_run(s->node,
		  "chat --users 20 --rate 400 --duration 2 --warmup 0 --tick-us 1000 --engine uring",
		  j, 1, &n);
	assert_int_equal(n, 1);
	bench_check_delivered(j[0], "ringchat");
	ok = bench_num(j[0], "sent_ok");
	if (ok < 640 || ok > 960)
		fail_msg("open loop at 400 msgs/s for 2 s sent %.0f", ok);
	bench_free(j, n);
}

/* Group fan-out with io_uring: every member but the sender gets each message. */
static void test_bench_group_uring(void **state)
{
	struct bench_state *s = *state;
	cJSON *j[1];
	double ok, dlv;
	int n;

	bench_run(s->node,
		  "group --groups 2 --members 5 --window 4 --duration 1 --warmup 0 --engine uring", j,
		  1, &n);
	assert_int_equal(n, 1);
	ok = bench_num(j[0], "sent_ok");
	dlv = bench_num(j[0], "delivered");
	if (ok < 20 || dlv < 0.9 * 4 * ok || dlv > 1.1 * 4 * ok)
		fail_msg("group of 5: %.0f sent OK, %.0f delivered (want 4 per message)", ok, dlv);
	assert_true(bench_num(j[0], "lost_connections") == 0);
	bench_free(j, n);
}

/* A bad --engine is a usage error naming the option, exit 2. */
static void test_bench_bad_engine(void **state)
{
	char cmd[700], out[512];
	FILE *f;
	size_t used;
	int st;

	(void)state;
	snprintf(cmd, sizeof(cmd), "%s chat --port 1 --engine poll 2>&1", bench_bin);
	f = popen(cmd, "r");
	assert_non_null(f);
	used = fread(out, 1, sizeof(out) - 1, f);
	out[used] = '\0';
	st = pclose(f);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 2);
	assert_non_null(strstr(out, "--engine"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bench_chat_closed_epoll_both),
	    cmocka_unit_test(test_bench_chat_closed_uring_both),
	    cmocka_unit_test(test_bench_chat_open_uring_tick),
	    cmocka_unit_test(test_bench_group_uring),
	    cmocka_unit_test(test_bench_bad_engine),
	};

	harness_init();
	bench_find_binary();
	return harness_done(cmocka_run_group_tests(tests, bench_setup, bench_teardown));
}
