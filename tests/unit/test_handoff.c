/*
 * test_handoff.c - the I/O thread ↔ worker lanes: which lane a
 * connection uses, that a wake-up is sent only on the sleeping →
 * notified transition, that a worker blocked on its futex is woken by
 * work and by a stop kick, and a two-thread run in which the "ring" side
 * sleeps on its eventfd between batches and must never miss a reply
 * (a lost wake-up would leave it blocked until its bounded poll fails).
 *
 * RINGCHAT_TSAN=1 shrinks the two-thread run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/clock.h"
#include "ringchat/counters.h"
#include "ringchat/handoff.h"

static uint64_t worker_wakeups(void)
{
	return atomic_load(&counters.worker_wakeups);
}

static bool fd_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

static void test_lane_for_conn(void **state)
{
	struct handoff h;

	(void)state;
	assert_int_equal(handoff_init(&h, 3, 4), 0);
	assert_ptr_equal(handoff_lane_for(&h, CONN_REF(0, 9)), &h.lanes[0]);
	assert_ptr_equal(handoff_lane_for(&h, CONN_REF(4, 1)), &h.lanes[1]);
	assert_ptr_equal(handoff_lane_for(&h, CONN_REF(5, 77)), &h.lanes[2]);
	handoff_destroy(&h);
}

static void test_worker_woken_only_when_sleeping(void **state)
{
	struct handoff h;
	struct handoff_lane *l;
	struct in_msg *m;

	(void)state;
	assert_int_equal(handoff_init(&h, 1, 2), 0);
	l = &h.lanes[0];

	/* awake worker: the work is queued, no wake-up */
	uint64_t before = worker_wakeups();

	assert_true(handoff_submit(l, calloc(1, sizeof(struct in_msg))));
	handoff_flush_wakes(&h);
	assert_int_equal(worker_wakeups(), before);

	/* sleeping worker: one wake-up, and the flag is consumed */
	atomic_store(&l->sleeping, 1);
	assert_true(handoff_submit(l, calloc(1, sizeof(struct in_msg))));
	handoff_flush_wakes(&h);
	assert_int_equal(worker_wakeups(), before + 1);
	assert_int_equal(atomic_load(&l->sleeping), 0);
	/* nothing new: a second flush wakes nobody */
	handoff_flush_wakes(&h);
	assert_int_equal(worker_wakeups(), before + 1);

	/* full queue: refused, and the caller keeps the message */
	m = calloc(1, sizeof(*m));
	assert_false(handoff_submit(l, m));
	free(m);
	handoff_destroy(&h); /* frees the two queued messages */
}

struct sleeper {
	struct handoff_lane *l;
	_Atomic uint64_t slept_ms; /* UINT64_MAX until the wait returned */
};

/* The worker loop's sleep, reduced: announce, fence, re-check, wait up
 * to 10 s. */
static void *sleep_once(void *arg)
{
	struct sleeper *s = arg;
	uint64_t t0 = clock_mono_ms();

	atomic_store(&s->l->sleeping, 1);
	atomic_thread_fence(memory_order_seq_cst);
	if (!spsc_size(&s->l->in))
		handoff_worker_wait(s->l, 10000);
	atomic_store(&s->l->sleeping, 0);
	atomic_store(&s->slept_ms, clock_mono_ms() - t0);
	return NULL;
}

/* A blocked worker returns at once (not at its 10 s timeout) when it is
 * given work, and when it is kicked to stop. */
static void test_blocked_worker_woken(void **state)
{
	struct handoff h;
	struct sleeper s;
	pthread_t t;

	(void)state;
	assert_int_equal(handoff_init(&h, 1, 4), 0);
	for (int round = 0; round < 2; round++) {
		s.l = &h.lanes[0];
		atomic_store(&s.slept_ms, UINT64_MAX);
		assert_int_equal(pthread_create(&t, NULL, sleep_once, &s), 0);
		/* wait (bounded) until it announced the sleep, then give it a
		 * moment to enter the futex: either order must wake it */
		for (int i = 0; i < 5000 && !atomic_load(&h.lanes[0].sleeping); i++)
			usleep(1000);
		assert_int_equal(atomic_load(&h.lanes[0].sleeping), 1);
		usleep(20000);
		if (round == 0) {
			assert_true(handoff_submit(&h.lanes[0], calloc(1, sizeof(struct in_msg))));
			handoff_flush_wakes(&h);
		} else {
			handoff_kick_worker(&h.lanes[0]);
		}
		pthread_join(t, NULL);
		assert_true(atomic_load(&s.slept_ms) < 5000);
		free(spsc_pop(&h.lanes[0].in)); /* round 0's message */
	}
	handoff_destroy(&h);
}

static void test_ring_sleep_sees_pending_reply(void **state)
{
	struct handoff h;
	struct out_msg *o = calloc(1, sizeof(*o));

	(void)state;
	assert_int_equal(handoff_init(&h, 2, 4), 0);
	assert_true(handoff_ring_sleep(&h)); /* nothing queued: may block */
	handoff_send_out(&h, &h.lanes[1], o);
	assert_true(fd_readable(h.ring_wake_fd)); /* it was asleep: woken */
	assert_int_equal(atomic_load(&h.ring_sleeping), 0);
	handoff_ring_drain_wake(&h);
	assert_false(fd_readable(h.ring_wake_fd));

	/* a reply already queued: the ring must not block */
	assert_true(handoff_out_pending(&h));
	assert_false(handoff_ring_sleep(&h));
	assert_int_equal(atomic_load(&h.ring_sleeping), 0);
	free(spsc_pop(&h.lanes[1].out));
	assert_false(handoff_out_pending(&h));
	handoff_destroy(&h);
}

struct sender {
	struct handoff *h;
	uint32_t n;
};

static void *send_many(void *arg)
{
	struct sender *s = arg;

	for (uint32_t i = 0; i < s->n; i++) {
		struct out_msg *o = malloc(sizeof(*o));

		o->conn = i;
		o->flags = 0;
		o->len = 0;
		handoff_send_out(s->h, &s->h->lanes[0], o);
		if (i % 64 == 0)
			usleep(50); /* let the ring fall asleep now and then */
	}
	return NULL;
}

static void test_no_lost_wakeup(void **state)
{
	struct handoff h;
	struct sender s = { &h, getenv("RINGCHAT_TSAN") ? 5000 : 50000 };
	uint32_t next = 0;
	pthread_t t;

	(void)state;
	assert_int_equal(handoff_init(&h, 1, 8), 0);
	assert_int_equal(pthread_create(&t, NULL, send_many, &s), 0);
	while (next < s.n) {
		struct out_msg *o;

		while ((o = spsc_pop(&h.lanes[0].out))) {
			assert_int_equal(o->conn, next);
			next++;
			free(o);
		}
		if (next == s.n)
			break;
		if (handoff_ring_sleep(&h)) {
			struct pollfd p = { .fd = h.ring_wake_fd, .events = POLLIN };

			/* a lost wake-up leaves us here with the sender done */
			if (poll(&p, 1, 5000) != 1)
				fail_msg("not woken with %u of %u replies taken", next, s.n);
			handoff_ring_awake(&h);
			handoff_ring_drain_wake(&h);
		}
	}
	pthread_join(t, NULL);
	handoff_destroy(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lane_for_conn),
	    cmocka_unit_test(test_worker_woken_only_when_sleeping),
	    cmocka_unit_test(test_blocked_worker_woken),
	    cmocka_unit_test(test_ring_sleep_sees_pending_reply),
	    cmocka_unit_test(test_no_lost_wakeup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
