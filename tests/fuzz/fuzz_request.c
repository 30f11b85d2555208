/*
 * fuzz_request.c - libFuzzer target for request validation (request.h):
 * req_parse_body on arbitrary bytes, then every req_* helper on the
 * object it accepts, with the field names the handlers use, plus
 * utf8_valid. Oracle, besides ASan/UBSan: a body is accepted only if it
 * is an object; every helper either succeeds (and its value obeys the
 * bounds it was given) or answers exactly one 1 BAD_REQUEST; utf8_valid
 * agrees with a strict reference decoder.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/fake_worker.h"
#include "ringchat/protocol.h"
#include "ringchat/request.h"
#include "ringchat/session.h"

static struct worker *w;
static struct session sess;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	w = fake_worker_new(1, NULL);
	return 0;
}

/* The replies r produced since the last call: count, and each must be 1. */
static int drain_replies(void)
{
	struct fake_frame f;
	int n = 0;

	while (fake_take(&f)) {
		if (f.hdr.code != ST_BAD_REQUEST || !f.json ||
		    !cJSON_IsString(cJSON_GetObjectItem(f.json, "error")))
			abort();
		fake_frame_free(&f);
		n++;
	}
	return n;
}

static void once(bool ok, struct req *r)
{
	int n = drain_replies();

	if (ok ? n != 0 : n != 1)
		abort(); /* success answers nothing, failure exactly once */
	r->replied = false;
}

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, <= U+10FFFF. */
static bool ref_utf8(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t c = s[i], min;
		int k;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, c &= 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, c &= 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, c &= 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i <= (size_t)k)
			return false;
		for (int j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			c = c << 6 | (s[i + j] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return false;
		i += (size_t)k + 1;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const ids[] = { "to", "user_id", "group_id", "with", "before_id" };
	static const char *const strs[] = { "username", "password", "text", "token", "name",
					    "remark", "phone", "avatar_url", "client_msg_id" };
	struct req r = { .w = w, .s = &sess, .conn = CONN_REF(1, 1), .cmd = CMD_MSG_SEND };
	const char *str;
	int64_t v, *arr = NULL;
	size_t n;
	bool present;

	if ((utf8_valid((const char *)data, size)) != ref_utf8(data, size))
		abort();
	if (!size || size > UINT32_MAX)
		return 0;
	r.body = req_parse_body(data, (uint32_t)size);
	if (!r.body)
		return 0;
	if (!cJSON_IsObject(r.body))
		abort();
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		bool ok = req_id(&r, ids[i], &v);

		if (ok && (v < 1 || v > REQ_ID_MAX))
			abort();
		once(ok, &r);
		ok = req_opt_id(&r, ids[i], &v, &present);
		once(ok, &r);
	}
	{
		bool ok = req_int(&r, "type", 0, 2, &v);

		if (ok && (v < 0 || v > 2))
			abort();
		once(ok, &r);
		ok = req_opt_int(&r, "limit", 1, 200, &v, &present);
		if (ok && present && (v < 1 || v > 200))
			abort();
		once(ok, &r);
	}
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		bool ok = req_str(&r, strs[i], 1, 64, &str);

		if (ok && (strlen(str) < 1 || strlen(str) > 64 || !utf8_valid(str, strlen(str))))
			abort();
		once(ok, &r);
		ok = req_opt_str(&r, strs[i], 0, 255, &str, &present);
		once(ok, &r);
	}
	{
		bool ok = req_id_array(&r, "msg_ids", 100, &arr, &n);

		if (ok) {
			if (n < 1 || n > 100)
				abort();
			for (size_t i = 0; i < n; i++)
				if (arr[i] < 1 || arr[i] > REQ_ID_MAX)
					abort();
			free(arr);
		}
		once(ok, &r);
	}
	cJSON_Delete(r.body);
	return 0;
}
