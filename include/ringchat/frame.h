/*
 * frame.h - the 20-byte frame header of protocol v1 and a per-connection
 * reassembler that cuts a TCP byte stream into frames.
 *
 * Header (all big-endian): magic u32 "IMP1" | version u16 | cmd u16 |
 * code u32 | seq u32 | len u32, then len bytes of JSON payload.
 *
 * Thread rules: a struct frame_reader belongs to one thread (the I/O
 * thread for server connections); nothing here locks.
 */
#ifndef RINGCHAT_FRAME_H
#define RINGCHAT_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_MAGIC 0x494D5031u /* "IMP1" */
#define FRAME_VERSION 1
#define FRAME_HDR_BYTES 20
#define FRAME_DEFAULT_MAX_BYTES 65536u
/* Frames the node sends (a HISTORY page) may be larger than max_frame. */
#define FRAME_MAX_OUT_BYTES (16u << 20)

struct frame_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t cmd;
	uint32_t code;
	uint32_t seq;
	uint32_t len;
};

/* Writes h into out[0..19] in network order. */
void frame_hdr_encode(uint8_t out[FRAME_HDR_BYTES], const struct frame_hdr *h);
/* Reads in[0..19] into h; never fails (validation is frame_hdr_check). */
void frame_hdr_decode(const uint8_t in[FRAME_HDR_BYTES], struct frame_hdr *h);

/* Outcome of validating a decoded header, in the contract's check order. */
enum frame_verdict {
	FRAME_OK = 0,
	FRAME_BAD_MAGIC,   /* reply cmd 0 code BAD_FRAME, then close */
	FRAME_TOO_LARGE,   /* reply cmd 0 code FRAME_TOO_LARGE, then close */
	FRAME_BAD_VERSION, /* reply same cmd/seq, UNSUPPORTED_VERSION, close */
};

/* Magic first, then len against max_frame, then version. */
enum frame_verdict frame_hdr_check(const struct frame_hdr *h, uint32_t max_frame);

/*
 * Encodes header + payload into one malloc'd buffer of FRAME_HDR_BYTES +
 * len bytes; *out_len receives the total. Returns NULL on allocation
 * failure. The caller owns (and frees) the result.
 */
uint8_t *frame_build(uint16_t cmd, uint32_t code, uint32_t seq,
		     const void *payload, uint32_t len, size_t *out_len);

/*
 * Stream reassembler.
 *
 *   bytes in ──► [complete frames inside the chunk] ──► callback, zero copy
 *           └──► [partial tail] ──► copied into buf (allocated lazily,
 *                                   freed as soon as it is empty)
 *
 * An idle connection therefore holds no buffer at all. The header is
 * checked before any payload is buffered, so a peer cannot make us
 * allocate more than max_frame + FRAME_HDR_BYTES, and the buffer grows
 * with the bytes that arrived, not with the header's len.
 */
struct frame_reader {
	uint8_t *buf;  /* partial or not-yet-delivered bytes; NULL when empty */
	uint32_t len;  /* bytes held in buf */
	uint32_t cap;  /* allocated size of buf */
	uint32_t max_frame;
};

/*
 * Called once per complete, valid frame. payload points to hdr->len bytes
 * (NULL when len is 0) and is valid only during the call. Return 0 to go
 * on, 1 to pause: the frame was NOT consumed and will be offered again by
 * the next frame_reader_drain/feed call (backpressure).
 */
typedef int (*frame_cb)(void *arg, const struct frame_hdr *hdr,
			const uint8_t *payload);

enum frame_feed_result {
	FEED_OK = 0,    /* everything consumed or buffered */
	FEED_PAUSED,    /* the callback paused; remaining bytes are buffered */
	FEED_ERROR,     /* bad header: *bad holds it, verdict says which */
	FEED_NOMEM,     /* could not buffer a partial frame */
};

void frame_reader_init(struct frame_reader *r, uint32_t max_frame);
/* Frees the buffer; the reader may be reused after frame_reader_init. */
void frame_reader_reset(struct frame_reader *r);

/*
 * Feeds n bytes. Delivers every complete frame (first those already
 * buffered, then those in data) to cb in order, and keeps the rest.
 * On FEED_ERROR, *verdict and *bad describe the offending header and the
 * reader's content is unspecified (the connection is to be closed).
 * On FEED_PAUSED all undelivered bytes (including the rest of data) are
 * copied into the reader.
 */
enum frame_feed_result frame_reader_feed(struct frame_reader *r,
					 const uint8_t *data, size_t n,
					 frame_cb cb, void *arg,
					 enum frame_verdict *verdict,
					 struct frame_hdr *bad);

/* Same as frame_reader_feed(r, NULL, 0, ...): retries buffered frames. */
enum frame_feed_result frame_reader_drain(struct frame_reader *r, frame_cb cb,
					  void *arg, enum frame_verdict *verdict,
					  struct frame_hdr *bad);

/* True when the reader holds at least one complete frame. */
bool frame_reader_has_frame(const struct frame_reader *r);
/* True when the reader holds the start of a frame that is not complete
 * yet (and no complete frame before it): the owner's frame deadline runs. */
bool frame_reader_partial(const struct frame_reader *r);

#endif
