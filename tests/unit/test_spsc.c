/*
 * test_spsc.c - the single-producer single-consumer queue: single-thread
 * semantics, counter wrap-around, and a multi-thread stress run that
 * checks no item is lost, duplicated or reordered.
 *
 * RINGCHAT_TSAN=1 shrinks the stress run (ThreadSanitizer is ~10x slower).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <sched.h>

#include <cmocka.h>

#include "ringchat/spsc.h"

_Static_assert(sizeof(uintptr_t) >= 8, "items pack a producer id above bit 40");

#define ITEM_ID_SHIFT 40
#define ITEM_SEQ_MASK ((UINT64_C(1) << ITEM_ID_SHIFT) - 1)

/* Items are never NULL (NULL means empty): seq is stored plus one. */
static void *item_make(uint64_t id, uint64_t seq)
{
	return (void *)(uintptr_t)((id << ITEM_ID_SHIFT) | (seq + 1));
}

static uint64_t item_id(void *p)
{
	return (uint64_t)(uintptr_t)p >> ITEM_ID_SHIFT;
}

static uint64_t item_seq(void *p)
{
	return ((uint64_t)(uintptr_t)p & ITEM_SEQ_MASK) - 1;
}

/* How many pushes succeed on an empty queue before it reports full. */
static uint32_t fill_count(struct spsc *q)
{
	uint32_t n = 0;

	while (spsc_push(q, item_make(0, n)))
		n++;
	return n;
}

static void test_capacity_rounding(void **state)
{
	(void)state;
	static const struct {
		uint32_t asked, usable;
	} cases[] = {
	    {0, 2}, {1, 2}, {2, 2}, {3, 4}, {5, 8}, {8, 8}, {9, 16}, {1000, 1024}, {1024, 1024},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct spsc q;

		assert_int_equal(spsc_init(&q, cases[i].asked), 0);
		assert_int_equal(fill_count(&q), cases[i].usable);
		assert_int_equal(spsc_size(&q), cases[i].usable);
		/* full stays full, and a refused push leaves the queue as is */
		assert_false(spsc_push(&q, item_make(1, 1)));
		assert_int_equal(spsc_size(&q), cases[i].usable);
		/* one pop makes room for exactly one push */
		assert_ptr_equal(spsc_pop(&q), item_make(0, 0));
		assert_true(spsc_push(&q, item_make(0, cases[i].usable)));
		assert_false(spsc_push(&q, item_make(1, 1)));
		spsc_destroy(&q);
		assert_null(q.slots);
	}
}

static void test_fifo_and_peek(void **state)
{
	(void)state;
	struct spsc q;

	assert_int_equal(spsc_init(&q, 16), 0);
	assert_null(spsc_pop(&q));
	assert_null(spsc_peek(&q));
	assert_int_equal(spsc_size(&q), 0);
	for (uint64_t i = 0; i < 10; i++)
		assert_true(spsc_push(&q, item_make(3, i)));
	assert_int_equal(spsc_size(&q), 10);
	/* peek shows the oldest and leaves it in place */
	assert_ptr_equal(spsc_peek(&q), item_make(3, 0));
	assert_ptr_equal(spsc_peek(&q), item_make(3, 0));
	assert_int_equal(spsc_size(&q), 10);
	for (uint64_t i = 0; i < 10; i++) {
		assert_ptr_equal(spsc_peek(&q), item_make(3, i));
		assert_ptr_equal(spsc_pop(&q), item_make(3, i));
	}
	assert_null(spsc_pop(&q));
	assert_null(spsc_peek(&q));
	assert_int_equal(spsc_size(&q), 0);

	/* interleaved pushes and pops go round the ring many times */
	uint64_t in = 0, out = 0;

	for (int round = 0; round < 1000; round++) {
		int pushes = round % 7 + 1;

		for (int k = 0; k < pushes; k++)
			if (spsc_push(&q, item_make(1, in)))
				in++;
		for (int k = 0; k < (round % 5) + 1; k++) {
			void *p = spsc_pop(&q);

			if (!p)
				break;
			assert_int_equal(item_seq(p), out);
			out++;
		}
		assert_int_equal(spsc_size(&q), in - out);
		assert_true(in - out <= 16);
	}
	spsc_destroy(&q);
}

/* Sets every index as if start items had already gone through. */
static void spsc_age(struct spsc *q, uint32_t start)
{
	atomic_store(&q->head, start);
	atomic_store(&q->tail, start);
	q->head_cache = start;
	q->tail_cache = start;
}

static void test_counter_wraparound(void **state)
{
	(void)state;
	struct spsc q;
	uint64_t in = 0, out = 0;

	assert_int_equal(spsc_init(&q, 8), 0);
	spsc_age(&q, UINT32_MAX - 5);
	assert_null(spsc_pop(&q));
	assert_int_equal(spsc_size(&q), 0);
	/* fill across the wrap: capacity is still 8, not more, not less */
	assert_int_equal(fill_count(&q), 8);
	assert_int_equal(spsc_size(&q), 8);
	assert_true(atomic_load(&q.tail) < 8); /* the counter did wrap */
	for (uint64_t i = 0; i < 8; i++)
		assert_ptr_equal(spsc_pop(&q), item_make(0, i));
	assert_null(spsc_pop(&q));
	assert_int_equal(spsc_size(&q), 0);

	/* and keep streaming through the wrap point with a partly full ring */
	spsc_age(&q, UINT32_MAX - 5);
	for (int round = 0; round < 200; round++) {
		for (int k = 0; k < 3; k++)
			if (spsc_push(&q, item_make(2, in)))
				in++;
		for (int k = 0; k < 2 + (round & 1); k++) {
			void *p = spsc_pop(&q);

			if (!p)
				break;
			assert_int_equal(item_id(p), 2);
			assert_int_equal(item_seq(p), out);
			out++;
		}
		assert_int_equal(spsc_size(&q), in - out);
		assert_true(in - out <= 8);
	}
	assert_true(in > 100);
	spsc_destroy(&q);
}

/* ---- multi-thread stress --------------------------------------------- */

#define STRESS_PRODUCERS 4
#define STRESS_QUEUE_CAP 1024

struct producer {
	struct spsc *q;
	uint64_t id;
	uint64_t count;
	_Atomic uint32_t *finished; /* producers that have pushed everything */
	pthread_t thread;
};

struct consumer {
	struct spsc *qs;
	size_t nq;
	uint64_t per_producer;
	uint64_t got[STRESS_PRODUCERS]; /* next seq expected from each */
	uint64_t errors;
	uint64_t first_bad; /* first wrong item, for the report */
	uint64_t done;	    /* items received */
	_Atomic uint32_t finished;
	pthread_t thread;
};

static uint64_t stress_total(void)
{
	/* ThreadSanitizer makes every atomic access ~10x slower */
	return getenv("RINGCHAT_TSAN") ? 400000 : 4000000;
}

static void *producer_main(void *arg)
{
	struct producer *p = arg;

	for (uint64_t seq = 0; seq < p->count; seq++) {
		void *item = item_make(p->id, seq);

		/* two shared cores, five threads: yield rather than spin
		 * when the consumer is behind */
		while (!spsc_push(p->q, item))
			sched_yield();
	}
	/* release pairs with the consumer's acquire load: all our pushes
	 * are visible once it sees the count. */
	atomic_fetch_add_explicit(p->finished, 1, memory_order_release);
	return NULL;
}

/*
 * Polls every queue in turn. Queue i belongs to producer i, so an item
 * from the wrong producer, a gap or a repeat in its sequence is an error.
 * Alternates peek+pop and plain pop so both paths carry traffic.
 */
static void *consumer_main(void *arg)
{
	struct consumer *c = arg;
	uint64_t done = 0, want = c->per_producer * c->nq;
	unsigned idle = 0;

	while (done < want) {
		/* acquire pairs with the producers' release increment: once
		 * all are finished, a pass that finds nothing means items
		 * were lost, and waiting longer would only hang the test */
		bool all_finished =
		    atomic_load_explicit(&c->finished, memory_order_acquire) == c->nq;
		bool any = false;

		for (size_t i = 0; i < c->nq; i++) {
			for (int burst = 0; burst < 64; burst++) {
				void *peeked = (done & 1) ? spsc_peek(&c->qs[i]) : NULL;
				void *p = spsc_pop(&c->qs[i]);

				if (!p)
					break;
				any = true;
				if ((peeked && peeked != p) || item_id(p) != i ||
				    item_seq(p) != c->got[i]) {
					if (!c->errors)
						c->first_bad = (uint64_t)(uintptr_t)p;
					c->errors++;
				}
				c->got[i] = item_seq(p) + 1;
				done++;
			}
		}
		if (!any && all_finished)
			break;
		if (!any && ++idle > 16) {
			sched_yield();
			idle = 0;
		}
	}
	/* nothing may come after the last expected item */
	for (size_t i = 0; i < c->nq; i++)
		if (spsc_pop(&c->qs[i]))
			c->errors++;
	c->done = done;
	return NULL;
}

static void run_stress(size_t nprod, uint64_t total)
{
	struct spsc qs[STRESS_PRODUCERS];
	struct producer prod[STRESS_PRODUCERS];
	struct consumer cons = {.qs = qs, .nq = nprod, .per_producer = total / nprod};

	assert_true(nprod <= STRESS_PRODUCERS);
	for (size_t i = 0; i < nprod; i++) {
		assert_int_equal(spsc_init(&qs[i], STRESS_QUEUE_CAP), 0);
		prod[i] = (struct producer){
		    .q = &qs[i],
		    .id = i,
		    .count = cons.per_producer,
		    .finished = &cons.finished,
		};
	}
	assert_int_equal(pthread_create(&cons.thread, NULL, consumer_main, &cons), 0);
	for (size_t i = 0; i < nprod; i++)
		assert_int_equal(pthread_create(&prod[i].thread, NULL, producer_main, &prod[i]), 0);
	for (size_t i = 0; i < nprod; i++)
		assert_int_equal(pthread_join(prod[i].thread, NULL), 0);
	assert_int_equal(pthread_join(cons.thread, NULL), 0);

	assert_int_equal(cons.done, cons.per_producer * nprod);
	if (cons.errors)
		fail_msg("%llu bad items, first %#llx", (unsigned long long)cons.errors,
			 (unsigned long long)cons.first_bad);
	for (size_t i = 0; i < nprod; i++) {
		assert_int_equal(cons.got[i], cons.per_producer);
		assert_int_equal(spsc_size(&qs[i]), 0);
		spsc_destroy(&qs[i]);
	}
}

static void test_stress_one_to_one(void **state)
{
	(void)state;
	run_stress(1, stress_total() / 2);
}

static void test_stress_four_queues_one_consumer(void **state)
{
	(void)state;
	run_stress(STRESS_PRODUCERS, stress_total());
}

/* A tiny ring forces the full and empty paths on nearly every call. */
static void test_stress_tiny_ring(void **state)
{
	(void)state;
	struct spsc q;
	struct consumer cons = {.qs = &q, .nq = 1, .per_producer = stress_total() / 20};
	struct producer prod = {
	    .q = &q,
	    .id = 0,
	    .count = cons.per_producer,
	    .finished = &cons.finished,
	};

	assert_int_equal(spsc_init(&q, 2), 0);
	assert_int_equal(pthread_create(&cons.thread, NULL, consumer_main, &cons), 0);
	assert_int_equal(pthread_create(&prod.thread, NULL, producer_main, &prod), 0);
	assert_int_equal(pthread_join(prod.thread, NULL), 0);
	assert_int_equal(pthread_join(cons.thread, NULL), 0);
	assert_int_equal(cons.errors, 0);
	assert_int_equal(cons.done, prod.count);
	assert_int_equal(cons.got[0], prod.count);
	spsc_destroy(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_capacity_rounding),
	    cmocka_unit_test(test_fifo_and_peek),
	    cmocka_unit_test(test_counter_wraparound),
	    cmocka_unit_test(test_stress_one_to_one),
	    cmocka_unit_test(test_stress_four_queues_one_consumer),
	    cmocka_unit_test(test_stress_tiny_ring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
