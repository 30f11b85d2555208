/*
 * test_passwd.c - yescrypt password hashes and session tokens: a password
 * verifies against its own hash only, salts are fresh, the cost reaches
 * the hash, limits are enforced, tokens are random 32-hex strings.
 *
 * Costs stay low here (yescrypt's memory and time double per step).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "ringchat/passwd.h"

#define TEST_COST 3

static void test_hash_then_verify(void **state)
{
	char hash[PASSWD_HASH_SIZE];

	(void)state;
	assert_int_equal(passwd_hash("correct horse battery staple", TEST_COST, hash, sizeof(hash)),
			 0);
	assert_true(strncmp(hash, "$y$", 3) == 0);
	assert_true(passwd_verify("correct horse battery staple", hash));
	assert_false(passwd_verify("correct horse battery stapl", hash));
	assert_false(passwd_verify("correct horse battery staplee", hash));
	assert_false(passwd_verify("Correct horse battery staple", hash));
	assert_false(passwd_verify("", hash));
}

static void test_same_password_different_hashes(void **state)
{
	char a[PASSWD_HASH_SIZE], b[PASSWD_HASH_SIZE];

	(void)state;
	assert_int_equal(passwd_hash("hunter22hunter22", TEST_COST, a, sizeof(a)), 0);
	assert_int_equal(passwd_hash("hunter22hunter22", TEST_COST, b, sizeof(b)), 0);
	/* fresh salt each time: equal passwords must not be spotted in the table */
	assert_string_not_equal(a, b);
	assert_true(passwd_verify("hunter22hunter22", a));
	assert_true(passwd_verify("hunter22hunter22", b));
}

/* The cost is encoded in the yescrypt parameters field after "$y$". */
static void test_cost_is_in_hash(void **state)
{
	static const struct {
		int cost;
		const char *prefix;
	} want[] = {
	    {1, "$y$j75$"},
	    {3, "$y$j7T$"},
	    {5, "$y$j9T$"}, /* libcrypt's default cost, as in /etc/shadow */
	};
	char hash[PASSWD_HASH_SIZE];

	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(passwd_hash("password-123", want[i].cost, hash, sizeof(hash)), 0);
		if (strncmp(hash, want[i].prefix, strlen(want[i].prefix)) != 0)
			fail_msg("cost %d gave %s, want prefix %s", want[i].cost, hash,
				 want[i].prefix);
		assert_true(passwd_verify("password-123", hash));
	}
}

static void test_bad_cost_rejected(void **state)
{
	char hash[PASSWD_HASH_SIZE];

	(void)state;
	assert_int_equal(passwd_hash("password-123", 0, hash, sizeof(hash)), -EINVAL);
	assert_int_equal(passwd_hash("password-123", 12, hash, sizeof(hash)), -EINVAL);
	assert_int_equal(passwd_hash("password-123", -1, hash, sizeof(hash)), -EINVAL);
}

/* Any byte but NUL, up to 128 of them, all significant. */
static void test_binary_and_max_length(void **state)
{
	char pw[PASSWD_MAX_BYTES + 2];
	char hash[PASSWD_HASH_SIZE];

	(void)state;
	for (int i = 0; i < PASSWD_MAX_BYTES; i++)
		pw[i] = (char)(1 + i * 2); /* 0x01..0xff, includes high bytes */
	pw[PASSWD_MAX_BYTES] = '\0';
	assert_int_equal(passwd_hash(pw, 1, hash, sizeof(hash)), 0);
	assert_true(passwd_verify(pw, hash));

	/* the last byte counts: no truncation as with bcrypt's 72 */
	pw[PASSWD_MAX_BYTES - 1] ^= 1;
	assert_false(passwd_verify(pw, hash));
	pw[PASSWD_MAX_BYTES - 1] ^= 1;
	pw[PASSWD_MAX_BYTES - 1] = '\0';
	assert_false(passwd_verify(pw, hash));

	/* 129 bytes: refused by both */
	memset(pw, 'a', PASSWD_MAX_BYTES + 1);
	pw[PASSWD_MAX_BYTES + 1] = '\0';
	assert_int_equal(passwd_hash(pw, 1, hash, sizeof(hash)), -EINVAL);
	assert_false(passwd_verify(pw, hash));
}

static void test_small_buffer(void **state)
{
	char hash[16];

	(void)state;
	assert_int_equal(passwd_hash("password-123", 1, hash, sizeof(hash)), -ENOSPC);
}

static void test_malformed_hash(void **state)
{
	char hash[PASSWD_HASH_SIZE];

	(void)state;
	assert_false(passwd_verify("password-123", ""));
	assert_false(passwd_verify("password-123", "*0"));
	assert_false(passwd_verify("password-123", "not a hash"));
	assert_false(passwd_verify("password-123", "$y$"));
	/* a valid hash cut short must not verify either */
	assert_int_equal(passwd_hash("password-123", 1, hash, sizeof(hash)), 0);
	hash[strlen(hash) - 5] = '\0';
	assert_false(passwd_verify("password-123", hash));
}

static int cmp_token(const void *a, const void *b)
{
	return memcmp(a, b, TOKEN_HEX_LEN + 1);
}

static void test_tokens(void **state)
{
	enum { N = 2000 };
	char(*tok)[TOKEN_HEX_LEN + 1] = malloc(N * sizeof(*tok));
	int seen_digits = 0, seen_letters = 0;

	(void)state;
	assert_non_null(tok);
	for (int i = 0; i < N; i++) {
		memset(tok[i], 'X', sizeof(tok[i]));
		assert_int_equal(token_new(tok[i]), 0);
		assert_int_equal(strlen(tok[i]), TOKEN_HEX_LEN);
		for (int j = 0; j < TOKEN_HEX_LEN; j++) {
			char ch = tok[i][j];

			if (ch >= '0' && ch <= '9')
				seen_digits++;
			else if (ch >= 'a' && ch <= 'f')
				seen_letters++;
			else
				fail_msg("token %s has a non-hex char", tok[i]);
		}
	}
	/* random hex: both kinds of digits show up, and no token repeats */
	assert_true(seen_digits > N * TOKEN_HEX_LEN / 2);
	assert_true(seen_letters > N * TOKEN_HEX_LEN / 4);
	qsort(tok, N, sizeof(*tok), cmp_token);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(tok[i - 1], tok[i]);
	free(tok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_then_verify),
	    cmocka_unit_test(test_same_password_different_hashes),
	    cmocka_unit_test(test_cost_is_in_hash),
	    cmocka_unit_test(test_bad_cost_rejected),
	    cmocka_unit_test(test_binary_and_max_length),
	    cmocka_unit_test(test_small_buffer),
	    cmocka_unit_test(test_malformed_hash),
	    cmocka_unit_test(test_tokens),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
