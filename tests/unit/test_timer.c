/*
 * test_timer.c - the ring's millisecond timers: the timer queue (timer.c)
 * driven by a fake clock, and a real ring firing a 5 ms timer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringchat/clock.h"
#include "ringchat/config.h"
#include "ringchat/ring.h"
#include "ringchat/timer.h"

/* What fired, in order, with the fake clock at the time. */
struct log {
	int who[1024];
	uint64_t at[1024];
	int n;
	uint64_t now;
};

struct tctx {
	struct log *log;
	int id;
	struct timer_heap *h;
	struct ring_timer *other; /* cancelled / re-armed by some callbacks */
};

static void record(void *ctx, struct ring_timer *t)
{
	struct tctx *c = ctx;

	(void)t;
	assert_true(c->log->n < 1024);
	c->log->who[c->log->n] = c->id;
	c->log->at[c->log->n] = c->log->now;
	c->log->n++;
}

static void test_fires_in_deadline_order(void **state)
{
	struct timer_heap h;
	struct ring_timer t[4];
	struct log log = { 0 };
	struct tctx c[4];
	uint64_t due[4] = { 30, 10, 20, 10 };

	(void)state;
	memset(t, 0, sizeof(t));
	timer_heap_init(&h);
	assert_int_equal(timer_heap_next(&h), TIMER_NONE);
	for (int i = 0; i < 4; i++) {
		c[i] = (struct tctx){ &log, i, &h, NULL };
		assert_int_equal(timer_heap_arm(&h, &t[i], due[i], record, &c[i]), 0);
		assert_true(ring_timer_armed(&t[i]));
	}
	assert_int_equal(timer_heap_next(&h), 10);

	log.now = 9;
	assert_int_equal(timer_heap_run(&h, log.now), 0); /* nothing early */
	log.now = 10;
	assert_int_equal(timer_heap_run(&h, log.now), 2);
	/* equal deadlines fire in the order they were armed */
	assert_int_equal(log.who[0], 1);
	assert_int_equal(log.who[1], 3);
	assert_false(ring_timer_armed(&t[1]));
	assert_int_equal(timer_heap_next(&h), 20);

	log.now = 100; /* a late run fires everything due, earliest first */
	assert_int_equal(timer_heap_run(&h, log.now), 2);
	assert_int_equal(log.who[2], 2);
	assert_int_equal(log.who[3], 0);
	assert_int_equal(timer_heap_next(&h), TIMER_NONE);
	timer_heap_destroy(&h);
}

static void test_cancel_and_rearm(void **state)
{
	struct timer_heap h;
	struct ring_timer a = { 0 }, b = { 0 }, never = { 0 };
	struct log log = { 0 };
	struct tctx ca = { &log, 1, NULL, NULL }, cb = { &log, 2, NULL, NULL };

	(void)state;
	timer_heap_init(&h);
	timer_heap_cancel(&h, &never); /* not armed: nothing happens */
	assert_int_equal(timer_heap_arm(&h, &a, 50, record, &ca), 0);
	assert_int_equal(timer_heap_arm(&h, &b, 60, record, &cb), 0);
	timer_heap_cancel(&h, &a);
	assert_false(ring_timer_armed(&a));
	assert_int_equal(timer_heap_next(&h), 60);
	/* re-arming an armed timer moves it, both earlier and later */
	assert_int_equal(timer_heap_arm(&h, &b, 5, record, &cb), 0);
	assert_int_equal(timer_heap_next(&h), 5);
	assert_int_equal(timer_heap_arm(&h, &b, 70, record, &cb), 0);
	assert_int_equal(timer_heap_next(&h), 70);
	assert_int_equal(h.n, 1);

	log.now = 69;
	assert_int_equal(timer_heap_run(&h, log.now), 0);
	log.now = 1000;
	assert_int_equal(timer_heap_run(&h, log.now), 1);
	assert_int_equal(log.n, 1);
	assert_int_equal(log.who[0], 2); /* the cancelled one never fired */
	timer_heap_destroy(&h);
}

/* Re-arms itself for "now": must not make timer_heap_run loop. */
static void rearm_now(void *ctx, struct ring_timer *t)
{
	struct tctx *c = ctx;

	record(ctx, t);
	assert_int_equal(timer_heap_arm(c->h, t, c->log->now, rearm_now, ctx), 0);
}

/* Cancels c->other, which is due at the same time. */
static void cancel_other(void *ctx, struct ring_timer *t)
{
	struct tctx *c = ctx;

	record(ctx, t);
	timer_heap_cancel(c->h, c->other);
}

static void test_callbacks_may_rearm_and_cancel(void **state)
{
	struct timer_heap h;
	struct ring_timer self = { 0 }, killer = { 0 }, victim = { 0 };
	struct log log = { 0 };
	struct tctx cs = { &log, 1, &h, NULL };
	struct tctx ck = { &log, 2, &h, &victim };
	struct tctx cv = { &log, 3, &h, NULL };

	(void)state;
	timer_heap_init(&h);
	assert_int_equal(timer_heap_arm(&h, &self, 10, rearm_now, &cs), 0);
	log.now = 10;
	assert_int_equal(timer_heap_run(&h, log.now), 1);
	assert_true(ring_timer_armed(&self)); /* waits for the next run */
	assert_int_equal(timer_heap_run(&h, log.now), 1);
	assert_int_equal(log.n, 2);
	timer_heap_cancel(&h, &self);

	assert_int_equal(timer_heap_arm(&h, &killer, 20, cancel_other, &ck), 0);
	assert_int_equal(timer_heap_arm(&h, &victim, 20, record, &cv), 0);
	log.now = 25;
	assert_int_equal(timer_heap_run(&h, log.now), 1);
	assert_int_equal(log.who[2], 2);
	assert_int_equal(log.n, 3); /* the victim was due but cancelled first */
	assert_false(ring_timer_armed(&victim));
	timer_heap_destroy(&h);
}

/* Random arms, re-arms and cancels against a plain model. */
static void test_random_against_model(void **state)
{
	enum { N = 500 };
	static struct ring_timer t[N];
	static struct tctx c[N];
	static bool armed[N];
	static uint64_t due[N];
	struct timer_heap h;
	struct log log = { 0 };
	uint64_t now = 0, fired_total = 0;
	unsigned seed = 12345;

	(void)state;
	memset(t, 0, sizeof(t));
	timer_heap_init(&h);
	for (int round = 0; round < 200; round++) {
		for (int k = 0; k < 20; k++) {
			int i = (int)(rand_r(&seed) % N);

			if (rand_r(&seed) % 4 == 0) {
				timer_heap_cancel(&h, &t[i]);
				armed[i] = false;
			} else {
				due[i] = now + 1 + (uint64_t)(rand_r(&seed) % 100);
				c[i] = (struct tctx){ &log, i, &h, NULL };
				assert_int_equal(timer_heap_arm(&h, &t[i], due[i], record, &c[i]), 0);
				armed[i] = true;
			}
		}
		/* next is the model's minimum */
		uint64_t min = TIMER_NONE;

		for (int i = 0; i < N; i++)
			if (armed[i] && due[i] < min)
				min = due[i];
		assert_int_equal(timer_heap_next(&h), min);

		now += (uint64_t)(rand_r(&seed) % 30);
		log.now = now;
		log.n = 0;
		timer_heap_run(&h, now);
		for (int k = 0; k < log.n; k++) {
			int i = log.who[k];

			assert_true(armed[i]);
			assert_true(due[i] <= now);
			if (k)
				assert_true(due[log.who[k - 1]] <= due[i]);
			armed[i] = false;
		}
		fired_total += (uint64_t)log.n;
		for (int i = 0; i < N; i++)
			assert_true(!armed[i] || due[i] > now); /* nothing due left behind */
	}
	assert_true(fired_total > 100);
	timer_heap_destroy(&h);
}

/* ---- a real ring --------------------------------------------------------- */

struct fire {
	uint64_t at_ms;
	int count;
};

static void on_fire(void *ctx, struct ring_timer *t)
{
	struct fire *f = ctx;

	(void)t;
	f->at_ms = clock_mono_ms();
	f->count++;
}

static void test_ring_fires_5ms_timer(void **state)
{
	static struct config cfg;
	struct ring_timer t5 = { 0 }, t1s = { 0 }, cancelled = { 0 };
	struct fire f5 = { 0 }, f1s = { 0 }, fc = { 0 };
	struct ring *r;
	uint64_t start;

	(void)state;
	config_defaults(&cfg);
	r = ring_create(&cfg);
	if (!r)
		skip(); /* no io_uring here */
	start = ring_now_ms(r);
	/* the later timer is armed first: the earliest deadline must win */
	assert_int_equal(ring_timer_arm(r, &t1s, start + 1000, on_fire, &f1s), 0);
	assert_int_equal(ring_timer_arm(r, &t5, start + 5, on_fire, &f5), 0);
	assert_int_equal(ring_timer_arm(r, &cancelled, start + 3, on_fire, &fc), 0);
	ring_timer_cancel(r, &cancelled);
	/* bounded: at most 2 s of iterations, each waiting at most 100 ms */
	for (int i = 0; i < 20 && !f5.count && clock_mono_ms() - start < 2000; i++)
		assert_true(ring_poll(r, 100, NULL));
	assert_int_equal(f5.count, 1);
	assert_true(f5.at_ms >= start + 5);
	assert_true(f5.at_ms - start < 500); /* the 1 s timer did not hold it */
	assert_int_equal(f1s.count, 0);
	assert_int_equal(fc.count, 0);
	assert_true(ring_timer_armed(&t1s));
	ring_destroy(r); /* disarms what is left */
	assert_false(ring_timer_armed(&t1s));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fires_in_deadline_order),
	    cmocka_unit_test(test_cancel_and_rearm),
	    cmocka_unit_test(test_callbacks_may_rearm_and_cancel),
	    cmocka_unit_test(test_random_against_model),
	    cmocka_unit_test(test_ring_fires_5ms_timer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
