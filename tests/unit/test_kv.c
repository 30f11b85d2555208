/*
 * test_kv.c - the Redis layer against a real server: commands and binary
 * values, a 1000-command pipeline, error replies, transparent reconnect
 * after CLIENT KILL, a connection lost in mid-pipeline, and failing fast
 * while the server does not answer.
 *
 * Needs RINGCHAT_REDIS_SOCKET (scripts/test.sh sets it from
 * scripts/services.sh); without a reachable server it exits 77 (skip).
 * RINGCHAT_REDIS_PORT, when set, adds the reconnect test over TCP to
 * 127.0.0.1.
 * Keys are prefixed with this process's id and deleted afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "ringchat/config.h"
#include "ringchat/kv.h"

#define SKIP 77
#define KEY_TTL_S 300 /* keys outlive a crashed run by this much at most */

static struct config cfg;
static struct kv *kv;
static char prefix[64];

static int64_t elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static const char *key(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s%s", prefix, name);
	return buf;
}

static void reply_is_status(redisReply *r, const char *status)
{
	if (!r)
		fail_msg("no reply: %s", kv_errmsg(kv));
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	assert_string_equal(r->str, status);
	freeReplyObject(r);
}

static void reply_is_integer(redisReply *r, long long n)
{
	if (!r)
		fail_msg("no reply: %s", kv_errmsg(kv));
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, n);
	freeReplyObject(r);
}

static void reply_is_string(redisReply *r, const void *s, size_t len)
{
	if (!r)
		fail_msg("no reply: %s", kv_errmsg(kv));
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_int_equal(r->len, len);
	assert_memory_equal(r->str, s, len);
	freeReplyObject(r);
}

static long long client_id(struct kv *k)
{
	redisReply *r = kv_cmd(k, "CLIENT ID");
	long long id;

	if (!r)
		fail_msg("CLIENT ID: %s", kv_errmsg(k));
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	id = r->integer;
	freeReplyObject(r);
	return id;
}

/* Kills k's connection from a second one to the server of via. */
static void kill_from_outside_via(struct kv *k, const struct config *via)
{
	struct kv *killer = kv_open(via);
	long long id = client_id(k);
	redisReply *r;

	assert_non_null(killer);
	r = kv_cmd(killer, "CLIENT KILL ID %lld", id);
	if (!r)
		fail_msg("CLIENT KILL: %s", kv_errmsg(killer));
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	kv_close(killer);
	usleep(20 * 1000); /* let the server finish closing it */
}

static void kill_from_outside(struct kv *k)
{
	kill_from_outside_via(k, &cfg);
}

static void test_set_get(void **state)
{
	static const char bin[] = {'a', '\0', '\r', '\n', (char)0xff, ' ', '%', 's'};
	const char *argv[4];
	size_t argvlen[4];
	char k1[128], k2[128];

	(void)state;
	reply_is_status(
	    kv_cmd(kv, "SET %s %s EX %d", key(k1, sizeof(k1), "plain"), "hello world", KEY_TTL_S),
	    "OK");
	reply_is_string(kv_cmd(kv, "GET %s", k1), "hello world", 11);

	/* binary values go through %b unchanged */
	reply_is_status(
	    kv_cmd(kv, "SET %s %b EX %d", key(k2, sizeof(k2), "bin"), bin, sizeof(bin), KEY_TTL_S),
	    "OK");
	reply_is_string(kv_cmd(kv, "GET %s", k2), bin, sizeof(bin));

	/* argv form, with explicit lengths and with strlen */
	argv[0] = "SET";
	argv[1] = k1;
	argv[2] = bin;
	argvlen[0] = 3;
	argvlen[1] = strlen(k1);
	argvlen[2] = sizeof(bin);
	reply_is_status(kv_argv(kv, 3, argv, argvlen), "OK");
	argv[0] = "GET";
	reply_is_string(kv_argv(kv, 2, argv, NULL), bin, sizeof(bin));

	reply_is_integer(kv_cmd(kv, "DEL %s %s", k1, k2), 2);
	redisReply *r = kv_cmd(kv, "GET %s", k1);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
}

static void test_pipeline_1000(void **state)
{
	enum { N = 1000 };
	char k[128], name[32], val[32];

	(void)state;
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "p:%d", i);
		snprintf(val, sizeof(val), "value-%d", i * 7);
		assert_int_equal(
		    kv_append(kv, "SET %s %s EX %d", key(k, sizeof(k), name), val, KEY_TTL_S), 0);
	}
	assert_int_equal(kv_pending(kv), N);
	for (int i = 0; i < N; i++)
		reply_is_status(kv_reply(kv), "OK");
	assert_int_equal(kv_pending(kv), 0);

	/* replies come back in order, whatever their types */
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "p:%d", i);
		if (i % 2)
			kv_append(kv, "GET %s", key(k, sizeof(k), name));
		else
			kv_append(kv, "EXISTS %s", key(k, sizeof(k), name));
	}
	for (int i = 0; i < N; i++) {
		if (i % 2) {
			snprintf(val, sizeof(val), "value-%d", i * 7);
			reply_is_string(kv_reply(kv), val, strlen(val));
		} else {
			reply_is_integer(kv_reply(kv), 1);
		}
	}
	/* an extra kv_reply is a caller bug, answered with NULL */
	assert_null(kv_reply(kv));

	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "p:%d", i);
		kv_append(kv, "DEL %s", key(k, sizeof(k), name));
	}
	for (int i = 0; i < N; i++)
		reply_is_integer(kv_reply(kv), 1);
}

static void test_error_reply(void **state)
{
	char k[128];
	redisReply *r;

	(void)state;
	reply_is_status(
	    kv_cmd(kv, "SET %s %s EX %d", key(k, sizeof(k), "str"), "not a number", KEY_TTL_S),
	    "OK");
	r = kv_cmd(kv, "INCR %s", k);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_non_null(strstr(r->str, "not an integer"));
	freeReplyObject(r);

	r = kv_cmd(kv, "LPUSH %s x", k);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_true(strncmp(r->str, "WRONGTYPE", 9) == 0);
	freeReplyObject(r);

	/* an error inside a pipeline does not disturb the replies around it */
	kv_append(kv, "PING");
	kv_append(kv, "NO-SUCH-COMMAND %s", "x");
	kv_append(kv, "GET %s", k);
	reply_is_status(kv_reply(kv), "PONG");
	r = kv_reply(kv);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);
	reply_is_string(kv_reply(kv), "not a number", 12);

	/* a bad format string is refused without touching the link */
	assert_int_equal(kv_append(kv, "GET %q"), -EINVAL);
	assert_null(kv_reply(kv));
	assert_null(kv_cmd(kv, "GET %q"));
	reply_is_integer(kv_cmd(kv, "DEL %s", k), 1);
}

static void test_reconnect_after_client_kill(void **state)
{
	long long before;

	(void)state;
	before = client_id(kv);
	kill_from_outside(kv);
	/* transparent: the first command after the kill succeeds */
	reply_is_status(kv_cmd(kv, "PING"), "PONG");
	assert_true(client_id(kv) != before);

	/* the same for a pipeline */
	kill_from_outside(kv);
	for (int i = 0; i < 100; i++)
		assert_int_equal(kv_append(kv, "ECHO %d", i), 0);
	for (int i = 0; i < 100; i++) {
		char s[16];

		snprintf(s, sizeof(s), "%d", i);
		reply_is_string(kv_reply(kv), s, strlen(s));
	}
}

/* Over TCP a write into a killed link succeeds and only the read fails;
 * the idle check must still catch it before the command is sent. */
static void test_reconnect_after_client_kill_tcp(void **state)
{
	const char *port = getenv("RINGCHAT_REDIS_PORT");
	struct config tcp;
	struct kv *k;
	redisReply *r;

	(void)state;
	if (!port || !port[0])
		skip();
	memset(&tcp, 0, sizeof(tcp));
	snprintf(tcp.redis_host, sizeof(tcp.redis_host), "127.0.0.1");
	tcp.redis_port = atoi(port);
	k = kv_open(&tcp);
	assert_non_null(k);
	for (int i = 0; i < 3; i++) {
		if (i)
			kill_from_outside_via(k, &tcp);
		r = kv_cmd(k, "ECHO %s", "over tcp");
		if (!r)
			fail_msg("TCP 127.0.0.1:%s: %s", port, kv_errmsg(k));
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		assert_string_equal(r->str, "over tcp");
		freeReplyObject(r);
	}
	kv_close(k);
}

/*
 * The link dies in the middle of a pipeline: the server runs the commands
 * before the kill, then closes. The ones after it get NULL and are not
 * sent again, so the INCR counts once; the handle works afterwards.
 */
static void test_link_lost_mid_pipeline(void **state)
{
	char k[128];
	long long self;

	(void)state;
	key(k, sizeof(k), "counter");
	reply_is_status(kv_cmd(kv, "SET %s 0 EX %d", k, KEY_TTL_S), "OK");
	self = client_id(kv);
	assert_int_equal(kv_append(kv, "INCR %s", k), 0);
	assert_int_equal(kv_append(kv, "CLIENT KILL ID %lld SKIPME no", self), 0);
	assert_int_equal(kv_append(kv, "INCR %s", k), 0);
	assert_int_equal(kv_append(kv, "PING"), 0);
	assert_int_equal(kv_pending(kv), 4);
	reply_is_integer(kv_reply(kv), 1);
	reply_is_integer(kv_reply(kv), 1); /* killed itself: "1 client killed" */
	assert_null(kv_reply(kv));
	assert_null(kv_reply(kv));
	assert_int_equal(kv_pending(kv), 0);
	assert_true(kv_errmsg(kv)[0] != '\0');

	reply_is_string(kv_cmd(kv, "GET %s", k), "1", 1);
	reply_is_integer(kv_cmd(kv, "DEL %s", k), 1);
}

/*
 * A "server" that accepts connections into its backlog but never answers:
 * the first command gives up after the command timeout, and commands in
 * the back-off window fail at once instead of hanging the worker again.
 */
static void test_unanswering_server_fails_fast(void **state)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char dir[] = "/tmp/ringchat-kvtest-XXXXXX";
	struct config dead;
	struct timespec t0;
	struct kv *k;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/mute.sock", dir);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 16), 0);

	memset(&dead, 0, sizeof(dead));
	snprintf(dead.redis_socket, sizeof(dead.redis_socket), "%s", addr.sun_path);
	k = kv_open(&dead); /* no server is no error */
	assert_non_null(k);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_null(kv_cmd(k, "PING"));
	assert_true(elapsed_ms(&t0) < 5000); /* command timeout 2 s */

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_null(kv_cmd(k, "PING"));
	/* a pipeline while down: every append still owes a NULL reply */
	assert_int_equal(kv_append(k, "PING"), -ENOTCONN);
	assert_int_equal(kv_append(k, "PING"), -ENOTCONN);
	assert_int_equal(kv_pending(k), 2);
	assert_null(kv_reply(k));
	assert_null(kv_reply(k));
	assert_int_equal(kv_pending(k), 0);
	assert_true(elapsed_ms(&t0) < 40); /* inside the 50 ms window */
	kv_close(k);

	close(fd);
	unlink(addr.sun_path);
	rmdir(dir);
}

static void test_missing_server_is_down(void **state)
{
	struct config missing;
	struct kv *k;

	(void)state;
	memset(&missing, 0, sizeof(missing));
	snprintf(missing.redis_socket, sizeof(missing.redis_socket),
		 "/nonexistent/ringchat/redis.sock");
	k = kv_open(&missing);
	assert_non_null(k);
	assert_null(kv_cmd(k, "PING"));
	assert_non_null(strstr(kv_errmsg(k), "redis.sock"));
	kv_close(k);
}

int main(void)
{
	const char *socket = getenv("RINGCHAT_REDIS_SOCKET");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_get),
	    cmocka_unit_test(test_pipeline_1000),
	    cmocka_unit_test(test_error_reply),
	    cmocka_unit_test(test_reconnect_after_client_kill),
	    cmocka_unit_test(test_reconnect_after_client_kill_tcp),
	    cmocka_unit_test(test_link_lost_mid_pipeline),
	    cmocka_unit_test(test_unanswering_server_fails_fast),
	    cmocka_unit_test(test_missing_server_is_down),
	};
	redisReply *r;
	int rc;

	/* as the node does: a write to a closed socket must not kill us */
	signal(SIGPIPE, SIG_IGN);
	if (!socket || !socket[0]) {
		printf("RINGCHAT_REDIS_SOCKET not set (scripts/test.sh sets it): skipped\n");
		return SKIP;
	}
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.redis_socket, sizeof(cfg.redis_socket), "%s", socket);
	snprintf(prefix, sizeof(prefix), "ringchat:test:kv:%ld:", (long)getpid());
	kv = kv_open(&cfg);
	if (!kv)
		return 1;
	r = kv_cmd(kv, "PING");
	if (!r) {
		printf("Redis at %s does not answer (%s): skipped\n", socket, kv_errmsg(kv));
		kv_close(kv);
		return SKIP;
	}
	freeReplyObject(r);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	kv_close(kv);
	return rc;
}
