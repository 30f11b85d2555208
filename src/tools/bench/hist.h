/*
 * hist.h - latency histogram, log-linear (the idea of HdrHistogram).
 *
 * Values below 32 ns are exact; above, each power of two [2^k, 2^(k+1))
 * is cut into 32 equal sub-buckets, so any recorded value is known within
 * 1/32 (3 %). Values are nanoseconds, clamped to HIST_MAX_NS (60 s):
 * 1024 counters, 8 KiB, no allocation.
 *
 * A histogram is plain data owned by whoever embeds it; it is not
 * thread-safe: each load thread records into its own and the main thread
 * merges them after the join. A zeroed struct hist is an empty histogram.
 */
#ifndef RINGCHAT_BENCH_HIST_H
#define RINGCHAT_BENCH_HIST_H

#include <stdint.h>
#include <stdio.h>

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_NS 60000000000ull
/* 60 s < 2^36, so the top magnitude is k = 35. */
#define HIST_BUCKETS (HIST_SUB + (36 - HIST_SUB_BITS) * HIST_SUB)

struct hist {
	uint64_t counts[HIST_BUCKETS];
	uint64_t total;
	uint64_t max_ns;
};

/* Records one value (ns; above HIST_MAX_NS counts as HIST_MAX_NS). */
void hist_record(struct hist *h, uint64_t ns);

/* Adds every count of from into into. */
void hist_merge(struct hist *into, const struct hist *from);

/* Value at percentile p (0 < p <= 100), in ns; 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double p);

/*
 * One text line: "  LABEL  p50 .. p90 .. p99 .. p99.9 .. max .. us  (N samples)".
 * The formats of both report forms are parsed by scripts: keep them.
 */
void hist_text(FILE *out, const char *label, const struct hist *h);

/* JSON members ,"<prefix>p50_us":..,..p90,p99,p999,max (no braces). */
void hist_json(FILE *out, const char *prefix, const struct hist *h);

#endif
