/*
 * test_unread_set.c - the set of held-back unread marks: staging (add,
 * cancel, take_due, take_user take effect at commit and vanish at abort),
 * due order, the per-recipient flush, the floor min_id as a lower bound
 * that rises when the oldest stage empties, the bounds on entries and on
 * groups, and a long random run checked against a plain model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ringchat/unread_set.h"

#define CANARY_ID INT64_C(-77) /* never a valid to_id or msg_id */
#define OUT_SLOTS 64

/* An output buffer whose slots past what a call may write stay poisoned,
 * so a take that writes beyond max is caught. */
static void out_poison(struct unread_pair *out)
{
	for (int i = 0; i < OUT_SLOTS; i++) {
		out[i].to_id = CANARY_ID;
		out[i].msg_id = CANARY_ID;
	}
}

static void out_check_untouched(const struct unread_pair *out, uint32_t from)
{
	for (uint32_t i = from; i < OUT_SLOTS; i++) {
		if (out[i].to_id != CANARY_ID || out[i].msg_id != CANARY_ID)
			fail_msg("slot %u written past the %u allowed", i, from);
	}
}

static bool pair_in(const struct unread_pair *p, uint32_t n, int64_t to_id, int64_t msg_id)
{
	for (uint32_t i = 0; i < n; i++)
		if (p[i].to_id == to_id && p[i].msg_id == msg_id)
			return true;
	return false;
}

static void test_new_free(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(1);

	assert_non_null(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	assert_true(unread_set_next_due(s) == UINT64_MAX);
	unread_set_free(s);
	unread_set_free(NULL);
}

/* add, commit, take_due before and at the due time, commit: gone. */
static void test_add_commit_take_due(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(16);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	assert_true(unread_set_add(s, 7, 1001, 100));
	assert_true(unread_set_add(s, 8, 1002, 100));
	assert_true(unread_set_add(s, 7, 1003, 150));
	/* staged entries already count and are due */
	assert_int_equal(unread_set_count(s), 3);
	assert_true(unread_set_next_due(s) == 100);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 3);
	assert_true(unread_set_min_id(s) > 0);
	assert_true(unread_set_min_id(s) <= 1001);
	assert_true(unread_set_next_due(s) == 100);

	/* nothing is due before its time */
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 99, out, 8), 0);
	out_check_untouched(out, 0);
	assert_int_equal(unread_set_count(s), 3);

	/* at the due time exactly, the two due at 100, oldest first */
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 100, out, 8), 2);
	out_check_untouched(out, 2);
	assert_int_equal(out[0].to_id, 7);
	assert_int_equal(out[0].msg_id, 1001);
	assert_int_equal(out[1].to_id, 8);
	assert_int_equal(out[1].msg_id, 1002);
	/* the taken ones are not due any more, even before the commit */
	assert_true(unread_set_next_due(s) == 150);
	assert_int_equal(unread_set_take_due(s, 100, out, 8), 0);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 1);
	assert_true(unread_set_next_due(s) == 150);
	assert_true(unread_set_min_id(s) <= 1003);

	/* gone after the commit: not given out again, and an ack cannot
	 * cancel them (the row was written, the caller deletes it) */
	assert_false(unread_set_cancel(s, 7, 1001));
	assert_false(unread_set_cancel(s, 8, 1002));
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 1000, out, 8), 1);
	out_check_untouched(out, 1);
	assert_int_equal(out[0].to_id, 7);
	assert_int_equal(out[0].msg_id, 1003);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	assert_true(unread_set_next_due(s) == UINT64_MAX);
	assert_int_equal(unread_set_take_due(s, UINT64_MAX, out, 8), 0);
	unread_set_free(s);
}

/* take_due gives at most max, the oldest, and the rest next time. */
static void test_take_due_max(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(32);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	for (int i = 0; i < 10; i++)
		assert_true(unread_set_add(s, 1 + i % 3, 500 + i, 10 + (uint64_t)i));
	unread_set_commit(s);

	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 1000, out, 4), 4);
	out_check_untouched(out, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(out[i].msg_id, 500 + i);
		assert_int_equal(out[i].to_id, 1 + i % 3);
	}
	assert_true(unread_set_next_due(s) == 14);
	/* max 0 takes nothing */
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 1000, out, 0), 0);
	out_check_untouched(out, 0);
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 1000, out, 40), 6);
	out_check_untouched(out, 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(out[i].msg_id, 504 + i);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	unread_set_free(s);
}

/* An abort gives the taken entries back, in their place. */
static void test_take_due_abort(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(16);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	assert_true(unread_set_add(s, 1, 11, 10));
	assert_true(unread_set_add(s, 2, 12, 20));
	assert_true(unread_set_add(s, 3, 13, 30));
	unread_set_commit(s);

	assert_int_equal(unread_set_take_due(s, 20, out, 8), 2);
	assert_true(unread_set_next_due(s) == 30);
	unread_set_abort(s);
	assert_int_equal(unread_set_count(s), 3);
	assert_true(unread_set_next_due(s) == 10);
	assert_true(unread_set_min_id(s) <= 11);

	/* taken again next time, same order */
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 30, out, 8), 3);
	out_check_untouched(out, 3);
	assert_int_equal(out[0].msg_id, 11);
	assert_int_equal(out[1].msg_id, 12);
	assert_int_equal(out[2].msg_id, 13);
	assert_int_equal(out[2].to_id, 3);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	unread_set_free(s);
}

/* Cancel: true once per stage; commit removes; abort restores. */
static void test_cancel(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(16);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	assert_true(unread_set_add(s, 5, 100, 10));
	assert_true(unread_set_add(s, 5, 101, 11));
	assert_true(unread_set_add(s, 6, 102, 12));
	unread_set_commit(s);

	/* an ack by someone else than the recipient does not cancel */
	assert_false(unread_set_cancel(s, 6, 100));
	/* unknown ids neither */
	assert_false(unread_set_cancel(s, 5, 99));

	assert_true(unread_set_cancel(s, 5, 100));
	assert_false(unread_set_cancel(s, 5, 100)); /* already staged */
	/* the cancelled one is no longer due nor taken */
	assert_true(unread_set_next_due(s) == 11);
	assert_int_equal(unread_set_take_due(s, 10, out, 8), 0);
	unread_set_abort(s);

	/* back: due again, and cancel works again */
	assert_int_equal(unread_set_count(s), 3);
	assert_true(unread_set_next_due(s) == 10);
	assert_true(unread_set_cancel(s, 5, 100));
	assert_false(unread_set_cancel(s, 5, 100));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 2);
	assert_false(unread_set_cancel(s, 5, 100)); /* gone for good */
	assert_true(unread_set_next_due(s) == 11);

	/* nothing written for it: take_due gives only the others */
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 100, out, 8), 2);
	out_check_untouched(out, 2);
	assert_int_equal(out[0].msg_id, 101);
	assert_int_equal(out[1].msg_id, 102);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	unread_set_free(s);
}

/* Added and cancelled in one stage: no trace. Added then aborted: gone. */
static void test_add_cancel_same_stage(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(4);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	assert_true(unread_set_add(s, 9, 900, 10));
	assert_true(unread_set_cancel(s, 9, 900));
	assert_false(unread_set_cancel(s, 9, 900));
	assert_true(unread_set_next_due(s) == UINT64_MAX);
	assert_int_equal(unread_set_take_due(s, 1000, out, 8), 0);
	assert_int_equal(unread_set_take_user(s, 9, out, 8), 0);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	assert_true(unread_set_next_due(s) == UINT64_MAX);
	assert_false(unread_set_cancel(s, 9, 900));

	/* added then aborted */
	assert_true(unread_set_add(s, 9, 901, 20));
	assert_true(unread_set_add(s, 3, 902, 20));
	assert_int_equal(unread_set_count(s), 2);
	assert_true(unread_set_min_id(s) <= 901);
	unread_set_abort(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	assert_true(unread_set_next_due(s) == UINT64_MAX);
	assert_false(unread_set_cancel(s, 9, 901));
	assert_int_equal(unread_set_take_due(s, 1000, out, 8), 0);
	assert_int_equal(unread_set_take_user(s, 3, out, 8), 0);

	/* an abort undoes only its own stage: a committed entry stays */
	assert_true(unread_set_add(s, 4, 910, 30));
	unread_set_commit(s);
	assert_true(unread_set_add(s, 4, 911, 31));
	unread_set_abort(s);
	assert_int_equal(unread_set_count(s), 1);
	assert_true(unread_set_min_id(s) > 0 && unread_set_min_id(s) <= 910);
	assert_true(unread_set_next_due(s) == 30);
	assert_true(unread_set_cancel(s, 4, 910));
	assert_false(unread_set_cancel(s, 4, 911));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	unread_set_free(s);
}

/* A staged add is visible: taken in its own stage, gone at commit. */
static void test_add_take_same_stage(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(4);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	assert_true(unread_set_add(s, 2, 20, 5));
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 5, out, 8), 1);
	out_check_untouched(out, 1);
	assert_int_equal(out[0].to_id, 2);
	assert_int_equal(out[0].msg_id, 20);
	assert_false(unread_set_cancel(s, 2, 20));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);

	/* same through take_user, then an abort: gone as well */
	assert_true(unread_set_add(s, 2, 21, 6));
	assert_int_equal(unread_set_take_user(s, 2, out, 8), 1);
	assert_int_equal(out[0].msg_id, 21);
	unread_set_abort(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	assert_int_equal(unread_set_take_user(s, 2, out, 8), 0);
	unread_set_free(s);
}

/* A duplicate fails and stages nothing; the bound on entries holds. */
static void test_duplicate_and_full(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(3);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	assert_true(unread_set_add(s, 1, 10, 1));
	assert_false(unread_set_add(s, 1, 10, 1)); /* same stage */
	unread_set_commit(s);
	assert_false(unread_set_add(s, 1, 10, 2)); /* committed already */
	assert_int_equal(unread_set_count(s), 1);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 1);

	assert_true(unread_set_add(s, 2, 11, 3));
	assert_true(unread_set_add(s, 3, 12, 4));
	assert_int_equal(unread_set_count(s), 3);
	assert_false(unread_set_add(s, 4, 13, 5)); /* full */
	assert_int_equal(unread_set_count(s), 3);
	unread_set_commit(s);
	assert_false(unread_set_add(s, 4, 13, 5));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 3);
	/* the failed add staged nothing */
	assert_false(unread_set_cancel(s, 4, 13));
	assert_int_equal(unread_set_take_user(s, 4, out, 8), 0);

	/* a removal, once committed, makes room */
	assert_int_equal(unread_set_take_due(s, 1, out, 8), 1);
	assert_int_equal(out[0].msg_id, 10);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 2);
	assert_true(unread_set_add(s, 4, 13, 5));
	assert_false(unread_set_add(s, 5, 14, 6));
	/* an abort of a staged add makes room too */
	unread_set_abort(s);
	assert_int_equal(unread_set_count(s), 2);
	assert_true(unread_set_add(s, 5, 14, 6));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 3);

	/* a set of one */
	struct unread_set *one = unread_set_new(1);

	assert_non_null(one);
	assert_true(unread_set_add(one, 1, 1, 1));
	assert_false(unread_set_add(one, 1, 2, 1));
	unread_set_commit(one);
	assert_true(unread_set_cancel(one, 1, 1));
	unread_set_commit(one);
	assert_true(unread_set_add(one, 1, 2, 1));
	unread_set_commit(one);
	assert_int_equal(unread_set_count(one), 1);
	unread_set_free(one);
	unread_set_free(s);
}

/* take_user: only that user's entries, staged; cancel then says false. */
static void test_take_user(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(64);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	/* users 1, 2, 3 interleaved; msg_id 100 + i belongs to user 1 + i % 3 */
	for (int i = 0; i < 12; i++) {
		assert_true(unread_set_add(s, 1 + i % 3, 100 + i, 10 + (uint64_t)i));
		if (i == 5)
			unread_set_commit(s); /* two stages */
	}
	unread_set_commit(s);

	out_poison(out);
	uint32_t n = unread_set_take_user(s, 2, out, 16);

	assert_int_equal(n, 4);
	out_check_untouched(out, n);
	for (int i = 1; i < 12; i += 3)
		assert_true(pair_in(out, n, 2, 100 + i));
	/* whether an entry whose removal is staged still counts is left open;
	 * the others do */
	assert_true(unread_set_count(s) >= 8 && unread_set_count(s) <= 12);
	/* an ack of a taken entry: false, the caller deletes the row */
	assert_false(unread_set_cancel(s, 2, 101));
	/* taken twice in one stage: no */
	assert_int_equal(unread_set_take_user(s, 2, out, 16), 0);
	/* the others are untouched */
	assert_true(unread_set_cancel(s, 1, 100));
	assert_true(unread_set_next_due(s) == 12); /* 100 cancelled, 101 taken */
	/* due ones now: all but 100 (cancelled) and user 2's (taken) */
	static const int64_t due_left[] = {102, 103, 105, 106, 108, 109, 111};

	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 1000, out, 16), 7);
	out_check_untouched(out, 7);
	for (uint32_t i = 0; i < 7; i++) {
		assert_int_equal(out[i].msg_id, due_left[i]);
		assert_int_equal(out[i].to_id, 1 + (due_left[i] - 100) % 3);
	}
	unread_set_abort(s);
	assert_int_equal(unread_set_count(s), 12);
	assert_true(unread_set_next_due(s) == 10);

	/* at most max, and the rest next time */
	out_poison(out);
	n = unread_set_take_user(s, 3, out, 3);
	assert_int_equal(n, 3);
	out_check_untouched(out, 3);
	struct unread_pair rest[OUT_SLOTS];

	out_poison(rest);
	uint32_t m = unread_set_take_user(s, 3, rest, 16);

	assert_int_equal(m, 1);
	out_check_untouched(rest, 1);
	for (int i = 2; i < 12; i += 3)
		assert_true(pair_in(out, n, 3, 100 + i) != pair_in(rest, m, 3, 100 + i));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 8);
	assert_false(unread_set_cancel(s, 3, 102));
	assert_int_equal(unread_set_take_user(s, 3, out, 16), 0);
	assert_int_equal(unread_set_take_user(s, 77, out, 16), 0); /* no entries */

	/* the others are all still there */
	for (int i = 0; i < 12; i++) {
		if (i % 3 == 2)
			continue;
		assert_true(unread_set_cancel(s, 1 + i % 3, 100 + i));
	}
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	unread_set_free(s);
}

/* min_id: a lower bound of every held id, rising when the stage of the
 * smallest ones empties. */
static void test_min_id(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(64);
	struct unread_pair out[OUT_SLOTS];

	assert_non_null(s);
	assert_int_equal(unread_set_min_id(s), 0);
	/* stage A: 100, 101; stage B: 200, 201; stage C: 300 */
	assert_true(unread_set_add(s, 1, 100, 10));
	assert_true(unread_set_add(s, 2, 101, 10));
	assert_true(unread_set_min_id(s) <= 100); /* staged count too */
	unread_set_commit(s);
	assert_true(unread_set_add(s, 1, 200, 20));
	assert_true(unread_set_add(s, 2, 201, 20));
	unread_set_commit(s);
	assert_true(unread_set_add(s, 3, 300, 30));
	unread_set_commit(s);
	int64_t floor0 = unread_set_min_id(s);

	assert_true(floor0 > 0 && floor0 <= 100);

	/* part of stage A goes: the floor still covers 101 */
	assert_true(unread_set_cancel(s, 1, 100));
	unread_set_commit(s);
	assert_true(unread_set_min_id(s) > 0 && unread_set_min_id(s) <= 101);

	/* the rest of A is taken but the stage aborted: still covered */
	assert_int_equal(unread_set_take_due(s, 10, out, 8), 1);
	assert_int_equal(out[0].msg_id, 101);
	unread_set_abort(s);
	assert_true(unread_set_min_id(s) > 0 && unread_set_min_id(s) <= 101);

	/* now A empties for good: the floor rises, still below 200 */
	assert_int_equal(unread_set_take_due(s, 10, out, 8), 1);
	unread_set_commit(s);
	int64_t floor1 = unread_set_min_id(s);

	assert_true(floor1 > floor0);
	assert_true(floor1 <= 200);

	/* a stage adding a smaller id than those held lowers it */
	assert_true(unread_set_add(s, 4, 50, 40));
	assert_true(unread_set_min_id(s) <= 50);
	unread_set_commit(s);
	assert_true(unread_set_min_id(s) <= 50);
	/* ids out of order inside one stage */
	assert_true(unread_set_add(s, 4, 45, 41));
	assert_true(unread_set_add(s, 4, 44, 41));
	assert_true(unread_set_min_id(s) <= 44);
	unread_set_commit(s);
	assert_true(unread_set_min_id(s) > 0 && unread_set_min_id(s) <= 44);

	/* B and C empty: only the stages holding 44, 45, 50 are left */
	assert_true(unread_set_cancel(s, 1, 200));
	assert_true(unread_set_cancel(s, 2, 201));
	assert_true(unread_set_cancel(s, 3, 300));
	unread_set_commit(s);
	assert_true(unread_set_min_id(s) > 0 && unread_set_min_id(s) <= 44);

	/* the stage of 44 and 45 empties: the floor covers 50 only */
	int64_t floor2 = unread_set_min_id(s);

	assert_true(unread_set_cancel(s, 4, 44));
	assert_true(unread_set_cancel(s, 4, 45));
	unread_set_commit(s);
	assert_true(unread_set_min_id(s) > floor2);
	assert_true(unread_set_min_id(s) <= 50);

	/* empty again: 0 */
	assert_true(unread_set_cancel(s, 4, 50));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	unread_set_free(s);
}

/* At most UNREAD_SET_GROUPS stages hold live entries. */
static void test_groups_bound(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(UNREAD_SET_GROUPS + 64);
	struct unread_pair out[OUT_SLOTS];
	int64_t id = 1;

	assert_non_null(s);
	for (uint32_t g = 0; g < UNREAD_SET_GROUPS; g++) {
		if (!unread_set_add(s, 1, id, g))
			fail_msg("add in stage %u of %u failed", g, UNREAD_SET_GROUPS);
		id++;
		unread_set_commit(s);
	}
	assert_int_equal(unread_set_count(s), UNREAD_SET_GROUPS);
	/* one stage more: no group left for it, nothing staged */
	assert_false(unread_set_add(s, 1, id, UNREAD_SET_GROUPS));
	assert_int_equal(unread_set_count(s), UNREAD_SET_GROUPS);
	unread_set_commit(s);
	assert_false(unread_set_add(s, 1, id, UNREAD_SET_GROUPS));
	unread_set_abort(s);
	assert_false(unread_set_cancel(s, 1, id));

	/* the oldest stage empties: its group is free again, and a stage
	 * holds more than one entry in one group */
	assert_int_equal(unread_set_take_due(s, 0, out, 8), 1);
	assert_int_equal(out[0].msg_id, 1);
	unread_set_commit(s);
	assert_true(unread_set_add(s, 1, id, UNREAD_SET_GROUPS));
	assert_true(unread_set_add(s, 1, id + 1, UNREAD_SET_GROUPS));
	unread_set_commit(s);
	assert_false(unread_set_add(s, 1, id + 2, UNREAD_SET_GROUPS + 1));
	assert_int_equal(unread_set_count(s), UNREAD_SET_GROUPS + 1);
	unread_set_free(s);
}

/*
 * Stages that end with nothing live hold no group, whichever way their
 * entries left: one entry stays the whole time, and many more stages than
 * UNREAD_SET_GROUPS come and go after it; the set stays usable.
 */
enum groups_way {
	GROUPS_ABORTED,	  /* added, then the stage aborted */
	GROUPS_CANCELLED, /* added and cancelled in one stage, committed */
	GROUPS_TAKEN,	  /* added, committed; taken in the next stage, committed */
};

/* Frees the set a test left in *state, failed or not. */
static int set_teardown(void **state)
{
	unread_set_free(*state);
	*state = NULL;
	return 0;
}

static void groups_reused(void **state, enum groups_way way)
{
	struct unread_set *s = unread_set_new(8);
	struct unread_pair out[OUT_SLOTS];
	int64_t id = 1;
	uint64_t t = 0;

	assert_non_null(s);
	*state = s;
	assert_true(unread_set_add(s, 9, id++, t));
	unread_set_commit(s);
	for (uint32_t i = 0; i < UNREAD_SET_GROUPS + 16; i++) {
		t++;
		if (!unread_set_add(s, 1, id, t))
			fail_msg("add failed in stage %u after the long-lived one", i + 1);
		switch (way) {
		case GROUPS_ABORTED:
			unread_set_abort(s);
			break;
		case GROUPS_CANCELLED:
			assert_true(unread_set_cancel(s, 1, id));
			unread_set_commit(s);
			break;
		case GROUPS_TAKEN:
			unread_set_commit(s);
			assert_int_equal(unread_set_take_user(s, 1, out, 8), 1);
			assert_int_equal(out[0].msg_id, id);
			unread_set_commit(s);
			break;
		}
		id++;
		if (unread_set_count(s) != 1)
			fail_msg("stage %u: count %u", i + 1, unread_set_count(s));
	}
	assert_true(unread_set_min_id(s) > 0 && unread_set_min_id(s) <= 1);
	assert_true(unread_set_add(s, 1, id, t));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 2);
}

static void test_groups_after_abort(void **state)
{
	groups_reused(state, GROUPS_ABORTED);
}

static void test_groups_after_cancel(void **state)
{
	groups_reused(state, GROUPS_CANCELLED);
}

static void test_groups_after_take(void **state)
{
	groups_reused(state, GROUPS_TAKEN);
}

/*
 * The random run. The model keeps every entry the set may hold, in add
 * order, with the stage flags: added in this stage, removal staged in
 * this stage. What the contract leaves open (whether an entry with a
 * staged removal still counts and takes room) is checked as a range.
 */
#define MODEL_USERS 7
#define MODEL_DELAY_MS 100
#define MODEL_MAX_STAGES 3000 /* well below UNREAD_SET_GROUPS */

struct model_entry {
	int64_t to_id;
	int64_t msg_id;
	uint64_t due_ms;
	bool added;   /* staged add */
	bool removed; /* staged removal */
};

struct model {
	struct model_entry *e;
	uint32_t n;
	uint32_t cap;
	uint64_t rng;
	unsigned long long seed;
	uint32_t op;
};

#define model_check(m, cond)                                                                       \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fail_msg("seed %llu op %u: %s", (m)->seed, (m)->op, #cond);                \
	} while (0)

static uint32_t model_rand(struct model *m, uint32_t bound)
{
	/* xorshift64*: the same sequence on every libc */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return (uint32_t)((m->rng * UINT64_C(2685821657736338717)) >> 33) % bound;
}

static int model_find(const struct model *m, int64_t to_id, int64_t msg_id)
{
	for (uint32_t i = 0; i < m->n; i++)
		if (m->e[i].to_id == to_id && m->e[i].msg_id == msg_id)
			return (int)i;
	return -1;
}

static uint32_t model_kept(const struct model *m)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < m->n; i++)
		k += !m->e[i].removed;
	return k;
}

static void model_drop_if(struct model *m, bool by_added)
{
	uint32_t w = 0;

	for (uint32_t i = 0; i < m->n; i++) {
		struct model_entry *x = &m->e[i];

		if (by_added ? x->added : x->removed)
			continue;
		x->added = false;
		x->removed = false;
		m->e[w++] = *x;
	}
	m->n = w;
}

/* What holds after every call. */
static void model_check_all(struct model *m, const struct unread_set *s)
{
	uint32_t kept = model_kept(m);
	uint32_t count = unread_set_count(s);
	uint64_t next = UINT64_MAX;
	int64_t lowest = INT64_MAX;

	model_check(m, count >= kept && count <= m->n);
	for (uint32_t i = 0; i < m->n; i++) {
		if (m->e[i].removed)
			continue;
		if (next == UINT64_MAX)
			next = m->e[i].due_ms;
		if (m->e[i].msg_id < lowest)
			lowest = m->e[i].msg_id;
	}
	model_check(m, unread_set_next_due(s) == next);
	int64_t floor = unread_set_min_id(s);

	model_check(m, floor >= 0);
	/* 0 is the mark of an empty set, never a floor */
	if (kept)
		model_check(m, floor > 0 && floor <= lowest);
}

/* After a commit or an abort nothing is open: exact values. */
static void model_check_settled(struct model *m, const struct unread_set *s)
{
	model_check(m, unread_set_count(s) == m->n);
	if (m->n == 0)
		model_check(m, unread_set_min_id(s) == 0);
	model_check_all(m, s);
}

static void model_run(unsigned long long seed, uint32_t max_entries, uint32_t ops)
{
	struct unread_set *s = unread_set_new(max_entries);
	struct model m = {.seed = seed, .rng = seed * 2 + 1};
	struct unread_pair out[OUT_SLOTS];
	int64_t next_high = 1000000; /* ids mostly grow, */
	int64_t next_low = 999999;   /* some arrive from below */
	int64_t gone[64] = {0};	     /* ids that left, to ack again */
	uint32_t ngone = 0;
	uint32_t stages = 0;
	uint64_t now = 1000;
	uint32_t adds_ok = 0, adds_full = 0, takes = 0, cancels_ok = 0;

	assert_non_null(s);
	/* entries added and cancelled in one stage may leave the set at
	 * once but stay in the model until the stage ends: room for them */
	m.cap = max_entries + ops;
	m.e = calloc(m.cap, sizeof(*m.e));
	assert_non_null(m.e);

	for (m.op = 0; m.op < ops; m.op++) {
		uint32_t r = model_rand(&m, 100);

		now += model_rand(&m, 4);
		if (r < 5 && model_kept(&m) > 0) {
			/* a duplicate of an entry held without a staged removal */
			uint32_t i;

			do
				i = model_rand(&m, m.n);
			while (m.e[i].removed);
			model_check(&m, !unread_set_add(s, m.e[i].to_id, m.e[i].msg_id,
							now + MODEL_DELAY_MS));
		} else if (r < 40) {
			int64_t to = 1 + model_rand(&m, MODEL_USERS);
			int64_t msg = model_rand(&m, 8) == 0 ? next_low-- : next_high++;
			bool ok = unread_set_add(s, to, msg, now + MODEL_DELAY_MS);

			/* room for sure below the kept count... */
			if (m.n < max_entries)
				model_check(&m, ok);
			/* ...and none when the kept ones fill it */
			if (model_kept(&m) >= max_entries)
				model_check(&m, !ok);
			if (ok) {
				model_check(&m, m.n < m.cap);
				m.e[m.n++] = (struct model_entry){.to_id = to,
								  .msg_id = msg,
								  .due_ms = now + MODEL_DELAY_MS,
								  .added = true};
				adds_ok++;
			} else {
				adds_full++;
			}
		} else if (r < 62) {
			int64_t to, msg;
			uint32_t k = model_rand(&m, 10);

			if (k < 6 && m.n) {
				uint32_t i = model_rand(&m, m.n);

				to = m.e[i].to_id;
				msg = m.e[i].msg_id;
			} else if (k < 8 && m.n) { /* acked by another user */
				uint32_t i = model_rand(&m, m.n);

				to = 1 + (m.e[i].to_id % MODEL_USERS);
				msg = m.e[i].msg_id;
			} else if (ngone) {
				to = 1 + model_rand(&m, MODEL_USERS);
				msg = gone[model_rand(&m, ngone)];
			} else {
				to = 1;
				msg = 42;
			}
			int at = model_find(&m, to, msg);
			bool expect = at >= 0 && !m.e[at].removed;
			bool ok = unread_set_cancel(s, to, msg);

			model_check(&m, ok == expect);
			if (ok) {
				m.e[at].removed = true;
				cancels_ok++;
			}
		} else if (r < 76) {
			uint32_t max = model_rand(&m, 9);
			uint32_t want = 0;

			out_poison(out);
			uint32_t n = unread_set_take_due(s, now, out, max);

			for (uint32_t i = 0; i < m.n && want < max; i++) {
				struct model_entry *x = &m.e[i];

				if (x->removed)
					continue;
				if (x->due_ms > now)
					break;
				model_check(&m, want < n);
				model_check(&m, out[want].to_id == x->to_id);
				model_check(&m, out[want].msg_id == x->msg_id);
				x->removed = true;
				want++;
			}
			model_check(&m, n == want);
			out_check_untouched(out, n);
			takes += n;
		} else if (r < 86) {
			int64_t to = 1 + model_rand(&m, MODEL_USERS);
			uint32_t max = model_rand(&m, 6);
			uint32_t avail = 0;

			for (uint32_t i = 0; i < m.n; i++)
				avail += m.e[i].to_id == to && !m.e[i].removed;
			out_poison(out);
			uint32_t n = unread_set_take_user(s, to, out, max);

			model_check(&m, n == (avail < max ? avail : max));
			out_check_untouched(out, n);
			for (uint32_t j = 0; j < n; j++) {
				int at = model_find(&m, out[j].to_id, out[j].msg_id);

				model_check(&m, out[j].to_id == to);
				model_check(&m, at >= 0);
				/* not taken twice, nor one already removed */
				model_check(&m, !m.e[at].removed);
				m.e[at].removed = true;
			}
			takes += n;
		} else if (r < 96 && stages < MODEL_MAX_STAGES) {
			for (uint32_t i = 0; i < m.n; i++)
				if (m.e[i].removed && ngone < 64)
					gone[ngone++] = m.e[i].msg_id;
				else if (m.e[i].removed)
					gone[model_rand(&m, 64)] = m.e[i].msg_id;
			unread_set_commit(s);
			model_drop_if(&m, false);
			stages++;
			model_check_settled(&m, s);
		} else if (stages < MODEL_MAX_STAGES) {
			unread_set_abort(s);
			model_drop_if(&m, true);
			stages++;
			model_check_settled(&m, s);
		}
		model_check_all(&m, s);
	}

	/* each kind of call really happened, the bound included */
	assert_true(adds_ok > ops / 10);
	assert_true(takes > ops / 50);
	assert_true(cancels_ok > ops / 50);
	if (max_entries < 100)
		assert_true(adds_full > 0);

	/* drain: everything is taken once, and the set ends empty */
	unread_set_commit(s);
	model_drop_if(&m, false);
	model_check_settled(&m, s);
	uint32_t left = m.n, drained = 0;

	for (int64_t to = 1; to <= MODEL_USERS; to++) {
		uint32_t n;

		while ((n = unread_set_take_user(s, to, out, OUT_SLOTS)) > 0) {
			for (uint32_t j = 0; j < n; j++) {
				int at = model_find(&m, out[j].to_id, out[j].msg_id);

				model_check(&m, out[j].to_id == to && at >= 0 && !m.e[at].removed);
				m.e[at].removed = true;
			}
			drained += n;
			model_check(&m, drained <= left);
		}
	}
	model_check(&m, drained == left);
	unread_set_commit(s);
	model_drop_if(&m, false);
	model_check_settled(&m, s);
	assert_int_equal(unread_set_count(s), 0);
	assert_int_equal(unread_set_min_id(s), 0);
	assert_true(unread_set_next_due(s) == UINT64_MAX);
	free(m.e);
	unread_set_free(s);
}

static void test_random_small(void **state)
{
	(void)state;
	model_run(1, 24, 20000);
}

static void test_random_roomy(void **state)
{
	(void)state;
	model_run(20240531, 2048, 20000);
}

/* The floor the writer stores with a transaction that takes every held
 * entry must say "nothing held": min_id ignores staged removals. */
static void test_min_id_after_staged_removals(void **state)
{
	struct unread_set *s = unread_set_new(16);
	struct unread_pair out[16];

	(void)state;
	assert_non_null(s);
	assert_true(unread_set_add(s, 1, 100, 10));
	assert_true(unread_set_add(s, 2, 101, 10));
	unread_set_commit(s);
	assert_true(unread_set_add(s, 1, 200, 20));
	unread_set_commit(s);
	assert_int_equal(unread_set_take_due(s, 10, out, 16), 2);
	/* the stage holding 100 and 101 empties with this stage */
	assert_true(unread_set_min_id(s) > 101 && unread_set_min_id(s) <= 200);
	unread_set_abort(s);
	assert_true(unread_set_min_id(s) > 0 && unread_set_min_id(s) <= 100);
	assert_int_equal(unread_set_take_due(s, UINT64_MAX, out, 16), 3);
	assert_int_equal(unread_set_min_id(s), 0);
	assert_int_equal(unread_set_count(s), 3);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	unread_set_free(s);
}

/* Entries that carry a row (relay): the row comes back with the entry
 * from every way out, and cancel_row settles only such entries. */
static void test_rows(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(16);
	struct unread_pair out[OUT_SLOTS];
	int r1, r2, r3;

	assert_non_null(s);
	assert_true(unread_set_add_row(s, 7, 1001, 100, &r1));
	assert_true(unread_set_add_row(s, 7, 1002, 100, &r2));
	assert_true(unread_set_add_row(s, 8, 1003, 200, &r3));
	assert_true(unread_set_add(s, 8, 1004, 200)); /* a mark alone */
	assert_false(unread_set_add_row(s, 7, 1001, 300, &r2)); /* there already */
	unread_set_commit(s);
	assert_ptr_equal(unread_set_row(s, 7, 1001), &r1);
	assert_ptr_equal(unread_set_row(s, 8, 1003), &r3);
	assert_null(unread_set_row(s, 8, 1004));
	assert_null(unread_set_row(s, 9, 1001));

	/* a mark alone is not settled by cancel_row, and stays */
	assert_null(unread_set_cancel_row(s, 8, 1004));
	assert_null(unread_set_cancel_row(s, 8, 1001)); /* not its recipient */
	/* settled once; an abort puts it back, a commit removes it */
	assert_ptr_equal(unread_set_cancel_row(s, 7, 1002), &r2);
	assert_null(unread_set_cancel_row(s, 7, 1002));
	unread_set_abort(s);
	assert_ptr_equal(unread_set_row(s, 7, 1002), &r2);
	assert_ptr_equal(unread_set_cancel_row(s, 7, 1002), &r2);
	unread_set_commit(s);
	assert_null(unread_set_row(s, 7, 1002));
	assert_int_equal(unread_set_count(s), 3);

	/* take_user and take_due give the rows out with their entries */
	out_poison(out);
	assert_int_equal(unread_set_take_user(s, 7, out, 8), 1);
	out_check_untouched(out, 1);
	assert_int_equal(out[0].msg_id, 1001);
	assert_ptr_equal(out[0].row, &r1);
	out_poison(out);
	assert_int_equal(unread_set_take_due(s, 200, out, 8), 2);
	out_check_untouched(out, 2);
	assert_int_equal(out[0].msg_id, 1003);
	assert_ptr_equal(out[0].row, &r3);
	assert_int_equal(out[1].msg_id, 1004);
	assert_null(out[1].row);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	unread_set_free(s);
}

/* A group row (relay): one entry per member owing an ack, all carrying
 * the same row. Each member's cancel_row gives the row back once; the
 * flush of one member takes only that member's entry; take_due gives every
 * remaining entry, each with the row; a full set refuses the next member,
 * and the entries added in the stage are cancelled without a trace (their
 * room comes back at commit). */
static void test_shared_row(void **state)
{
	(void)state;
	struct unread_set *s = unread_set_new(4);
	struct unread_pair out[OUT_SLOTS];
	int g1, g2;
	uint32_t n;

	assert_non_null(s);
	for (int64_t m = 11; m <= 13; m++)
		assert_true(unread_set_add_row(s, m, 500, 100, &g1));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 3);

	/* member 11 acks; member 12's login flushes; 13 stays */
	assert_ptr_equal(unread_set_cancel_row(s, 11, 500), &g1);
	out_poison(out);
	n = unread_set_take_user(s, 12, out, OUT_SLOTS);
	assert_int_equal(n, 1);
	assert_true(out[0].to_id == 12 && out[0].msg_id == 500 && out[0].row == &g1);
	out_check_untouched(out, 1);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 1);
	assert_null(unread_set_cancel_row(s, 11, 500)); /* acked already */
	assert_ptr_equal(unread_set_row(s, 13, 500), &g1);

	/* room for 3 more: a group of 4 members fits only in part */
	for (int64_t m = 21; m <= 23; m++)
		assert_true(unread_set_add_row(s, m, 501, 200, &g2));
	assert_false(unread_set_add_row(s, 24, 501, 200, &g2));
	for (int64_t m = 21; m <= 23; m++)
		assert_ptr_equal(unread_set_cancel_row(s, m, 501), &g2);
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 1);
	assert_int_equal(unread_set_min_id(s), 500);
	for (int64_t m = 21; m <= 23; m++)
		assert_true(unread_set_add_row(s, m, 502, 300, &g2));
	unread_set_commit(s);

	out_poison(out);
	n = unread_set_take_due(s, 300, out, OUT_SLOTS);
	assert_int_equal(n, 4);
	out_check_untouched(out, 4);
	assert_true(pair_in(out, n, 13, 500) && out[0].row == &g1);
	for (uint32_t i = 1; i < n; i++)
		assert_ptr_equal(out[i].row, &g2);
	for (int64_t m = 21; m <= 23; m++)
		assert_true(pair_in(out, n, m, 502));
	unread_set_commit(s);
	assert_int_equal(unread_set_count(s), 0);
	unread_set_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_min_id_after_staged_removals),
	    cmocka_unit_test(test_new_free),
	    cmocka_unit_test(test_rows),
	    cmocka_unit_test(test_shared_row),
	    cmocka_unit_test(test_add_commit_take_due),
	    cmocka_unit_test(test_take_due_max),
	    cmocka_unit_test(test_take_due_abort),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_add_cancel_same_stage),
	    cmocka_unit_test(test_add_take_same_stage),
	    cmocka_unit_test(test_duplicate_and_full),
	    cmocka_unit_test(test_take_user),
	    cmocka_unit_test(test_min_id),
	    cmocka_unit_test(test_groups_bound),
	    cmocka_unit_test_teardown(test_groups_after_abort, set_teardown),
	    cmocka_unit_test_teardown(test_groups_after_cancel, set_teardown),
	    cmocka_unit_test_teardown(test_groups_after_take, set_teardown),
	    cmocka_unit_test(test_random_small),
	    cmocka_unit_test(test_random_roomy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
