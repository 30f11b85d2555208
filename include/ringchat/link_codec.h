/*
 * link_codec.h - byte layout of one node-link datagram (docs/protocol.md,
 * "Node link"): an 80-byte header, then records.
 *
 * Header, all big-endian:
 *
 *   off size field
 *     0   4  magic       "RCL1"
 *     4   1  version     1
 *     5   1  flags       DATA 0x01 | ACK 0x02 | PING 0x04
 *     6   2  len         payload bytes after the header
 *     8   4  src_node    sender's node id
 *    12   4  dst_node    receiver's node id
 *    16   8  src_epoch   sender's incarnation (never 0)
 *    24   8  dst_epoch   receiver's incarnation as the sender knows it, 0 = not yet
 *    32   8  pn          packet number: +1 per datagram sent to this peer (replay window)
 *    40   4  stream      sender's send-stream generation toward this peer (>= 1)
 *    44   4  seq         DATA only: reliable sequence number in that stream (wraps), else 0
 *    48   4  ack_stream  ACK only: the receiver's stream that ack/sack refer to, else 0
 *    52   4  ack         ACK only: every seq <= ack of ack_stream has arrived
 *    56   8  sack        ACK only: bit i set = seq ack+2+i has arrived
 *    64  16  check       HMAC-SHA256(secret, bytes 0..63 || payload), first 16 bytes
 *    80      payload     DATA: records; otherwise empty
 *
 * Record (6-byte header, then len bytes):
 *   len u16 (>= 1) | frag_idx u16 | frag_cnt u16 (>= 1, frag_idx < frag_cnt)
 * A message that fits a datagram is one record with frag 0 of 1; a larger
 * one is frag_cnt records in consecutive order of the stream.
 *
 * The codec is pure: no MAC computation here (link.c owns the key), no
 * allocation. Thread rules: none, every function works on caller memory.
 */
#ifndef RINGCHAT_LINK_CODEC_H
#define RINGCHAT_LINK_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LINK_MAGIC 0x52434C31u /* "RCL1" */
#define LINK_VERSION 1
#define LINK_HDR_BYTES 80
#define LINK_MAC_OFFSET 64 /* the MAC covers bytes [0, LINK_MAC_OFFSET) and the payload */
#define LINK_MAC_BYTES 16
#define LINK_REC_HDR_BYTES 6
#define LINK_SACK_BITS 64
/* The header's len field is 16 bits. */
#define LINK_MAX_DGRAM_BYTES (LINK_HDR_BYTES + 65535u)

enum link_flag {
	LINK_F_DATA = 0x01,
	LINK_F_ACK = 0x02,
	LINK_F_PING = 0x04,
};
#define LINK_F_ALL (LINK_F_DATA | LINK_F_ACK | LINK_F_PING)

struct link_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t flags;
	uint16_t len;
	uint32_t src_node;
	uint32_t dst_node;
	uint64_t src_epoch;
	uint64_t dst_epoch;
	uint64_t pn;
	uint32_t stream;
	uint32_t seq;
	uint32_t ack_stream;
	uint32_t ack;
	uint64_t sack;
	uint8_t check[LINK_MAC_BYTES];
};

struct link_rec {
	uint16_t len;
	uint16_t frag_idx;
	uint16_t frag_cnt;
	const uint8_t *data; /* decode: points into the payload; encode: len bytes to copy */
};

/* Writes h into out[0..LINK_HDR_BYTES) in network order, check included. */
void link_hdr_encode(uint8_t out[LINK_HDR_BYTES], const struct link_hdr *h);

/*
 * Reads a whole datagram's header into h and checks what can be checked
 * without the key: length at least LINK_HDR_BYTES, magic, version, len equal
 * to dgram_len - LINK_HDR_BYTES, no unknown flag, src_epoch and pn non-zero,
 * DATA iff payload (seq 0 otherwise), ACK with ack_stream >= 1, stream >= 1,
 * and a datagram with dst_epoch 0 carrying nothing but PING.
 * Returns 0, or -EBADMSG (h is then partly filled and must not be used).
 */
int link_hdr_decode(const uint8_t *dgram, size_t dgram_len, struct link_hdr *h);

/*
 * Appends one record (header + r->len bytes from r->data) at out; returns
 * the bytes written, or 0 when cap is too small. The caller guarantees
 * the record is valid (len >= 1, frag_idx < frag_cnt).
 */
size_t link_rec_encode(uint8_t *out, size_t cap, const struct link_rec *r);

/*
 * Reads the record at payload[*off]. Returns 1 and advances *off, 0 at the
 * end of the payload, or -EBADMSG for a record that is cut short, empty,
 * or has frag_cnt 0 or frag_idx >= frag_cnt.
 */
int link_rec_next(const uint8_t *payload, size_t len, size_t *off, struct link_rec *r);

/* Checks every record of a payload; returns their number (>= 1) or -EBADMSG. */
int link_payload_check(const uint8_t *payload, size_t len);

/* Modular sequence comparison: true when a comes after b (RFC 1982 style). */
static inline bool link_seq_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

#endif
