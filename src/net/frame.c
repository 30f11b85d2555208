/*
 * frame.c - protocol v1 frame header codec and the per-connection stream
 * reassembler.
 *
 * The reader never copies a frame that arrives whole inside one chunk: the
 * callback gets a pointer into the caller's bytes. Only what cannot be
 * delivered yet is copied into r->buf: the tail of a chunk (a frame cut by
 * the end of a read), or everything after a frame the callback paused on.
 *
 * States of a reader, by what r->buf holds:
 *
 *             chunk ends with          20th header byte arrives
 *             < 20 bytes of a frame    and the header is valid
 *   EMPTY ────────────────────► HEADER ────────────────────────► PAYLOAD
 *   buf NULL                    1..19 B in a                     buf grows with
 *    ▲  │                       256 B buffer                     the bytes held
 *    │  │                          │ header invalid                 │
 *    │  │                          ▼                                │
 *    │  │                        ERROR: FEED_ERROR, caller closes   │
 *    │  └── chunk ends with >= 20 bytes of a frame, header valid ──►│
 *    └───────────── last byte arrives: frame delivered, buf freed ──┘
 *
 *   Whole frames inside a chunk go to the callback in place and never
 *   leave EMPTY. From any state, a callback returning 1 leads to PAUSED:
 *   buf holds the paused frame and every byte after it; drain/feed
 *   deliver from buf first and fall back to the states above once no
 *   complete frame is left in it.
 *
 * A header is validated as soon as its 20 bytes are known, so a peer can
 * make us hold at most max_frame + FRAME_HDR_BYTES bytes (more only if the
 * owner keeps feeding a paused reader, which is the owner's bound to
 * enforce). The buffer of a partial frame grows with the bytes that
 * arrived (doubling, capped at the frame's size), never from the header's
 * len alone: a 20-byte header announcing max_frame costs 256 bytes, not
 * max_frame, until the payload actually comes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/be.h"
#include "ringchat/frame.h"

/* Smallest buffer: a header plus a typical small request fit without a
 * second realloc, and tiny tails do not cause allocator churn. */
#define FRAME_MIN_BUF_BYTES 256u

void frame_hdr_encode(uint8_t out[FRAME_HDR_BYTES], const struct frame_hdr *h)
{
	be_put32(out + 0, h->magic);
	be_put16(out + 4, h->version);
	be_put16(out + 6, h->cmd);
	be_put32(out + 8, h->code);
	be_put32(out + 12, h->seq);
	be_put32(out + 16, h->len);
}

void frame_hdr_decode(const uint8_t in[FRAME_HDR_BYTES], struct frame_hdr *h)
{
	h->magic = be_get32(in + 0);
	h->version = be_get16(in + 4);
	h->cmd = be_get16(in + 6);
	h->code = be_get32(in + 8);
	h->seq = be_get32(in + 12);
	h->len = be_get32(in + 16);
}

enum frame_verdict frame_hdr_check(const struct frame_hdr *h, uint32_t max_frame)
{
	/* The order is the contract's: a stream that is not ours at all is
	 * BAD_FRAME whatever its len says, and an oversized frame is refused
	 * before its version is even looked at. */
	if (h->magic != FRAME_MAGIC)
		return FRAME_BAD_MAGIC;
	if (h->len > max_frame)
		return FRAME_TOO_LARGE;
	if (h->version != FRAME_VERSION)
		return FRAME_BAD_VERSION;
	return FRAME_OK;
}

uint8_t *frame_build(uint16_t cmd, uint32_t code, uint32_t seq, const void *payload, uint32_t len,
		     size_t *out_len)
{
	struct frame_hdr h = {
	    .magic = FRAME_MAGIC,
	    .version = FRAME_VERSION,
	    .cmd = cmd,
	    .code = code,
	    .seq = seq,
	    .len = len,
	};
	size_t total = FRAME_HDR_BYTES + (size_t)len;
	uint8_t *out = malloc(total);

	if (!out)
		return NULL;
	frame_hdr_encode(out, &h);
	if (len)
		memcpy(out + FRAME_HDR_BYTES, payload, len);
	*out_len = total;
	return out;
}

void frame_reader_init(struct frame_reader *r, uint32_t max_frame)
{
	r->buf = NULL;
	r->len = 0;
	r->cap = 0;
	r->max_frame = max_frame;
}

void frame_reader_reset(struct frame_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->len = 0;
	r->cap = 0;
}

bool frame_reader_partial(const struct frame_reader *r)
{
	return r->len && !frame_reader_has_frame(r);
}

bool frame_reader_has_frame(const struct frame_reader *r)
{
	struct frame_hdr h;

	if (r->len < FRAME_HDR_BYTES)
		return false;
	frame_hdr_decode(r->buf, &h);
	return r->len - FRAME_HDR_BYTES >= h.len;
}

/*
 * Makes room for need bytes in total. Doubles (at least
 * FRAME_MIN_BUF_BYTES) so that a frame trickling in costs O(log n)
 * reallocations, but never beyond limit when limit >= need: the size of
 * the frame being assembled, known from its checked header, so a
 * complete frame wastes no space. Returns 0 or -ENOMEM (buf is left as
 * it was).
 */
static int reader_reserve(struct frame_reader *r, size_t need, size_t limit)
{
	size_t cap;
	uint8_t *nb;

	if (need > UINT32_MAX)
		return -ENOMEM;
	if (need <= r->cap)
		return 0;
	cap = (size_t)r->cap * 2;
	if (cap < FRAME_MIN_BUF_BYTES)
		cap = FRAME_MIN_BUF_BYTES;
	if (limit >= need && cap > limit)
		cap = limit;
	if (cap < need)
		cap = need;
	if (cap > UINT32_MAX)
		cap = UINT32_MAX;
	nb = realloc(r->buf, cap);
	if (!nb)
		return -ENOMEM;
	r->buf = nb;
	r->cap = (uint32_t)cap;
	return 0;
}

/* Appends n bytes; limit as for reader_reserve (0: no frame size known). */
static int reader_append(struct frame_reader *r, const uint8_t *data, size_t n, size_t limit)
{
	if (!n)
		return 0;
	if (n > UINT32_MAX - r->len || reader_reserve(r, r->len + n, limit))
		return -ENOMEM;
	memcpy(r->buf + r->len, data, n);
	r->len += (uint32_t)n;
	return 0;
}

/*
 * After a pause left a large buffer behind, what remains may need much
 * less: give the excess back. The size kept follows the bytes held, not
 * the len of the header they start with (a header alone reserves nothing,
 * as everywhere else in the reader).
 */
static void reader_fit(struct frame_reader *r)
{
	size_t need = r->len < FRAME_MIN_BUF_BYTES ? FRAME_MIN_BUF_BYTES : r->len;
	uint8_t *nb;

	if (r->cap <= 2 * need)
		return;
	nb = realloc(r->buf, need);
	if (!nb)
		return; /* keeping the larger buffer is harmless */
	r->buf = nb;
	r->cap = (uint32_t)need;
}

/* Drops the first n buffered bytes; an emptied reader gives its buffer
 * back so that idle connections hold no memory. */
static void reader_consume(struct frame_reader *r, uint32_t n)
{
	if (n >= r->len) {
		frame_reader_reset(r);
		return;
	}
	memmove(r->buf, r->buf + n, r->len - n);
	r->len -= n;
	reader_fit(r);
}

/* The callback paused: keep the undelivered buffered bytes from off on,
 * then the rest of the caller's chunk behind them. */
static enum frame_feed_result reader_pause(struct frame_reader *r, uint32_t off,
					   const uint8_t *data, size_t n)
{
	if (off)
		reader_consume(r, off);
	if (reader_append(r, data, n, 0))
		return FEED_NOMEM;
	return FEED_PAUSED;
}

static bool reader_check(struct frame_reader *r, const uint8_t *p, struct frame_hdr *h,
			 enum frame_verdict *verdict, struct frame_hdr *bad)
{
	enum frame_verdict v;

	frame_hdr_decode(p, h);
	v = frame_hdr_check(h, r->max_frame);
	if (v == FRAME_OK)
		return true;
	*verdict = v;
	*bad = *h;
	return false;
}

/* data + pos without pointer arithmetic on the NULL of a drain. */
static const uint8_t *chunk_at(const uint8_t *data, size_t pos)
{
	return pos ? data + pos : data;
}

static const uint8_t *payload_of(const uint8_t *frame, const struct frame_hdr *h)
{
	return h->len ? frame + FRAME_HDR_BYTES : NULL;
}

enum frame_feed_result frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t n,
					 frame_cb cb, void *arg, enum frame_verdict *verdict,
					 struct frame_hdr *bad)
{
	struct frame_hdr h;
	uint32_t off = 0;
	size_t pos = 0;
	size_t flen = 0;
	size_t take;

	/* 1. Complete frames already buffered (left there by a pause). */
	while (r->len - off >= FRAME_HDR_BYTES) {
		if (!reader_check(r, r->buf + off, &h, verdict, bad))
			return FEED_ERROR;
		flen = FRAME_HDR_BYTES + (size_t)h.len;
		if (r->len - off < flen)
			break;
		if (cb(arg, &h, payload_of(r->buf + off, &h)))
			return reader_pause(r, off, data, n);
		off += (uint32_t)flen;
	}
	if (off)
		reader_consume(r, off);

	/* 2. Complete the partial frame in buf from the new bytes. */
	if (r->len) {
		if (r->len < FRAME_HDR_BYTES) {
			take = FRAME_HDR_BYTES - r->len;
			if (take > n)
				take = n;
			if (reader_append(r, data, take, 0))
				return FEED_NOMEM;
			pos = take;
			if (r->len < FRAME_HDR_BYTES)
				return FEED_OK;
		}
		/* Checked here, before any payload byte is buffered. */
		if (!reader_check(r, r->buf, &h, verdict, bad))
			return FEED_ERROR;
		flen = FRAME_HDR_BYTES + (size_t)h.len;
		take = flen - r->len;
		if (take > n - pos)
			take = n - pos;
		if (reader_append(r, chunk_at(data, pos), take, flen))
			return FEED_NOMEM;
		pos += take;
		if (r->len < flen)
			return FEED_OK;
		if (cb(arg, &h, payload_of(r->buf, &h)))
			return reader_pause(r, 0, chunk_at(data, pos), n - pos);
		reader_consume(r, (uint32_t)flen);
	}

	/* 3. Frames lying whole inside the chunk: delivered in place. */
	while (n - pos >= FRAME_HDR_BYTES) {
		if (!reader_check(r, data + pos, &h, verdict, bad))
			return FEED_ERROR;
		flen = FRAME_HDR_BYTES + (size_t)h.len;
		if (n - pos < flen)
			break;
		if (cb(arg, &h, payload_of(data + pos, &h)))
			return reader_pause(r, 0, data + pos, n - pos);
		pos += flen;
	}

	/* 4. Keep the tail. Its header, when complete, was checked above;
	 * only the bytes that came are buffered (room for the rest grows as
	 * it arrives). */
	if (pos < n) {
		if (reader_append(r, data + pos, n - pos,
				  n - pos >= FRAME_HDR_BYTES ? flen : 0))
			return FEED_NOMEM;
	}
	return FEED_OK;
}

enum frame_feed_result frame_reader_drain(struct frame_reader *r, frame_cb cb, void *arg,
					  enum frame_verdict *verdict, struct frame_hdr *bad)
{
	return frame_reader_feed(r, NULL, 0, cb, arg, verdict, bad);
}
