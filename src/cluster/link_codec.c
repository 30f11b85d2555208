/*
 * link_codec.c - node-link datagram header and records (layout in
 * link_codec.h and docs/protocol.md).
 */
#include <errno.h>
#include <string.h>

#include "ringchat/be.h"
#include "ringchat/link_codec.h"

void link_hdr_encode(uint8_t out[LINK_HDR_BYTES], const struct link_hdr *h)
{
	be_put32(out + 0, h->magic);
	out[4] = h->version;
	out[5] = h->flags;
	be_put16(out + 6, h->len);
	be_put32(out + 8, h->src_node);
	be_put32(out + 12, h->dst_node);
	be_put64(out + 16, h->src_epoch);
	be_put64(out + 24, h->dst_epoch);
	be_put64(out + 32, h->pn);
	be_put32(out + 40, h->stream);
	be_put32(out + 44, h->seq);
	be_put32(out + 48, h->ack_stream);
	be_put32(out + 52, h->ack);
	be_put64(out + 56, h->sack);
	memcpy(out + LINK_MAC_OFFSET, h->check, LINK_MAC_BYTES);
}

int link_hdr_decode(const uint8_t *dgram, size_t dgram_len, struct link_hdr *h)
{
	if (dgram_len < LINK_HDR_BYTES)
		return -EBADMSG;
	h->magic = be_get32(dgram + 0);
	h->version = dgram[4];
	h->flags = dgram[5];
	h->len = be_get16(dgram + 6);
	if (h->magic != LINK_MAGIC || h->version != LINK_VERSION)
		return -EBADMSG;
	if ((size_t)h->len != dgram_len - LINK_HDR_BYTES)
		return -EBADMSG;
	if (h->flags & ~LINK_F_ALL)
		return -EBADMSG;
	h->src_node = be_get32(dgram + 8);
	h->dst_node = be_get32(dgram + 12);
	h->src_epoch = be_get64(dgram + 16);
	h->dst_epoch = be_get64(dgram + 24);
	h->pn = be_get64(dgram + 32);
	h->stream = be_get32(dgram + 40);
	h->seq = be_get32(dgram + 44);
	h->ack_stream = be_get32(dgram + 48);
	h->ack = be_get32(dgram + 52);
	h->sack = be_get64(dgram + 56);
	memcpy(h->check, dgram + LINK_MAC_OFFSET, LINK_MAC_BYTES);

	if (h->src_epoch == 0 || h->pn == 0 || h->stream == 0)
		return -EBADMSG;
	/* DATA and a payload go together; only DATA is sequenced (its seq
	 * may be any value, 0 included, as it wraps). */
	if (!!(h->flags & LINK_F_DATA) != (h->len > 0))
		return -EBADMSG;
	if (!(h->flags & LINK_F_DATA) && h->seq != 0)
		return -EBADMSG;
	if ((h->flags & LINK_F_ACK) ? h->ack_stream == 0 : (h->ack_stream | h->ack | h->sack) != 0)
		return -EBADMSG;
	/* Before the sender knows our incarnation it may only say hello. */
	if (h->dst_epoch == 0 && h->flags != LINK_F_PING)
		return -EBADMSG;
	return 0;
}

size_t link_rec_encode(uint8_t *out, size_t cap, const struct link_rec *r)
{
	size_t need = LINK_REC_HDR_BYTES + (size_t)r->len;

	if (need > cap)
		return 0;
	be_put16(out + 0, r->len);
	be_put16(out + 2, r->frag_idx);
	be_put16(out + 4, r->frag_cnt);
	memcpy(out + LINK_REC_HDR_BYTES, r->data, r->len);
	return need;
}

int link_rec_next(const uint8_t *payload, size_t len, size_t *off, struct link_rec *r)
{
	size_t o = *off;

	if (o == len)
		return 0;
	if (o > len || len - o < LINK_REC_HDR_BYTES)
		return -EBADMSG;
	r->len = be_get16(payload + o);
	r->frag_idx = be_get16(payload + o + 2);
	r->frag_cnt = be_get16(payload + o + 4);
	if (r->len == 0 || r->frag_cnt == 0 || r->frag_idx >= r->frag_cnt)
		return -EBADMSG;
	if (len - o - LINK_REC_HDR_BYTES < r->len)
		return -EBADMSG;
	r->data = payload + o + LINK_REC_HDR_BYTES;
	*off = o + LINK_REC_HDR_BYTES + r->len;
	return 1;
}

int link_payload_check(const uint8_t *payload, size_t len)
{
	size_t off = 0;
	struct link_rec r;
	int n = 0, rc;

	while ((rc = link_rec_next(payload, len, &off, &r)) == 1)
		n++;
	if (rc < 0 || n == 0)
		return -EBADMSG;
	return n;
}
