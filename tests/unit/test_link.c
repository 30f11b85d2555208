/*
 * test_link.c - the node link on a fake clock and a fake lossy channel.
 *
 * Two links (A = node 1, B = node 2) exchange datagrams through a
 * simulated channel that can drop, duplicate, delay and reorder them with a
 * seeded PRNG, or be cut. Time only moves when the simulation says so, so
 * every run is repeatable and RTT samples are exact.
 *
 * Every message carries (index, length) and a pattern derived from them,
 * so the receiver checks content, exactly-once and order on each delivery.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ringchat/link.h"
#include "ringchat/link_codec.h"

#define NODE_A 1u
#define NODE_B 2u
#define PORT_A 41001
#define PORT_B 41002
#define MAX_CAPTURE 64

static const uint8_t SECRET[] = "ringchat-test-cluster-secret-0123456789";

/* ---- PRNG (xorshift64*) -------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static bool chance(unsigned pct)
{
	return rng() % 100 < pct;
}

/* ---- the world: clock, channel, two endpoints ---------------------------- */

struct dgram {
	uint64_t at;
	int to; /* 0 = A, 1 = B */
	struct sockaddr_in from;
	size_t len;
	uint8_t *buf;
};

struct captured {
	size_t len;
	uint8_t buf[LINK_MAX_DGRAM_BYTES];
};

struct endpoint {
	struct world *w;
	int idx;
	struct link *link;
	uint32_t node_id;
	struct sockaddr_in addr;
	/* receive checks */
	uint32_t next_index; /* UINT32_MAX: take the first delivery as the start */
	uint32_t first_index;
	uint64_t delivered, delivered_bytes;
	bool order_broken;
	/* sender side */
	uint64_t undelivered;
	uint32_t *undelivered_idx;
	size_t undelivered_cap;
	int ups, downs;
	bool up;
	uint64_t down_at;
};

struct world {
	uint64_t now;
	struct dgram *q;
	size_t nq, capq;
	unsigned loss, dup, reorder;
	uint32_t delay_ms, jitter_ms;
	bool cut;
	int drop_data_seq_once; /* drop the first DATA datagram A->B with this seq */
	struct endpoint ep[2];
	/* every DATA datagram A sends: time and seq (for RTO timing checks) */
	uint64_t a_data_times[256];
	uint32_t a_data_seqs[256];
	size_t a_data_n;
	/* copies of datagrams A sent to B, for the security tests */
	struct captured *cap;
	size_t ncap;
};

static struct world W;

static uint32_t msg_pattern(uint32_t index, uint32_t i)
{
	return (index * 131u + i * 7u) & 0xff;
}

static size_t make_msg(uint8_t *buf, uint32_t index, uint32_t len)
{
	memcpy(buf, &index, 4);
	memcpy(buf + 4, &len, 4);
	for (uint32_t i = 8; i < len; i++)
		buf[i] = (uint8_t)msg_pattern(index, i);
	return len;
}

static void on_send(void *ctx, const struct sockaddr_in *to, const uint8_t *buf, size_t len)
{
	struct endpoint *e = ctx;
	struct world *w = e->w;
	int dst = to->sin_port == htons(PORT_A) ? 0 : 1;

	assert_true(len <= LINK_MAX_DGRAM_BYTES);
	if (e->idx == 0) {
		if (w->cap && w->ncap < MAX_CAPTURE) {
			w->cap[w->ncap].len = len;
			memcpy(w->cap[w->ncap].buf, buf, len);
			w->ncap++;
		}
		if (buf[5] & LINK_F_DATA) {
			uint32_t seq = ((uint32_t)buf[44] << 24) | ((uint32_t)buf[45] << 16) |
				       ((uint32_t)buf[46] << 8) | buf[47];
			if (w->a_data_n < 256) {
				w->a_data_times[w->a_data_n] = w->now;
				w->a_data_seqs[w->a_data_n++] = seq;
			}
			if (w->drop_data_seq_once && (uint32_t)w->drop_data_seq_once == seq) {
				w->drop_data_seq_once = 0;
				return;
			}
		}
	}
	if (w->cut || chance(w->loss))
		return;
	int copies = chance(w->dup) ? 2 : 1;
	for (int c = 0; c < copies; c++) {
		if (w->nq == w->capq) {
			w->capq = w->capq ? 2 * w->capq : 256;
			w->q = realloc(w->q, w->capq * sizeof(*w->q));
			assert_non_null(w->q);
		}
		struct dgram *d = &w->q[w->nq++];
		uint64_t delay = w->delay_ms;
		if (w->jitter_ms)
			delay += rng() % (w->jitter_ms + 1);
		if (chance(w->reorder))
			delay += 1 + rng() % 20;
		d->at = w->now + delay;
		d->to = dst;
		d->from = e->addr;
		d->len = len;
		d->buf = malloc(len);
		assert_non_null(d->buf);
		memcpy(d->buf, buf, len);
	}
}

static void on_deliver(void *ctx, uint32_t node_id, const uint8_t *msg, size_t len)
{
	struct endpoint *e = ctx;
	uint32_t index, mlen;

	(void)node_id;
	assert_true(len >= 8);
	memcpy(&index, msg, 4);
	memcpy(&mlen, msg + 4, 4);
	assert_int_equal(mlen, len);
	for (uint32_t i = 8; i < len; i++)
		if (msg[i] != msg_pattern(index, i))
			fail_msg("message %u corrupt at byte %u", index, i);
	if (e->next_index == UINT32_MAX) /* sync on the first one */
		e->first_index = e->next_index = index;
	if (index != e->next_index)
		e->order_broken = true;
	assert_int_equal(index, e->next_index);
	e->next_index = index + 1;
	e->delivered++;
	e->delivered_bytes += len;
}

static void on_peer_state(void *ctx, uint32_t node_id, bool up)
{
	struct endpoint *e = ctx;

	(void)node_id;
	e->up = up;
	if (up) {
		e->ups++;
	} else {
		e->downs++;
		e->down_at = e->w->now;
	}
}

static void on_undelivered(void *ctx, uint32_t node_id, const uint8_t *msg, size_t len)
{
	struct endpoint *e = ctx;
	uint32_t index;

	(void)node_id;
	assert_true(len >= 8);
	memcpy(&index, msg, 4);
	if (e->undelivered == e->undelivered_cap) {
		e->undelivered_cap = e->undelivered_cap ? 2 * e->undelivered_cap : 64;
		e->undelivered_idx =
		    realloc(e->undelivered_idx, e->undelivered_cap * sizeof(uint32_t));
		assert_non_null(e->undelivered_idx);
	}
	e->undelivered_idx[e->undelivered++] = index;
}

static const struct link_ops OPS = {
    .send_dgram = on_send,
    .deliver = on_deliver,
    .peer_state = on_peer_state,
    .undelivered = on_undelivered,
};

static struct sockaddr_in addr_of(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static struct link_config base_cfg(uint32_t node, uint64_t epoch)
{
	return (struct link_config){
	    .node_id = node,
	    .epoch = epoch,
	    .secret = SECRET,
	    .secret_len = sizeof(SECRET) - 1,
	};
}

/* (Re)creates endpoint idx with cfg and registers the other side as peer. */
static void endpoint_start(int idx, const struct link_config *cfg)
{
	struct endpoint *e = &W.ep[idx];

	link_free(e->link);
	e->link = link_new(cfg, &OPS, e);
	assert_non_null(e->link);
	uint16_t other_port = idx == 0 ? PORT_B : PORT_A;
	uint32_t other_node = idx == 0 ? NODE_B : NODE_A;
	struct sockaddr_in pa = addr_of(other_port);
	assert_int_equal(link_peer_add(e->link, other_node, &pa, W.now), 0);
}

static void world_init(uint64_t seed, const struct link_config *ca, const struct link_config *cb)
{
	memset(&W, 0, sizeof(W));
	rng_state = seed;
	W.now = 1000;
	W.delay_ms = 1;
	for (int i = 0; i < 2; i++) {
		W.ep[i].w = &W;
		W.ep[i].idx = i;
		W.ep[i].node_id = i == 0 ? NODE_A : NODE_B;
		W.ep[i].addr = addr_of(i == 0 ? PORT_A : PORT_B);
	}
	endpoint_start(0, ca);
	endpoint_start(1, cb);
}

static void world_drop_queue(void)
{
	for (size_t i = 0; i < W.nq; i++)
		free(W.q[i].buf);
	W.nq = 0;
}

static void world_free(void)
{
	world_drop_queue();
	free(W.q);
	for (int i = 0; i < 2; i++) {
		link_free(W.ep[i].link);
		free(W.ep[i].undelivered_idx);
	}
	free(W.cap);
	memset(&W, 0, sizeof(W));
}

/*
 * The time of the next event: first whatever the test queued since the
 * last step leaves now (flush), and timers due now run (poll), as in one
 * iteration of the I/O loop; then the earliest datagram or link deadline.
 */
static uint64_t next_event(void)
{
	uint64_t next = UINT64_MAX;

	for (int e = 0; e < 2; e++) {
		if (!W.ep[e].link)
			continue;
		link_flush(W.ep[e].link, W.now);
		uint64_t d = link_poll(W.ep[e].link, W.now);
		if (d < next)
			next = d;
	}
	for (size_t i = 0; i < W.nq; i++)
		if (W.q[i].at < next)
			next = W.q[i].at;
	return next < W.now ? W.now : next;
}

/* Hands over every datagram due now; each receiver flushes after its batch
 * (acks owed leave at once, as the I/O loop would do). */
static void process(void)
{
	bool any;

	do {
		any = false;
		bool got[2] = {false, false};
		for (size_t i = 0; i < W.nq;) {
			if (W.q[i].at > W.now) {
				i++;
				continue;
			}
			struct dgram d = W.q[i];
			W.q[i] = W.q[--W.nq];
			if (W.ep[d.to].link)
				link_input(W.ep[d.to].link, &d.from, d.buf, d.len, W.now);
			free(d.buf);
			got[d.to] = true;
			any = true;
		}
		for (int e = 0; e < 2; e++)
			if (got[e] && W.ep[e].link)
				link_flush(W.ep[e].link, W.now);
	} while (any);
	for (int e = 0; e < 2; e++)
		if (W.ep[e].link)
			link_poll(W.ep[e].link, W.now);
}

/* Moves the clock to the next event and runs it. */
static void step(void)
{
	uint64_t next = next_event();

	assert_true(next != UINT64_MAX);
	W.now = next;
	process();
}

/* Runs every event up to now + ms, then sets the clock there. */
static void run_for(uint64_t ms)
{
	uint64_t end = W.now + ms, next;

	while ((next = next_event()) <= end) {
		W.now = next;
		process();
	}
	W.now = end;
}

static bool both_up(void)
{
	return link_peer_up(W.ep[0].link, NODE_B) && link_peer_up(W.ep[1].link, NODE_A);
}

static void run_until_up(void)
{
	for (int i = 0; i < 100000 && !both_up(); i++)
		step();
	assert_true(both_up());
}

static struct link_peer_stats pstats(int idx)
{
	struct link_peer_stats s;
	assert_int_equal(link_peer_stats(W.ep[idx].link, idx == 0 ? NODE_B : NODE_A, &s), 0);
	return s;
}

/* ---- exactly once, in order, under loss ------------------------------------ */

static uint32_t pick_len(void)
{
	uint64_t r = rng() % 100;
	if (r < 70)
		return 8 + (uint32_t)(rng() % 200); /* coalesced */
	if (r < 90)
		return 200 + (uint32_t)(rng() % 1000); /* about one datagram */
	if (r < 99)
		return 1200 + (uint32_t)(rng() % 20000); /* a few fragments */
	return 50000 + (uint32_t)(rng() % 150000);	 /* many fragments */
}

static void transfer_from(unsigned loss, unsigned dup, unsigned reorder, uint32_t n, uint64_t seed,
			  uint32_t first_seq)
{
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	ca.first_seq = cb.first_seq = first_seq;
	/* Loss must never look like death here: this is about ordering. */
	ca.dead_ms = cb.dead_ms = 600000;
	world_init(seed, &ca, &cb);
	W.loss = loss;
	W.dup = dup;
	W.reorder = reorder;
	W.delay_ms = 2;
	W.jitter_ms = reorder ? 3 : 0;

	uint8_t *buf = malloc(256 * 1024);
	assert_non_null(buf);
	uint32_t sent[2] = {0, 0};
	uint32_t pending_len[2] = {0, 0};
	uint64_t enobufs = 0;

	for (int it = 0; it < 5000000; it++) {
		for (int e = 0; e < 2; e++) {
			while (sent[e] < n) {
				if (!pending_len[e])
					pending_len[e] = pick_len();
				make_msg(buf, sent[e], pending_len[e]);
				int rc = link_send(W.ep[e].link, e == 0 ? NODE_B : NODE_A, buf,
						   pending_len[e], W.now);
				if (rc == -ENOBUFS) {
					enobufs++;
					break;
				}
				assert_int_equal(rc, 0);
				sent[e]++;
				pending_len[e] = 0;
			}
		}
		if (W.ep[0].delivered == n && W.ep[1].delivered == n)
			break;
		step();
	}
	free(buf);

	for (int e = 0; e < 2; e++) {
		struct link_peer_stats s = pstats(e);
		assert_int_equal(W.ep[e].delivered, n);
		assert_false(W.ep[e].order_broken);
		assert_int_equal(W.ep[e].undelivered, 0);
		assert_int_equal(W.ep[e].downs, 0);
		assert_int_equal(s.msgs_delivered, n);
		assert_int_equal(s.mac_failures, 0);
		assert_int_equal(s.malformed, 0);
		if (loss == 0 && dup == 0)
			assert_int_equal(s.retransmits, 0);
		if (loss >= 20)
			assert_true(s.retransmits > 0);
		if (dup > 0)
			assert_true(s.replays + s.duplicates > 0);
	}
	/* Run on so the final acks land; then nothing is left queued. */
	run_for(5000);
	for (int e = 0; e < 2; e++) {
		struct link_peer_stats s = pstats(e);
		assert_int_equal(s.queued_msgs, 0);
		assert_int_equal(s.queued_bytes, 0);
		assert_int_equal(s.msgs_acked, n);
		print_message(
		    "loss %u%% dup %u%% reorder %u%%: %u msgs in %lu virtual ms, %lu dgrams, "
		    "%lu rtx (%lu fast), %lu timeouts, %.2f msgs/dgram, %lu ENOBUFS\n",
		    loss, dup, reorder, n, (unsigned long)W.now, (unsigned long)s.dgrams_sent,
		    (unsigned long)s.retransmits, (unsigned long)s.fast_retransmits,
		    (unsigned long)s.timeouts, (double)s.msgs_packed / (double)s.data_dgrams_sent,
		    (unsigned long)enobufs);
	}
	world_free();
}

static void transfer(unsigned loss, unsigned dup, unsigned reorder, uint32_t n, uint64_t seed)
{
	transfer_from(loss, dup, reorder, n, seed, 0);
}

static void test_exactly_once_in_order_0pct(void **state)
{
	(void)state;
	transfer(0, 0, 0, 4000, 1);
	transfer(0, 5, 20, 4000, 2);
}

static void test_exactly_once_in_order_5pct(void **state)
{
	(void)state;
	transfer(5, 5, 20, 4000, 3);
}

static void test_exactly_once_in_order_20pct(void **state)
{
	(void)state;
	transfer(20, 10, 30, 3000, 4);
}

static void test_exactly_once_in_order_50pct(void **state)
{
	(void)state;
	transfer(50, 10, 30, 2000, 5);
}

/* Sequence numbers cross 2^32 (and 0) in mid-transfer. */
static void test_seq_wraps_around(void **state)
{
	(void)state;
	transfer_from(10, 5, 20, 2000, 6, UINT32_MAX - 300);
}

/* ---- coalescing and fragmentation, exact counts ------------------------------ */

static void test_coalescing_and_fragmentation_counts(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	world_init(7, &ca, &cb);
	run_until_up();

	/* 100 messages of 20 bytes: 26 bytes per record, 1120 of payload per
	 * datagram -> 43 per datagram -> 3 datagrams. */
	uint8_t *buf = malloc(1u << 20);
	assert_non_null(buf);
	for (uint32_t i = 0; i < 100; i++) {
		make_msg(buf, i, 20);
		assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, 20, W.now), 0);
	}
	link_flush(W.ep[0].link, W.now);
	struct link_peer_stats s = pstats(0);
	assert_int_equal(s.data_dgrams_sent, 3);
	assert_int_equal(s.msgs_packed, 100);
	run_for(100);
	assert_int_equal(W.ep[1].delivered, 100);

	/* The largest message: (1 MiB) in fragments of 1114 bytes: 942 datagrams. */
	make_msg(buf, 100, 1u << 20);
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, 1u << 20, W.now), 0);
	for (int i = 0; i < 100000 && W.ep[1].delivered < 101; i++)
		step();
	assert_int_equal(W.ep[1].delivered, 101);
	s = pstats(0);
	assert_int_equal(s.data_dgrams_sent, 3 + 942);
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, (1u << 20) + 1, W.now), -EMSGSIZE);
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, 0, W.now), -EINVAL);
	assert_int_equal(link_send(W.ep[0].link, 9, buf, 10, W.now), -ENOENT);
	free(buf);
	world_free();
}

/* ---- flow control ---------------------------------------------------------- */

static void test_flow_control_bounded(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	ca.sndbuf_bytes = 64 * 1024;
	ca.max_msg_bytes = 16 * 1024;
	ca.dead_ms = cb.dead_ms = 600000;
	world_init(8, &ca, &cb);
	run_until_up();

	/* With the channel cut nothing is acked: the queue must fill and stop. */
	W.cut = true;
	uint8_t buf[1000];
	uint32_t accepted = 0;
	int rc;
	for (;;) {
		make_msg(buf, accepted, sizeof(buf));
		rc = link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now);
		if (rc != 0)
			break;
		accepted++;
		if (accepted % 10 == 0)
			step();
	}
	assert_int_equal(rc, -ENOBUFS);
	assert_int_equal(accepted, 65); /* 65 * 1000 <= 65536 < 66 * 1000 */
	struct link_peer_stats s = pstats(0);
	assert_true(s.queued_bytes <= ca.sndbuf_bytes);
	assert_false(link_can_send(W.ep[0].link, NODE_B, sizeof(buf)));
	/* what a caller bounding its senders reads: queued, not acked */
	assert_int_equal(link_queued_bytes(W.ep[0].link, NODE_B), 65 * 1000);
	assert_int_equal(link_queued_bytes(W.ep[0].link, 3), 0);
	run_for(3000);
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), -ENOBUFS);
	assert_int_equal(link_queued_bytes(W.ep[0].link, NODE_B), 65 * 1000);

	/* Channel back: it drains, and sending works again. */
	W.cut = false;
	for (int i = 0; i < 100000 && W.ep[1].delivered < accepted; i++)
		step();
	assert_int_equal(W.ep[1].delivered, accepted);
	run_for(100);
	s = pstats(0);
	assert_int_equal(s.queued_bytes, 0);
	assert_int_equal(link_queued_bytes(W.ep[0].link, NODE_B), 0);
	make_msg(buf, accepted, sizeof(buf));
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
	run_for(100);
	assert_int_equal(W.ep[1].delivered, accepted + 1);
	world_free();
}

/* ---- RTO per RFC 6298 -------------------------------------------------------- */

/* Sends one message A->B and runs until it is acked. */
static void one_round_trip(uint32_t index)
{
	uint8_t buf[100];
	uint64_t acked = pstats(0).msgs_acked;

	make_msg(buf, index, sizeof(buf));
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
	for (int i = 0; i < 100000 && pstats(0).msgs_acked == acked; i++)
		step();
	assert_int_equal(pstats(0).msgs_acked, acked + 1);
}

static void test_rto_follows_rfc6298(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	ca.ack_delay_ms = cb.ack_delay_ms = LINK_ACK_IMMEDIATE;
	ca.dead_ms = cb.dead_ms = 600000;
	ca.heartbeat_ms = cb.heartbeat_ms = 100000; /* no pings in the way */
	world_init(9, &ca, &cb);
	W.delay_ms = 20; /* fixed: every RTT sample is 40 ms */
	run_until_up();

	struct link_peer_stats s = pstats(0);
	assert_int_equal(s.srtt_us, 0);
	assert_int_equal(s.rto_ms, 200); /* initial */

	/* First sample R: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4 RTTVAR). */
	one_round_trip(0);
	s = pstats(0);
	assert_int_equal(s.srtt_us, 40000);
	assert_int_equal(s.rttvar_us, 20000);
	assert_int_equal(s.rto_ms, 120);
	/* Then RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, SRTT = 7/8 SRTT + 1/8 R. */
	one_round_trip(1);
	s = pstats(0);
	assert_int_equal(s.srtt_us, 40000);
	assert_int_equal(s.rttvar_us, 15000);
	assert_int_equal(s.rto_ms, 100);
	one_round_trip(2);
	s = pstats(0);
	assert_int_equal(s.rttvar_us, 11250);
	assert_int_equal(s.rto_ms, 85);
	one_round_trip(3);
	s = pstats(0);
	assert_int_equal(s.rttvar_us, 8437);
	assert_int_equal(s.rto_ms, 74); /* 40 + 33.748 rounded up */

	/* Cut: each RTO expiry retransmits and doubles the RTO, up to 2 s. */
	W.cut = true;
	W.a_data_n = 0;
	uint8_t buf[100];
	make_msg(buf, 4, sizeof(buf));
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
	run_for(74 + 148 + 296 + 592 + 1184 + 2000 + 2000 + 10);
	static const uint64_t gaps[] = {74, 148, 296, 592, 1184, 2000, 2000};
	assert_int_equal(W.a_data_n, 8);
	for (size_t i = 0; i < 7; i++) {
		assert_int_equal(W.a_data_seqs[i + 1], W.a_data_seqs[0]);
		assert_int_equal(W.a_data_times[i + 1] - W.a_data_times[i], gaps[i]);
	}
	s = pstats(0);
	assert_int_equal(s.timeouts, 7);
	assert_int_equal(s.retransmits, 7);
	assert_int_equal(s.rto_ms, 2000);

	/* The ack of a retransmitted datagram gives no sample (Karn) and the
	 * backed-off RTO stays until a fresh sample arrives. */
	W.cut = false;
	for (int i = 0; i < 100000 && pstats(0).msgs_acked < 5; i++)
		step();
	s = pstats(0);
	assert_int_equal(s.msgs_acked, 5);
	assert_int_equal(s.srtt_us, 40000);
	assert_int_equal(s.rttvar_us, 8437);
	assert_int_equal(s.rto_ms, 2000);
	one_round_trip(5);
	s = pstats(0);
	assert_int_equal(s.rttvar_us, 6327);
	assert_int_equal(s.rto_ms, 66); /* 40 + 25.308 rounded up */
	world_free();
}

/* ---- fast retransmit --------------------------------------------------------- */

static void test_fast_retransmit(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	world_init(10, &ca, &cb);
	W.delay_ms = 5;
	run_until_up();

	/* Ten one-datagram messages; the first datagram is lost once. */
	W.drop_data_seq_once = 1;
	W.a_data_n = 0;
	uint8_t buf[1000];
	for (uint32_t i = 0; i < 10; i++) {
		make_msg(buf, i, sizeof(buf));
		assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
	}
	uint64_t t0 = W.now;
	for (int i = 0; i < 100000 && W.ep[1].delivered < 10; i++)
		step();
	assert_int_equal(W.ep[1].delivered, 10);
	struct link_peer_stats s = pstats(0);
	assert_int_equal(s.fast_retransmits, 1);
	assert_int_equal(s.retransmits, 1);
	assert_int_equal(s.timeouts, 0);
	/* Well before the initial 200 ms RTO: one round trip after the SACKs. */
	assert_true(W.now - t0 < 40);
	assert_int_equal(W.a_data_n, 11);
	assert_int_equal(W.a_data_seqs[10], 1);
	world_free();
}

/* ---- peer down, restart, undelivered ---------------------------------------- */

static bool index_seen(const struct endpoint *e, uint32_t index)
{
	for (size_t i = 0; i < e->undelivered; i++)
		if (e->undelivered_idx[i] == index)
			return true;
	return false;
}

static void test_peer_down_after_silence_and_back_after_restart(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	world_init(11, &ca, &cb);
	run_until_up();
	assert_int_equal(W.ep[0].ups, 1);

	W.cut = true;
	uint64_t cut_at = W.now;
	uint8_t buf[300];
	for (uint32_t i = 0; i < 50; i++) {
		make_msg(buf, i, sizeof(buf));
		assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
	}
	for (int i = 0; i < 100000 && W.ep[0].downs == 0; i++)
		step();
	assert_int_equal(W.ep[0].downs, 1);
	/* Down after dead_ms (3 s) of silence, not before, not much later. */
	assert_true(W.ep[0].down_at - cut_at >= 3000);
	assert_true(W.ep[0].down_at - cut_at <= 3000 + 10);
	assert_false(link_peer_up(W.ep[0].link, NODE_B));
	/* Everything queued came back, in order; nothing was delivered. */
	assert_int_equal(W.ep[0].undelivered, 50);
	for (uint32_t i = 0; i < 50; i++)
		assert_int_equal(W.ep[0].undelivered_idx[i], i);
	assert_int_equal(W.ep[1].delivered, 0);
	assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), -EHOSTDOWN);
	struct link_peer_stats s = pstats(0);
	assert_int_equal(s.queued_msgs, 0);

	/* B restarts with a new epoch; the channel heals. */
	world_drop_queue();
	cb.epoch = 201;
	endpoint_start(1, &cb);
	W.ep[1].next_index = 0;
	W.cut = false;
	run_until_up();
	assert_int_equal(W.ep[0].ups, 2);
	s = pstats(0);
	assert_true(s.peer_epoch == 201);

	for (uint32_t i = 0; i < 20; i++) {
		make_msg(buf, i, sizeof(buf));
		assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
	}
	run_for(200);
	assert_int_equal(W.ep[1].delivered, 20);
	world_free();
}

static void test_restart_midway_loses_nothing_silently(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	world_init(12, &ca, &cb);
	W.delay_ms = 3;
	run_until_up();

	enum { N = 400 };
	static bool delivered_old[N], delivered_new[N];
	memset(delivered_old, 0, sizeof(delivered_old));
	memset(delivered_new, 0, sizeof(delivered_new));
	uint8_t buf[700];
	for (uint32_t i = 0; i < N; i++) {
		make_msg(buf, i, sizeof(buf));
		assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
	}
	/* Let B take part of it, then crash B (its link vanishes). */
	for (int i = 0; i < 100000 && W.ep[1].delivered < 50; i++)
		step();
	uint64_t old_n = W.ep[1].delivered;
	for (uint32_t i = 0; i < old_n; i++)
		delivered_old[i] = true;
	assert_true(old_n >= 50 && old_n < N);
	link_free(W.ep[1].link);
	W.ep[1].link = NULL;
	run_for(50);
	cb.epoch = 300;
	endpoint_start(1, &cb);

	/* B's new life starts counting where A's next untransmitted message is;
	 * deliveries are checked in order from there. */
	W.ep[1].delivered = 0;
	W.ep[1].next_index = UINT32_MAX;
	run_until_up();
	assert_int_equal(pstats(0).restarts, 1);
	for (int i = 0; i < 200000 && W.ep[1].next_index != N; i++)
		step();
	uint32_t first_new = W.ep[1].first_index;
	/* The first message the new B got is the first one A kept. */
	for (uint32_t i = 0; i < first_new; i++)
		assert_true(index_seen(&W.ep[0], i) || delivered_old[i]);
	assert_false(index_seen(&W.ep[0], first_new));
	for (uint32_t i = first_new; i < W.ep[1].next_index; i++)
		delivered_new[i] = true;
	run_for(500);

	/* Every message: delivered to the old B, handed back, or delivered to
	 * the new B; the new B got a contiguous, ordered run to the end. */
	for (uint32_t i = 0; i < N; i++)
		assert_true(delivered_old[i] || index_seen(&W.ep[0], i) || delivered_new[i]);
	assert_int_equal(W.ep[1].next_index, N);
	assert_true(W.ep[0].undelivered > 0);
	for (size_t i = 1; i < W.ep[0].undelivered; i++)
		assert_true(W.ep[0].undelivered_idx[i] == W.ep[0].undelivered_idx[i - 1] + 1);
	/* Untransmitted messages went to the new incarnation, not back to us. */
	assert_true(first_new < N);
	assert_false(index_seen(&W.ep[0], N - 1));
	struct link_peer_stats s = pstats(0);
	assert_int_equal(s.queued_msgs, 0);
	world_free();
}

/* ---- datagrams that must never be delivered -------------------------------- */

static size_t forge(uint8_t *out, const uint8_t *key, size_t key_len, uint64_t pn, uint32_t seq,
		    const char *text)
{
	struct link_hdr h = {
	    .magic = LINK_MAGIC,
	    .version = LINK_VERSION,
	    .flags = LINK_F_DATA,
	    .src_node = NODE_A,
	    .dst_node = NODE_B,
	    .src_epoch = 100,
	    .dst_epoch = 200,
	    .pn = pn,
	    .stream = 1,
	    .seq = seq,
	};
	uint8_t payload[256];
	uint8_t msg[64];
	/* Message 0 whatever the text; its length tells the variants apart. */
	uint32_t mlen = (uint32_t)make_msg(msg, 0, (uint32_t)(8 + strlen(text)));
	struct link_rec r = {.len = (uint16_t)mlen, .frag_idx = 0, .frag_cnt = 1, .data = msg};
	size_t plen = link_rec_encode(payload, sizeof(payload), &r);
	h.len = (uint16_t)plen;
	link_hdr_encode(out, &h);
	memcpy(out + LINK_HDR_BYTES, payload, plen);

	/* check = HMAC-SHA256(key, header[0..64) || payload)[0..16) */
	uint8_t *tmp = malloc(LINK_MAC_OFFSET + plen);
	assert_non_null(tmp);
	memcpy(tmp, out, LINK_MAC_OFFSET);
	memcpy(tmp + LINK_MAC_OFFSET, payload, plen);
	uint8_t md[32];
	unsigned mdlen = 0;
	assert_non_null(
	    HMAC(EVP_sha256(), key, (int)key_len, tmp, LINK_MAC_OFFSET + plen, md, &mdlen));
	free(tmp);
	memcpy(out + LINK_MAC_OFFSET, md, LINK_MAC_BYTES);
	return LINK_HDR_BYTES + plen;
}

/* A node behind a proxy (accept_relayed): an authentic datagram of a
 * registered peer is taken from the proxy's address; a forgery from there
 * is an unknown source and never delivered; without the flag the same
 * authentic datagram is refused. */
static void test_relayed_datagrams(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	ca.heartbeat_ms = cb.heartbeat_ms = 100000;
	ca.dead_ms = cb.dead_ms = 1000000;
	cb.accept_relayed = true;
	world_init(17, &ca, &cb);
	run_until_up();
	struct link *b = W.ep[1].link;
	struct sockaddr_in proxy = addr_of(41998);
	uint8_t d[LINK_MAX_DGRAM_BYTES];
	struct link_stats ls;
	uint64_t unk0;
	size_t n;

	link_stats(b, &ls);
	unk0 = ls.unknown_source;
	static const uint8_t wrong[] = "not-the-cluster-secret-0123456789";
	n = forge(d, wrong, sizeof(wrong) - 1, 1000, 1, "forged");
	link_input(b, &proxy, d, n, W.now);
	link_stats(b, &ls);
	assert_int_equal(ls.unknown_source, unk0 + 1);
	assert_int_equal(W.ep[1].delivered, 0);

	n = forge(d, SECRET, sizeof(SECRET) - 1, 1000, 1, "genuine");
	link_input(b, &proxy, d, n, W.now);
	assert_int_equal(W.ep[1].delivered, 1);
	assert_int_equal(pstats(1).relayed, 1);
	/* the same bytes again, from A's own address: a replay */
	link_input(b, &W.ep[0].addr, d, n, W.now);
	assert_int_equal(W.ep[1].delivered, 1);
	/* B now knows A at the proxy's address (and answers there): a fresh
	 * datagram from it is no longer counted as relayed */
	uint64_t dup0 = pstats(1).duplicates;

	n = forge(d, SECRET, sizeof(SECRET) - 1, 1001, 1, "genuine");
	link_input(b, &proxy, d, n, W.now);
	assert_int_equal(pstats(1).duplicates, dup0 + 1);
	assert_int_equal(pstats(1).relayed, 1);
	assert_int_equal(W.ep[1].delivered, 1);
	world_free();

	/* the default: only from the peer's address */
	cb.accept_relayed = false;
	world_init(17, &ca, &cb);
	run_until_up();
	b = W.ep[1].link;
	n = forge(d, SECRET, sizeof(SECRET) - 1, 1000, 1, "genuine");
	link_stats(b, &ls);
	unk0 = ls.unknown_source;
	link_input(b, &proxy, d, n, W.now);
	link_stats(b, &ls);
	assert_int_equal(ls.unknown_source, unk0 + 1);
	assert_int_equal(W.ep[1].delivered, 0);
	world_free();
}

static void test_bad_datagrams_never_delivered(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	ca.heartbeat_ms = cb.heartbeat_ms = 100000;
	ca.dead_ms = cb.dead_ms = 1000000;
	world_init(13, &ca, &cb);
	run_until_up();
	struct link *b = W.ep[1].link;
	struct sockaddr_in from_a = addr_of(PORT_A), stranger = addr_of(41999);
	uint8_t d[LINK_MAX_DGRAM_BYTES];
	struct link_peer_stats s0 = pstats(1), s;

	/* Wrong key. */
	static const uint8_t wrong[] = "not-the-cluster-secret-0123456789";
	size_t n = forge(d, wrong, sizeof(wrong) - 1, 1000, 1, "forged");
	link_input(b, &from_a, d, n, W.now);
	s = pstats(1);
	assert_int_equal(s.mac_failures, s0.mac_failures + 1);

	/* Right key, but one bit flipped anywhere: header field, MAC or payload. */
	n = forge(d, SECRET, sizeof(SECRET) - 1, 1000, 1, "genuine");
	uint64_t rejected = 0;
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			d[i] ^= (uint8_t)(1u << bit);
			link_input(b, &from_a, d, n, W.now);
			d[i] ^= (uint8_t)(1u << bit);
			rejected++;
		}
	}
	s = pstats(1);
	struct link_stats ls;
	link_stats(b, &ls);
	/* Each flipped datagram was counted as exactly one kind of drop. */
	assert_int_equal((s.mac_failures - s0.mac_failures - 1) + (s.malformed - s0.malformed) +
			     (ls.unknown_source),
			 rejected);
	assert_true(s.mac_failures - s0.mac_failures > rejected / 2);

	/* Every truncation. */
	uint64_t mal0 = s.malformed;
	for (size_t cut = 0; cut < n; cut++)
		link_input(b, &from_a, d, cut, W.now);
	s = pstats(1);
	assert_int_equal(s.malformed, mal0 + n);

	/* The intact datagram from a stranger's address. */
	uint64_t unk0 = ls.unknown_source;
	link_input(b, &stranger, d, n, W.now);
	link_stats(b, &ls);
	assert_int_equal(ls.unknown_source, unk0 + 1);
	assert_int_equal(W.ep[1].delivered, 0);

	/* Proof the datagram itself was good: from A's address it is delivered... */
	link_input(b, &from_a, d, n, W.now);
	s = pstats(1);
	assert_int_equal(W.ep[1].delivered, 1);
	/* ...exactly once: the same bytes again are a replay. */
	uint64_t rep0 = pstats(1).replays;
	link_input(b, &from_a, d, n, W.now);
	assert_int_equal(pstats(1).replays, rep0 + 1);
	/* A fresh packet number with an already delivered seq is a duplicate. */
	n = forge(d, SECRET, sizeof(SECRET) - 1, 1001, 1, "genuine");
	link_input(b, &from_a, d, n, W.now);
	assert_int_equal(pstats(1).duplicates, 1);
	/* Far below the replay window: a replay too. */
	n = forge(d, SECRET, sizeof(SECRET) - 1, 1001 - 300, 2, "old");
	link_input(b, &from_a, d, n, W.now);
	assert_int_equal(pstats(1).replays, rep0 + 2);
	/* Addressed to an older incarnation of B (dst_epoch 199): stale. */
	uint64_t st0 = pstats(1).stale;
	n = forge(d, SECRET, sizeof(SECRET) - 1, 1002, 2, "x");
	d[31] = 199; /* dst_epoch low byte */
	{
		/* re-MAC so only the epoch is wrong */
		uint8_t md[32];
		unsigned mdlen = 0;
		uint8_t tmp[LINK_MAX_DGRAM_BYTES];
		memcpy(tmp, d, LINK_MAC_OFFSET);
		memcpy(tmp + LINK_MAC_OFFSET, d + LINK_HDR_BYTES, n - LINK_HDR_BYTES);
		HMAC(EVP_sha256(), SECRET, sizeof(SECRET) - 1, tmp,
		     n - LINK_HDR_BYTES + LINK_MAC_OFFSET, md, &mdlen);
		memcpy(d + LINK_MAC_OFFSET, md, LINK_MAC_BYTES);
	}
	link_input(b, &from_a, d, n, W.now);
	assert_int_equal(pstats(1).stale, st0 + 1);
	assert_int_equal(W.ep[1].delivered, 1);
	world_free();
}

/* Datagrams captured on the wire and replayed later are dropped. */
static void test_replayed_traffic_is_dropped(void **state)
{
	(void)state;
	struct link_config ca = base_cfg(NODE_A, 100), cb = base_cfg(NODE_B, 200);
	world_init(14, &ca, &cb);
	W.cap = calloc(MAX_CAPTURE, sizeof(*W.cap));
	assert_non_null(W.cap);
	run_until_up();
	uint8_t buf[100];
	for (uint32_t i = 0; i < 10; i++) {
		make_msg(buf, i, sizeof(buf));
		assert_int_equal(link_send(W.ep[0].link, NODE_B, buf, sizeof(buf), W.now), 0);
		run_for(5);
	}
	run_for(100);
	assert_int_equal(W.ep[1].delivered, 10);
	assert_true(W.ncap > 10);

	struct sockaddr_in from_a = addr_of(PORT_A);
	uint64_t r0 = pstats(1).replays;
	for (size_t i = 0; i < W.ncap; i++)
		link_input(W.ep[1].link, &from_a, W.cap[i].buf, W.cap[i].len, W.now);
	assert_int_equal(pstats(1).replays, r0 + W.ncap);
	assert_int_equal(W.ep[1].delivered, 10);

	/* After B restarts, the old traffic names B's old epoch: stale. */
	cb.epoch = 250;
	endpoint_start(1, &cb);
	W.ep[1].next_index = 0;
	W.ep[1].delivered = 0;
	uint64_t stale = 0;
	for (size_t i = 0; i < W.ncap; i++) {
		/* Hellos (dst_epoch 0) are harmless and answered; the rest is stale. */
		link_input(W.ep[1].link, &from_a, W.cap[i].buf, W.cap[i].len, W.now);
	}
	stale = pstats(1).stale;
	assert_true(stale > 0);
	assert_int_equal(W.ep[1].delivered, 0);
	world_free();
}

/* ---- API contracts --------------------------------------------------------- */

static void test_config_and_peer_api(void **state)
{
	(void)state;
	struct link_config c = base_cfg(NODE_A, 100);
	struct link_config bad;

	bad = c;
	bad.epoch = 0;
	assert_null(link_new(&bad, &OPS, NULL));
	bad = c;
	bad.secret_len = 15;
	assert_null(link_new(&bad, &OPS, NULL));
	bad = c;
	bad.window = 48; /* not a power of two */
	assert_null(link_new(&bad, &OPS, NULL));
	bad = c;
	bad.heartbeat_ms = 3000; /* not below dead_ms */
	assert_null(link_new(&bad, &OPS, NULL));
	bad = c;
	bad.dgram_bytes = 200;
	assert_null(link_new(&bad, &OPS, NULL));
	bad = c;
	bad.sndbuf_bytes = 1000; /* below max_msg */
	assert_null(link_new(&bad, &OPS, NULL));

	/* A peer that never answers: down after dead_ms, its queue handed back. */
	struct link_config cb = base_cfg(NODE_B, 200);
	world_init(15, &c, &cb);
	W.cut = true;
	struct link *a = W.ep[0].link;
	struct sockaddr_in x = addr_of(41003), bx = addr_of(PORT_B);
	assert_int_equal(link_peer_add(a, NODE_A, &x, W.now), -EINVAL); /* ourselves */
	assert_int_equal(link_peer_add(a, NODE_B, &x, W.now), -EEXIST);
	assert_int_equal(link_peer_add(a, 3, &bx, W.now), -EEXIST);
	assert_int_equal(link_peer_set_addr(a, 9, &x), -ENOENT);
	assert_int_equal(link_peer_remove(a, 9), -ENOENT);
	uint8_t buf[64];
	for (uint32_t i = 0; i < 5; i++) {
		make_msg(buf, i, sizeof(buf));
		assert_int_equal(link_send(a, NODE_B, buf, sizeof(buf), W.now), 0);
	}
	uint64_t t0 = W.now;
	for (int i = 0; i < 100000 && W.ep[0].downs == 0; i++)
		step();
	assert_int_equal(W.ep[0].downs, 1);
	assert_int_equal(W.ep[0].ups, 0);
	assert_int_equal(W.ep[0].down_at - t0, 3000);
	assert_int_equal(W.ep[0].undelivered, 5);

	/* Removing a peer hands back what is queued for it. */
	assert_int_equal(link_peer_add(a, 3, &x, W.now), 0);
	for (uint32_t i = 5; i < 8; i++) {
		make_msg(buf, i, sizeof(buf));
		assert_int_equal(link_send(a, 3, buf, sizeof(buf), W.now), 0);
	}
	assert_int_equal(link_peer_remove(a, 3), 0);
	assert_int_equal(W.ep[0].undelivered, 8);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(W.ep[0].undelivered_idx[i], i);
	assert_int_equal(link_send(a, 3, buf, sizeof(buf), W.now), -ENOENT);
	struct link_stats ls;
	link_stats(a, &ls);
	assert_int_equal(ls.peers, 1);
	assert_int_equal(ls.peers_up, 0);
	world_free();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exactly_once_in_order_0pct),
	    cmocka_unit_test(test_exactly_once_in_order_5pct),
	    cmocka_unit_test(test_exactly_once_in_order_20pct),
	    cmocka_unit_test(test_exactly_once_in_order_50pct),
	    cmocka_unit_test(test_seq_wraps_around),
	    cmocka_unit_test(test_coalescing_and_fragmentation_counts),
	    cmocka_unit_test(test_flow_control_bounded),
	    cmocka_unit_test(test_rto_follows_rfc6298),
	    cmocka_unit_test(test_fast_retransmit),
	    cmocka_unit_test(test_peer_down_after_silence_and_back_after_restart),
	    cmocka_unit_test(test_restart_midway_loses_nothing_silently),
	    cmocka_unit_test(test_bad_datagrams_never_delivered),
	    cmocka_unit_test(test_relayed_datagrams),
	    cmocka_unit_test(test_replayed_traffic_is_dropped),
	    cmocka_unit_test(test_config_and_peer_api),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
