/*
 * json_text.c - JSON text written straight into a buffer (contract in
 * json_text.h).
 */
#include <string.h>

#include "ringchat/json_text.h"

/* Escape for each byte below 0x20 and for " and \: 0 = as is, 'u' =
 * \u00XX, else the letter after the backslash. */
static char json_escape_of(unsigned char c)
{
	switch (c) {
	case '"':
		return '"';
	case '\\':
		return '\\';
	case '\b':
		return 'b';
	case '\f':
		return 'f';
	case '\n':
		return 'n';
	case '\r':
		return 'r';
	case '\t':
		return 't';
	default:
		return c < 0x20 ? 'u' : 0;
	}
}

size_t json_str_len(const char *s, size_t n)
{
	size_t len = n + 2;

	for (size_t i = 0; i < n; i++) {
		char e = json_escape_of((unsigned char)s[i]);

		if (e)
			len += e == 'u' ? 5 : 1;
	}
	return len;
}

char *json_put_str(char *dst, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	*dst++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char e = json_escape_of(c);

		if (!e) {
			*dst++ = (char)c;
		} else if (e != 'u') {
			*dst++ = '\\';
			*dst++ = e;
		} else {
			memcpy(dst, "\\u00", 4);
			dst[4] = hex[c >> 4];
			dst[5] = hex[c & 15];
			dst += 6;
		}
	}
	*dst++ = '"';
	return dst;
}

char *json_put_i64(char *dst, int64_t v)
{
	char tmp[JSON_I64_MAX_BYTES];
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*dst++ = '-';
	while (n)
		*dst++ = tmp[--n];
	return dst;
}

char *json_put_raw(char *dst, const char *lit, size_t n)
{
	memcpy(dst, lit, n);
	return dst + n;
}
