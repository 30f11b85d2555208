/*
 * test_json_text.c - JSON text written straight into a buffer: every
 * string and integer written reads back, through cJSON, as what was
 * written; json_str_len is the exact size json_put_str writes; escapes
 * are the ones cJSON prints (so both paths give clients the same bytes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/json_text.h"

/* Writes s as {"t":"..."} and checks size, bytes against cJSON's own
 * printing, and the value read back. */
static void check_str(const char *s, size_t n)
{
	size_t want = json_str_len(s, n);
	char *buf = malloc(want + 16), *p = buf, *printed;
	cJSON *o, *v;

	assert_non_null(buf);
	p = json_put_raw(p, "{\"t\":", 5);
	char *q = json_put_str(p, s, n);
	assert_int_equal((size_t)(q - p), want);
	*q++ = '}';
	*q = '\0';
	o = cJSON_Parse(buf);
	assert_non_null(o);
	v = cJSON_GetObjectItemCaseSensitive(o, "t");
	assert_true(cJSON_IsString(v));
	assert_int_equal(strlen(v->valuestring), n);
	assert_memory_equal(v->valuestring, s, n);
	printed = cJSON_PrintUnformatted(o);
	assert_string_equal(printed, buf);
	free(printed);
	cJSON_Delete(o);
	free(buf);
}

static void test_strings(void **state)
{
	static const char *cases[] = {
	    "", "plain", "quote \" and backslash \\", "\b\f\n\r\t", "\x01\x1f\x7f",
	    "slash / stays", "utf-8: h\xc3\xa9llo \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_str(cases[i], strlen(cases[i]));
}

/* Every byte 1..127 in random strings (UTF-8 is passed through as is). */
static void test_random_ascii(void **state)
{
	char s[256];

	(void)state;
	srand(7);
	for (int round = 0; round < 2000; round++) {
		size_t n = (size_t)(rand() % (int)sizeof(s));

		for (size_t i = 0; i < n; i++)
			s[i] = (char)(1 + rand() % 127);
		check_str(s, n);
	}
}

static void test_integers(void **state)
{
	static const int64_t cases[] = {
	    0, 1, -1, 9, 10, 99, 100, 123456789, -987654321, ((int64_t)1 << 53) - 1,
	    INT64_MAX, INT64_MIN,
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[64];
		char *end = json_put_i64(buf, cases[i]);

		*end = '\0';
		assert_true((size_t)(end - buf) <= JSON_I64_MAX_BYTES);
		snprintf(want, sizeof(want), "%lld", (long long)cases[i]);
		assert_string_equal(buf, want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_random_ascii),
	    cmocka_unit_test(test_integers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
