/*
 * test_handoff.c - the I/O thread ↔ worker lanes: which lane a
 * connection uses, that a wake-up is written only on the sleeping →
 * notified transition, and a two-thread run in which the "ring" side
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

#include "ringchat/handoff.h"

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

	/* awake worker: the work is queued, no eventfd write */
	assert_true(handoff_submit(l, calloc(1, sizeof(struct in_msg))));
	handoff_flush_wakes(&h);
	assert_false(fd_readable(l->wake_fd));

	/* sleeping worker: one write, and the flag is consumed */
	atomic_store(&l->sleeping, 1);
	assert_true(handoff_submit(l, calloc(1, sizeof(struct in_msg))));
	handoff_flush_wakes(&h);
	assert_true(fd_readable(l->wake_fd));
	assert_int_equal(atomic_load(&l->sleeping), 0);

	/* full queue: refused, and the caller keeps the message */
	m = calloc(1, sizeof(*m));
	assert_false(handoff_submit(l, m));
	free(m);
	handoff_destroy(&h); /* frees the two queued messages */
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
	    cmocka_unit_test(test_ring_sleep_sees_pending_reply),
	    cmocka_unit_test(test_no_lost_wakeup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
