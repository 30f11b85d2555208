/*
 * test_bench.c - ringchat-bench's message scenarios against a real node and
 * the real Redis, small and short: every number docs/benchmarks.md quotes
 * comes from these code paths, so each engine (epoll, io_uring), each loop
 * (closed, open with a tick) and each target must deliver exactly what it
 * sends, once, lose no connection and report it in its JSON line; and
 * --nodes must spread the pairs over two real nodes. Not a performance
 * test: only counts are checked, never a rate or a latency.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_OUT_MAX 65536
/* Whole /metrics responses are a few KiB. */
#define BENCH_METRICS_MAX (1u << 20)
#define BENCH_METRICS_TIMEOUT_MS 5000
/*
 * The exact counts assume no message is refused: a sender on a fast box
 * can outrun the default 2000 msgs/s per connection (the limit has its
 * own tests).
 */
#define BENCH_NO_RATE_LIMIT "--rate-msgs-per-s 1000000 --rate-burst 1000000"
/* The password ringchat-bench gives its users (BENCH_PASSWORD). */
#define BENCH_USER_PASSWORD "bench-password-1"

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
 * Runs ringchat-bench with args plus --redis-port $RINGCHAT_REDIS_PORT and
 * --json, and returns its JSON lines, one per target, in out[0..*n).
 * Returns its exit status; fails the test when it did not exit normally or
 * printed something that is not a JSON line.
 */
static int bench_exec(const char *args, cJSON **out, int max, int *n)
{
	const char *rport = getenv("RINGCHAT_REDIS_PORT");
	char cmd[1024], *buf = malloc(BENCH_OUT_MAX), *line, *save = NULL;
	size_t used;
	FILE *f;
	int st;

	assert_non_null(buf);
	snprintf(cmd, sizeof(cmd), "%s %s --redis-port %s --json 2>/dev/null", bench_bin, args,
		 rport && *rport ? rport : "16379");
	f = popen(cmd, "r");
	assert_non_null(f);
	used = fread(buf, 1, BENCH_OUT_MAX - 1, f);
	buf[used] = '\0';
	st = pclose(f);
	if (!WIFEXITED(st))
		fail_msg("'%s' did not exit normally; output: %.500s", cmd, buf);
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
	return WEXITSTATUS(st);
}

/*
 * bench_exec against one node (--port, and --server-pid so the server's
 * cost is reported); fails the test unless the bench exits 0.
 */
static void bench_run(struct node *node, const char *args, cJSON **out, int max, int *n)
{
	char full[768];
	int st;

	snprintf(full, sizeof(full), "%s --port %u --server-pid %d", args, node_port(node),
		 (int)node_pid(node));
	st = bench_exec(full, out, max, n);
	if (st != 0)
		fail_msg("'ringchat-bench %s' exited with %d", full, st);
}

static double bench_num(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);

	if (!cJSON_IsNumber(v))
		fail_msg("no number \"%s\" in the bench's JSON", key);
	return v->valuedouble;
}

static bool bench_has(const cJSON *j, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(j, key) != NULL;
}

/*
 * What every closed-loop message run must show, exactly: every message
 * put on the wire was answered OK (no error, no RATE_LIMITED resend), and
 * every one of them reached each of its `fanout` recipients exactly once
 * over the whole run (the bench drains after the measured interval, so
 * the tail is not lost to the window's edge). The measured-window counts
 * are the rates docs/benchmarks.md quotes: they must be non-trivial. The
 * server's cost per message is reported for the node (its pid is given)
 * and not for Redis (no --redis-pid).
 */
static void bench_check_delivered(const cJSON *j, const char *target, int fanout)
{
	double sent = bench_num(j, "sent_total"), ok = bench_num(j, "sent_ok_total");
	double dlv = bench_num(j, "delivered_total");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "target");

	assert_true(cJSON_IsString(t));
	assert_string_equal(t->valuestring, target);
	if (bench_num(j, "sent_ok") < 50 || bench_num(j, "delivered") < 50)
		fail_msg("%s: measured %.0f sent OK, %.0f delivered", target,
			 bench_num(j, "sent_ok"), bench_num(j, "delivered"));
	if (ok != sent)
		fail_msg("%s: %.0f messages sent, %.0f answered OK", target, sent, ok);
	if (dlv != ok * fanout)
		fail_msg("%s: %.0f sent OK to %d recipients each, %.0f delivered", target, ok,
			 fanout, dlv);
	assert_true(bench_num(j, "delivered_expected") == ok * fanout);
	assert_true(bench_num(j, "duplicates") == 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "drained")));
	/* The measured window is a part of the whole run. */
	assert_true(bench_num(j, "sent_ok") <= ok);
	assert_true(bench_num(j, "delivered") <= dlv);
	assert_true(bench_num(j, "errors") == 0);
	assert_true(bench_num(j, "rate_limited") == 0);
	assert_true(bench_num(j, "lost_connections") == 0);
	assert_true(bench_num(j, "generator_cpu_s") > 0);
	if (!strcmp(target, "ringchat")) {
		/* Thousands of messages cost the node CPU and wake-ups. */
		assert_true(bench_num(j, "server_cpu_us_per_msg") > 0);
		assert_true(bench_num(j, "server_cs_per_msg") > 0);
		assert_true(bench_num(j, "server_context_switches") > 0);
	} else {
		assert_false(bench_has(j, "server_cpu_us_per_msg"));
		assert_false(bench_has(j, "server_cs_per_msg"));
	}
}

static int bench_setup(void **state)
{
	struct bench_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	s->node = node_start("--hash-cost 1 --durability stored " BENCH_NO_RATE_LIMIT);
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
	int status = s && s->node ? node_stop(s->node) : 0;

	free(s);
	/* a node that ends badly (a leak under ASan, a crash at stop) fails */
	return status == 0 ? 0 : -1;
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
	bench_check_delivered(j[0], "ringchat", 1);
	bench_check_delivered(j[1], "redis", 1);
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
 * generator that sends at its own pace), and delivery is exact.
 */
static void test_bench_chat_open_uring_tick(void **state)
{
	struct bench_state *s = *state;
	cJSON *j[1];
	double ok;
	int n;

	bench_run(
	    s->node,
	    "chat --users 20 --rate 400 --duration 2 --warmup 0 --tick-us 1000 --engine uring", j,
	    1, &n);
	assert_int_equal(n, 1);
	bench_check_delivered(j[0], "ringchat", 1);
	ok = bench_num(j[0], "sent_ok");
	if (ok < 640 || ok > 960)
		fail_msg("open loop at 400 msgs/s for 2 s sent %.0f", ok);
	bench_free(j, n);
}

/* Group fan-out with io_uring: every member but the sender gets each message once. */
static void test_bench_group_uring(void **state)
{
	struct bench_state *s = *state;
	cJSON *j[1];
	int n;

	bench_run(s->node,
		  "group --groups 2 --members 5 --window 4 --duration 1 --warmup 0 --engine uring",
		  j, 1, &n);
	assert_int_equal(n, 1);
	bench_check_delivered(j[0], "ringchat", 4);
	bench_free(j, n);
}

/* Messages stored between two users, counted through HISTORY pages. */
static long bench_history_count(struct rc_client *c, int64_t with)
{
	int64_t before = 0;
	long total = 0;

	for (;;) {
		cJSON *r, *msgs, *last;
		int k;

		if (before)
			r = tc_call_ok(c, CMD_HISTORY,
				       "{\"with\":%lld,\"limit\":200,\"before_id\":%lld}",
				       (long long)with, (long long)before);
		else
			r = tc_call_ok(c, CMD_HISTORY, "{\"with\":%lld,\"limit\":200}",
				       (long long)with);
		msgs = cJSON_GetObjectItemCaseSensitive(r, "messages");
		assert_true(cJSON_IsArray(msgs));
		k = cJSON_GetArraySize(msgs);
		total += k;
		if (k == 0) {
			cJSON_Delete(r);
			return total;
		}
		/* Newest first: the last one is the oldest of the page. */
		last = cJSON_GetArrayItem(msgs, k - 1);
		before = tc_json_int(last, "msg_id");
		cJSON_Delete(r);
		if (k < 200)
			return total;
	}
}

/* Logs user name in (the bench's password) on n; *user_id gets its id. */
static struct rc_client *bench_login(struct node *n, const char *name, int64_t *user_id)
{
	struct rc_client *c = tc_connect(n);
	cJSON *r = tc_call_ok(c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
			      BENCH_USER_PASSWORD);

	*user_id = tc_json_int(r, "user_id");
	cJSON_Delete(r);
	return c;
}

/*
 * chat --nodes over two real nodes of one cluster (node_id 29 and 30, one
 * database, routing through Redis): every pair has its sender on one node
 * and its recipient on the other. Every message must be accepted (OK =
 * stored, durability stored), be in HISTORY and arrive exactly once, no
 * connection lost.
 */
static void test_bench_chat_two_nodes(void **state)
{
	struct node *a = node_start("--durability stored --cluster-route redis --node-id 29 "
				    BENCH_NO_RATE_LIMIT);
	struct node *b = node_start("--durability stored --cluster-route redis --node-id 30 "
				    BENCH_NO_RATE_LIMIT);
	int64_t deadline = tc_now_ms() + 10000;
	char args[512], prefix[16], name[40];
	long stored = 0;
	cJSON *j[1];
	double ok;
	int n, st;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	while (tc_metric(a, "ringchat_cluster_peers_up") != 1 ||
	       tc_metric(b, "ringchat_cluster_peers_up") != 1) {
		if (tc_now_ms() > deadline)
			fail_msg("the two nodes never saw each other up");
		tc_sleep_ms(50);
	}
	/* A --prefix of our own (at most 12 bytes, unique per run): the
	 * test knows the users' names. */
	snprintf(prefix, sizeof(prefix), "bn%lx",
		 ((unsigned long)time(NULL) * 2654435761ul ^ (unsigned long)getpid()) &
		     0xffffffffful);
	snprintf(args, sizeof(args),
		 "chat --nodes 127.0.0.1:%u,127.0.0.1:%u --users 4 --window 4 --duration 1 "
		 "--warmup 0 --prefix %s --server-pid %d,%d",
		 node_port(a), node_port(b), prefix, (int)node_pid(a), (int)node_pid(b));
	st = bench_exec(args, j, 1, &n);
	assert_int_equal(n, 1);
	assert_true(bench_num(j[0], "nodes") == 2);
	ok = bench_num(j[0], "sent_ok_total");
	if (ok < 50 || ok != bench_num(j[0], "sent_total"))
		fail_msg("--nodes: %.0f sent, %.0f answered OK", bench_num(j[0], "sent_total"), ok);
	assert_true(bench_num(j[0], "errors") == 0);
	assert_true(bench_num(j[0], "lost_connections") == 0);
	assert_true(bench_num(j[0], "duplicates") == 0);

	/* Stored: pair p is users 2p (on node p % 2) and 2p + 1 (the other). */
	for (int p = 0; p < 2; p++) {
		struct rc_client *ca, *cb;
		int64_t ida, idb;

		snprintf(name, sizeof(name), "%s_%d", prefix, 2 * p);
		ca = bench_login(a, name, &ida);
		snprintf(name, sizeof(name), "%s_%d", prefix, 2 * p + 1);
		cb = bench_login(b, name, &idb);
		stored += bench_history_count(ca, idb);
		rc_close(ca);
		rc_close(cb);
	}
	if ((double)stored != ok)
		fail_msg("--nodes: %.0f messages answered OK, %ld in HISTORY", ok, stored);

	if (bench_num(j[0], "delivered_total") != ok)
		fail_msg("--nodes: %.0f sent OK, %.0f delivered across nodes", ok,
			 bench_num(j[0], "delivered_total"));
	assert_int_equal(st, 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j[0], "drained")));
	bench_free(j, n);
	assert_int_equal(node_stop(a), 0);
	assert_int_equal(node_stop(b), 0);
}

/* A malformed --nodes, or --nodes with --port, is a usage error naming it, exit 2. */
static void test_bench_bad_nodes(void **state)
{
	static const char *const bad[] = {
	    "chat --nodes 127.0.0.1",	 "chat --nodes 127.0.0.1:0",
	    "chat --nodes 127.0.0.1:1,", "chat --nodes 127.0.0.1:1 --port 2",
	    "ping --nodes 127.0.0.1:1",
	};
	char cmd[700], out[512];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *f;
		size_t used;
		int st;

		snprintf(cmd, sizeof(cmd), "%s %s 2>&1", bench_bin, bad[i]);
		f = popen(cmd, "r");
		assert_non_null(f);
		used = fread(out, 1, sizeof(out) - 1, f);
		out[used] = '\0';
		st = pclose(f);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 2 || !strstr(out, "--nodes"))
			fail_msg("'%s': status %d, output: %s", bad[i],
				 WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
	}
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
	    cmocka_unit_test(test_bench_chat_two_nodes),
	    cmocka_unit_test(test_bench_bad_engine),
	    cmocka_unit_test(test_bench_bad_nodes),
	};

	harness_init();
	bench_find_binary();
	return harness_done(cmocka_run_group_tests(tests, bench_setup, bench_teardown));
}
