/*
 * fuzz_frame.c - libFuzzer target for the stream reassembler (frame.h).
 *
 * Input: byte 0 picks max_frame (64 << (b % 8): 64 B .. 8 KiB), byte 1
 * seeds the chunking and the pauses; the rest is the byte stream. The
 * stream is fed twice: whole in one call, and cut into chunks of 1..64
 * bytes with the callback pausing now and then (each pause drained before
 * the next chunk). Oracle, besides ASan/UBSan: both runs deliver the same
 * frames (count, headers, payload bytes) and end in the same verdict;
 * every delivered frame passed frame_hdr_check; outside a pause the
 * reader never holds a buffer larger than twice what it keeps (256 bytes
 * at least), nor, in the run without pauses (a paused reader keeps the
 * rest of the chunk), larger than max_frame + header.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/frame.h"

struct run {
	uint64_t hash;   /* FNV-1a over headers and payloads, in order */
	uint32_t frames;
	uint32_t max_frame;
	uint32_t rnd;    /* pause pattern; 0 = never pause */
	int paused;      /* the frame offered next is delivered (after a pause) */
};

static void mix(uint64_t *h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		*h = (*h ^ b[i]) * 0x100000001b3ull;
}

static int on_frame(void *arg, const struct frame_hdr *h, const uint8_t *payload)
{
	struct run *r = arg;

	if (frame_hdr_check(h, r->max_frame) != FRAME_OK)
		abort(); /* the reader let a bad header through */
	if ((h->len == 0) != (payload == NULL))
		abort();
	if (r->rnd) {
		r->rnd = r->rnd * 1103515245u + 12345u;
		if (!r->paused && (r->rnd >> 16) % 4 == 0) {
			r->paused = 1;
			return 1;
		}
	}
	r->paused = 0;
	mix(&r->hash, h, sizeof(*h));
	if (h->len)
		mix(&r->hash, payload, h->len);
	r->frames++;
	return 0;
}

static void check_reader(const struct frame_reader *rd)
{
	if (rd->len > rd->cap || (rd->buf == NULL) != (rd->cap == 0))
		abort();
}

/* Returns the final result; FEED_OK after the whole stream otherwise. */
static enum frame_feed_result run_stream(struct run *r, const uint8_t *data, size_t n,
					 uint32_t chunk_seed, struct frame_hdr *bad_out)
{
	struct frame_reader rd;
	enum frame_verdict v = FRAME_OK;
	struct frame_hdr bad;
	enum frame_feed_result res = FEED_OK;
	size_t pos = 0;

	frame_reader_init(&rd, r->max_frame);
	while (pos < n || res == FEED_PAUSED) {
		size_t take = n - pos;

		if (res == FEED_PAUSED) {
			res = frame_reader_drain(&rd, on_frame, r, &v, &bad);
		} else {
			if (chunk_seed) {
				chunk_seed = chunk_seed * 1103515245u + 12345u;
				take = 1 + (chunk_seed >> 16) % 64;
				if (take > n - pos)
					take = n - pos;
			}
			res = frame_reader_feed(&rd, data + pos, take, on_frame, r, &v, &bad);
			pos += take;
		}
		check_reader(&rd);
		if (res == FEED_OK &&
		    (rd.cap > 2 * (size_t)(rd.len > 256 ? rd.len : 256) ||
		     (!r->rnd && rd.cap > 256 && rd.cap > r->max_frame + FRAME_HDR_BYTES))) {
			fprintf(stderr, "cap %u len %u max_frame %u\n", rd.cap, rd.len,
				r->max_frame);
			abort(); /* a partial frame holds more than it keeps */
		}
		if (res == FEED_ERROR || res == FEED_NOMEM)
			break;
	}
	if (res == FEED_ERROR) {
		*bad_out = bad;
		mix(&r->hash, &v, sizeof(v));
	}
	frame_reader_reset(&rd);
	return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole = { 0 }, cut = { 0 };
	struct frame_hdr bad1 = { 0 }, bad2 = { 0 };
	enum frame_feed_result r1, r2;

	if (size < 2)
		return 0;
	whole.max_frame = cut.max_frame = 64u << (data[0] % 8);
	whole.hash = cut.hash = 0xcbf29ce484222325ull;
	cut.rnd = data[1] | 1u;
	r1 = run_stream(&whole, data + 2, size - 2, 0, &bad1);
	r2 = run_stream(&cut, data + 2, size - 2, (uint32_t)data[1] << 8 | 7u, &bad2);
	if (r1 == FEED_NOMEM || r2 == FEED_NOMEM)
		return 0;
	if (r1 != r2 || whole.frames != cut.frames || whole.hash != cut.hash ||
	    memcmp(&bad1, &bad2, sizeof(bad1)) != 0) {
		fprintf(stderr, "whole: res %d frames %u; cut: res %d frames %u\n", r1,
			whole.frames, r2, cut.frames);
		abort();
	}
	return 0;
}
