/*
 * test_inbox.c - messages between two cluster threads of this process
 * through the real Redis: 500 messages (binary, empty, large) arrive
 * complete and in order in fewer entries than messages; a receiver that
 * was stopped gets what was queued for it when it starts again, its own
 * pending entries first; the queue bound refuses with -ENOBUFS and frees
 * up after a flush; big batches are cut into entries of at most
 * INBOX_ENTRY_MAX_BYTES; a malformed entry is skipped and counted; and,
 * when RINGCHAT_REDIS_PORT and RINGCHAT_SRCDIR name the Redis of
 * scripts/services.sh, Redis stopped and started again: sends made
 * during the outage are delivered afterwards, none lost.
 *
 * Needs RINGCHAT_REDIS_SOCKET; without a reachable server it exits 77.
 * Uses node ids 28..31 and their keys: not for the Redis of a cluster
 * that uses them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/clock.h"
#include "ringchat/cluster_bus.h"
#include "ringchat/config.h"
#include "ringchat/inbox.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"

#define SKIP 77
#define ID_A 30
#define ID_B 31
#define ID_C 29
#define TTL_MS 600

static struct config base;
static struct kv *kv;

struct got {
	int from;
	size_t len;
	uint8_t *p;
};

/* What one bus received and saw, for the test thread to wait on. */
struct rec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct got *m;
	size_t n, cap;
	int redis_down, redis_up;
	int bad_time; /* deliveries whose sent_ms was not about now */
};

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
}

static void rec_free(struct rec *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->m[i].p);
	free(r->m);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
}

static void on_deliver(void *ctx, int from, uint64_t sent_ms, const uint8_t *msg, size_t len)
{
	struct rec *r = ctx;
	uint64_t now = clock_epoch_ms();

	pthread_mutex_lock(&r->lock);
	/* the stream id's time is Redis's clock, the same machine's here;
	 * checked by the test thread (cmocka asserts only there) */
	if (sent_ms > now + 5 || sent_ms + 60000 < now)
		r->bad_time++;
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 256;
		r->m = realloc(r->m, r->cap * sizeof(*r->m));
		assert_non_null(r->m);
	}
	r->m[r->n].from = from;
	r->m[r->n].len = len;
	r->m[r->n].p = malloc(len ? len : 1);
	assert_non_null(r->m[r->n].p);
	memcpy(r->m[r->n].p, msg, len);
	r->n++;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void on_redis(void *ctx, bool up)
{
	struct rec *r = ctx;

	pthread_mutex_lock(&r->lock);
	if (up)
		r->redis_up++;
	else
		r->redis_down++;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void deadline_in(struct timespec *t, int ms)
{
	clock_gettime(CLOCK_REALTIME, t);
	t->tv_sec += ms / 1000;
	t->tv_nsec += (long)(ms % 1000) * 1000000;
	if (t->tv_nsec >= 1000000000) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000;
	}
}

/* Waits until at least n messages arrived; returns how many did. */
static size_t rec_wait_msgs(struct rec *r, size_t n, int timeout_ms)
{
	struct timespec until;
	size_t got;

	deadline_in(&until, timeout_ms);
	pthread_mutex_lock(&r->lock);
	while (r->n < n)
		if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
			break;
	got = r->n;
	pthread_mutex_unlock(&r->lock);
	return got;
}

/* Waits until *counter (under r->lock) reaches n; returns its value. */
static int rec_wait_count(struct rec *r, int *counter, int n, int timeout_ms)
{
	struct timespec until;
	int v;

	deadline_in(&until, timeout_ms);
	pthread_mutex_lock(&r->lock);
	while (*counter < n)
		if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
			break;
	v = *counter;
	pthread_mutex_unlock(&r->lock);
	return v;
}

/* Message i of a test: "m<i>" and, for some, binary bytes or nothing. */
static size_t make_msg(uint8_t *buf, size_t size, int i)
{
	int n;

	if (i % 250 == 249)
		return 0; /* empty messages are messages too */
	n = snprintf((char *)buf, size, "m%d", i);
	if (i % 100 == 7) {
		/* NUL, CR LF and high bytes travel unchanged */
		static const uint8_t bin[] = {0, '\r', '\n', 0xff, 0, '%', 'b'};

		memcpy(buf + n, bin, sizeof(bin));
		n += (int)sizeof(bin);
	}
	return (size_t)n;
}

static void check_msgs(struct rec *r, size_t first, int from, int i0, int count)
{
	uint8_t want[64];

	pthread_mutex_lock(&r->lock);
	assert_int_equal(r->bad_time, 0);
	assert_true(r->n >= first + (size_t)count);
	for (int k = 0; k < count; k++) {
		const struct got *g = &r->m[first + (size_t)k];
		size_t len = make_msg(want, sizeof(want), i0 + k);

		if (g->from != from || g->len != len || memcmp(g->p, want, len) != 0)
			fail_msg("message %zu: from %d len %zu, wanted message %d from %d len %zu",
				 first + (size_t)k, g->from, g->len, i0 + k, from, len);
	}
	pthread_mutex_unlock(&r->lock);
}

static void cmd_ok(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* split on spaces: our keys and ids have none */
	{
		const char *argv[16];
		char *save, *tok;
		int argc = 0;

		for (tok = strtok_r(buf, " ", &save); tok && argc < 16;
		     tok = strtok_r(NULL, " ", &save))
			argv[argc++] = tok;
		r = kv_argv(kv, argc, argv, NULL);
	}
	if (!r)
		fail_msg("%s: %s", fmt, kv_errmsg(kv));
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", fmt, r->str);
	freeReplyObject(r);
}

static long long int_reply(const char *fmt, int id)
{
	redisReply *r = kv_cmd(kv, fmt, id);
	long long v;

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

/* Waits (bounded) until a counted n messages sent to b and b counted n
 * received from a. */
static void settle(struct cluster_bus *a, struct cluster_bus *b, uint64_t n)
{
	struct cluster_bus_stats sa, sb;
	uint64_t t0 = clock_mono_ms();

	do {
		cluster_bus_stats(a, &sa);
		cluster_bus_stats(b, &sb);
		if (sa.inbox.peer[ID_B].msgs_sent >= n && sb.inbox.peer[ID_A].msgs_recv >= n)
			return;
		usleep(5 * 1000);
	} while (clock_mono_ms() - t0 < 5000);
}

/* Waits (bounded) until node id's inbox has no unacked entry. */
static bool wait_no_pending(int id, int timeout_ms)
{
	uint64_t t0 = clock_mono_ms();

	for (;;) {
		redisReply *r = kv_cmd(kv, "XPENDING rc:inbox:%d g", id);
		long long n;

		assert_non_null(r);
		assert_int_equal(r->type, REDIS_REPLY_ARRAY);
		n = r->element[0]->integer;
		freeReplyObject(r);
		if (n == 0)
			return true;
		if (clock_mono_ms() - t0 > (uint64_t)timeout_ms)
			return false;
		usleep(5 * 1000);
	}
}

/*
 * Every bus a test starts is listed, so that a failed test (cmocka leaves
 * it by longjmp) does not leave threads running into the next one: the
 * teardown stops what is left. The records they write to are globals for
 * the same reason.
 */
static struct cluster_bus *running[8];
static struct rec ra, rb;

static void stop_bus(struct cluster_bus **b)
{
	for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
		if (running[i] == *b)
			running[i] = NULL;
	cluster_bus_stop(*b);
	*b = NULL;
}

static const char *redis_stopped_in; /* srcdir, while the outage test has Redis down */
static int services(const char *srcdir, const char *cmd);

static int teardown(void **state)
{
	(void)state;
	if (redis_stopped_in && services(redis_stopped_in, "start") == 0)
		redis_stopped_in = NULL;
	for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
		if (running[i])
			stop_bus(&running[i]);
	return 0;
}

static void remember(struct cluster_bus *b)
{
	for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
		if (!running[i]) {
			running[i] = b;
			return;
		}
	fail_msg("more than %zu buses at once", sizeof(running) / sizeof(running[0]));
}

static int start_bus(struct cluster_bus **out, int id, struct rec *r)
{
	static const struct cluster_bus_ops ops = {.deliver = on_deliver, .redis_state = on_redis};
	struct config c = base;
	struct node_info s;
	int rc;

	c.node_id = id;
	c.node_ttl_ms = TTL_MS;
	memset(&s, 0, sizeof(s));
	snprintf(s.addr, sizeof(s.addr), "127.0.0.1:%d", 7700 + id);
	rc = cluster_bus_start(out, &c, &s, &ops, r, NULL);
	if (rc == 0)
		remember(*out);
	return rc;
}

static int setup(void **state)
{
	(void)state;
	cmd_ok("DEL rc:node:28 rc:node:29 rc:node:30 rc:node:31 rc:inbox:28 rc:inbox:29 "
	       "rc:inbox:30 rc:inbox:31");
	return 0;
}

/* Sends messages i0 .. i0+count-1 from a to node. */
static void send_range(struct cluster_bus *a, int node, int i0, int count)
{
	uint8_t buf[64];

	for (int i = i0; i < i0 + count; i++) {
		size_t len = make_msg(buf, sizeof(buf), i);

		assert_int_equal(cluster_bus_send(a, node, buf, len), 0);
	}
}

static void test_burst_arrives_in_order_batched(void **state)
{
	struct cluster_bus *a, *b;
	struct cluster_bus_stats sa, sb;
	static uint8_t big[200000];

	(void)state;
	rec_init(&ra);
	rec_init(&rb);
	assert_int_equal(start_bus(&a, ID_A, &ra), 0);
	assert_int_equal(start_bus(&b, ID_B, &rb), 0);
	send_range(a, ID_B, 0, 500);
	assert_int_equal(rec_wait_msgs(&rb, 500, 10000), 500);
	check_msgs(&rb, 0, ID_A, 0, 500);

	/* counters move after the callbacks: b counts an entry once all its
	 * messages were delivered, a counts a send once Redis answered */
	settle(a, b, 500);
	cluster_bus_stats(a, &sa);
	cluster_bus_stats(b, &sb);
	assert_int_equal(sa.inbox.peer[ID_B].msgs_sent, 500);
	/* a burst is batched: far fewer entries than messages */
	assert_true(sa.inbox.peer[ID_B].entries_sent < 500);
	assert_true(sa.inbox.peer[ID_B].entries_sent >= 1);
	assert_true(sa.inbox.batch_max > 1);
	assert_int_equal(sb.inbox.peer[ID_A].msgs_recv, 500);
	assert_int_equal(sb.inbox.peer[ID_A].entries_recv, sa.inbox.peer[ID_B].entries_sent);
	assert_int_equal(sa.inbox.queued_msgs, 0);
	assert_int_equal(sa.inbox.queued_bytes, 0);
	/* everything handled was acked */
	assert_true(wait_no_pending(ID_B, 2000));
	{
		char *text = NULL, want[128];
		size_t len = 0;
		FILE *f = open_memstream(&text, &len);

		assert_non_null(f);
		/* a sees b at its first heartbeat after b's start */
		for (uint64_t t0 = clock_mono_ms();
		     !cluster_bus_is_up(a, ID_B) && clock_mono_ms() - t0 < 2000;)
			usleep(5 * 1000);
		cluster_bus_metrics(a, f);
		fclose(f);
		assert_non_null(
		    strstr(text, "ringchat_cluster_messages_sent_total{node=\"31\"} 500\n"));
		snprintf(want, sizeof(want),
			 "ringchat_cluster_entries_sent_total{node=\"31\"} %" PRIu64 "\n",
			 sa.inbox.peer[ID_B].entries_sent);
		assert_non_null(strstr(text, want));
		assert_non_null(strstr(text, "ringchat_cluster_peers_up 1\n"));
		assert_non_null(strstr(text, "ringchat_cluster_redis_up 1\n"));
		assert_non_null(strstr(text, "ringchat_cluster_queued_messages 0\n"));
		/* nothing for nodes a never talked to */
		assert_null(strstr(text, "{node=\"29\"}"));
		free(text);
	}

	/* a large message, and one sent back the other way */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(cluster_bus_send(a, ID_B, big, sizeof(big)), 0);
	assert_int_equal(cluster_bus_send(b, ID_A, "pong", 4), 0);
	assert_int_equal(rec_wait_msgs(&rb, 501, 5000), 501);
	assert_int_equal(rb.m[500].len, sizeof(big));
	assert_memory_equal(rb.m[500].p, big, sizeof(big));
	assert_int_equal(rec_wait_msgs(&ra, 1, 5000), 1);
	assert_int_equal(ra.m[0].from, ID_B);
	assert_memory_equal(ra.m[0].p, "pong", 4);

	assert_int_equal(cluster_bus_send(a, 32, "x", 1), -EINVAL);
	assert_int_equal(cluster_bus_send(a, -1, "x", 1), -EINVAL);
	assert_int_equal(cluster_bus_send(a, ID_B, big, INBOX_MSG_MAX_BYTES + 1), -EMSGSIZE);
	stop_bus(&a);
	stop_bus(&b);
	assert_int_equal(rb.n, 501); /* nothing twice */
	rec_free(&ra);
	rec_free(&rb);
}

static void test_restarted_receiver_gets_queued(void **state)
{
	struct cluster_bus *a, *b;
	struct cluster_bus_stats sa;
	uint64_t t0;

	(void)state;
	rec_init(&ra);
	rec_init(&rb);
	assert_int_equal(start_bus(&a, ID_A, &ra), 0);
	assert_int_equal(start_bus(&b, ID_B, &rb), 0);
	send_range(a, ID_B, 0, 10);
	assert_int_equal(rec_wait_msgs(&rb, 10, 5000), 10);
	stop_bus(&b);

	/* b is down: these wait in its inbox */
	send_range(a, ID_B, 10, 100);
	t0 = clock_mono_ms();
	do {
		cluster_bus_stats(a, &sa);
		if (sa.inbox.peer[ID_B].msgs_sent == 110)
			break;
		usleep(10 * 1000);
	} while (clock_mono_ms() - t0 < 5000);
	assert_int_equal(sa.inbox.peer[ID_B].msgs_sent, 110);
	/*
	 * As if b had crashed after reading the first of them, before its
	 * ack: the entry sits in b's pending list. A restarted b must
	 * deliver it first, then the rest.
	 */
	{
		redisReply *r =
		    kv_cmd(kv, "XREADGROUP GROUP g %d COUNT 1 STREAMS rc:inbox:%d >", ID_B, ID_B);

		assert_non_null(r);
		assert_int_equal(r->type, REDIS_REPLY_ARRAY);
		freeReplyObject(r);
		assert_int_equal(int_reply("XLEN rc:inbox:%d", ID_B) >= 1, 1);
	}
	assert_int_equal(start_bus(&b, ID_B, &rb), 0);
	assert_int_equal(rec_wait_msgs(&rb, 110, 5000), 110);
	check_msgs(&rb, 0, ID_A, 0, 110);
	stop_bus(&a);
	stop_bus(&b);
	assert_int_equal(rb.n, 110);
	rec_free(&ra);
	rec_free(&rb);
}

static void test_bad_entry_is_skipped(void **state)
{
	static const char trunc[] = {0, 0, 0, 5, 'a', 'b', 'c'};
	struct cluster_bus *a, *b;
	struct cluster_bus_stats sb;
	redisReply *r;

	(void)state;
	rec_init(&ra);
	rec_init(&rb);
	/* a length prefix running past the end, and an entry with no "m" */
	r = kv_cmd(kv, "XADD rc:inbox:%d * f 30 n 1 m %b", ID_B, trunc, sizeof(trunc));
	assert_non_null(r);
	freeReplyObject(r);
	r = kv_cmd(kv, "XADD rc:inbox:%d * f 30 n 1", ID_B);
	assert_non_null(r);
	freeReplyObject(r);
	assert_int_equal(start_bus(&a, ID_A, &ra), 0);
	assert_int_equal(start_bus(&b, ID_B, &rb), 0);
	assert_int_equal(cluster_bus_send(a, ID_B, "m0", 2), 0);
	assert_int_equal(rec_wait_msgs(&rb, 1, 5000), 1);
	check_msgs(&rb, 0, ID_A, 0, 1);
	cluster_bus_stats(b, &sb);
	assert_int_equal(sb.inbox.bad_entries, 2);
	stop_bus(&a);
	stop_bus(&b);
	assert_int_equal(rb.n, 1);
	rec_free(&ra);
	rec_free(&rb);
}

/* The inbox module alone, no thread: exact bound and batching. */
static void test_bound_and_one_entry_per_flush(void **state)
{
	struct config c = base;
	struct inbox *ib;
	struct inbox_stats st;
	uint8_t msg[1000];
	bool wake;
	int accepted = 0, rc;
	redisReply *r;

	(void)state;
	c.node_id = ID_A;
	c.cluster_queue_bytes = 65536;
	ib = inbox_create(&c, NULL, NULL);
	assert_non_null(ib);
	memset(msg, 'x', sizeof(msg));
	assert_int_equal(inbox_enqueue(ib, ID_C, msg, sizeof(msg), &wake), 0);
	assert_true(wake); /* first of a burst */
	accepted++;
	while ((rc = inbox_enqueue(ib, ID_C, msg, sizeof(msg), &wake)) == 0) {
		assert_false(wake); /* a flush is already due */
		accepted++;
	}
	assert_int_equal(rc, -ENOBUFS);
	/* 4 bytes of length prefix per message count */
	assert_int_equal(accepted, 65536 / 1004);
	inbox_stats(ib, &st);
	assert_int_equal(st.enobufs, 1);
	assert_int_equal(st.queued_msgs, accepted);
	assert_int_equal(st.queued_bytes, accepted * 1004);

	assert_int_equal(inbox_flush(ib, kv), 0);
	assert_false(inbox_has_queued(ib));
	inbox_stats(ib, &st);
	assert_int_equal(st.queued_bytes, 0);
	assert_int_equal(st.peer[ID_C].entries_sent, 1);
	assert_int_equal(st.peer[ID_C].msgs_sent, accepted);
	assert_int_equal(st.peer[ID_C].bytes_sent, accepted * 1000);
	/* everything queued since the last flush went into one entry */
	assert_int_equal(int_reply("XLEN rc:inbox:%d", ID_C), 1);
	r = kv_cmd(kv, "XRANGE rc:inbox:%d - +", ID_C);
	assert_non_null(r);
	assert_int_equal(r->elements, 1);
	{
		const redisReply *f = r->element[0]->element[1];

		assert_int_equal(f->elements, 6);
		assert_string_equal(f->element[0]->str, "f");
		assert_string_equal(f->element[1]->str, "30");
		assert_string_equal(f->element[2]->str, "n");
		assert_int_equal(atoi(f->element[3]->str), accepted);
		assert_string_equal(f->element[4]->str, "m");
		assert_int_equal(f->element[5]->len, accepted * 1004);
		assert_memory_equal(f->element[5]->str, "\0\0\x03\xe8xxx", 7);
	}
	freeReplyObject(r);

	/* room again, and the next send wakes again */
	assert_int_equal(inbox_enqueue(ib, ID_C, msg, sizeof(msg), &wake), 0);
	assert_true(wake);
	inbox_destroy(ib);
}

static void test_big_batch_is_cut(void **state)
{
	struct config c = base;
	struct inbox *ib;
	struct inbox_stats st;
	uint8_t *msg = calloc(1, 600000);
	bool wake;

	(void)state;
	assert_non_null(msg);
	c.node_id = ID_A;
	ib = inbox_create(&c, NULL, NULL);
	assert_non_null(ib);
	for (int i = 0; i < 3; i++)
		assert_int_equal(inbox_enqueue(ib, ID_C, msg, 600000, &wake), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(inbox_enqueue(ib, ID_C, msg, 100, &wake), 0);
	assert_int_equal(inbox_flush(ib, kv), 0);
	inbox_stats(ib, &st);
	/* 600000 | 600000 | 600000 + 4 x 100: no entry above 1 MiB but for a
	 * single message */
	assert_int_equal(st.peer[ID_C].entries_sent, 3);
	assert_int_equal(st.peer[ID_C].msgs_sent, 7);
	assert_int_equal(st.batch_max, 5);
	assert_int_equal(int_reply("XLEN rc:inbox:%d", ID_C), 3);
	inbox_destroy(ib);
	free(msg);
}

/* Waits until node id's lease exists; false if it does not in time. */
static bool wait_lease(int id, int timeout_ms)
{
	uint64_t t0 = clock_mono_ms();

	while (int_reply("PTTL rc:node:%d", id) <= 0) {
		if (clock_mono_ms() - t0 > (uint64_t)timeout_ms)
			return false;
		usleep(10 * 1000);
	}
	return true;
}

/* Runs scripts/services.sh CMD redis of the source tree; 0 on success. */
static int services(const char *srcdir, const char *cmd)
{
	char line[PATH_MAX + 64];

	snprintf(line, sizeof(line), "bash '%s/scripts/services.sh' %s redis >/dev/null", srcdir,
		 cmd);
	return system(line);
}

static void test_redis_outage(void **state)
{
	const char *srcdir = getenv("RINGCHAT_SRCDIR");
	const char *port = getenv("RINGCHAT_REDIS_PORT");
	const char *sock = getenv("RINGCHAT_REDIS_SOCKET");
	char want_sock[PATH_MAX + 32], real_a[PATH_MAX], real_b[PATH_MAX];
	struct cluster_bus *a, *b;
	struct cluster_bus_stats sa;
	int down;

	(void)state;
	/* only the Redis of this tree's services.sh may be stopped */
	snprintf(want_sock, sizeof(want_sock), "%s/var/run/redis.sock", srcdir ? srcdir : "");
	if (!srcdir || !port || !port[0] || !realpath(want_sock, real_a) ||
	    !realpath(sock, real_b) || strcmp(real_a, real_b) != 0) {
		printf("outage test skipped: needs RINGCHAT_SRCDIR, RINGCHAT_REDIS_PORT and the "
		       "Redis of that tree's scripts/services.sh\n");
		skip();
	}
	rec_init(&ra);
	rec_init(&rb);
	assert_int_equal(start_bus(&a, ID_A, &ra), 0);
	assert_int_equal(start_bus(&b, ID_B, &rb), 0);
	send_range(a, ID_B, 0, 50);
	assert_int_equal(rec_wait_msgs(&rb, 50, 5000), 50);

	redis_stopped_in = srcdir; /* the teardown starts it if we fail */
	assert_int_equal(services(srcdir, "stop"), 0);
	down = rec_wait_count(&ra, &ra.redis_down, 1, 5000);
	if (down < 1)
		fail_msg("no redis_state(false) within 5 s of the stop");
	/* sends during the outage queue up */
	send_range(a, ID_B, 50, 200);
	cluster_bus_stats(a, &sa);
	assert_int_equal(sa.inbox.queued_msgs, 200);
	assert_false(sa.redis_up);
	/* one report per outage, not one per failure */
	usleep(300 * 1000);
	assert_int_equal(ra.redis_down, 1);
	assert_int_equal(services(srcdir, "start"), 0);
	redis_stopped_in = NULL;

	/* Redis came back empty (no persistence): leases and the group are
	 * re-created, the queue drains */
	assert_int_equal(rec_wait_msgs(&rb, 250, 30000), 250);
	check_msgs(&rb, 0, ID_A, 0, 250);
	assert_int_equal(rec_wait_count(&ra, &ra.redis_up, 1, 5000), 1);
	/* a counts a send once Redis answered, which may be after b had it */
	for (uint64_t t0 = clock_mono_ms(); clock_mono_ms() - t0 < 5000; usleep(5 * 1000)) {
		cluster_bus_stats(a, &sa);
		if (sa.inbox.queued_msgs == 0)
			break;
	}
	assert_int_equal(sa.inbox.queued_msgs, 0);
	assert_int_equal(sa.inbox.enobufs, 0);
	assert_true(sa.lease_held);
	/* both leases are back within a heartbeat or two of the flush */
	assert_true(wait_lease(ID_A, 2000));
	assert_true(wait_lease(ID_B, 2000));
	stop_bus(&a);
	stop_bus(&b);
	assert_int_equal(rb.n, 250);
	rec_free(&ra);
	rec_free(&rb);
}

int main(void)
{
	const char *socket = getenv("RINGCHAT_REDIS_SOCKET");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_burst_arrives_in_order_batched, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restarted_receiver_gets_queued, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_entry_is_skipped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bound_and_one_entry_per_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_big_batch_is_cut, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_redis_outage, setup, teardown),
	};
	redisReply *r;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	log_min_level = getenv("TEST_DEBUG") ? LOG_DEBUG : LOG_WARN;
	if (!socket || !socket[0]) {
		printf("RINGCHAT_REDIS_SOCKET not set (scripts/test.sh sets it): skipped\n");
		return SKIP;
	}
	config_defaults(&base);
	snprintf(base.redis_socket, sizeof(base.redis_socket), "%s", socket);
	kv = kv_open(&base);
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
