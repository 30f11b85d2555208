/*
 * hist.c - the log-linear latency histogram (see hist.h).
 */
#include "hist.h"

#include <inttypes.h>

static unsigned hist_index(uint64_t v)
{
	unsigned k;

	if (v < HIST_SUB)
		return (unsigned)v;
	k = 63u - (unsigned)__builtin_clzll(v);
	return HIST_SUB + (k - HIST_SUB_BITS) * HIST_SUB +
	       (unsigned)((v >> (k - HIST_SUB_BITS)) - HIST_SUB);
}

/* Highest value that falls into bucket i. */
static uint64_t hist_bucket_top(unsigned i)
{
	unsigned k, sub;

	if (i < HIST_SUB)
		return i;
	k = (i - HIST_SUB) / HIST_SUB + HIST_SUB_BITS;
	sub = (i - HIST_SUB) % HIST_SUB;
	return (((uint64_t)HIST_SUB + sub) << (k - HIST_SUB_BITS)) +
	       ((uint64_t)1 << (k - HIST_SUB_BITS)) - 1;
}

void hist_record(struct hist *h, uint64_t ns)
{
	if (ns > HIST_MAX_NS)
		ns = HIST_MAX_NS;
	h->counts[hist_index(ns)]++;
	h->total++;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	unsigned i;

	for (i = 0; i < HIST_BUCKETS; i++)
		into->counts[i] += from->counts[i];
	into->total += from->total;
	if (from->max_ns > into->max_ns)
		into->max_ns = from->max_ns;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t want, seen = 0, top;
	unsigned i;

	if (h->total == 0)
		return 0;
	want = (uint64_t)((p / 100.0) * (double)h->total + 0.999999);
	if (want < 1)
		want = 1;
	if (want > h->total)
		want = h->total;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= want) {
			top = hist_bucket_top(i);
			return top < h->max_ns ? top : h->max_ns;
		}
	}
	return h->max_ns;
}

void hist_text(FILE *out, const char *label, const struct hist *h)
{
	fprintf(out,
		"  %-18s p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f us  (%" PRIu64
		" samples)\n",
		label, hist_percentile(h, 50) / 1e3, hist_percentile(h, 90) / 1e3,
		hist_percentile(h, 99) / 1e3, hist_percentile(h, 99.9) / 1e3, h->max_ns / 1e3,
		h->total);
}

void hist_json(FILE *out, const char *prefix, const struct hist *h)
{
	fprintf(out,
		",\"%sp50_us\":%.1f,\"%sp90_us\":%.1f,\"%sp99_us\":%.1f,\"%sp999_us\":%.1f,"
		"\"%smax_us\":%.1f",
		prefix, hist_percentile(h, 50) / 1e3, prefix, hist_percentile(h, 90) / 1e3, prefix,
		hist_percentile(h, 99) / 1e3, prefix, hist_percentile(h, 99.9) / 1e3, prefix,
		h->max_ns / 1e3);
}
