/*
 * test_kmap.c - the pair-keyed hash map (kmap.h) against a reference:
 * random puts, gets and deletes with growth and backward-shift deletion,
 * the entry limit, and clear.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringchat/kmap.h"

#define KEYS 512

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static void test_model(void **state)
{
	static uint64_t ref[KEYS]; /* key k -> value, 0 = absent */
	struct kmap m;
	uint32_t n = 0;

	(void)state;
	assert_int_equal(kmap_init(&m, 4, UINT32_MAX), 0);
	for (int step = 0; step < 200000; step++) {
		uint32_t k = (uint32_t)(rnd() % KEYS);
		uint64_t k1 = k % 37 + 1, k2 = k / 37; /* many k1 collide */
		struct kmap_slot *s;

		switch (rnd() % 3) {
		case 0:
			s = kmap_put(&m, k1, k2);
			assert_non_null(s);
			if (!ref[k])
				n++;
			s->v = ref[k] = (uint64_t)step + 1;
			break;
		case 1:
			s = kmap_get(&m, k1, k2);
			if (ref[k]) {
				assert_non_null(s);
				assert_int_equal(s->v, ref[k]);
			} else {
				assert_null(s);
			}
			break;
		default:
			s = kmap_get(&m, k1, k2);
			if (s) {
				assert_true(ref[k] != 0);
				kmap_del(&m, s);
				ref[k] = 0;
				n--;
			}
			break;
		}
		assert_int_equal(m.n, n);
	}
	for (uint32_t k = 0; k < KEYS; k++) {
		struct kmap_slot *s = kmap_get(&m, k % 37 + 1, k / 37);

		assert_int_equal(s ? s->v : 0, ref[k]);
	}
	kmap_clear(&m);
	assert_int_equal(m.n, 0);
	assert_null(kmap_get(&m, 1, 0));
	kmap_destroy(&m);
}

static void test_limit(void **state)
{
	struct kmap m;

	(void)state;
	assert_int_equal(kmap_init(&m, 2, 3), 0);
	for (uint64_t k = 1; k <= 3; k++)
		assert_non_null(kmap_put(&m, k, 0));
	assert_null(kmap_put(&m, 4, 0));     /* a fourth entry: refused */
	assert_non_null(kmap_put(&m, 2, 0)); /* an existing one is found */
	kmap_del(&m, kmap_get(&m, 2, 0));
	assert_non_null(kmap_put(&m, 4, 0));
	kmap_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model),
		cmocka_unit_test(test_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
