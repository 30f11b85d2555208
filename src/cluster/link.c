/*
 * link.c - reliable, authenticated node-to-node messages over UDP.
 *
 * Pure state machine: datagrams in through link_input, out through
 * ops->send_dgram, time from the caller (contract in link.h, wire format in
 * link_codec.h and docs/protocol.md "Node link").
 *
 * Per peer there are two independent directions:
 *
 *   send side: messages ─► queue (tx_msg FIFO, bounded by sndbuf_bytes)
 *              ─► packed into DATA datagrams, seq 1, 2, ... of the current
 *              send stream, at most `window` unacknowledged ─► acked by the
 *              peer's cumulative ack + SACK bitmap ─► a message is freed
 *              once every datagram holding a piece of it is cumulatively
 *              acked. Retransmission: one RTO timer per peer (RFC 6298,
 *              Karn's rule, doubling back-off), and fast retransmit of a
 *              hole once `dupthresh` later datagrams were SACKed.
 *   receive side: DATA datagrams are put in order in a window-sized ring,
 *              their records handed to deliver in seq order; fragments are
 *              reassembled. Acks are piggybacked on anything we send, sent
 *              at once on a gap, a duplicate, a PING or every second DATA
 *              datagram, otherwise after ack_delay_ms.
 *
 * Identity and freshness of a datagram, checked in this order (first
 * failure drops and counts it): registered address + matching src_node
 * (unknown_source), header well formed (malformed), MAC (mac_failures),
 * src_epoch not older than the peer's known one and dst_epoch ours or 0
 * (stale), packet number not seen within the 256-packet replay window
 * (replays), stream not older (stale).
 *
 * Peer state machine:
 *
 *              peer_add
 *                 │
 *                 ▼        answer naming our epoch
 *           CONNECTING ───────────────────────────────► UP
 *              │   ▲ peer restarted (new epoch):          │
 *              │   └── on-the-wire msgs → undelivered ◄───┤
 *   dead_ms    │                                          │ dead_ms silence, or
 *   no answer  ▼   answer naming our epoch                │ dead_ms without ack
 *            DOWN ◄──────────────────────────────────────┘ progress:
 *              │   ─────────────────────────────────► UP   all msgs → undelivered,
 *                                                          send stream + 1
 *
 * An epoch is one incarnation of a node; a stream is one run of send
 * sequence numbers toward one peer within an epoch. Giving up on queued
 * messages (down, or the peer restarted) starts a new stream at seq 1, and
 * the receiver resets its receive state when it sees a higher stream, so
 * neither side waits for a seq that will never come. Acks name the stream
 * they refer to (ack_stream), so an ack for the old run is never applied
 * to the new one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "ringchat/link.h"
#include "ringchat/link_codec.h"

#define DEF_DGRAM_BYTES 1200u
#define MIN_DGRAM_BYTES 256u
#define DEF_WINDOW 64u
#define MAX_WINDOW 1024u
#define DEF_MAX_MSG_BYTES (1u << 20)
#define DEF_SNDBUF_BYTES (2u << 20)
#define DEF_RTO_INITIAL_MS 200u
#define DEF_RTO_MIN_MS 10u
#define DEF_RTO_MAX_MS 2000u
#define DEF_ACK_DELAY_MS 2u
#define DEF_HEARTBEAT_MS 500u
#define DEF_DEAD_MS 3000u
#define DEF_DUPTHRESH 3u
#define MIN_SECRET_BYTES 16u
#define CLOCK_GRANULARITY_US 1000u /* G of RFC 6298: our clock ticks in ms */
#define REPLAY_WINDOW 256u
#define REPLAY_WORDS (REPLAY_WINDOW / 64)
/* A fragment smaller than this does not start in a datagram's leftover
 * space: the message starts in a fresh datagram instead. */
#define MIN_FIRST_FRAG_BYTES 64u

enum peer_phase { PEER_CONNECTING, PEER_UP, PEER_DOWN };

struct tx_msg {
	struct tx_msg *next;
	uint32_t len;
	uint32_t off;	   /* bytes packed into datagrams so far */
	uint16_t frag_idx; /* next fragment to pack */
	uint16_t frag_cnt; /* 0 until its first record is packed */
	uint32_t last_seq; /* datagram holding its last record (valid when off == len) */
	uint8_t data[];
};

struct tx_slot {
	uint8_t *payload; /* payload_max bytes, owned by peer->tx_buf */
	uint64_t sent_ms; /* last transmission */
	uint32_t seq;
	uint16_t len;
	uint16_t skips; /* later datagrams SACKed since its last transmission */
	bool used, sacked, rtx, fast_done;
};

struct rx_slot {
	uint8_t *payload; /* owned by peer->rx_buf */
	uint16_t len;
	bool present;
};

struct peer {
	uint32_t node_id;
	struct sockaddr_in addr;
	enum peer_phase phase;
	uint64_t phase_since_ms;

	/* send side */
	uint32_t tx_stream;
	uint32_t next_seq; /* seq of the next new DATA datagram */
	uint32_t snd_una;  /* oldest seq not cumulatively acked */
	uint64_t next_pn;
	struct tx_slot *tx;
	uint8_t *tx_buf;
	struct tx_msg *q_head, *q_tail;
	struct tx_msg *q_pack; /* first message not fully packed, NULL if none */
	uint32_t q_msgs;
	uint64_t q_bytes;

	/* RTT (RFC 6298), microseconds */
	uint32_t srtt_us, rttvar_us, rto_ms;
	bool have_rtt;
	uint64_t rtx_deadline; /* 0: timer off */
	uint64_t last_progress_ms;

	/* receive side */
	uint64_t peer_epoch; /* 0 = unknown */
	uint32_t rx_stream;  /* 0 = none seen in this epoch */
	uint32_t rcv_nxt;
	struct rx_slot *rx;
	uint8_t *rx_buf;
	uint64_t pn_max;
	uint64_t pn_seen[REPLAY_WORDS]; /* bit k = pn_max - k seen */
	uint8_t *reasm;
	uint32_t reasm_len, reasm_cap;
	uint16_t reasm_next, reasm_cnt; /* reasm_cnt 0: none in progress */

	/* acks owed to the peer */
	bool ack_now;
	uint64_t ack_at; /* 0: none delayed */
	uint32_t rx_unacked;

	uint64_t last_rx_ms, last_ping_ms;
	bool ping_now; /* a hello is due at the next poll (new peer) */

	struct link_peer_stats st;
};

struct link {
	struct link_config cfg;
	uint8_t *secret;
	struct link_ops ops;
	void *ctx;
	EVP_MAC *mac;
	EVP_MAC_CTX *mac_ctx;
	uint32_t payload_max; /* dgram_bytes - header */
	uint32_t frag_full;   /* payload_max - record header */
	struct peer **peers;
	uint32_t npeers, cap_peers;
	uint64_t unknown_source;
	uint8_t *out; /* one datagram being built */
};

/* ---- small helpers ---------------------------------------------------- */

static struct peer *peer_by_id(const struct link *l, uint32_t node_id)
{
	for (uint32_t i = 0; i < l->npeers; i++)
		if (l->peers[i]->node_id == node_id)
			return l->peers[i];
	return NULL;
}

/* A cluster has at most 32 nodes (ids.h): a linear scan beats a hash here. */
static struct peer *peer_by_addr(const struct link *l, const struct sockaddr_in *a)
{
	for (uint32_t i = 0; i < l->npeers; i++) {
		const struct sockaddr_in *p = &l->peers[i]->addr;
		if (p->sin_addr.s_addr == a->sin_addr.s_addr && p->sin_port == a->sin_port)
			return l->peers[i];
	}
	return NULL;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static struct tx_slot *tx_slot(const struct link *l, const struct peer *p, uint32_t seq)
{
	return &p->tx[seq % l->cfg.window];
}

static struct rx_slot *rx_slot(const struct link *l, const struct peer *p, uint32_t seq)
{
	return &p->rx[seq % l->cfg.window];
}

static uint32_t inflight(const struct peer *p)
{
	return p->next_seq - p->snd_una;
}

/* ---- MAC ---------------------------------------------------------------- */

/*
 * One EVP_MAC context per link, keyed once: EVP_MAC_init with a NULL key
 * restarts it with the same key (HMAC's inner/outer pads are kept), so a
 * datagram costs two SHA-256 compressions of the pads plus the data.
 */
static int mac_compute(struct link *l, const uint8_t *hdr, const uint8_t *payload, size_t len,
		       uint8_t out[LINK_MAC_BYTES])
{
	uint8_t full[EVP_MAX_MD_SIZE];
	size_t outl = 0;

	if (!EVP_MAC_init(l->mac_ctx, NULL, 0, NULL) ||
	    !EVP_MAC_update(l->mac_ctx, hdr, LINK_MAC_OFFSET) ||
	    (len && !EVP_MAC_update(l->mac_ctx, payload, len)) ||
	    !EVP_MAC_final(l->mac_ctx, full, &outl, sizeof(full)) || outl < LINK_MAC_BYTES)
		return -EIO;
	memcpy(out, full, LINK_MAC_BYTES);
	return 0;
}

/* ---- replay window -------------------------------------------------------- */

static void replay_reset(struct peer *p)
{
	p->pn_max = 0;
	memset(p->pn_seen, 0, sizeof(p->pn_seen));
}

/* True when pn was not seen yet and is inside the window. */
static bool replay_fresh(const struct peer *p, uint64_t pn)
{
	if (pn > p->pn_max)
		return true;
	uint64_t k = p->pn_max - pn;
	if (k >= REPLAY_WINDOW)
		return false;
	return !(p->pn_seen[k / 64] & (UINT64_C(1) << (k % 64)));
}

static void replay_mark(struct peer *p, uint64_t pn)
{
	if (pn > p->pn_max) {
		uint64_t d = pn - p->pn_max;
		if (p->pn_max == 0 || d >= REPLAY_WINDOW) {
			memset(p->pn_seen, 0, sizeof(p->pn_seen));
		} else {
			/* Shift the 256-bit set left by d (word 0 is least significant). */
			unsigned ws = (unsigned)(d / 64), bs = (unsigned)(d % 64);
			for (int i = REPLAY_WORDS - 1; i >= 0; i--) {
				uint64_t v = 0;
				if (i - (int)ws >= 0) {
					v = p->pn_seen[i - ws] << bs;
					if (bs && i - (int)ws - 1 >= 0)
						v |= p->pn_seen[i - ws - 1] >> (64 - bs);
				}
				p->pn_seen[i] = v;
			}
		}
		p->pn_max = pn;
	}
	uint64_t k = p->pn_max - pn;
	p->pn_seen[k / 64] |= UINT64_C(1) << (k % 64);
}

/* ---- sending datagrams -------------------------------------------------- */

/*
 * Builds and sends one datagram to p: header with the current ack state
 * (when we know the peer's epoch and stream), then payload. seq 0 = not
 * DATA. Sending any ack clears what was owed.
 */
static void emit(struct link *l, struct peer *p, uint8_t flags, uint32_t seq,
		 const uint8_t *payload, uint16_t len, uint64_t now_ms)
{
	struct link_hdr h = {
	    .magic = LINK_MAGIC,
	    .version = LINK_VERSION,
	    .len = len,
	    .src_node = l->cfg.node_id,
	    .dst_node = p->node_id,
	    .src_epoch = l->cfg.epoch,
	    .dst_epoch = p->peer_epoch,
	    .pn = ++p->next_pn,
	    .stream = p->tx_stream,
	    .seq = seq,
	};

	if (p->peer_epoch == 0 || p->phase == PEER_DOWN) {
		/* hello: all we may say before knowing them, or once they went
		 * silent (a restarted peer drops what names its old epoch, and
		 * behind a proxy it learns the way back only from us) */
		flags = LINK_F_PING;
		h.dst_epoch = 0;
	} else if (p->rx_stream != 0) {
		flags |= LINK_F_ACK;
		h.ack_stream = p->rx_stream;
		h.ack = p->rcv_nxt - 1;
		for (uint32_t i = 0; i < LINK_SACK_BITS && i + 1 < l->cfg.window; i++) {
			uint32_t s = p->rcv_nxt + 1 + i;
			const struct rx_slot *rs = rx_slot(l, p, s);
			if (rs->present)
				h.sack |= UINT64_C(1) << i;
		}
	}
	h.flags = flags;

	uint8_t *out = l->out;
	link_hdr_encode(out, &h);
	if (len)
		memcpy(out + LINK_HDR_BYTES, payload, len);
	if (mac_compute(l, out, payload, len, out + LINK_MAC_OFFSET) < 0)
		return; /* cannot happen with a working libcrypto; the peer will time out */
	l->ops.send_dgram(l->ctx, &p->addr, out, LINK_HDR_BYTES + (size_t)len);

	p->st.dgrams_sent++;
	p->st.bytes_sent += LINK_HDR_BYTES + (size_t)len;
	if (flags & LINK_F_ACK) {
		p->ack_now = false;
		p->ack_at = 0;
		p->rx_unacked = 0;
	}
	if (flags & LINK_F_PING)
		p->last_ping_ms = now_ms;
}

static void send_slot(struct link *l, struct peer *p, struct tx_slot *s, uint64_t now_ms)
{
	s->sent_ms = now_ms;
	s->skips = 0;
	emit(l, p, LINK_F_DATA, s->seq, s->payload, s->len, now_ms);
}

static void retransmit(struct link *l, struct peer *p, struct tx_slot *s, bool fast,
		       uint64_t now_ms)
{
	s->rtx = true;
	p->st.retransmits++;
	if (fast) {
		s->fast_done = true;
		p->st.fast_retransmits++;
	}
	send_slot(l, p, s, now_ms);
}

/* ---- send queue ----------------------------------------------------------- */

static void msg_release(struct peer *p, struct tx_msg *m)
{
	p->q_msgs--;
	p->q_bytes -= m->len;
	free(m);
}

/*
 * Takes the messages selected by `transmitted_only` off the queue (all of
 * them, or those of which some part went out), hands them to undelivered in
 * send order, and starts a new send stream. The list is detached before any
 * callback runs, so a callback that queues again does not disturb it.
 */
static void tx_abandon(struct link *l, struct peer *p, bool transmitted_only)
{
	struct tx_msg *give = NULL, **gtail = &give;
	struct tx_msg *keep = NULL, *klast = NULL;

	for (struct tx_msg *m = p->q_head, *next; m; m = next) {
		next = m->next;
		m->next = NULL;
		if (!transmitted_only || m->off > 0) {
			*gtail = m;
			gtail = &m->next;
		} else {
			if (klast)
				klast->next = m;
			else
				keep = m;
			klast = m;
		}
	}
	p->q_head = keep;
	p->q_tail = klast;
	p->q_pack = keep;

	for (uint32_t i = 0; i < l->cfg.window; i++)
		p->tx[i].used = false;
	p->tx_stream++;
	p->next_seq = p->snd_una = l->cfg.first_seq;
	p->rtx_deadline = 0;

	while (give) {
		struct tx_msg *m = give;
		give = m->next;
		p->st.msgs_undelivered++;
		p->q_msgs--;
		p->q_bytes -= m->len;
		if (l->ops.undelivered)
			l->ops.undelivered(l->ctx, p->node_id, m->data, m->len);
		free(m);
	}
}

/*
 * Fills one datagram payload from the queue. Returns its length (0 when
 * nothing was packed). A message that fits a datagram is never split; a
 * larger one starts in the current datagram's leftover space (if at least
 * MIN_FIRST_FRAG_BYTES) and continues in full datagrams, so the fragment
 * count is known when the first fragment is written.
 */
static uint16_t pack_one(struct link *l, struct peer *p, uint8_t *buf, uint32_t seq)
{
	uint32_t used = 0;

	while (p->q_pack) {
		struct tx_msg *m = p->q_pack;
		uint32_t space = l->payload_max - used;
		struct link_rec r;

		if (space <= LINK_REC_HDR_BYTES)
			break;
		if (m->frag_cnt == 0) {
			if (m->len + LINK_REC_HDR_BYTES <= space) {
				r.len = (uint16_t)m->len;
				r.frag_idx = 0;
				r.frag_cnt = 1;
			} else if (m->len + LINK_REC_HDR_BYTES <= l->payload_max ||
				   space < LINK_REC_HDR_BYTES + MIN_FIRST_FRAG_BYTES) {
				break; /* starts in the next datagram */
			} else {
				uint32_t first = space - LINK_REC_HDR_BYTES;
				uint32_t rest = m->len - first;
				r.len = (uint16_t)first;
				r.frag_idx = 0;
				r.frag_cnt =
				    (uint16_t)(1 + (rest + l->frag_full - 1) / l->frag_full);
			}
			m->frag_cnt = r.frag_cnt;
			p->st.msgs_packed++;
		} else {
			/* A continuation always opens a datagram: the previous
			 * fragment filled its own. */
			if (used != 0)
				break;
			uint32_t left = m->len - m->off;
			r.len = (uint16_t)(left < l->frag_full ? left : l->frag_full);
			r.frag_idx = m->frag_idx;
			r.frag_cnt = m->frag_cnt;
		}
		r.data = m->data + m->off;
		used += (uint32_t)link_rec_encode(buf + used, space, &r);
		m->off += r.len;
		m->frag_idx++;
		if (m->off < m->len)
			break; /* the datagram is full */
		m->last_seq = seq;
		p->q_pack = m->next;
	}
	return (uint16_t)used;
}

static bool can_pack(const struct link *l, const struct peer *p)
{
	return p->q_pack && p->peer_epoch != 0 && p->phase != PEER_DOWN &&
	       inflight(p) < l->cfg.window;
}

static void peer_flush(struct link *l, struct peer *p, uint64_t now_ms)
{
	while (can_pack(l, p)) {
		uint32_t seq = p->next_seq;
		struct tx_slot *s = tx_slot(l, p, seq);
		uint16_t len = pack_one(l, p, s->payload, seq);
		if (len == 0)
			break;
		s->seq = seq;
		s->len = len;
		s->used = true;
		s->sacked = s->rtx = s->fast_done = false;
		if (inflight(p) == 0)
			p->last_progress_ms = now_ms;
		p->next_seq++;
		p->st.data_dgrams_sent++;
		send_slot(l, p, s, now_ms);
		if (p->rtx_deadline == 0)
			p->rtx_deadline = now_ms + p->rto_ms;
	}
	if (p->ack_now || (p->ack_at && now_ms >= p->ack_at))
		emit(l, p, 0, 0, NULL, 0, now_ms);
}

/* ---- RTT and acks ------------------------------------------------------- */

static void rtt_sample(struct link *l, struct peer *p, uint64_t rtt_ms)
{
	uint64_t r = rtt_ms * 1000;

	if (r > UINT32_MAX)
		r = UINT32_MAX;
	if (!p->have_rtt) {
		p->srtt_us = (uint32_t)r;
		p->rttvar_us = (uint32_t)(r / 2);
		p->have_rtt = true;
	} else {
		uint64_t diff = p->srtt_us > r ? p->srtt_us - r : r - p->srtt_us;
		p->rttvar_us = (uint32_t)((3 * (uint64_t)p->rttvar_us + diff) / 4);
		p->srtt_us = (uint32_t)((7 * (uint64_t)p->srtt_us + r) / 8);
	}
	uint64_t var4 = 4 * (uint64_t)p->rttvar_us;
	uint64_t rto_us = p->srtt_us + max_u64(CLOCK_GRANULARITY_US, var4);
	uint64_t rto = (rto_us + 999) / 1000;
	if (rto < l->cfg.rto_min_ms)
		rto = l->cfg.rto_min_ms;
	if (rto > l->cfg.rto_max_ms)
		rto = l->cfg.rto_max_ms;
	p->rto_ms = (uint32_t)rto;
}

static void on_ack(struct link *l, struct peer *p, uint32_t ack, uint64_t sack, uint64_t now_ms)
{
	/* An ack for a seq we never sent is bogus: ignore it whole. */
	if (link_seq_after(ack, p->next_seq - 1))
		return;

	const struct tx_slot *sample = NULL;
	bool advanced = false;

	while (link_seq_after(ack + 1, p->snd_una)) {
		struct tx_slot *s = tx_slot(l, p, p->snd_una);
		if (s->used && !s->sacked && !s->rtx &&
		    (!sample || link_seq_after(s->seq, sample->seq)))
			sample = s;
		s->used = false;
		p->snd_una++;
		advanced = true;
	}

	uint32_t top_sacked = 0;
	bool any_sacked = false;
	for (uint32_t i = 0; i < LINK_SACK_BITS; i++) {
		if (!(sack & (UINT64_C(1) << i)))
			continue;
		uint32_t seq = ack + 2 + i;
		if (!link_seq_after(p->next_seq, seq))
			break;
		struct tx_slot *s = tx_slot(l, p, seq);
		if (!s->used || s->seq != seq || s->sacked)
			continue;
		s->sacked = true;
		top_sacked = seq;
		any_sacked = true;
		if (!s->rtx && (!sample || link_seq_after(s->seq, sample->seq)))
			sample = s;
		/* Every hole below this newly SACKed datagram was skipped once more. */
		for (uint32_t h = p->snd_una; link_seq_after(seq, h); h++) {
			struct tx_slot *hs = tx_slot(l, p, h);
			if (hs->used && !hs->sacked)
				hs->skips++;
		}
	}

	/* Karn: samples only from datagrams sent once. */
	if (sample)
		rtt_sample(l, p, now_ms - sample->sent_ms);

	if (advanced) {
		p->last_progress_ms = now_ms;
		p->rtx_deadline = inflight(p) ? now_ms + p->rto_ms : 0;
		while (p->q_head && p->q_head->off == p->q_head->len &&
		       !link_seq_after(p->q_head->last_seq, ack)) {
			struct tx_msg *m = p->q_head;
			p->q_head = m->next;
			if (!p->q_head)
				p->q_tail = NULL;
			p->st.msgs_acked++;
			msg_release(p, m);
		}
	}

	if (any_sacked) {
		for (uint32_t h = p->snd_una; link_seq_after(top_sacked, h); h++) {
			struct tx_slot *hs = tx_slot(l, p, h);
			if (hs->used && !hs->sacked && !hs->fast_done &&
			    hs->skips >= l->cfg.dupthresh)
				retransmit(l, p, hs, true, now_ms);
		}
	}
}

/* ---- receiving ------------------------------------------------------------ */

static void reasm_drop(struct peer *p)
{
	free(p->reasm);
	p->reasm = NULL;
	p->reasm_len = p->reasm_cap = 0;
	p->reasm_next = p->reasm_cnt = 0;
}

static void rx_reset_stream(struct link *l, struct peer *p, uint32_t stream)
{
	p->rx_stream = stream;
	p->rcv_nxt = l->cfg.first_seq;
	for (uint32_t i = 0; i < l->cfg.window; i++)
		p->rx[i].present = false;
	reasm_drop(p);
	p->rx_unacked = 0;
	p->ack_at = 0;
}

/* A record that breaks the fragment order can only come from a peer with
 * the key and a bug: count it and drop the message being assembled. */
static void rx_records(struct link *l, struct peer *p, const uint8_t *payload, size_t len)
{
	size_t off = 0;
	struct link_rec r;

	while (link_rec_next(payload, len, &off, &r) == 1) {
		if (r.frag_cnt == 1) {
			if (p->reasm_cnt) {
				p->st.malformed++;
				reasm_drop(p);
			}
			p->st.msgs_delivered++;
			l->ops.deliver(l->ctx, p->node_id, r.data, r.len);
			continue;
		}
		if (r.frag_idx == 0) {
			if (p->reasm_cnt) {
				p->st.malformed++;
				reasm_drop(p);
			}
			p->reasm_cnt = r.frag_cnt;
			p->reasm_next = 0;
		} else if (!p->reasm_cnt || r.frag_idx != p->reasm_next ||
			   r.frag_cnt != p->reasm_cnt) {
			p->st.malformed++;
			reasm_drop(p);
			continue;
		}
		if ((uint64_t)p->reasm_len + r.len > l->cfg.max_msg_bytes) {
			p->st.malformed++;
			reasm_drop(p);
			continue;
		}
		if (p->reasm_len + r.len > p->reasm_cap) {
			uint64_t cap = max_u64(p->reasm_cap ? 2 * (uint64_t)p->reasm_cap : 4096,
					       (uint64_t)p->reasm_len + r.len);
			cap = min_u64(cap, l->cfg.max_msg_bytes);
			uint8_t *nb = realloc(p->reasm, cap);
			if (!nb) {
				/* Out of memory: the message is lost on this side,
				 * but it is counted, never delivered torn. */
				p->st.malformed++;
				reasm_drop(p);
				continue;
			}
			p->reasm = nb;
			p->reasm_cap = (uint32_t)cap;
		}
		memcpy(p->reasm + p->reasm_len, r.data, r.len);
		p->reasm_len += r.len;
		if (++p->reasm_next == p->reasm_cnt) {
			p->st.msgs_delivered++;
			l->ops.deliver(l->ctx, p->node_id, p->reasm, p->reasm_len);
			/* Freed at once rather than kept for the next large
			 * message: an idle peer holds no buffer. */
			reasm_drop(p);
		}
	}
}

static void rx_data(struct link *l, struct peer *p, uint32_t seq, const uint8_t *payload,
		    uint16_t len, uint64_t now_ms)
{
	if (!link_seq_after(seq, p->rcv_nxt - 1)) {
		p->st.duplicates++;
		p->ack_now = true; /* our ack may have been lost */
		return;
	}
	if (seq - p->rcv_nxt >= l->cfg.window) {
		p->st.out_of_window++;
		p->ack_now = true;
		return;
	}
	struct rx_slot *rs = rx_slot(l, p, seq);
	if (seq != p->rcv_nxt) {
		if (rs->present) {
			p->st.duplicates++;
		} else {
			memcpy(rs->payload, payload, len);
			rs->len = len;
			rs->present = true;
		}
		p->ack_now = true; /* a gap: tell the sender at once */
		return;
	}

	uint32_t stream = p->rx_stream;
	rx_records(l, p, payload, len);
	p->rcv_nxt++;
	/* Drain what was waiting behind it. */
	while (p->rx_stream == stream) {
		rs = rx_slot(l, p, p->rcv_nxt);
		if (!rs->present)
			break;
		rs->present = false;
		rx_records(l, p, rs->payload, rs->len);
		p->rcv_nxt++;
	}
	if (++p->rx_unacked >= 2 || l->cfg.ack_delay_ms == LINK_ACK_IMMEDIATE)
		p->ack_now = true;
	else if (p->ack_at == 0)
		p->ack_at = now_ms + l->cfg.ack_delay_ms;
}

static void set_phase(struct link *l, struct peer *p, enum peer_phase ph, uint64_t now_ms)
{
	enum peer_phase old = p->phase;

	p->phase = ph;
	p->phase_since_ms = now_ms;
	if (ph == PEER_UP && old != PEER_UP) {
		p->st.ups++;
		p->last_progress_ms = now_ms;
		if (l->ops.peer_state)
			l->ops.peer_state(l->ctx, p->node_id, true);
	} else if (ph != PEER_UP && old == PEER_UP) {
		p->st.downs++;
		if (l->ops.peer_state)
			l->ops.peer_state(l->ctx, p->node_id, false);
	} else if (ph == PEER_DOWN && old == PEER_CONNECTING) {
		/* Never reached: still tell the caller, its messages come back next. */
		p->st.downs++;
		if (l->ops.peer_state)
			l->ops.peer_state(l->ctx, p->node_id, false);
	}
}

/* The peer came back as a new incarnation: what it may have received in
 * its old life is unknown, what it never saw goes to the new one. */
static void peer_restarted(struct link *l, struct peer *p, uint64_t now_ms)
{
	p->st.restarts++;
	if (p->phase == PEER_UP)
		set_phase(l, p, PEER_CONNECTING, now_ms);
	else
		p->phase_since_ms = now_ms;
	tx_abandon(l, p, true);
}

void link_input(struct link *l, const struct sockaddr_in *from, const uint8_t *dgram, size_t len,
		uint64_t now_ms)
{
	struct peer *p = peer_by_addr(l, from);
	bool relayed = false;
	struct link_hdr h;
	uint8_t mac[LINK_MAC_BYTES];

	if (!p) {
		/*
		 * Not from a peer's address: an unknown source, unless this
		 * node sits behind a proxy or NAT (accept_relayed), which
		 * forwards a peer's datagrams from its own address. Then a
		 * datagram is taken only if it names a registered peer and
		 * passes that peer's MAC and replay checks below.
		 */
		if (!l->cfg.accept_relayed || link_hdr_decode(dgram, len, &h) < 0 ||
		    h.dst_node != l->cfg.node_id || !(p = peer_by_id(l, h.src_node))) {
			l->unknown_source++;
			return;
		}
		relayed = true;
	} else if (link_hdr_decode(dgram, len, &h) < 0 || h.dst_node != l->cfg.node_id) {
		p->st.malformed++;
		return;
	}
	if (h.src_node != p->node_id) {
		l->unknown_source++;
		return;
	}
	if (mac_compute(l, dgram, dgram + LINK_HDR_BYTES, h.len, mac) < 0 ||
	    CRYPTO_memcmp(mac, h.check, LINK_MAC_BYTES) != 0) {
		if (relayed)
			l->unknown_source++; /* a forgery from anywhere: never a peer's */
		else
			p->st.mac_failures++;
		return;
	}
	if (h.src_epoch < p->peer_epoch || (h.dst_epoch != 0 && h.dst_epoch != l->cfg.epoch)) {
		p->st.stale++;
		return;
	}
	if (h.flags & LINK_F_DATA && link_payload_check(dgram + LINK_HDR_BYTES, h.len) < 0) {
		p->st.malformed++;
		return;
	}
	if (h.src_epoch > p->peer_epoch) {
		if (p->peer_epoch != 0)
			peer_restarted(l, p, now_ms);
		p->peer_epoch = h.src_epoch;
		replay_reset(p);
		rx_reset_stream(l, p, 0);
	}
	if (!replay_fresh(p, h.pn)) {
		p->st.replays++;
		return;
	}
	if (link_seq_after(p->rx_stream, h.stream)) {
		p->st.stale++;
		return;
	}
	replay_mark(p, h.pn);
	/* Behind a proxy the way back is through it too: answer where the
	 * peer's newest authentic datagram came from (a replay never moves it). */
	if (relayed) {
		p->st.relayed++;
		p->addr = *from;
	}
	p->st.dgrams_recv++;
	p->st.bytes_recv += len;
	p->last_rx_ms = now_ms;
	if (h.stream != p->rx_stream)
		rx_reset_stream(l, p, h.stream);

	if (h.dst_epoch == 0) {
		p->ack_now = true; /* a hello: answer with our epoch */
		return;
	}
	if (p->phase != PEER_UP)
		set_phase(l, p, PEER_UP, now_ms);
	if ((h.flags & LINK_F_ACK) && h.ack_stream == p->tx_stream)
		on_ack(l, p, h.ack, h.sack, now_ms);
	if (h.flags & LINK_F_PING)
		p->ack_now = true;
	if (h.flags & LINK_F_DATA)
		rx_data(l, p, h.seq, dgram + LINK_HDR_BYTES, h.len, now_ms);
}

/* ---- timers ----------------------------------------------------------------- */

static void peer_down(struct link *l, struct peer *p, uint64_t now_ms)
{
	set_phase(l, p, PEER_DOWN, now_ms);
	tx_abandon(l, p, false);
}

static uint64_t peer_deadline(const struct link *l, const struct peer *p)
{
	uint64_t d = UINT64_MAX;

	if (p->ping_now)
		return 0;
	if (p->rtx_deadline)
		d = min_u64(d, p->rtx_deadline);
	if (p->ack_at)
		d = min_u64(d, p->ack_at);
	if (p->phase == PEER_UP) {
		d = min_u64(d, max_u64(p->last_rx_ms, p->last_ping_ms) + l->cfg.heartbeat_ms);
		d = min_u64(d, p->last_rx_ms + l->cfg.dead_ms);
		if (inflight(p))
			d = min_u64(d, p->last_progress_ms + l->cfg.dead_ms);
	} else {
		d = min_u64(d, p->last_ping_ms + l->cfg.heartbeat_ms);
		if (p->phase == PEER_CONNECTING)
			d = min_u64(d, p->phase_since_ms + l->cfg.dead_ms);
	}
	return d;
}

static void peer_poll(struct link *l, struct peer *p, uint64_t now_ms)
{
	if (p->phase == PEER_UP) {
		if (now_ms >= p->last_rx_ms + l->cfg.dead_ms ||
		    (inflight(p) && now_ms >= p->last_progress_ms + l->cfg.dead_ms))
			peer_down(l, p, now_ms);
	} else if (p->phase == PEER_CONNECTING && now_ms >= p->phase_since_ms + l->cfg.dead_ms) {
		peer_down(l, p, now_ms);
	}

	if (p->rtx_deadline && now_ms >= p->rtx_deadline) {
		/* RFC 6298 5.4-5.6, but every hole goes again, not only the
		 * first: with SACK we know which ones are missing. */
		p->st.timeouts++;
		for (uint32_t s = p->snd_una; s != p->next_seq; s++) {
			struct tx_slot *ts = tx_slot(l, p, s);
			if (ts->used && !ts->sacked) {
				ts->fast_done = false;
				retransmit(l, p, ts, false, now_ms);
			}
		}
		p->rto_ms = (uint32_t)min_u64(2 * (uint64_t)p->rto_ms, l->cfg.rto_max_ms);
		p->rtx_deadline = now_ms + p->rto_ms;
	}

	uint64_t heard =
	    p->phase == PEER_UP ? max_u64(p->last_rx_ms, p->last_ping_ms) : p->last_ping_ms;
	if (p->ping_now || now_ms >= heard + l->cfg.heartbeat_ms) {
		p->ping_now = false;
		emit(l, p, LINK_F_PING, 0, NULL, 0, now_ms);
	}
	peer_flush(l, p, now_ms);
}

uint64_t link_poll(struct link *l, uint64_t now_ms)
{
	uint64_t next = UINT64_MAX;

	for (uint32_t i = 0; i < l->npeers; i++) {
		struct peer *p = l->peers[i];
		peer_poll(l, p, now_ms);
		next = min_u64(next, peer_deadline(l, p));
	}
	return next;
}

void link_flush(struct link *l, uint64_t now_ms)
{
	for (uint32_t i = 0; i < l->npeers; i++)
		peer_flush(l, l->peers[i], now_ms);
}

/* ---- API -------------------------------------------------------------------- */

static uint32_t or_default(uint32_t v, uint32_t def)
{
	return v ? v : def;
}

struct link *link_new(const struct link_config *cfg, const struct link_ops *ops, void *ctx)
{
	if (!cfg || !ops || !ops->send_dgram || !ops->deliver || cfg->epoch == 0 || !cfg->secret ||
	    cfg->secret_len < MIN_SECRET_BYTES)
		return NULL;

	struct link *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->cfg = *cfg;
	l->cfg.dgram_bytes = or_default(cfg->dgram_bytes, DEF_DGRAM_BYTES);
	l->cfg.window = or_default(cfg->window, DEF_WINDOW);
	l->cfg.max_msg_bytes = or_default(cfg->max_msg_bytes, DEF_MAX_MSG_BYTES);
	l->cfg.sndbuf_bytes = or_default(cfg->sndbuf_bytes, DEF_SNDBUF_BYTES);
	l->cfg.rto_initial_ms = or_default(cfg->rto_initial_ms, DEF_RTO_INITIAL_MS);
	l->cfg.rto_min_ms = or_default(cfg->rto_min_ms, DEF_RTO_MIN_MS);
	l->cfg.rto_max_ms = or_default(cfg->rto_max_ms, DEF_RTO_MAX_MS);
	l->cfg.ack_delay_ms = or_default(cfg->ack_delay_ms, DEF_ACK_DELAY_MS);
	l->cfg.heartbeat_ms = or_default(cfg->heartbeat_ms, DEF_HEARTBEAT_MS);
	l->cfg.dead_ms = or_default(cfg->dead_ms, DEF_DEAD_MS);
	l->cfg.dupthresh = or_default(cfg->dupthresh, DEF_DUPTHRESH);
	l->cfg.first_seq = or_default(cfg->first_seq, 1);

	const struct link_config *c = &l->cfg;
	l->payload_max = c->dgram_bytes - LINK_HDR_BYTES;
	l->frag_full = l->payload_max - LINK_REC_HDR_BYTES;
	if (c->dgram_bytes < MIN_DGRAM_BYTES || c->dgram_bytes > LINK_MAX_DGRAM_BYTES ||
	    /* a power of two, so seq % window stays contiguous across the
	     * 2^32 wrap of seq */
	    c->window > MAX_WINDOW || (c->window & (c->window - 1)) != 0 ||
	    c->rto_min_ms > c->rto_max_ms || c->heartbeat_ms >= c->dead_ms ||
	    c->sndbuf_bytes < c->max_msg_bytes ||
	    /* fragment indices are 16 bits */
	    (uint64_t)c->max_msg_bytes > (uint64_t)l->frag_full * 65535u)
		goto out_free;

	l->ops = *ops;
	l->ctx = ctx;
	l->secret = malloc(cfg->secret_len);
	l->out = malloc(c->dgram_bytes);
	if (!l->secret || !l->out)
		goto out_free;
	memcpy(l->secret, cfg->secret, cfg->secret_len);
	l->cfg.secret = l->secret;

	l->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!l->mac)
		goto out_free;
	l->mac_ctx = EVP_MAC_CTX_new(l->mac);
	if (!l->mac_ctx)
		goto out_free;
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
	    OSSL_PARAM_construct_end(),
	};
	if (!EVP_MAC_init(l->mac_ctx, l->secret, cfg->secret_len, params))
		goto out_free;
	return l;

out_free:
	link_free(l);
	return NULL;
}

static void peer_free(struct peer *p)
{
	for (struct tx_msg *m = p->q_head, *next; m; m = next) {
		next = m->next;
		free(m);
	}
	free(p->tx);
	free(p->tx_buf);
	free(p->rx);
	free(p->rx_buf);
	free(p->reasm);
	free(p);
}

void link_free(struct link *l)
{
	if (!l)
		return;
	for (uint32_t i = 0; i < l->npeers; i++)
		peer_free(l->peers[i]);
	free(l->peers);
	EVP_MAC_CTX_free(l->mac_ctx);
	EVP_MAC_free(l->mac);
	if (l->secret)
		OPENSSL_cleanse(l->secret, l->cfg.secret_len);
	free(l->secret);
	free(l->out);
	free(l);
}

int link_peer_add(struct link *l, uint32_t node_id, const struct sockaddr_in *addr, uint64_t now_ms)
{
	if (!addr || node_id == l->cfg.node_id)
		return -EINVAL;
	if (peer_by_id(l, node_id) || peer_by_addr(l, addr))
		return -EEXIST;
	if (l->npeers == l->cap_peers) {
		uint32_t cap = l->cap_peers ? 2 * l->cap_peers : 8;
		struct peer **np = realloc(l->peers, cap * sizeof(*np));
		if (!np)
			return -ENOMEM;
		l->peers = np;
		l->cap_peers = cap;
	}

	struct peer *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	uint32_t w = l->cfg.window;
	p->tx = calloc(w, sizeof(*p->tx));
	p->rx = calloc(w, sizeof(*p->rx));
	p->tx_buf = malloc((size_t)w * l->payload_max);
	p->rx_buf = malloc((size_t)w * l->payload_max);
	if (!p->tx || !p->rx || !p->tx_buf || !p->rx_buf) {
		peer_free(p);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < w; i++) {
		p->tx[i].payload = p->tx_buf + (size_t)i * l->payload_max;
		p->rx[i].payload = p->rx_buf + (size_t)i * l->payload_max;
	}
	p->node_id = node_id;
	p->addr = *addr;
	p->phase = PEER_CONNECTING;
	p->phase_since_ms = now_ms;
	p->tx_stream = 1;
	p->next_seq = p->snd_una = l->cfg.first_seq;
	p->rto_ms = l->cfg.rto_initial_ms;
	p->rcv_nxt = l->cfg.first_seq;
	p->last_rx_ms = now_ms;
	p->last_ping_ms = now_ms;
	p->ping_now = true; /* the first hello goes out at the next poll */
	p->st.node_id = node_id;
	l->peers[l->npeers++] = p;
	return 0;
}

int link_peer_remove(struct link *l, uint32_t node_id)
{
	for (uint32_t i = 0; i < l->npeers; i++) {
		struct peer *p = l->peers[i];
		if (p->node_id != node_id)
			continue;
		l->peers[i] = l->peers[--l->npeers];
		tx_abandon(l, p, false);
		peer_free(p);
		return 0;
	}
	return -ENOENT;
}

int link_peer_set_addr(struct link *l, uint32_t node_id, const struct sockaddr_in *addr)
{
	struct peer *p = peer_by_id(l, node_id);
	struct peer *other = peer_by_addr(l, addr);

	if (!p)
		return -ENOENT;
	if (other && other != p)
		return -EEXIST;
	p->addr = *addr;
	return 0;
}

bool link_can_send(const struct link *l, uint32_t node_id, size_t len)
{
	const struct peer *p = peer_by_id(l, node_id);

	return p && p->phase != PEER_DOWN && p->q_bytes + len <= l->cfg.sndbuf_bytes;
}

uint64_t link_queued_bytes(const struct link *l, uint32_t node_id)
{
	const struct peer *p = peer_by_id(l, node_id);

	return p ? p->q_bytes : 0;
}

int link_send(struct link *l, uint32_t node_id, const void *msg, size_t len, uint64_t now_ms)
{
	struct peer *p = peer_by_id(l, node_id);

	(void)now_ms;
	if (!p)
		return -ENOENT;
	if (len == 0)
		return -EINVAL;
	if (len > l->cfg.max_msg_bytes)
		return -EMSGSIZE;
	if (p->phase == PEER_DOWN)
		return -EHOSTDOWN;
	if (p->q_bytes + len > l->cfg.sndbuf_bytes)
		return -ENOBUFS;

	struct tx_msg *m = malloc(sizeof(*m) + len);
	if (!m)
		return -ENOBUFS;
	m->next = NULL;
	m->len = (uint32_t)len;
	m->off = 0;
	m->frag_idx = m->frag_cnt = 0;
	m->last_seq = 0;
	memcpy(m->data, msg, len);
	if (p->q_tail)
		p->q_tail->next = m;
	else
		p->q_head = m;
	p->q_tail = m;
	if (!p->q_pack)
		p->q_pack = m;
	p->q_msgs++;
	p->q_bytes += len;
	p->st.msgs_sent++;
	return 0;
}

int link_peer_stats(const struct link *l, uint32_t node_id, struct link_peer_stats *out)
{
	const struct peer *p = peer_by_id(l, node_id);

	if (!p)
		return -ENOENT;
	*out = p->st;
	out->up = p->phase == PEER_UP;
	out->peer_epoch = p->peer_epoch;
	out->srtt_us = p->have_rtt ? p->srtt_us : 0;
	out->rttvar_us = p->have_rtt ? p->rttvar_us : 0;
	out->rto_ms = p->rto_ms;
	out->inflight_dgrams = inflight(p);
	out->queued_msgs = p->q_msgs;
	out->queued_bytes = p->q_bytes;
	return 0;
}

void link_stats(const struct link *l, struct link_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->unknown_source = l->unknown_source;
	out->peers = l->npeers;
	for (uint32_t i = 0; i < l->npeers; i++) {
		const struct peer *p = l->peers[i];
		out->malformed += p->st.malformed;
		out->mac_failures += p->st.mac_failures;
		out->replays += p->st.replays;
		out->peers_up += p->phase == PEER_UP;
	}
}

bool link_peer_up(const struct link *l, uint32_t node_id)
{
	const struct peer *p = peer_by_id(l, node_id);

	return p && p->phase == PEER_UP;
}
