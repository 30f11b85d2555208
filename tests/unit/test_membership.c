/*
 * test_membership.c - the node_id lease and the peer events against a
 * real Redis: acquire / conflict with the holder's info / expiry after the
 * TTL / clean release frees the id at once / heartbeats keep it for more
 * than 3 TTLs / a stolen lease is reported once / a lease Redis lost is
 * re-created / node_up, node_down and restart events, driven by hand and
 * between two cluster threads in this process.
 *
 * Needs RINGCHAT_REDIS_SOCKET (scripts/test.sh sets it from
 * scripts/services.sh); without a reachable server it exits 77 (skip).
 * Uses node ids 28..31, whose keys it deletes first: do not point it at
 * the Redis of a cluster that uses them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/clock.h"
#include "ringchat/cluster_bus.h"
#include "ringchat/config.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"
#include "ringchat/membership.h"

#define SKIP 77
#define ID_A 30
#define ID_B 31
#define SHORT_TTL_MS 600

static struct config base;
static struct kv *kv;

/* Events seen, in order, as short strings: "up 31", "down 31", "lost". */
struct rec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char ev[64][32];
	int n;
	struct node_info last_up;
};

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
}

static void rec_add(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rec_add(struct rec *r, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&r->lock);
	if (r->n < 64) {
		va_start(ap, fmt);
		vsnprintf(r->ev[r->n++], sizeof(r->ev[0]), fmt, ap);
		va_end(ap);
	}
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* Waits until event number idx (0-based) exists; returns it or fails. */
static const char *rec_wait(struct rec *r, int idx, int timeout_ms)
{
	struct timespec until;
	const char *ev = NULL;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&r->lock);
	while (r->n <= idx)
		if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
			break;
	if (r->n > idx)
		ev = r->ev[idx];
	pthread_mutex_unlock(&r->lock);
	if (!ev)
		fail_msg("event %d did not come within %d ms", idx, timeout_ms);
	return ev;
}

static int rec_count(struct rec *r)
{
	int n;

	pthread_mutex_lock(&r->lock);
	n = r->n;
	pthread_mutex_unlock(&r->lock);
	return n;
}

static void on_up(void *ctx, int id, const struct node_info *info)
{
	struct rec *r = ctx;

	pthread_mutex_lock(&r->lock);
	r->last_up = *info;
	pthread_mutex_unlock(&r->lock);
	rec_add(r, "up %d", id);
}

static void on_down(void *ctx, int id)
{
	rec_add(ctx, "down %d", id);
}

static void on_lost(void *ctx)
{
	rec_add(ctx, "lost");
}

static const struct membership_ops rec_ops = {
    .node_up = on_up, .node_down = on_down, .lease_lost = on_lost};

static void cfg_for(struct config *c, int id, int ttl_ms)
{
	*c = base;
	c->node_id = id;
	c->node_ttl_ms = ttl_ms;
}

static void info_for(struct node_info *s, const char *addr)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->addr, sizeof(s->addr), "%s", addr);
	snprintf(s->admin, sizeof(s->admin), "127.0.0.1:7799");
}

static struct membership *mk(int id, int ttl_ms, const char *addr, struct rec *r)
{
	struct config c;
	struct node_info s;
	struct membership *m;

	cfg_for(&c, id, ttl_ms);
	info_for(&s, addr);
	m = membership_create(&c, &s, r ? &rec_ops : NULL, r);
	assert_non_null(m);
	return m;
}

static void del_keys(void)
{
	redisReply *r = kv_cmd(kv, "DEL rc:node:28 rc:node:29 rc:node:30 rc:node:31");

	assert_non_null(r);
	freeReplyObject(r);
}

static long long pttl(int id)
{
	redisReply *r = kv_cmd(kv, "PTTL rc:node:%d", id);
	long long v;

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

static int setup(void **state)
{
	(void)state;
	del_keys();
	return 0;
}

static void test_acquire_conflict_names_holder(void **state)
{
	struct membership *a = mk(ID_A, 5000, "127.0.0.1:7001", NULL);
	struct membership *b = mk(ID_A, 5000, "127.0.0.1:7002", NULL);
	struct node_info holder;

	(void)state;
	assert_int_equal(membership_acquire(a, kv, NULL), 0);
	assert_true(pttl(ID_A) > 4000);
	memset(&holder, 0xab, sizeof(holder));
	assert_int_equal(membership_acquire(b, kv, &holder), -EADDRINUSE);
	assert_int_equal(holder.id, ID_A);
	assert_string_equal(holder.addr, "127.0.0.1:7001");
	assert_string_equal(holder.admin, "127.0.0.1:7799");
	assert_string_equal(holder.link, "");
	assert_true(holder.token == membership_self(a)->token);
	assert_true(holder.token != membership_self(b)->token);
	assert_true(holder.start_ms == membership_self(a)->start_ms);
	assert_int_equal(holder.pid, getpid());
	{
		char line[512], want[512];
		struct node_info h = holder;

		h.start_ms = 1796392528040ull; /* 2026-12-04T13:55:28.040Z */
		membership_format_holder(line, sizeof(line), &h, 5000);
		snprintf(want, sizeof(want),
			 "node_id 30 is held by a live node: 127.0.0.1:7001 (admin "
			 "127.0.0.1:7799, pid %d, started 2026-12-04T13:55:28.040Z); it is free "
			 "when that node stops, or 5000 ms after it died",
			 (int)getpid());
		assert_string_equal(line, want);
	}
	/* the loser changed nothing: the holder still refreshes */
	assert_int_equal(membership_tick(a, kv), 0);
	assert_int_equal(membership_release(b, kv), 0);
	assert_int_equal(membership_release(a, kv), 1);
	membership_destroy(a);
	membership_destroy(b);
}

static void test_lease_expires_after_ttl(void **state)
{
	struct membership *a = mk(ID_A, SHORT_TTL_MS, "127.0.0.1:7001", NULL);
	struct membership *b = mk(ID_A, SHORT_TTL_MS, "127.0.0.1:7002", NULL);
	uint64_t t0, waited;
	int rc;

	(void)state;
	assert_int_equal(membership_acquire(a, kv, NULL), 0);
	t0 = clock_mono_ms();
	assert_true(membership_lease_valid(a));
	/* a "crashes": no heartbeat, no release */
	while ((rc = membership_acquire(b, kv, NULL)) == -EADDRINUSE && clock_mono_ms() - t0 < 3000)
		usleep(20 * 1000);
	waited = clock_mono_ms() - t0;
	assert_int_equal(rc, 0);
	assert_true(waited >= SHORT_TTL_MS - 50);
	assert_true(waited < SHORT_TTL_MS + 500);
	assert_false(membership_lease_valid(a));
	assert_int_equal(membership_release(b, kv), 1);
	membership_destroy(a);
	membership_destroy(b);
}

static void test_release_frees_id_at_once(void **state)
{
	struct membership *a = mk(ID_A, 5000, "127.0.0.1:7001", NULL);
	struct membership *b = mk(ID_A, 5000, "127.0.0.1:7002", NULL);

	(void)state;
	assert_int_equal(membership_acquire(a, kv, NULL), 0);
	assert_int_equal(membership_release(a, kv), 1);
	assert_int_equal(pttl(ID_A), -2);
	assert_int_equal(membership_acquire(b, kv, NULL), 0);
	/* a's release was its last word: it cannot delete b's lease */
	assert_int_equal(membership_release(a, kv), 0);
	assert_true(pttl(ID_A) > 0);
	assert_int_equal(membership_release(b, kv), 1);
	membership_destroy(a);
	membership_destroy(b);
}

static void test_stolen_lease_reported_once(void **state)
{
	struct rec r;
	struct membership *a, *b = mk(ID_A, 5000, "127.0.0.1:7002", NULL);
	redisReply *rep;

	(void)state;
	rec_init(&r);
	a = mk(ID_A, 5000, "127.0.0.1:7001", &r);
	assert_int_equal(membership_acquire(a, kv, NULL), 0);
	/* as if a's lease ran out while a was cut off and b started */
	rep = kv_cmd(kv, "DEL rc:node:%d", ID_A);
	assert_non_null(rep);
	freeReplyObject(rep);
	assert_int_equal(membership_acquire(b, kv, NULL), 0);
	assert_int_equal(membership_tick(a, kv), -ESTALE);
	assert_int_equal(rec_count(&r), 1);
	assert_string_equal(rec_wait(&r, 0, 0), "lost");
	assert_int_equal(membership_tick(a, kv), -ESTALE);
	assert_int_equal(rec_count(&r), 1);
	/* the thief keeps its lease: a neither refreshed nor deletes it */
	assert_int_equal(membership_release(a, kv), 0);
	assert_int_equal(membership_tick(b, kv), 0);
	assert_int_equal(membership_release(b, kv), 1);
	membership_destroy(a);
	membership_destroy(b);
}

static void test_lease_gone_from_redis_is_recreated(void **state)
{
	struct membership *a = mk(ID_A, 5000, "127.0.0.1:7001", NULL);
	redisReply *rep;

	(void)state;
	assert_int_equal(membership_acquire(a, kv, NULL), 0);
	/* what a Redis restart without persistence does */
	rep = kv_cmd(kv, "DEL rc:node:%d", ID_A);
	assert_non_null(rep);
	freeReplyObject(rep);
	membership_set_link(a, "127.0.0.1:7900");
	assert_int_equal(membership_tick(a, kv), 0);
	assert_true(pttl(ID_A) > 4000);
	rep = kv_cmd(kv, "HGET rc:node:%d link", ID_A);
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_string_equal(rep->str, "127.0.0.1:7900");
	freeReplyObject(rep);
	assert_int_equal(membership_release(a, kv), 1);
	membership_destroy(a);
}

/* Events driven tick by tick, so their order is exact. */
static void test_events_by_hand(void **state)
{
	struct rec r;
	struct membership *a, *b, *b2;
	struct node_info info;

	(void)state;
	rec_init(&r);
	a = mk(ID_A, 5000, "127.0.0.1:7001", &r);
	b = mk(ID_B, 5000, "127.0.0.1:7002", NULL);
	assert_int_equal(membership_acquire(a, kv, NULL), 0);
	assert_int_equal(membership_tick(a, kv), 0);
	assert_false(membership_is_up(a, ID_B));
	assert_false(membership_is_up(a, ID_A)); /* never our own id */
	assert_int_equal(membership_peer(a, ID_B, &info), -ENOENT);

	assert_int_equal(membership_acquire(b, kv, NULL), 0);
	assert_int_equal(membership_tick(a, kv), 0);
	assert_string_equal(rec_wait(&r, 0, 0), "up 31");
	assert_true(membership_is_up(a, ID_B));
	assert_int_equal(membership_up_mask(a) & ~(1u << ID_B) & (0xfu << 28), 0);
	assert_int_equal(membership_peer(a, ID_B, &info), 0);
	assert_string_equal(info.addr, "127.0.0.1:7002");
	assert_true(info.token == membership_self(b)->token);
	assert_true(info.start_ms == membership_self(b)->start_ms);

	/* nothing changed: no event */
	assert_int_equal(membership_tick(a, kv), 0);
	assert_int_equal(rec_count(&r), 1);

	/* b publishes its link address: up again, same token */
	membership_set_link(b, "127.0.0.1:7902");
	assert_int_equal(membership_tick(b, kv), 0);
	assert_int_equal(membership_tick(a, kv), 0);
	assert_string_equal(rec_wait(&r, 1, 0), "up 31");
	assert_string_equal(r.last_up.link, "127.0.0.1:7902");

	/* b restarts between two of a's heartbeats: down, then up */
	assert_int_equal(membership_release(b, kv), 1);
	b2 = mk(ID_B, 5000, "127.0.0.1:7003", NULL);
	assert_int_equal(membership_acquire(b2, kv, NULL), 0);
	assert_int_equal(membership_tick(a, kv), 0);
	assert_string_equal(rec_wait(&r, 2, 0), "down 31");
	assert_string_equal(rec_wait(&r, 3, 0), "up 31");
	assert_true(r.last_up.token == membership_self(b2)->token);
	assert_string_equal(r.last_up.addr, "127.0.0.1:7003");

	/* clean stop: down at the next heartbeat */
	assert_int_equal(membership_release(b2, kv), 1);
	assert_int_equal(membership_tick(a, kv), 0);
	assert_string_equal(rec_wait(&r, 4, 0), "down 31");
	assert_false(membership_is_up(a, ID_B));
	assert_int_equal(rec_count(&r), 5);

	assert_int_equal(membership_release(a, kv), 1);
	membership_destroy(a);
	membership_destroy(b);
	membership_destroy(b2);
}

static void bus_up(void *ctx, int id, const struct node_info *info)
{
	on_up(ctx, id, info);
}

static void bus_down(void *ctx, int id)
{
	on_down(ctx, id);
}

static int start_bus(struct cluster_bus **out, int id, int ttl_ms, struct rec *r,
		     struct node_info *holder)
{
	static const struct cluster_bus_ops ops = {.node_up = bus_up, .node_down = bus_down};
	struct config c;
	struct node_info s;

	cfg_for(&c, id, ttl_ms);
	info_for(&s, "127.0.0.1:7010");
	return cluster_bus_start(out, &c, &s, &ops, r, holder);
}

static void test_heartbeat_keeps_lease(void **state)
{
	struct cluster_bus *a, *b;
	struct cluster_bus_stats st;
	struct node_info holder, self;

	(void)state;
	assert_int_equal(start_bus(&a, ID_A, SHORT_TTL_MS, NULL, NULL), 0);
	cluster_bus_self(a, &self);
	/* time passing is what is tested: more than 3 TTLs */
	usleep(4 * SHORT_TTL_MS * 1000);
	assert_true(pttl(ID_A) > 0);
	assert_int_equal(start_bus(&b, ID_A, SHORT_TTL_MS, NULL, &holder), -EADDRINUSE);
	assert_null(b);
	assert_true(holder.token == self.token);
	assert_string_equal(holder.addr, "127.0.0.1:7010");
	cluster_bus_stats(a, &st);
	/* one heartbeat per ttl/5 = 120 ms: about 20 in 2.4 s */
	assert_true(st.heartbeats >= 12);
	assert_int_equal(st.heartbeat_failures, 0);
	assert_true(st.redis_up);
	assert_true(st.lease_held);
	cluster_bus_stop(a);
	/* clean stop deregistered: the id is free at once */
	assert_int_equal(pttl(ID_A), -2);
	assert_int_equal(start_bus(&b, ID_A, SHORT_TTL_MS, NULL, NULL), 0);
	cluster_bus_stop(b);
}

static void test_bus_events(void **state)
{
	struct rec ra, rb;
	struct cluster_bus *a, *b;
	struct node_info info;
	uint64_t t0;

	(void)state;
	rec_init(&ra);
	rec_init(&rb);
	assert_int_equal(start_bus(&a, ID_A, SHORT_TTL_MS, &ra, NULL), 0);
	assert_int_equal(start_bus(&b, ID_B, SHORT_TTL_MS, &rb, NULL), 0);
	assert_string_equal(rec_wait(&ra, 0, 2000), "up 31");
	assert_string_equal(rec_wait(&rb, 0, 2000), "up 30");
	assert_true(cluster_bus_is_up(a, ID_B));
	assert_true(cluster_bus_is_up(b, ID_A));
	assert_int_equal(cluster_bus_peer(a, ID_B, &info), 0);
	assert_string_equal(info.addr, "127.0.0.1:7010");

	cluster_bus_set_link(b, "127.0.0.1:7911");
	assert_string_equal(rec_wait(&ra, 1, 2000), "up 31");
	assert_int_equal(cluster_bus_peer(a, ID_B, &info), 0);
	assert_string_equal(info.link, "127.0.0.1:7911");

	/* clean stop of b: a hears of it within about one heartbeat */
	t0 = clock_mono_ms();
	cluster_bus_stop(b);
	assert_string_equal(rec_wait(&ra, 2, 2000), "down 31");
	assert_true(clock_mono_ms() - t0 < SHORT_TTL_MS);
	assert_false(cluster_bus_is_up(a, ID_B));
	cluster_bus_stop(a);
}

static void test_bus_start_without_redis(void **state)
{
	struct config c;
	struct node_info s, holder;
	struct cluster_bus *b = (void *)1;

	(void)state;
	cfg_for(&c, ID_A, 5000);
	snprintf(c.redis_socket, sizeof(c.redis_socket), "/nonexistent/redis.sock");
	info_for(&s, "127.0.0.1:7010");
	assert_int_equal(cluster_bus_start(&b, &c, &s, NULL, NULL, &holder), -ENOTCONN);
	assert_null(b);
}

int main(void)
{
	const char *socket = getenv("RINGCHAT_REDIS_SOCKET");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_acquire_conflict_names_holder, setup),
	    cmocka_unit_test_setup(test_lease_expires_after_ttl, setup),
	    cmocka_unit_test_setup(test_release_frees_id_at_once, setup),
	    cmocka_unit_test_setup(test_stolen_lease_reported_once, setup),
	    cmocka_unit_test_setup(test_lease_gone_from_redis_is_recreated, setup),
	    cmocka_unit_test_setup(test_events_by_hand, setup),
	    cmocka_unit_test_setup(test_heartbeat_keeps_lease, setup),
	    cmocka_unit_test_setup(test_bus_events, setup),
	    cmocka_unit_test_setup(test_bus_start_without_redis, setup),
	};
	redisReply *r;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	log_min_level = LOG_WARN;
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
