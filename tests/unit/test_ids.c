/*
 * test_ids.c - the msg_id generator: layout (time, node bits, 53-bit
 * bound), the borrow above 256 ids per millisecond, a clock stepping
 * back, node id validation, and uniqueness plus per-thread monotonicity
 * with several threads racing on one node.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>

#include <cmocka.h>

#include "ringchat/clock.h"
#include "ringchat/ids.h"

#define T0_MS (IDS_EPOCH_MS + 123456789ull) /* some instant after the epoch */

static void test_layout(void **state)
{
	(void)state;
	assert_int_equal(ids_init(21), 0);
	int64_t id = ids_next_at(T0_MS);

	assert_true(id > 0);
	assert_true(id <= IDS_MAX);
	assert_int_equal(ids_epoch_ms(id), T0_MS);
	assert_int_equal(ids_node(id), 21);
	assert_int_equal(ids_seq(id), 0);
	/* the exact bit layout: ms << 13 | node << 8 | seq */
	assert_int_equal(id, (int64_t)(((T0_MS - IDS_EPOCH_MS) << 13) | (21u << 8)));

	/* a later millisecond starts over at seq 0 */
	int64_t later = ids_next_at(T0_MS + 5);

	assert_int_equal(ids_epoch_ms(later), T0_MS + 5);
	assert_int_equal(ids_seq(later), 0);
	assert_true(later > id);
}

static void test_real_clock(void **state)
{
	(void)state;
	assert_int_equal(ids_init(31), 0);
	uint64_t before = clock_epoch_ms();
	int64_t id = ids_next();
	uint64_t after = clock_epoch_ms();

	assert_true(id > 0 && id <= IDS_MAX);
	assert_true(ids_epoch_ms(id) >= before && ids_epoch_ms(id) <= after);
	assert_int_equal(ids_node(id), 31);
}

static void test_bound_53_bits(void **state)
{
	(void)state;
	assert_int_equal(ids_init(IDS_NODE_MAX), 0);
	/* the last millisecond the 40-bit field holds */
	uint64_t last_ms = IDS_EPOCH_MS + (UINT64_C(1) << IDS_TIME_BITS) - 1;
	int64_t id = 0;

	for (int i = 0; i < 256; i++)
		id = ids_next_at(last_ms);
	assert_int_equal(id, IDS_MAX); /* all 53 bits set: time, node 31, seq 255 */
	/* nothing past it: 0 says the id space is exhausted */
	assert_int_equal(ids_next_at(last_ms), 0);
	assert_int_equal(ids_next_at(last_ms + 1000), 0);
}

static void test_borrow_next_ms(void **state)
{
	(void)state;
	assert_int_equal(ids_init(3), 0);
	int64_t prev = 0;

	/* 600 ids in one millisecond: 0..255 in T0, then T0+1, then T0+2 */
	for (int i = 0; i < 600; i++) {
		int64_t id = ids_next_at(T0_MS);

		assert_true(id > prev);
		assert_int_equal(ids_node(id), 3);
		assert_int_equal(ids_epoch_ms(id), T0_MS + (uint64_t)(i / 256));
		assert_int_equal(ids_seq(id), i % 256);
		prev = id;
	}
	/* the clock reaching a borrowed millisecond does not repeat ids */
	int64_t id = ids_next_at(T0_MS + 2);

	assert_true(id > prev);
	assert_int_equal(ids_epoch_ms(id), T0_MS + 2);
	assert_int_equal(ids_seq(id), 600 % 256);
	/* once the clock is ahead again, it wins */
	id = ids_next_at(T0_MS + 10);
	assert_int_equal(ids_epoch_ms(id), T0_MS + 10);
	assert_int_equal(ids_seq(id), 0);
}

static void test_clock_backwards(void **state)
{
	(void)state;
	assert_int_equal(ids_init(7), 0);
	int64_t a = ids_next_at(T0_MS);
	int64_t b = ids_next_at(T0_MS - 60000); /* NTP stepped back a minute */
	int64_t c = ids_next_at(T0_MS - 30000);

	assert_true(b > a);
	assert_true(c > b);
	assert_int_equal(ids_epoch_ms(b), T0_MS);
	assert_int_equal(ids_epoch_ms(c), T0_MS);
	/* a clock before the epoch itself still gives positive ids */
	assert_int_equal(ids_init(0), 0);
	int64_t d = ids_next_at(1000);

	assert_true(d > 0);
	assert_true(ids_next_at(1000) > d);
}

static void test_node_id_range(void **state)
{
	(void)state;
	assert_int_equal(ids_init(0), 0);
	assert_int_equal(ids_init(31), 0);
	assert_int_not_equal(ids_init(32), 0);
	assert_int_not_equal(ids_init(1023), 0);
	assert_int_not_equal(ids_init(-1), 0);
}

#define RACE_THREADS 4
#define RACE_PER_THREAD 200000

struct race_arg {
	int64_t *ids;
	int ok;
};

static void *race_main(void *p)
{
	struct race_arg *a = p;
	int64_t prev = 0;

	a->ok = 1;
	for (int i = 0; i < RACE_PER_THREAD; i++) {
		int64_t id = ids_next();

		if (id <= prev || id > IDS_MAX || ids_node(id) != 9)
			a->ok = 0;
		a->ids[i] = id;
		prev = id;
	}
	return NULL;
}

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;

	return (a > b) - (a < b);
}

/* 800,000 ids in well under a second from 4 threads: far above 256 per
 * millisecond, so borrowing happens under contention too. */
static void test_threads_unique_monotonic(void **state)
{
	(void)state;
	pthread_t th[RACE_THREADS];
	struct race_arg args[RACE_THREADS];
	int64_t *all = malloc(sizeof(*all) * RACE_THREADS * RACE_PER_THREAD);

	assert_non_null(all);
	assert_int_equal(ids_init(9), 0);
	for (int t = 0; t < RACE_THREADS; t++) {
		args[t].ids = all + (size_t)t * RACE_PER_THREAD;
		assert_int_equal(pthread_create(&th[t], NULL, race_main, &args[t]), 0);
	}
	for (int t = 0; t < RACE_THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_true(args[t].ok); /* increasing within each thread, node 9, bound */
	}
	qsort(all, (size_t)RACE_THREADS * RACE_PER_THREAD, sizeof(*all), cmp_i64);
	for (size_t i = 1; i < (size_t)RACE_THREADS * RACE_PER_THREAD; i++)
		if (all[i] == all[i - 1])
			fail_msg("id %lld made twice", (long long)all[i]);
	free(all);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_layout),
	    cmocka_unit_test(test_real_clock),
	    cmocka_unit_test(test_bound_53_bits),
	    cmocka_unit_test(test_borrow_next_ms),
	    cmocka_unit_test(test_clock_backwards),
	    cmocka_unit_test(test_node_id_range),
	    cmocka_unit_test(test_threads_unique_monotonic),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
