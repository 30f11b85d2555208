/*
 * test_frame.c - the frame header codec and the stream reassembler.
 *
 * The random stream test prints its seed; set RINGCHAT_FRAME_SEED to that
 * value to replay a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringchat/frame.h"

#define MAX_FRAME FRAME_DEFAULT_MAX_BYTES

/* xorshift64*: small, fast and identical everywhere, so a seed replays. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

/* Uniform enough in [lo, hi] for test data. */
static uint64_t rng_range(uint64_t lo, uint64_t hi)
{
	return lo + rng_next() % (hi - lo + 1);
}

/* Payload byte j of frame i: differs between neighbouring frames and
 * across 256-byte boundaries, so a shifted or swapped copy shows. */
static uint8_t payload_byte(size_t i, size_t j)
{
	return (uint8_t)(i * 131u + j * 7u + (j >> 8) + 1u);
}

static size_t put_frame(uint8_t *out, const struct frame_hdr *h, size_t idx)
{
	frame_hdr_encode(out, h);
	for (size_t j = 0; j < h->len; j++)
		out[FRAME_HDR_BYTES + j] = payload_byte(idx, j);
	return FRAME_HDR_BYTES + h->len;
}

static struct frame_hdr mk_hdr(uint16_t cmd, uint32_t code, uint32_t seq, uint32_t len)
{
	struct frame_hdr h = {
	    .magic = FRAME_MAGIC,
	    .version = FRAME_VERSION,
	    .cmd = cmd,
	    .code = code,
	    .seq = seq,
	    .len = len,
	};
	return h;
}

static void assert_hdr_equal(const struct frame_hdr *a, const struct frame_hdr *b)
{
	assert_int_equal(a->magic, b->magic);
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->cmd, b->cmd);
	assert_int_equal(a->code, b->code);
	assert_int_equal(a->seq, b->seq);
	assert_int_equal(a->len, b->len);
}

/* ---- a recording callback shared by the deterministic tests ---------- */

#define REC_MAX 64

struct recorder {
	struct frame_hdr hdr[REC_MAX];
	const uint8_t *payload[REC_MAX];
	uint8_t first[REC_MAX]; /* first payload byte, checked later */
	size_t n;
	size_t calls;
	/* pause on the first offer of frame number pause_at (by seq) */
	uint32_t pause_seq;
	bool pause_armed;
};

static int rec_cb(void *arg, const struct frame_hdr *hdr, const uint8_t *payload)
{
	struct recorder *rc = arg;

	rc->calls++;
	if (rc->pause_armed && hdr->seq == rc->pause_seq) {
		rc->pause_armed = false;
		return 1;
	}
	assert_true(rc->n < REC_MAX);
	rc->hdr[rc->n] = *hdr;
	rc->payload[rc->n] = payload;
	if (hdr->len == 0)
		assert_null(payload);
	else
		assert_non_null(payload);
	/* every payload in these tests follows payload_byte(seq, j) */
	for (uint32_t j = 0; j < hdr->len; j++)
		assert_int_equal(payload[j], payload_byte(hdr->seq, j));
	rc->first[rc->n] = hdr->len ? payload[0] : 0;
	rc->n++;
	return 0;
}

/* Builds frames with seq 0..count-1 and the given lengths into buf. */
static size_t build_stream(uint8_t *buf, const uint32_t *lens, size_t count, size_t *offs)
{
	size_t pos = 0;

	for (size_t i = 0; i < count; i++) {
		struct frame_hdr h = mk_hdr((uint16_t)(i + 1), 0, (uint32_t)i, lens[i]);

		if (offs)
			offs[i] = pos;
		pos += put_frame(buf + pos, &h, i);
	}
	if (offs)
		offs[count] = pos;
	return pos;
}

/* ---- header codec ---------------------------------------------------- */

static void test_hdr_wire_layout(void **state)
{
	(void)state;
	static const uint8_t want[FRAME_HDR_BYTES] = {
	    'I',  'M',	'P',  '1',  /* magic */
	    0x00, 0x01,		    /* version */
	    0x00, 0x28,		    /* cmd 40 */
	    0x00, 0x00, 0x00, 0x07, /* code 7 */
	    0x12, 0x34, 0x56, 0x78, /* seq */
	    0x00, 0x01, 0x00, 0x00, /* len 65536 */
	};
	struct frame_hdr h = mk_hdr(40, 7, 0x12345678u, 65536), back;
	uint8_t out[FRAME_HDR_BYTES];

	frame_hdr_encode(out, &h);
	assert_memory_equal(out, want, sizeof(want));
	frame_hdr_decode(want, &back);
	assert_hdr_equal(&back, &h);
}

static void roundtrip(const struct frame_hdr *h)
{
	uint8_t out[FRAME_HDR_BYTES];
	struct frame_hdr back;

	memset(&back, 0xA5, sizeof(back));
	frame_hdr_encode(out, h);
	frame_hdr_decode(out, &back);
	assert_hdr_equal(&back, h);
}

static void test_hdr_fields_roundtrip(void **state)
{
	(void)state;
	struct frame_hdr zero = {0};
	struct frame_hdr max = {
	    .magic = UINT32_MAX,
	    .version = UINT16_MAX,
	    .cmd = UINT16_MAX,
	    .code = UINT32_MAX,
	    .seq = UINT32_MAX,
	    .len = UINT32_MAX,
	};

	roundtrip(&zero);
	roundtrip(&max);
	/* each field at its maximum alone, so a field bleeding into its
	 * neighbour is caught */
	for (int f = 0; f < 6; f++) {
		struct frame_hdr h = {0};

		switch (f) {
		case 0:
			h.magic = UINT32_MAX;
			break;
		case 1:
			h.version = UINT16_MAX;
			break;
		case 2:
			h.cmd = UINT16_MAX;
			break;
		case 3:
			h.code = UINT32_MAX;
			break;
		case 4:
			h.seq = UINT32_MAX;
			break;
		case 5:
			h.len = UINT32_MAX;
			break;
		}
		roundtrip(&h);
	}
	rng_state = 0x9E3779B97F4A7C15ULL;
	for (int i = 0; i < 10000; i++) {
		struct frame_hdr h = {
		    .magic = (uint32_t)rng_next(),
		    .version = (uint16_t)rng_next(),
		    .cmd = (uint16_t)rng_next(),
		    .code = (uint32_t)rng_next(),
		    .seq = (uint32_t)rng_next(),
		    .len = (uint32_t)rng_next(),
		};
		roundtrip(&h);
	}
}

static void test_hdr_check_order(void **state)
{
	(void)state;
	struct frame_hdr h = mk_hdr(1, 0, 1, 0);

	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_OK);
	h.len = MAX_FRAME;
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_OK);
	h.len = MAX_FRAME + 1;
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_TOO_LARGE);
	h.len = 0;
	h.version = 2;
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_BAD_VERSION);
	h.version = 0;
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_BAD_VERSION);
	/* every defect at once: magic wins */
	h.magic = 0x48545450u; /* "HTTP" */
	h.len = UINT32_MAX;
	h.version = 2;
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_BAD_MAGIC);
	/* good magic: len wins over version */
	h.magic = FRAME_MAGIC;
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_TOO_LARGE);
}

static void test_build_decodes(void **state)
{
	(void)state;
	const char *json = "{\"username\":\"alice\"}";
	uint32_t jlen = (uint32_t)strlen(json);
	struct frame_hdr h;
	size_t n = 0;
	uint8_t *f = frame_build(11, 3, 77, json, jlen, &n);

	assert_non_null(f);
	assert_int_equal(n, FRAME_HDR_BYTES + jlen);
	frame_hdr_decode(f, &h);
	assert_int_equal(h.magic, FRAME_MAGIC);
	assert_int_equal(h.version, FRAME_VERSION);
	assert_int_equal(h.cmd, 11);
	assert_int_equal(h.code, 3);
	assert_int_equal(h.seq, 77);
	assert_int_equal(h.len, jlen);
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_OK);
	assert_memory_equal(f + FRAME_HDR_BYTES, json, jlen);
	free(f);

	/* empty payload: just a header */
	f = frame_build(1, 0, UINT32_MAX, NULL, 0, &n);
	assert_non_null(f);
	assert_int_equal(n, FRAME_HDR_BYTES);
	frame_hdr_decode(f, &h);
	assert_int_equal(h.seq, UINT32_MAX);
	assert_int_equal(h.len, 0);
	assert_int_equal(frame_hdr_check(&h, MAX_FRAME), FRAME_OK);
	free(f);
}

/* A frame_build output goes through the reader unchanged. */
static void test_build_through_reader(void **state)
{
	(void)state;
	uint8_t payload[300];
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v;
	struct frame_hdr bad;
	size_t n;
	uint8_t *f;

	for (size_t j = 0; j < sizeof(payload); j++)
		payload[j] = payload_byte(5, j);
	f = frame_build(42, 0, 5, payload, sizeof(payload), &n);
	assert_non_null(f);
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(frame_reader_feed(&r, f, n, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 1);
	assert_int_equal(rc.hdr[0].cmd, 42);
	assert_int_equal(rc.hdr[0].seq, 5);
	assert_int_equal(rc.hdr[0].len, sizeof(payload));
	assert_null(r.buf);
	free(f);
}

/* ---- reader: zero copy and memory ------------------------------------ */

static void test_zero_copy_and_idle_memory(void **state)
{
	(void)state;
	static const uint32_t lens[] = {0, 10, 500, 3};
	uint8_t buf[1024];
	size_t offs[5];
	size_t total = build_stream(buf, lens, 4, offs);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v;
	struct frame_hdr bad;

	frame_reader_init(&r, MAX_FRAME);
	assert_null(r.buf);
	assert_int_equal(frame_reader_feed(&r, buf, total, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 4);
	/* frames that arrive whole are handed over in place */
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(rc.hdr[i].seq, i);
		if (lens[i])
			assert_ptr_equal(rc.payload[i], buf + offs[i] + FRAME_HDR_BYTES);
	}
	assert_null(r.buf);
	assert_int_equal(r.len, 0);
	assert_int_equal(r.cap, 0);
	assert_false(frame_reader_has_frame(&r));

	/* frame 2 cut in the middle of its payload: held, then released */
	memset(&rc, 0, sizeof(rc));
	assert_int_equal(frame_reader_feed(&r, buf, offs[2] + 100, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 2);
	assert_non_null(r.buf);
	assert_int_equal(r.len, 100);
	/* sized for the bytes held, not for the frame's len (the minimum is
	 * 256 bytes) */
	assert_true(r.cap >= r.len);
	assert_true(r.cap <= 256);
	assert_false(frame_reader_has_frame(&r));
	assert_int_equal(frame_reader_feed(&r, buf + offs[2] + 100, total - offs[2] - 100, rec_cb,
					   &rc, &v, &bad),
			 FEED_OK);
	assert_int_equal(rc.n, 4);
	assert_int_equal(rc.hdr[2].len, 500);
	assert_int_equal(rc.hdr[3].seq, 3);
	assert_null(r.buf);
	assert_int_equal(r.cap, 0);

	/* a header cut after 7 bytes */
	memset(&rc, 0, sizeof(rc));
	assert_int_equal(frame_reader_feed(&r, buf, offs[1] + 7, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 1);
	assert_int_equal(r.len, 7);
	assert_true(r.cap <= 256);
	assert_int_equal(
	    frame_reader_feed(&r, buf + offs[1] + 7, offs[2] - offs[1] - 7, rec_cb, &rc, &v, &bad),
	    FEED_OK);
	assert_int_equal(rc.n, 2);
	assert_null(r.buf);
	frame_reader_reset(&r);
}

/* A max-size frame fed byte by byte never makes the reader hold more
 * than that one frame. */
static void test_max_frame_bytewise(void **state)
{
	(void)state;
	uint32_t lens[2] = {MAX_FRAME, 0};
	size_t total = 2 * FRAME_HDR_BYTES + MAX_FRAME;
	uint8_t *buf = malloc(total);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v;
	struct frame_hdr bad;

	assert_non_null(buf);
	build_stream(buf, lens, 2, NULL);
	frame_reader_init(&r, MAX_FRAME);
	for (size_t i = 0; i < total; i++) {
		assert_int_equal(frame_reader_feed(&r, buf + i, 1, rec_cb, &rc, &v, &bad), FEED_OK);
		assert_true(r.cap <= FRAME_HDR_BYTES + MAX_FRAME);
		if (i == FRAME_HDR_BYTES + MAX_FRAME - 1) {
			assert_int_equal(rc.n, 1);
			assert_null(r.buf);
		}
	}
	assert_int_equal(rc.n, 2);
	assert_int_equal(rc.hdr[0].len, MAX_FRAME);
	assert_int_equal(rc.hdr[1].len, 0);
	assert_null(r.buf);
	free(buf);
}

/* A header announcing a max-size frame reserves nothing for its payload:
 * the buffer grows with the bytes that came (at most twice them, never
 * beyond the frame), whether the header arrived whole in a chunk or cut. */
static void test_buffer_grows_with_bytes(void **state)
{
	(void)state;
	uint32_t lens[1] = {MAX_FRAME};
	size_t total = FRAME_HDR_BYTES + MAX_FRAME;
	uint8_t *buf = malloc(total);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v;
	struct frame_hdr bad;

	assert_non_null(buf);
	build_stream(buf, lens, 1, NULL);
	for (int cut = 0; cut < 2; cut++) {
		size_t pos = 0;

		memset(&rc, 0, sizeof(rc));
		frame_reader_init(&r, MAX_FRAME);
		if (cut) { /* header in two pieces: 7 bytes, then 13 + 1 */
			assert_int_equal(frame_reader_feed(&r, buf, 7, rec_cb, &rc, &v, &bad),
					 FEED_OK);
			pos = 7;
		}
		assert_int_equal(frame_reader_feed(&r, buf + pos, FRAME_HDR_BYTES + 1 - pos, rec_cb,
						   &rc, &v, &bad),
				 FEED_OK);
		pos = FRAME_HDR_BYTES + 1;
		assert_int_equal(r.len, FRAME_HDR_BYTES + 1);
		assert_true(r.cap <= 256);
		assert_true(frame_reader_partial(&r));
		while (pos < total) {
			size_t n = total - pos < 1000 ? total - pos : 1000;

			assert_int_equal(frame_reader_feed(&r, buf + pos, n, rec_cb, &rc, &v, &bad),
					 FEED_OK);
			pos += n;
			if (pos < total) {
				assert_int_equal(r.len, pos);
				assert_true(r.cap <= 2 * r.len);
				assert_true(r.cap <= total);
				assert_true(frame_reader_partial(&r));
			}
		}
		assert_int_equal(rc.n, 1);
		assert_int_equal(rc.hdr[0].len, MAX_FRAME);
		assert_null(r.buf);
		assert_false(frame_reader_partial(&r));
		frame_reader_reset(&r);
	}
	free(buf);
}

/* Found by fuzz_frame: once a paused frame was delivered, the buffer was
 * fitted to the len of the next header (a frame barely begun), keeping
 * kilobytes for a few bytes held. It now follows the bytes held. */
static void test_fit_after_pause_follows_bytes(void **state)
{
	(void)state;
	uint32_t lens[2] = {3000, MAX_FRAME};
	size_t offs[3];
	uint8_t *buf = malloc(2 * FRAME_HDR_BYTES + 3000 + MAX_FRAME);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v;
	struct frame_hdr bad;
	size_t n;

	assert_non_null(buf);
	build_stream(buf, lens, 2, offs);
	n = offs[1] + FRAME_HDR_BYTES + 5; /* frame 0, then 25 bytes of frame 1 */
	frame_reader_init(&r, MAX_FRAME);
	rc.pause_seq = 0;
	rc.pause_armed = true;
	assert_int_equal(frame_reader_feed(&r, buf, n, rec_cb, &rc, &v, &bad), FEED_PAUSED);
	assert_int_equal(r.len, n);
	assert_int_equal(frame_reader_drain(&r, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 1);
	assert_int_equal(r.len, FRAME_HDR_BYTES + 5);
	assert_true(r.cap <= 256);
	assert_true(frame_reader_partial(&r));
	/* and the frame still completes */
	assert_int_equal(frame_reader_feed(&r, buf + n, offs[2] - n, rec_cb, &rc, &v, &bad),
			 FEED_OK);
	assert_int_equal(rc.n, 2);
	assert_int_equal(rc.hdr[1].len, MAX_FRAME);
	assert_null(r.buf);
	free(buf);
}

/* ---- reader: pause and drain ----------------------------------------- */

static void test_pause_then_drain(void **state)
{
	(void)state;
	static const uint32_t lens[10] = {5, 0, 40, 1, 300, 0, 7, 1000, 2, 64};
	uint8_t buf[4096];
	size_t offs[11];
	size_t total = build_stream(buf, lens, 10, offs);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v;
	struct frame_hdr bad;

	frame_reader_init(&r, MAX_FRAME);
	rc.pause_seq = 4;
	rc.pause_armed = true;
	assert_int_equal(frame_reader_feed(&r, buf, total, rec_cb, &rc, &v, &bad), FEED_PAUSED);
	assert_int_equal(rc.n, 4);
	/* frame 4 and everything after it is kept, byte for byte */
	assert_true(frame_reader_has_frame(&r));
	assert_int_equal(r.len, total - offs[4]);
	assert_memory_equal(r.buf, buf + offs[4], total - offs[4]);

	/* pause again on the retry of a later frame */
	rc.pause_seq = 7;
	rc.pause_armed = true;
	assert_int_equal(frame_reader_drain(&r, rec_cb, &rc, &v, &bad), FEED_PAUSED);
	assert_int_equal(rc.n, 7);
	assert_int_equal(r.len, total - offs[7]);
	assert_int_equal(frame_reader_drain(&r, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 10);
	for (size_t i = 0; i < 10; i++) {
		assert_int_equal(rc.hdr[i].seq, i);
		assert_int_equal(rc.hdr[i].len, lens[i]);
	}
	assert_null(r.buf);
	assert_false(frame_reader_has_frame(&r));
	/* draining an empty reader is harmless */
	assert_int_equal(frame_reader_drain(&r, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 10);
}

/* A paused reader fed more bytes delivers the held frames first. */
static void test_pause_then_feed_more(void **state)
{
	(void)state;
	static const uint32_t lens[6] = {10, 20, 30, 40, 50, 60};
	uint8_t buf[1024];
	size_t offs[7];
	size_t total = build_stream(buf, lens, 6, offs);
	size_t cut = offs[3] + 25; /* inside frame 3's payload */
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v;
	struct frame_hdr bad;

	frame_reader_init(&r, MAX_FRAME);
	rc.pause_seq = 1;
	rc.pause_armed = true;
	assert_int_equal(frame_reader_feed(&r, buf, cut, rec_cb, &rc, &v, &bad), FEED_PAUSED);
	assert_int_equal(rc.n, 1);
	assert_int_equal(r.len, cut - offs[1]);
	assert_int_equal(frame_reader_feed(&r, buf + cut, total - cut, rec_cb, &rc, &v, &bad),
			 FEED_OK);
	assert_int_equal(rc.n, 6);
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(rc.hdr[i].seq, i);
	assert_null(r.buf);

	/* pause on the frame completed from buffered bytes, with a partial
	 * header behind it: the drain delivers it and keeps the partial */
	memset(&rc, 0, sizeof(rc));
	assert_int_equal(frame_reader_feed(&r, buf, offs[1] + 3, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 1);
	rc.pause_seq = 1;
	rc.pause_armed = true;
	assert_int_equal(frame_reader_feed(&r, buf + offs[1] + 3, offs[2] + 5 - offs[1] - 3, rec_cb,
					   &rc, &v, &bad),
			 FEED_PAUSED);
	assert_int_equal(rc.n, 1);
	assert_int_equal(r.len, offs[2] + 5 - offs[1]);
	assert_int_equal(frame_reader_drain(&r, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(rc.n, 2);
	assert_int_equal(r.len, 5);
	assert_false(frame_reader_has_frame(&r));
	assert_int_equal(
	    frame_reader_feed(&r, buf + offs[2] + 5, total - offs[2] - 5, rec_cb, &rc, &v, &bad),
	    FEED_OK);
	assert_int_equal(rc.n, 6);
	assert_null(r.buf);
}

/* ---- reader: bad input ----------------------------------------------- */

static enum frame_feed_result feed_hdr(struct frame_reader *r, const struct frame_hdr *h,
				       struct recorder *rc, enum frame_verdict *v,
				       struct frame_hdr *bad)
{
	uint8_t raw[FRAME_HDR_BYTES];

	frame_hdr_encode(raw, h);
	return frame_reader_feed(r, raw, sizeof(raw), rec_cb, rc, v, bad);
}

static void test_bad_magic(void **state)
{
	(void)state;
	struct frame_hdr h = mk_hdr(1, 0, 9, 0);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v = FRAME_OK;
	struct frame_hdr bad = {0};

	h.magic = 0x47455420u; /* "GET " */
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(feed_hdr(&r, &h, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(v, FRAME_BAD_MAGIC);
	assert_int_equal(bad.magic, 0x47455420u);
	assert_int_equal(rc.calls, 0);
	frame_reader_reset(&r);

	/* magic is judged before len: a bad magic with a huge len is still
	 * BAD_MAGIC, not TOO_LARGE */
	h.len = UINT32_MAX;
	h.version = 9;
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(feed_hdr(&r, &h, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(v, FRAME_BAD_MAGIC);
	frame_reader_reset(&r);
}

static void test_too_large_header_only(void **state)
{
	(void)state;
	struct frame_hdr h = mk_hdr(40, 0, 123, MAX_FRAME + 1);
	uint8_t raw[FRAME_HDR_BYTES];
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v = FRAME_OK;
	struct frame_hdr bad = {0};

	/* whole header at once, no payload byte at all */
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(feed_hdr(&r, &h, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(v, FRAME_TOO_LARGE);
	assert_int_equal(bad.len, MAX_FRAME + 1);
	assert_int_equal(bad.seq, 123);
	assert_true(r.cap <= 256);
	frame_reader_reset(&r);

	/* byte by byte: nothing to say for 19 bytes, refused on the 20th,
	 * and the 4 GiB it announces is never allocated */
	h.len = UINT32_MAX;
	frame_hdr_encode(raw, &h);
	frame_reader_init(&r, MAX_FRAME);
	for (size_t i = 0; i < FRAME_HDR_BYTES - 1; i++)
		assert_int_equal(frame_reader_feed(&r, raw + i, 1, rec_cb, &rc, &v, &bad), FEED_OK);
	assert_int_equal(frame_reader_feed(&r, raw + FRAME_HDR_BYTES - 1, 1, rec_cb, &rc, &v, &bad),
			 FEED_ERROR);
	assert_int_equal(v, FRAME_TOO_LARGE);
	assert_int_equal(bad.len, UINT32_MAX);
	assert_true(r.cap <= 256);
	assert_int_equal(rc.calls, 0);
	frame_reader_reset(&r);

	/* len is judged before version */
	h.version = 2;
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(feed_hdr(&r, &h, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(v, FRAME_TOO_LARGE);
	frame_reader_reset(&r);

	/* the limit is the reader's own max_frame */
	h = mk_hdr(40, 0, 1, 101);
	frame_reader_init(&r, 100);
	assert_int_equal(feed_hdr(&r, &h, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(v, FRAME_TOO_LARGE);
	frame_reader_reset(&r);
}

static void test_bad_version(void **state)
{
	(void)state;
	struct frame_hdr h = mk_hdr(43, 0, 0xCAFE, 10);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v = FRAME_OK;
	struct frame_hdr bad = {0};

	h.version = 2;
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(feed_hdr(&r, &h, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(v, FRAME_BAD_VERSION);
	/* the reply needs the offending cmd and seq */
	assert_int_equal(bad.version, 2);
	assert_int_equal(bad.cmd, 43);
	assert_int_equal(bad.seq, 0xCAFE);
	assert_int_equal(rc.calls, 0);
	frame_reader_reset(&r);
}

/* Good frames before a bad one are still delivered, in order. */
static void test_error_after_good_frames(void **state)
{
	(void)state;
	static const uint32_t lens[3] = {4, 0, 12};
	uint8_t buf[256];
	size_t total = build_stream(buf, lens, 3, NULL);
	struct frame_hdr h = mk_hdr(1, 0, 99, 0);
	struct frame_reader r;
	struct recorder rc = {0};
	enum frame_verdict v = FRAME_OK;
	struct frame_hdr bad = {0};

	h.magic = 0;
	frame_hdr_encode(buf + total, &h);
	total += FRAME_HDR_BYTES;
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(frame_reader_feed(&r, buf, total, rec_cb, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(rc.n, 3);
	assert_int_equal(v, FRAME_BAD_MAGIC);
	assert_int_equal(bad.seq, 99);
	frame_reader_reset(&r);

	/* the same when the bad header was buffered behind a pause */
	memset(&rc, 0, sizeof(rc));
	rc.pause_seq = 2;
	rc.pause_armed = true;
	frame_reader_init(&r, MAX_FRAME);
	assert_int_equal(frame_reader_feed(&r, buf, total, rec_cb, &rc, &v, &bad), FEED_PAUSED);
	assert_int_equal(rc.n, 2);
	v = FRAME_OK;
	assert_int_equal(frame_reader_drain(&r, rec_cb, &rc, &v, &bad), FEED_ERROR);
	assert_int_equal(rc.n, 3);
	assert_int_equal(v, FRAME_BAD_MAGIC);
	frame_reader_reset(&r);
	assert_null(r.buf);
}

/* ---- reader: a long random stream cut at random places --------------- */

#define STREAM_FRAMES 3000

struct stream_check {
	const struct frame_hdr *want;
	size_t next;   /* index of the next frame expected */
	size_t pauses; /* how many offers were refused */
};

static int stream_cb(void *arg, const struct frame_hdr *hdr, const uint8_t *payload)
{
	struct stream_check *sc = arg;
	const struct frame_hdr *w;

	assert_true(sc->next < STREAM_FRAMES);
	w = &sc->want[sc->next];
	assert_hdr_equal(hdr, w);
	if (hdr->len == 0)
		assert_null(payload);
	for (uint32_t j = 0; j < hdr->len; j++) {
		if (payload[j] != payload_byte(sc->next, j))
			fail_msg("frame %zu payload byte %u differs", sc->next, j);
	}
	/* refuse about one offer in 16; the same frame must come back */
	if ((rng_next() & 15) == 0) {
		sc->pauses++;
		return 1;
	}
	sc->next++;
	return 0;
}

static uint32_t random_len(void)
{
	uint64_t p = rng_range(0, 99);

	if (p < 10)
		return 0;
	if (p < 15)
		return MAX_FRAME;
	if (p < 20)
		return (uint32_t)rng_range(0, MAX_FRAME);
	return (uint32_t)rng_range(1, 300);
}

static void test_random_stream(void **state)
{
	(void)state;
	uint64_t seed = 0x5EEDF00DCAFEULL;
	const char *env = getenv("RINGCHAT_FRAME_SEED");
	struct frame_hdr *want = calloc(STREAM_FRAMES, sizeof(*want));
	struct stream_check sc = {.want = want};
	struct frame_reader r;
	enum frame_verdict v;
	struct frame_hdr bad;
	size_t total = 0, pos = 0, chunks = 0;
	uint8_t *stream;
	bool saw_zero = false, saw_max = false;

	if (env)
		seed = strtoull(env, NULL, 0);
	print_message("frame stream seed: %#llx (replay with RINGCHAT_FRAME_SEED)\n",
		      (unsigned long long)seed);
	rng_state = seed ? seed : 1;
	assert_non_null(want);
	for (size_t i = 0; i < STREAM_FRAMES; i++) {
		want[i] = mk_hdr((uint16_t)rng_next(), (uint32_t)rng_next(), (uint32_t)rng_next(),
				 random_len());
		/* the edges must be in every run, whatever the seed */
		if (i == 1)
			want[i].len = 0;
		if (i == 2)
			want[i].len = MAX_FRAME;
		saw_zero |= want[i].len == 0;
		saw_max |= want[i].len == MAX_FRAME;
		total += FRAME_HDR_BYTES + want[i].len;
	}
	assert_true(saw_zero && saw_max);
	stream = malloc(total);
	assert_non_null(stream);
	for (size_t i = 0, off = 0; i < STREAM_FRAMES; i++)
		off += put_frame(stream + off, &want[i], i);

	frame_reader_init(&r, MAX_FRAME);
	while (pos < total) {
		/* cut a run of bytes in one style: 1..3 bytes (headers split
		 * everywhere), up to a header and a bit, up to a few frames,
		 * or large reads spanning many frames */
		static const size_t style_max[4] = {3, 41, 2000, 200000};
		size_t style = style_max[rng_range(0, 3)];
		size_t run_end = pos + rng_range(1, 150000);

		if (run_end > total)
			run_end = total;
		while (pos < run_end) {
			size_t n = rng_range(1, style);
			enum frame_feed_result res;

			if (n > total - pos)
				n = total - pos;
			res = frame_reader_feed(&r, stream + pos, n, stream_cb, &sc, &v, &bad);
			pos += n;
			chunks++;
			assert_true(res == FEED_OK || res == FEED_PAUSED);
			if (res == FEED_PAUSED) {
				assert_true(frame_reader_has_frame(&r));
				/* sometimes catch up at once, sometimes keep
				 * feeding a paused reader */
				if (rng_next() & 1) {
					do {
						res = frame_reader_drain(&r, stream_cb, &sc, &v,
									 &bad);
					} while (res == FEED_PAUSED);
					assert_int_equal(res, FEED_OK);
				}
			}
			/* once caught up, no complete frame waits for more
			 * input, and at most one partial frame is held, in a
			 * buffer no larger than one frame */
			if (res == FEED_OK) {
				assert_false(frame_reader_has_frame(&r));
				assert_true(r.len < FRAME_HDR_BYTES + MAX_FRAME);
				assert_true(r.cap <= FRAME_HDR_BYTES + MAX_FRAME);
				assert_true(r.len > 0 || r.buf == NULL);
			}
		}
	}
	while (frame_reader_drain(&r, stream_cb, &sc, &v, &bad) == FEED_PAUSED)
		;
	print_message("%zu frames, %zu bytes in %zu chunks, %zu pauses\n", sc.next, total, chunks,
		      sc.pauses);
	assert_int_equal(sc.next, STREAM_FRAMES);
	assert_true(sc.pauses > 0);
	/* the stream ended on a frame boundary: nothing is held */
	assert_null(r.buf);
	assert_int_equal(r.len, 0);
	free(stream);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hdr_wire_layout),
	    cmocka_unit_test(test_hdr_fields_roundtrip),
	    cmocka_unit_test(test_hdr_check_order),
	    cmocka_unit_test(test_build_decodes),
	    cmocka_unit_test(test_build_through_reader),
	    cmocka_unit_test(test_zero_copy_and_idle_memory),
	    cmocka_unit_test(test_max_frame_bytewise),
	    cmocka_unit_test(test_pause_then_drain),
	    cmocka_unit_test(test_pause_then_feed_more),
	    cmocka_unit_test(test_bad_magic),
	    cmocka_unit_test(test_too_large_header_only),
	    cmocka_unit_test(test_bad_version),
	    cmocka_unit_test(test_error_after_good_frames),
	    cmocka_unit_test(test_random_stream),
	    cmocka_unit_test(test_buffer_grows_with_bytes),
	    cmocka_unit_test(test_fit_after_pause_follows_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
