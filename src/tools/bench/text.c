/*
 * text.c - message texts and integer lookup in JSON text (see text.h).
 */
#include "text.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int64_t text_json_int(const char *p, size_t n, const char *key)
{
	char pat[48];
	int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
	const char *k = memmem(p, n, pat, (size_t)pl), *end = p + n;
	int64_t v = 0;

	if (!k)
		return 0;
	k += pl;
	while (k < end && (*k == ' ' || *k == ':'))
		k++;
	while (k < end && *k >= '0' && *k <= '9')
		v = v * 10 + (*k++ - '0');
	return v;
}

uint64_t text_stamp(const char *p, size_t n)
{
	const char *k = memmem(p, n, "t=", 2), *end = p + n;
	uint64_t v = 0;

	if (!k)
		return 0;
	for (k += 2; k < end && *k >= '0' && *k <= '9'; k++)
		v = v * 10 + (uint64_t)(*k - '0');
	return v;
}

int text_make(char *out, int size, uint64_t stamp)
{
	int n = snprintf(out, BENCH_STAMP_BYTES + 1, "t=%020" PRIu64 ";", stamp);

	if (size > n)
		memset(out + n, 'x', (size_t)(size - n));
	out[size > n ? size : n] = '\0';
	return size > n ? size : n;
}
