/*
 * test_request.c - request validation (request.h): every req_* helper
 * accepts exactly what the contract allows and answers 1 BAD_REQUEST
 * naming the field otherwise; req_parse_body takes one JSON object and
 * nothing else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake_worker.h"
#include "ringchat/protocol.h"
#include "ringchat/request.h"
#include "ringchat/session.h"

static struct worker *w;

/* A request whose body is json (an object). */
static struct req req_of(const char *json)
{
	struct req r = {
		.w = w, .s = session_of(1), .conn = 1, .cmd = CMD_MSG_SEND, .seq = 7,
		.body = cJSON_Parse(json),
	};

	assert_non_null(r.body);
	return r;
}

/* The reply r got: its code, and its error text in *why (static). */
static uint32_t reply_code(const char **why)
{
	static char text[512];
	struct fake_frame f;
	uint32_t code;

	assert_true(fake_take(&f));
	assert_int_equal(f.hdr.cmd, CMD_MSG_SEND);
	assert_int_equal(f.hdr.seq, 7);
	code = f.hdr.code;
	text[0] = '\0';
	if (f.json && cJSON_IsString(cJSON_GetObjectItem(f.json, "error")))
		snprintf(text, sizeof(text), "%s", cJSON_GetObjectItem(f.json, "error")->valuestring);
	fake_frame_free(&f);
	if (why)
		*why = text;
	assert_false(fake_take(&f)); /* exactly one reply */
	return code;
}

static void expect_bad(struct req *r, const char *field)
{
	const char *why;

	assert_true(r->replied);
	assert_int_equal(reply_code(&why), ST_BAD_REQUEST);
	assert_non_null(strstr(why, field));
	cJSON_Delete(r->body);
}

static void test_ids(void **state)
{
	int64_t v = 0;
	bool present = true;
	struct req r;

	(void)state;
	r = req_of("{\"to\": 42}");
	assert_true(req_id(&r, "to", &v));
	assert_int_equal(v, 42);
	assert_false(r.replied);
	cJSON_Delete(r.body);

	r = req_of("{\"to\": 9007199254740991}");
	assert_true(req_id(&r, "to", &v));
	assert_int_equal(v, 9007199254740991LL);
	cJSON_Delete(r.body);

	static const char *bad[] = {
		"{\"to\": 0}", "{\"to\": -3}", "{\"to\": 1.5}", "{\"to\": \"42\"}",
		"{\"to\": 9007199254740992}", "{\"to\": null}", "{\"to\": true}", "{}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = req_of(bad[i]);
		assert_false(req_id(&r, "to", &v));
		expect_bad(&r, "to");
	}

	r = req_of("{}");
	assert_true(req_opt_id(&r, "before_id", &v, &present));
	assert_false(present);
	assert_false(r.replied);
	cJSON_Delete(r.body);
}

static void test_ints_and_strings(void **state)
{
	const char *s = NULL;
	int64_t v;
	bool present;
	struct req r;

	(void)state;
	r = req_of("{\"type\": 2, \"text\": \"h\\u00e9llo\"}");
	assert_true(req_int(&r, "type", 0, 2, &v));
	assert_int_equal(v, 2);
	assert_true(req_str(&r, "text", 1, 6, &s)); /* é is two bytes */
	assert_string_equal(s, "h\xc3\xa9llo");
	cJSON_Delete(r.body);

	r = req_of("{\"type\": 3}");
	assert_false(req_int(&r, "type", 0, 2, &v));
	expect_bad(&r, "type");

	r = req_of("{\"text\": \"h\\u00e9llo\"}");
	assert_false(req_str(&r, "text", 1, 5, &s)); /* counts bytes, not characters */
	expect_bad(&r, "text");

	r = req_of("{\"text\": \"\"}");
	assert_false(req_str(&r, "text", 1, 5, &s));
	expect_bad(&r, "text");

	r = req_of("{\"text\": 5}");
	assert_false(req_str(&r, "text", 1, 5, &s));
	expect_bad(&r, "text");

	r = req_of("{\"text\": \"a\xff\"}"); /* not UTF-8 */
	assert_false(req_str(&r, "text", 1, 5, &s));
	expect_bad(&r, "text");

	r = req_of("{}");
	assert_true(req_opt_str(&r, "remark", 0, 30, &s, &present));
	assert_false(present);
	assert_true(req_opt_int(&r, "limit", 1, 200, &v, &present));
	assert_false(present);
	cJSON_Delete(r.body);
}

static void test_id_arrays(void **state)
{
	int64_t *ids = NULL;
	size_t n = 0;
	struct req r;

	(void)state;
	r = req_of("{\"msg_ids\": [3, 1, 2]}");
	assert_true(req_id_array(&r, "msg_ids", 3, &ids, &n));
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 3);
	assert_int_equal(ids[2], 2);
	free(ids);
	cJSON_Delete(r.body);

	static const char *bad[] = {
		"{\"msg_ids\": []}", "{\"msg_ids\": [1, 2, 3, 4]}", "{\"msg_ids\": [1, 0]}",
		"{\"msg_ids\": [1, \"2\"]}", "{\"msg_ids\": 1}", "{}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = req_of(bad[i]);
		assert_false(req_id_array(&r, "msg_ids", 3, &ids, &n));
		expect_bad(&r, "msg_ids");
	}
}

static void test_parse_body(void **state)
{
	static const struct {
		const char *text;
		bool ok;
	} cases[] = {
		{ "{}", true },
		{ " {\"a\": 1} \r\n\t", true },
		{ "{\"a\": \"x\\\\u0000\"}", true }, /* an escaped backslash, then text */
		{ "[]", false },
		{ "1", false },
		{ "\"s\"", false },
		{ "{} {}", false },
		{ "{}x", false },
		{ "{\"a\": 1", false },
		{ "{\"p\": \"secret\\u0000junk\"}", false },
		{ "null", false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *o = req_parse_body((const uint8_t *)cases[i].text,
					  (uint32_t)strlen(cases[i].text));

		if ((o != NULL) != cases[i].ok)
			fail_msg("req_parse_body(%s): %s", cases[i].text, o ? "accepted" : "refused");
		cJSON_Delete(o);
	}
	/* a raw NUL inside the payload */
	static const uint8_t raw[] = { '{', '"', 'a', '"', ':', '"', 'x', 0, 'y', '"', '}' };

	assert_null(req_parse_body(raw, sizeof(raw)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_ints_and_strings),
		cmocka_unit_test(test_id_arrays),
		cmocka_unit_test(test_parse_body),
	};
	int rc;

	w = fake_worker_new(1, NULL);
	if (session_table_init(16, 1))
		return 1;
	session_open(session_of(1), 1, 0, 0);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	session_table_destroy();
	fake_worker_free();
	return rc;
}
