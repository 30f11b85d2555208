/*
 * text.h - the bench's payload texts: message texts that carry their send
 * stamp, and the one JSON lookup the hot path needs (an integer by key),
 * done on the raw payload without a parser.
 *
 * A message text is "t=<20 digits>;" (the send stamp, bench_now_ns()) and
 * 'x' padding up to the requested size; a recipient reads the stamp back
 * to know the send->delivery latency. Pure functions, any thread.
 */
#ifndef RINGCHAT_BENCH_TEXT_H
#define RINGCHAT_BENCH_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "bench.h"

/*
 * Integer value of "key" in a JSON object's text p[0..n); 0 when absent.
 * Only non-negative integers (the ids and counters the node sends).
 */
int64_t text_json_int(const char *p, size_t n, const char *key);

/* The send stamp of a message text "t=<ns>;..." inside p[0..n); 0 if none. */
uint64_t text_stamp(const char *p, size_t n);

/*
 * A message text of size bytes (at least BENCH_STAMP_BYTES, at most
 * BENCH_TEXT_MAX) carrying stamp, NUL-terminated, into out (size + 1
 * bytes); returns its length.
 */
int text_make(char *out, int size, uint64_t stamp);

#endif
