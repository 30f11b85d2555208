#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/request.h"
#include "ringchat/session.h"

bool utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i];
		size_t len;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			len = 2;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + len > n)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static bool as_integer(const cJSON *it, int64_t *out)
{
	double d;

	if (!cJSON_IsNumber(it))
		return false;
	d = it->valuedouble;
	if (!isfinite(d) || d != floor(d) || d > (double)REQ_ID_MAX || d < -(double)REQ_ID_MAX)
		return false;
	*out = (int64_t)d;
	return true;
}

bool req_opt_int(struct req *r, const char *key, int64_t min, int64_t max, int64_t *out,
		 bool *present)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(r->body, key);
	int64_t v;

	*present = false;
	if (!it || cJSON_IsNull(it))
		return true;
	if (!as_integer(it, &v) || v < min || v > max) {
		reply_err(r, ST_BAD_REQUEST, "%s must be an integer in %lld..%lld", key,
			  (long long)min, (long long)max);
		return false;
	}
	*out = v;
	*present = true;
	return true;
}

bool req_int(struct req *r, const char *key, int64_t min, int64_t max, int64_t *out)
{
	bool present;

	if (!req_opt_int(r, key, min, max, out, &present))
		return false;
	if (!present) {
		reply_err(r, ST_BAD_REQUEST, "missing field %s", key);
		return false;
	}
	return true;
}

bool req_opt_id(struct req *r, const char *key, int64_t *out, bool *present)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(r->body, key);
	int64_t v;

	*present = false;
	if (!it || cJSON_IsNull(it))
		return true;
	if (!as_integer(it, &v) || v <= 0) {
		reply_err(r, ST_BAD_REQUEST, "%s must be a positive integer id", key);
		return false;
	}
	*out = v;
	*present = true;
	return true;
}

bool req_id(struct req *r, const char *key, int64_t *out)
{
	bool present;

	if (!req_opt_id(r, key, out, &present))
		return false;
	if (!present) {
		reply_err(r, ST_BAD_REQUEST, "missing field %s", key);
		return false;
	}
	return true;
}

bool req_opt_str(struct req *r, const char *key, size_t minb, size_t maxb, const char **out,
		 bool *present)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(r->body, key);
	size_t n;

	*present = false;
	if (!it || cJSON_IsNull(it))
		return true;
	if (!cJSON_IsString(it)) {
		reply_err(r, ST_BAD_REQUEST, "%s must be a string", key);
		return false;
	}
	n = strlen(it->valuestring);
	if (n < minb || n > maxb) {
		reply_err(r, ST_BAD_REQUEST, "%s must be %zu..%zu bytes (got %zu)", key, minb,
			  maxb, n);
		return false;
	}
	if (!utf8_valid(it->valuestring, n)) {
		reply_err(r, ST_BAD_REQUEST, "%s is not valid UTF-8", key);
		return false;
	}
	*out = it->valuestring;
	*present = true;
	return true;
}

bool req_str(struct req *r, const char *key, size_t minb, size_t maxb, const char **out)
{
	bool present;

	if (!req_opt_str(r, key, minb, maxb, out, &present))
		return false;
	if (!present) {
		reply_err(r, ST_BAD_REQUEST, "missing field %s", key);
		return false;
	}
	return true;
}

bool req_id_array(struct req *r, const char *key, size_t max, int64_t **out, size_t *n)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(r->body, key);
	const cJSON *it;
	int64_t *v;
	size_t i = 0, count;

	if (!cJSON_IsArray(arr)) {
		reply_err(r, ST_BAD_REQUEST, "%s must be an array of ids", key);
		return false;
	}
	count = (size_t)cJSON_GetArraySize(arr);
	if (count < 1 || count > max) {
		reply_err(r, ST_BAD_REQUEST, "%s must hold 1..%zu ids", key, max);
		return false;
	}
	v = malloc(count * sizeof(*v));
	if (!v) {
		reply_err(r, ST_INTERNAL, "out of memory");
		return false;
	}
	cJSON_ArrayForEach(it, arr) {
		if (!as_integer(it, &v[i]) || v[i] <= 0) {
			free(v);
			reply_err(r, ST_BAD_REQUEST, "%s must hold positive integer ids", key);
			return false;
		}
		i++;
	}
	*out = v;
	*n = count;
	return true;
}

/* Decimal text of v into buf (at least 21 bytes); returns buf. */
static char *int_text(char *buf, int64_t v)
{
	char tmp[24];
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	int n = 0, k = 0;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		buf[k++] = '-';
	while (n)
		buf[k++] = tmp[--n];
	buf[k] = '\0';
	return buf;
}

bool json_add_int(cJSON *obj, const char *key, int64_t v)
{
	char buf[24];

	return cJSON_AddRawToObject(obj, key, int_text(buf, v)) != NULL;
}

bool json_array_add_int(cJSON *arr, int64_t v)
{
	char buf[24];
	cJSON *item = cJSON_CreateRaw(int_text(buf, v));

	return item && cJSON_AddItemToArray(arr, item);
}

/* A JSON payload must be exactly one object: nothing but white space may
 * follow it, and no string may hold a NUL (C strings would silently cut
 * it short: "secret\u0000junk" must not compare equal to "secret"). */
static bool payload_has_nul(const uint8_t *p, uint32_t n)
{
	if (memchr(p, 0, n))
		return true;
	for (uint32_t i = 0; i + 5 < n; i++) {
		if (p[i] == '\\') {
			if (p[i + 1] == 'u' && p[i + 2] == '0' && p[i + 3] == '0' &&
			    p[i + 4] == '0' && p[i + 5] == '0')
				return true;
			i++; /* skip the escaped character */
		}
	}
	return false;
}

cJSON *req_parse_body(const uint8_t *p, uint32_t n)
{
	const char *end = NULL;
	cJSON *o;

	if (payload_has_nul(p, n))
		return NULL;
	o = cJSON_ParseWithLengthOpts((const char *)p, n, &end, 0);
	if (!o)
		return NULL;
	while (end && end < (const char *)p + n &&
	       (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
		end++;
	if (!cJSON_IsObject(o) || !end || end != (const char *)p + n) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}
