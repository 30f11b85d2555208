/*
 * link_io.c - the node link on the ring (link_io.h).
 *
 *   worker ── link_io_send ──► pending buffer (mutex) ──┐
 *                                                       ▼ ring iteration (flush)
 *            link_send, or the node's backlog while its link queue is full
 *   UDP socket ◄── sendmsg (slot pool) ◄── link_send / link_flush
 *   UDP socket ── multishot recvmsg ──► link's buffer group ──► link_input ──► ops->deliver
 *              (or recvmsg ×LIO_RECVS)
 *   ring timer at link_poll's deadline ──► link_poll (retransmit, acks,
 *                                          heartbeats, peers down)
 *
 * Sends: the link hands a datagram that is valid only during its
 * callback; it is copied into a free slot and sent with one sendmsg SQE
 * (all of an iteration's sends go to the kernel in one submit). Without
 * a free slot (a burst beyond LIO_SEND_SLOTS in flight) the datagram is
 * sent with sendto at once: UDP on a non-blocking socket never waits.
 *
 * Receives: one multishot recvmsg (IORING_RECV_MULTISHOT) posts a CQE per
 * datagram, each in a buffer of the link's own provided-buffer group
 * (ring_bufs_create; LIO_RECV_BUFS buffers of LIO_RECV_BUF_BYTES: the
 * kernel's io_uring_recvmsg_out, the sender's sockaddr_in, the datagram).
 * A buffer goes back to the kernel as soon as link_input returned (the
 * link copies what it keeps), and the ring publishes it before its next
 * submit. The receive state machine:
 *
 *   ARMED ── CQE with F_MORE ──► link_input, buffer back ──► ARMED
 *   ARMED ── CQE without F_MORE ──► (-ENOBUFS counted; other errors
 *            counted) ──► armed again at once ──► ARMED
 *   ARMED ── -EINVAL (a kernel without multishot recvmsg) ──► SINGLE:
 *            LIO_RECVS single-shot recvmsg, each re-armed after its CQE
 *
 * -ENOBUFS means every buffer was taken before the ring looked at the CQ;
 * the datagrams behind them wait in the socket and the new arm takes them.
 * A datagram longer than LIO_DGRAM_MAX arrives cut (MSG_TRUNC) and is
 * dropped as malformed in both modes. ringchat_link_recv_multishot shows
 * the mode, and the first CQE logs it.
 *
 * Wake-ups follow handoff.h: a sender appends, fences and wakes the ring
 * only if it announced a sleep; the ring announces (sleep), fences and
 * re-checks the buffer.
 *
 * Flow control: what a node's senders may have queued toward one peer and
 * not yet acknowledged (pending + backlog + the link's queue) is bounded
 * by LINK_IO_FLOW_BYTES. A sender over it waits (link_io_send) until the
 * peer's acks bring it under, so a saturated link slows its senders down
 * to the rate the peer takes in, instead of queueing seconds of messages
 * (which reached the peer seconds late, or were refused at the 32 MiB
 * bound and stored). The ring publishes each peer's queued bytes once
 * per iteration and signals the waiters when they fell. A wait with no
 * progress at all for LIO_STALL_MS (the peer silent, or this ring stuck)
 * ends, and the peer counts as stalled until its bytes fall again: then
 * nobody waits for it (messages queue as before, up to the hard bound),
 * so a dead peer costs a sender one stall, not one per message, and no
 * wait can close a cycle of threads waiting on each other. No wait lasts
 * over LIO_WAIT_MAX_MS, and once the ring drains (shutdown) nobody waits.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringchat/clock.h"
#include "ringchat/config.h"
#include "ringchat/handoff.h"
#include "ringchat/link.h"
#include "ringchat/link_io.h"
#include "ringchat/log.h"
#include "ringchat/ring.h"
#include "ringchat/sock.h"

#define LIO_RECVS 16		/* single-shot recvmsg in flight (the fallback) */
/* Buffers of the multishot receive (a power of two): how many datagrams
 * the kernel may receive before the ring's next look at the CQ. One
 * iteration at 20,000 messages/s carries a few dozen datagrams; beyond
 * the bound the receive stops (-ENOBUFS) and is armed again at once. */
#define LIO_RECV_BUFS 256
#define LIO_SEND_SLOTS 256	/* sendmsg in flight, at most */
#define LIO_DGRAM_MAX 2048	/* a slot; datagrams are at most dgram_bytes (1200) */
/* A multishot buffer: the kernel's header, the sender's address, then
 * the datagram; a longer one arrives cut (MSG_TRUNC) and is dropped. */
#define LIO_RECV_BUF_BYTES                                                                         \
	(sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_in) + LIO_DGRAM_MAX)
#define LIO_NODES 32
#define LIO_HDR 5		/* pending record: u8 node, u32 len */
#define LIO_RTO_MIN_MS 2
/* A wait for room that sees no ack for this long gives up (see above;
 * the metric ringchat_link_flow_stalls_total names the value). */
#define LIO_STALL_MS 200
/* No single wait lasts longer than this (see lio_wait_room). */
#define LIO_WAIT_MAX_MS 500

enum lio_sub { LIO_SUB_RECV = 1, LIO_SUB_SEND = 2, LIO_SUB_RECV_MS = 3 };

/* How datagrams come in (see the top). */
enum lio_recv_mode {
	LIO_RECV_SINGLE,    /* LIO_RECVS single-shot recvmsg */
	LIO_RECV_MULTISHOT, /* one multishot recvmsg into the link's buffer group */
};

unsigned link_io_fault_recv_bufs;

struct lio_recv {
	struct msghdr mh;
	struct iovec iov;
	struct sockaddr_in from;
	uint8_t buf[LIO_DGRAM_MAX];
};

struct lio_send {
	struct msghdr mh;
	struct iovec iov;
	struct sockaddr_in to;
	uint8_t buf[LIO_DGRAM_MAX];
};

struct lio_buf {
	uint8_t *p;
	size_t len, cap;
};

struct lio_backlog {
	struct lio_buf b;
	size_t off; /* records before it are in the link */
};

struct link_io {
	int fd;
	struct link *link;
	struct link_io_ops ops;
	void *ctx;
	struct ring *ring;
	struct handoff *h;
	struct ring_timer timer;

	/* senders → ring; lock held only to append or swap (and by waiting
	 * senders, which release it in their wait) */
	pthread_mutex_t lock;
	struct lio_buf pending, taking;
	_Atomic bool has_pending;
	char peer_addr[LIO_NODES][64]; /* set_peer, under lock */
	uint32_t peer_dirty;	       /* bit per node, under lock */
	size_t pending_node[LIO_NODES]; /* message bytes in pending, under lock */

	/* flow control (see the top): queued[n] is written by the ring (its
	 * link's and backlog's bytes for n, and at the take under the lock);
	 * room_gen[n] grows and stalled[n] clears when queued[n] fell. seq_cst
	 * throughout: a sender raises waiters and then re-reads both, the ring
	 * writes both and then reads waiters (Dekker: one sees the other). */
	pthread_cond_t room; /* under lock: the ring saw some queued[n] fall */
	_Atomic uint64_t queued[LIO_NODES];
	_Atomic uint64_t room_gen[LIO_NODES];
	_Atomic bool stalled[LIO_NODES];
	_Atomic uint32_t waiters;
	_Atomic uint64_t flow_waits, flow_stalls, flow_give_ups; /* statistics */
	pthread_t ring_thread; /* never waits: it is what makes room */
	_Atomic bool attached;
	_Atomic bool stopping; /* the ring drains: nothing will make room */

	/* ring thread: per node, the messages the link could not take yet
	 * (its queue toward that node is full), in order, before new ones
	 * for that node; one backlog per node, so a node that stopped
	 * answering holds up no other */
	struct lio_backlog backlog[LIO_NODES];
	uint32_t backlog_mask;		  /* bit per node whose backlog is not empty */
	_Atomic size_t backlog_bytes;	  /* all of them, read by senders for the bound */
	uint64_t backlog_node[LIO_NODES]; /* message bytes in node's backlog */
	uint32_t peers;			  /* bit per node the link has as a peer */
	struct lio_recv recvs[LIO_RECVS];
	bool recv_armed[LIO_RECVS];
	enum lio_recv_mode recv_mode;
	bool ms_armed;		 /* the multishot recvmsg is in the kernel */
	bool ms_settled;	 /* a CQE of it came: the mode was logged */
	struct msghdr ms_mh;	 /* the multishot template: name length only */
	struct ring_bufs *rbufs; /* the multishot's buffers (the ring's) */
	uint64_t recv_nobufs, recv_truncated;
	struct lio_send *slots;
	uint32_t *free_slots;
	uint32_t nfree;
	bool draining;
	uint64_t sent_direct, send_errors, recv_errors;
	_Atomic uint64_t queue_full;
};

/* ---- senders (any thread) -------------------------------------------------- */

static int lio_buf_grow(struct lio_buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 4096;
	uint8_t *p;

	if (need <= b->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

static int lio_buf_append(struct lio_buf *b, int node, const void *msg, size_t len)
{
	size_t need = b->len + LIO_HDR + len;

	if (lio_buf_grow(b, need))
		return -ENOMEM;
	b->p[b->len] = (uint8_t)node;
	memcpy(b->p + b->len + 1, &(uint32_t){ (uint32_t)len }, 4);
	memcpy(b->p + b->len + LIO_HDR, msg, len);
	b->len = need;
	return 0;
}

/* Wakes the ring if it announced a sleep (pairs with the fence in
 * lio_sleep: one of the two sees the other). */
static void lio_wake_ring(struct link_io *lio)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (lio->h)
		handoff_wake_ring(lio->h);
}

/* Under lock: node's senders have more than the flow bound queued, len
 * bytes included (one message alone always fits). */
static bool lio_over_flow(struct link_io *lio, int node, size_t len)
{
	uint64_t q = atomic_load(&lio->queued[node]) + lio->pending_node[node];

	return q > 0 && q + len > LINK_IO_FLOW_BYTES;
}

/*
 * Under lock, on a sender's thread: waits while node is over the flow
 * bound and draining. Every fall of its queued bytes (room_gen) renews
 * the LIO_STALL_MS budget; a budget spent without one marks the node
 * stalled, and nobody waits for a stalled node until it drains again.
 * No wait lasts over LIO_WAIT_MAX_MS: a message larger than what the
 * others keep queued would otherwise wait for an empty queue that never
 * comes while they go on sending.
 */
static void lio_wait_room(struct link_io *lio, int node, size_t len)
{
	uint64_t gen = atomic_load(&lio->room_gen[node]);
	uint64_t now = clock_mono_ns();
	uint64_t stall_at = now + LIO_STALL_MS * 1000000ull;
	uint64_t give_up_at = now + LIO_WAIT_MAX_MS * 1000000ull;
	bool counted = false;

	if (!atomic_load(&lio->attached) || atomic_load(&lio->stopping) ||
	    pthread_equal(pthread_self(), lio->ring_thread))
		return;
	for (;;) {
		uint64_t until_ns = stall_at < give_up_at ? stall_at : give_up_at;
		struct timespec until = {
			.tv_sec = (time_t)(until_ns / 1000000000ull),
			.tv_nsec = (long)(until_ns % 1000000000ull),
		};
		int rc;

		atomic_fetch_add(&lio->waiters, 1);
		/* re-read after raising waiters: pairs with lio_publish */
		if (!lio_over_flow(lio, node, len) || atomic_load(&lio->stalled[node]) ||
		    atomic_load(&lio->stopping)) {
			atomic_fetch_sub(&lio->waiters, 1);
			return;
		}
		if (!counted) {
			atomic_fetch_add_explicit(&lio->flow_waits, 1, memory_order_relaxed);
			counted = true;
		}
		rc = pthread_cond_timedwait(&lio->room, &lio->lock, &until);
		atomic_fetch_sub(&lio->waiters, 1);
		now = clock_mono_ns();
		if (atomic_load(&lio->room_gen[node]) != gen) {
			gen = atomic_load(&lio->room_gen[node]);
			stall_at = now + LIO_STALL_MS * 1000000ull;
		} else if (rc == ETIMEDOUT && now >= stall_at) {
			atomic_store(&lio->stalled[node], true);
			atomic_fetch_add_explicit(&lio->flow_stalls, 1, memory_order_relaxed);
			return;
		}
		if (now >= give_up_at) {
			atomic_fetch_add_explicit(&lio->flow_give_ups, 1, memory_order_relaxed);
			return;
		}
	}
}

int link_io_send(struct link_io *lio, int node, const void *msg, size_t len)
{
	int ret;

	if (node < 0 || node >= LIO_NODES || !len)
		return -EINVAL;
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	pthread_mutex_lock(&lio->lock);
	if (lio_over_flow(lio, node, len))
		lio_wait_room(lio, node, len);
	if (lio->pending.len + atomic_load_explicit(&lio->backlog_bytes, memory_order_relaxed) +
		    len > LINK_IO_QUEUE_BYTES)
		ret = -ENOBUFS;
	else
		ret = lio_buf_append(&lio->pending, node, msg, len);
	if (!ret) {
		lio->pending_node[node] += len;
		atomic_store_explicit(&lio->has_pending, true, memory_order_relaxed);
	}
	pthread_mutex_unlock(&lio->lock);
	if (ret == -ENOBUFS)
		atomic_fetch_add_explicit(&lio->queue_full, 1, memory_order_relaxed);
	if (!ret)
		lio_wake_ring(lio);
	return ret;
}

void link_io_set_peer(struct link_io *lio, int node, const char *addr)
{
	if (node < 0 || node >= LIO_NODES)
		return;
	pthread_mutex_lock(&lio->lock);
	snprintf(lio->peer_addr[node], sizeof(lio->peer_addr[node]), "%s", addr ? addr : "");
	lio->peer_dirty |= 1u << node;
	atomic_store_explicit(&lio->has_pending, true, memory_order_relaxed);
	pthread_mutex_unlock(&lio->lock);
	lio_wake_ring(lio);
}

/* ---- the link's callbacks (ring thread) ------------------------------------ */

static void lio_send_dgram(void *ctx, const struct sockaddr_in *to, const uint8_t *buf,
			   size_t len)
{
	struct link_io *lio = ctx;
	struct io_uring_sqe *sqe;
	struct lio_send *s;
	uint32_t idx;

	if (len > LIO_DGRAM_MAX || !lio->ring || !lio->nfree ||
	    !(sqe = ring_get_sqe(lio->ring))) {
		/* no slot free: straight to the kernel, UDP never blocks */
		if (sendto(lio->fd, buf, len, MSG_DONTWAIT, (const struct sockaddr *)to,
			   sizeof(*to)) == -1)
			lio->send_errors++;
		else
			lio->sent_direct++;
		return;
	}
	idx = lio->free_slots[--lio->nfree];
	s = &lio->slots[idx];
	memcpy(s->buf, buf, len);
	s->to = *to;
	s->iov = (struct iovec){ .iov_base = s->buf, .iov_len = len };
	s->mh = (struct msghdr){ .msg_name = &s->to, .msg_namelen = sizeof(s->to),
				 .msg_iov = &s->iov, .msg_iovlen = 1 };
	io_uring_prep_sendmsg(sqe, lio->fd, &s->mh, 0);
	ring_sqe_tag(sqe, RING_OP_LINK, LIO_SUB_SEND, idx);
}

static void lio_deliver(void *ctx, uint32_t node, const uint8_t *msg, size_t len)
{
	struct link_io *lio = ctx;

	lio->ops.deliver(lio->ctx, (int)node, msg, len);
}

static void lio_peer_state(void *ctx, uint32_t node, bool up)
{
	struct link_io *lio = ctx;

	log_info("link: node %u is %s", node, up ? "reachable" : "unreachable");
	if (lio->ops.peer_state)
		lio->ops.peer_state(lio->ctx, (int)node, up);
}

static void lio_undelivered(void *ctx, uint32_t node, const uint8_t *msg, size_t len)
{
	struct link_io *lio = ctx;

	if (lio->ops.undelivered)
		lio->ops.undelivered(lio->ctx, (int)node, msg, len);
}

static const struct link_ops lio_link_ops = {
	.send_dgram = lio_send_dgram,
	.deliver = lio_deliver,
	.peer_state = lio_peer_state,
	.undelivered = lio_undelivered,
};

/* ---- the ring's side --------------------------------------------------------- */

/* Single-shot mode: arms recvmsg i (a no-op while it is in flight). */
static void lio_arm_recv(struct link_io *lio, uint32_t i)
{
	struct lio_recv *rv = &lio->recvs[i];
	struct io_uring_sqe *sqe;

	if (lio->recv_armed[i] || lio->draining || !(sqe = ring_get_sqe(lio->ring)))
		return;
	rv->iov = (struct iovec){ .iov_base = rv->buf, .iov_len = sizeof(rv->buf) };
	rv->mh = (struct msghdr){ .msg_name = &rv->from, .msg_namelen = sizeof(rv->from),
				  .msg_iov = &rv->iov, .msg_iovlen = 1 };
	/* MSG_TRUNC: res is the datagram's real length, so a cut one shows */
	io_uring_prep_recvmsg(sqe, lio->fd, &rv->mh, MSG_TRUNC);
	ring_sqe_tag(sqe, RING_OP_LINK, LIO_SUB_RECV, i);
	lio->recv_armed[i] = true;
}

/*
 * Multishot mode: arms the one recvmsg that posts a CQE per datagram,
 * each in a buffer of the link's group, until it stops (no
 * IORING_CQE_F_MORE: buffers ran out, an error, or the kernel's own
 * reasons); then it is armed again (a no-op while it runs). The kernel
 * copied ms_mh (the name length) when the SQE was issued.
 */
static void lio_arm_ms(struct link_io *lio)
{
	struct io_uring_sqe *sqe;

	if (lio->ms_armed || lio->draining || !(sqe = ring_get_sqe(lio->ring)))
		return;
	io_uring_prep_recvmsg_multishot(sqe, lio->fd, &lio->ms_mh, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = ring_bufs_group(lio->rbufs);
	ring_sqe_tag(sqe, RING_OP_LINK, LIO_SUB_RECV_MS, 0);
	lio->ms_armed = true;
}

static void lio_arm_recvs(struct link_io *lio)
{
	if (lio->recv_mode == LIO_RECV_MULTISHOT) {
		lio_arm_ms(lio);
		return;
	}
	for (uint32_t i = 0; i < LIO_RECVS; i++)
		lio_arm_recv(lio, i);
}

/* One datagram of res bytes in a multishot buffer (kernel's header, the
 * sender's address, the payload) into the link. */
static void lio_ms_dgram(struct link_io *lio, uint8_t *buf, int res)
{
	struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, res, &lio->ms_mh);
	struct sockaddr_in from = { 0 };

	if (!o) {
		lio->recv_errors++;
		return;
	}
	if (o->flags & MSG_TRUNC) {
		/* longer than any datagram a node sends: not one of ours */
		lio->recv_truncated++;
		return;
	}
	memcpy(&from, io_uring_recvmsg_name(o),
	       o->namelen < sizeof(from) ? o->namelen : sizeof(from));
	link_input(lio->link, &from, io_uring_recvmsg_payload(o, &lio->ms_mh),
		   io_uring_recvmsg_payload_length(o, res, &lio->ms_mh), ring_now_ms(lio->ring));
}

static void lio_ms_cqe(struct link_io *lio, struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		lio->ms_armed = false;
	if (cqe->res == -EINVAL) {
		/* a kernel without multishot recvmsg (before 6.0) refuses it
		 * at once; nothing was received, no buffer is taken */
		log_warn("link: the kernel refused multishot recvmsg (%s): receiving with %d "
			 "single-shot recvmsg",
			 strerror(EINVAL), LIO_RECVS);
		lio->recv_mode = LIO_RECV_SINGLE;
		lio->ms_settled = true;
		lio_arm_recvs(lio);
		return;
	}
	if (!lio->ms_settled) {
		lio->ms_settled = true;
		log_info("link: receiving with multishot recvmsg (%u buffers of %zu bytes)",
			 LIO_RECV_BUFS, LIO_RECV_BUF_BYTES);
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (cqe->res >= 0)
			lio_ms_dgram(lio, ring_bufs_buf(lio->rbufs, bid), cqe->res);
		/* link_input kept nothing of it: back to the kernel, published
		 * before this iteration's submit */
		ring_bufs_provide(lio->rbufs, bid);
	}
	if (cqe->res == -ENOBUFS)
		lio->recv_nobufs++; /* every buffer was taken before the ring looked */
	else if (cqe->res < 0 && cqe->res != -ECANCELED)
		lio->recv_errors++;
	/* the buffers this iteration's earlier CQEs carried are back by now
	 * (a stopped receive's CQE comes after its datagrams' CQEs) */
	if (lio->recv_mode == LIO_RECV_MULTISHOT)
		lio_arm_ms(lio);
}

static void lio_timer(void *ctx, struct ring_timer *t);

/* Arms the timer at the link's next deadline. */
static void lio_rearm(struct link_io *lio, uint64_t now)
{
	uint64_t next = link_poll(lio->link, now);

	if (next != UINT64_MAX)
		ring_timer_arm(lio->ring, &lio->timer, next, lio_timer, lio);
}

static void lio_timer(void *ctx, struct ring_timer *t)
{
	struct link_io *lio = ctx;

	(void)t;
	lio_rearm(lio, ring_now_ms(lio->ring));
}

static void lio_cqe(void *ctx, struct io_uring_cqe *cqe)
{
	struct link_io *lio = ctx;
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	uint32_t idx = ring_ud_idx(ud);

	if (ring_ud_gen(ud) == LIO_SUB_SEND) {
		if (cqe->res < 0)
			lio->send_errors++;
		lio->free_slots[lio->nfree++] = idx;
		return;
	}
	if (ring_ud_gen(ud) == LIO_SUB_RECV_MS) {
		lio_ms_cqe(lio, cqe);
		return;
	}
	if (idx >= LIO_RECVS)
		return;
	lio->recv_armed[idx] = false;
	if (cqe->res > LIO_DGRAM_MAX) {
		lio->recv_truncated++; /* res is the real length (MSG_TRUNC) */
	} else if (cqe->res > 0) {
		struct lio_recv *rv = &lio->recvs[idx];

		link_input(lio->link, &rv->from, rv->buf, (size_t)cqe->res, ring_now_ms(lio->ring));
	} else if (cqe->res < 0 && cqe->res != -ECANCELED) {
		lio->recv_errors++;
	}
	lio_arm_recv(lio, idx);
}

/*
 * Hands node's backlog to the link, oldest first, until the link refuses
 * a record for a full queue (-ENOBUFS: its queue toward that node is
 * full); the rest waits for a later iteration, when acks have made room.
 * Other refusals (no such peer, peer down) hand the message back as
 * undelivered. Returns true when the backlog is empty.
 */
static bool lio_feed_node(struct link_io *lio, int node, uint64_t now)
{
	struct lio_backlog *q = &lio->backlog[node];
	struct lio_buf *b = &q->b;
	size_t before = b->len - q->off;

	while (q->off < b->len) {
		const uint8_t *rec = b->p + q->off;
		uint32_t mlen;
		int ret;

		memcpy(&mlen, rec + 1, 4);
		ret = link_send(lio->link, (uint32_t)node, rec + LIO_HDR, mlen, now);
		if (ret == -ENOBUFS)
			break;
		if (ret)
			lio_undelivered(lio, node, rec + LIO_HDR, mlen);
		lio->backlog_node[node] -= mlen;
		q->off += LIO_HDR + mlen;
	}
	atomic_fetch_sub_explicit(&lio->backlog_bytes, before - (b->len - q->off),
				  memory_order_relaxed);
	if (q->off == b->len) {
		b->len = 0;
		q->off = 0;
		lio->backlog_mask &= ~(1u << node);
		return true;
	}
	if (q->off > b->len / 2) {
		memmove(b->p, b->p + q->off, b->len - q->off);
		b->len -= q->off;
		q->off = 0;
	}
	return false;
}

static void lio_feed(struct link_io *lio, uint64_t now)
{
	for (uint32_t m = lio->backlog_mask; m; m &= m - 1)
		lio_feed_node(lio, __builtin_ctz(m), now);
}

/* Appends one record to node's backlog; out of memory, the message goes
 * back as undelivered. */
static void lio_backlog_add(struct link_io *lio, int node, const uint8_t *rec, uint32_t mlen)
{
	struct lio_buf *b = &lio->backlog[node].b;

	if (lio_buf_grow(b, b->len + LIO_HDR + mlen)) {
		lio_undelivered(lio, node, rec + LIO_HDR, mlen);
		return;
	}
	memcpy(b->p + b->len, rec, LIO_HDR + mlen);
	b->len += LIO_HDR + mlen;
	lio->backlog_node[node] += mlen;
	lio->backlog_mask |= 1u << node;
	atomic_fetch_add_explicit(&lio->backlog_bytes, LIO_HDR + mlen, memory_order_relaxed);
}

/* Applies peer changes and takes the senders' messages into the link. */
static void lio_take(struct link_io *lio, uint64_t now)
{
	char addr[LIO_NODES][64];
	uint32_t dirty;
	struct lio_buf b;

	/* what waits already goes first, so each node's order holds */
	if (lio->backlog_mask)
		lio_feed(lio, now);
	if (!atomic_load_explicit(&lio->has_pending, memory_order_relaxed))
		return;
	pthread_mutex_lock(&lio->lock);
	b = lio->pending;
	lio->pending = lio->taking;
	lio->pending.len = 0;
	lio->taking = b;
	dirty = lio->peer_dirty;
	lio->peer_dirty = 0;
	if (dirty)
		memcpy(addr, lio->peer_addr, sizeof(addr));
	/* the bytes change hands under the lock: a sender never sees them
	 * in neither place */
	for (int node = 0; node < LIO_NODES; node++) {
		if (lio->pending_node[node])
			atomic_fetch_add(&lio->queued[node], lio->pending_node[node]);
		lio->pending_node[node] = 0;
	}
	atomic_store_explicit(&lio->has_pending, false, memory_order_relaxed);
	pthread_mutex_unlock(&lio->lock);

	for (int node = 0; dirty; node++, dirty >>= 1) {
		struct sockaddr_in sa;

		if (!(dirty & 1))
			continue;
		if (!addr[node][0] || sock_parse_hostport(addr[node], &sa)) {
			link_peer_remove(lio->link, (uint32_t)node);
			lio->peers &= ~(1u << node);
			continue;
		}
		if (link_peer_set_addr(lio->link, (uint32_t)node, &sa) == -ENOENT &&
		    link_peer_add(lio->link, (uint32_t)node, &sa, now) == 0)
			lio->peers |= 1u << node;
	}
	/* Straight into the link, unless the node has a backlog (behind
	 * it) or its queue is full (a new backlog). */
	for (size_t off = 0; off < b.len;) {
		const uint8_t *rec = b.p + off;
		int node = rec[0];
		uint32_t mlen;
		int ret = -ENOBUFS;

		memcpy(&mlen, rec + 1, 4);
		off += LIO_HDR + mlen;
		if (!(lio->backlog_mask & (1u << node)))
			ret = link_send(lio->link, (uint32_t)node, rec + LIO_HDR, mlen, now);
		if (ret == -ENOBUFS)
			lio_backlog_add(lio, node, rec, mlen);
		else if (ret)
			lio_undelivered(lio, node, rec + LIO_HDR, mlen);
	}
	lio->taking.len = 0;
}

/*
 * Publishes each node's queued bytes (link + backlog) for the senders'
 * flow bound; where they fell (acks, or messages given back), the node
 * made progress: its waiters are signalled and it is no longer stalled.
 */
static void lio_publish(struct link_io *lio)
{
	bool fell = false;

	for (int node = 0; node < LIO_NODES; node++) {
		uint64_t old = atomic_load_explicit(&lio->queued[node], memory_order_relaxed);
		uint64_t q;

		if (!old && !(lio->peers & (1u << node)))
			continue;
		q = link_queued_bytes(lio->link, (uint32_t)node) + lio->backlog_node[node];
		if (q == old)
			continue;
		atomic_store(&lio->queued[node], q);
		if (q < old) {
			atomic_fetch_add(&lio->room_gen[node], 1);
			atomic_store(&lio->stalled[node], false);
			fell = true;
		}
	}
	/* after the stores: pairs with the waiters' raise-then-re-read */
	if (fell && atomic_load(&lio->waiters)) {
		pthread_mutex_lock(&lio->lock);
		pthread_cond_broadcast(&lio->room);
		pthread_mutex_unlock(&lio->lock);
	}
}

static void lio_flush(void *ctx)
{
	struct link_io *lio = ctx;
	uint64_t now = ring_now_ms(lio->ring);

	lio_take(lio, now);
	lio_rearm(lio, now); /* link_poll flushes coalesced datagrams too */
	lio_publish(lio);
	lio_arm_recvs(lio);
}

static bool lio_sleep(void *ctx)
{
	struct link_io *lio = ctx;

	/* Dekker with lio_wake_ring: announce, fence, re-check */
	atomic_store_explicit(&lio->h->ring_sleeping, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&lio->has_pending, memory_order_relaxed)) {
		atomic_store_explicit(&lio->h->ring_sleeping, 0, memory_order_relaxed);
		return false;
	}
	return true;
}

static void lio_awake(void *ctx)
{
	struct link_io *lio = ctx;

	atomic_store_explicit(&lio->h->ring_sleeping, 0, memory_order_relaxed);
}

static bool lio_drain(void *ctx, bool first)
{
	struct link_io *lio = ctx;

	if (first) {
		lio->draining = true;
		atomic_store(&lio->stopping, true);
		/* a sender waiting now would wait for nothing: wake it */
		pthread_mutex_lock(&lio->lock);
		pthread_cond_broadcast(&lio->room);
		pthread_mutex_unlock(&lio->lock);
	}
	lio_flush(lio);
	return !atomic_load_explicit(&lio->has_pending, memory_order_relaxed) && !lio->backlog_mask;
}

/*
 * Picks the receive mode: multishot into a buffer group of the link's
 * own when the ring gives one (the kernel may still refuse the
 * multishot itself: lio_ms_cqe falls back then), single-shot otherwise.
 */
static void lio_recv_setup(struct link_io *lio)
{
	unsigned n = LIO_RECV_BUFS;
	int ret = ring_bufs_create(lio->ring, LIO_RECV_BUFS, LIO_RECV_BUF_BYTES, &lio->rbufs);

	if (ret) {
		log_warn("link: no buffer group for multishot recvmsg (%s): receiving with %d "
			 "single-shot recvmsg",
			 strerror(-ret), LIO_RECVS);
		lio->recv_mode = LIO_RECV_SINGLE;
		return;
	}
	if (link_io_fault_recv_bufs && link_io_fault_recv_bufs < n)
		n = link_io_fault_recv_bufs;
	for (unsigned bid = 0; bid < n; bid++)
		ring_bufs_provide(lio->rbufs, bid);
	/* the kernel writes the sender's address (a sockaddr_in) in front of
	 * each datagram; no control messages */
	lio->ms_mh = (struct msghdr){ .msg_namelen = sizeof(struct sockaddr_in) };
	lio->recv_mode = LIO_RECV_MULTISHOT;
}

int link_io_attach(struct link_io *lio, struct ring *r, struct handoff *h)
{
	struct ring_client c = {
		.flush = lio_flush, .sleep = lio_sleep, .awake = lio_awake, .drain = lio_drain,
		.ctx = lio,
	};
	int ret;

	lio->ring = r;
	ret = ring_register_op(r, RING_OP_LINK, lio_cqe, lio);
	if (!ret)
		ret = ring_add_client(r, &c);
	if (ret)
		return ret;
	lio_recv_setup(lio);
	/* last: senders wake the ring from now on, and wait for room */
	lio->h = h;
	lio->ring_thread = pthread_self();
	atomic_store(&lio->attached, true);
	lio_flush(lio);
	return 0;
}

/* ---- life -------------------------------------------------------------------- */

struct link_io *link_io_new(const struct config *cfg, int fd, const uint8_t *secret,
			    size_t secret_len, const struct link_io_ops *ops, void *ctx)
{
	struct link_io *lio = calloc(1, sizeof(*lio));
	struct link_config lc = {
		.node_id = (uint32_t)cfg->node_id,
		/* grows across restarts: a peer tells a new incarnation apart */
		.epoch = clock_epoch_ms(),
		.secret = secret,
		.secret_len = secret_len,
		/* behind a proxy or NAT, peers' datagrams come from its address */
		.accept_relayed = cfg->link_advertise[0] != '\0',
		/* nodes of a cluster sit on one LAN: round trips of well under a
		 * millisecond, so a lost datagram is sent again after 2 ms, not
		 * the link's general floor of 10 ms (measured: docs/benchmarks.md) */
		.rto_min_ms = LIO_RTO_MIN_MS,
	};

	if (!lio)
		return NULL;
	lio->fd = fd;
	lio->ops = *ops;
	lio->ctx = ctx;
	pthread_mutex_init(&lio->lock, NULL);
	{
		pthread_condattr_t ca;

		/* the waits' deadlines are monotonic: a clock step moves none */
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&lio->room, &ca);
		pthread_condattr_destroy(&ca);
	}
	lio->slots = calloc(LIO_SEND_SLOTS, sizeof(*lio->slots));
	lio->free_slots = calloc(LIO_SEND_SLOTS, sizeof(*lio->free_slots));
	lio->link = link_new(&lc, &lio_link_ops, lio);
	if (!lio->slots || !lio->free_slots || !lio->link) {
		log_error("link: cannot set up the node link (out of memory or bad config)");
		link_io_free(lio);
		return NULL;
	}
	for (uint32_t i = 0; i < LIO_SEND_SLOTS; i++)
		lio->free_slots[lio->nfree++] = i;
	return lio;
}

void link_io_free(struct link_io *lio)
{
	if (!lio)
		return;
	link_free(lio->link);
	free(lio->slots);
	free(lio->free_slots);
	free(lio->pending.p);
	free(lio->taking.p);
	for (int node = 0; node < LIO_NODES; node++)
		free(lio->backlog[node].b.p);
	pthread_cond_destroy(&lio->room);
	pthread_mutex_destroy(&lio->lock);
	if (lio->fd >= 0)
		close(lio->fd);
	free(lio);
}

void link_io_metrics(struct link_io *lio, FILE *out)
{
	struct link_stats ls;

	link_stats(lio->link, &ls);
	fprintf(out,
		"# HELP ringchat_link_peers_up peers the node link currently reaches\n"
		"# TYPE ringchat_link_peers_up gauge\nringchat_link_peers_up %u\n"
		"# TYPE ringchat_link_mac_failures_total counter\n"
		"ringchat_link_mac_failures_total %" PRIu64 "\n"
		"# TYPE ringchat_link_replays_total counter\nringchat_link_replays_total %" PRIu64 "\n"
		"# HELP ringchat_link_malformed_total datagrams not well formed, or longer than "
		"any a node sends (cut on receipt)\n"
		"# TYPE ringchat_link_malformed_total counter\n"
		"ringchat_link_malformed_total %" PRIu64 "\n"
		"# TYPE ringchat_link_unknown_source_total counter\n"
		"ringchat_link_unknown_source_total %" PRIu64 "\n"
		"# TYPE ringchat_link_send_errors_total counter\n"
		"ringchat_link_send_errors_total %" PRIu64 "\n"
		"# HELP ringchat_link_flow_waits_total sends that waited for a peer's acks "
		"(its queue was over the flow bound)\n"
		"# TYPE ringchat_link_flow_waits_total counter\n"
		"ringchat_link_flow_waits_total %" PRIu64 "\n"
		"# HELP ringchat_link_flow_stalls_total waits that saw no ack for 200 ms and "
		"gave up\n"
		"# TYPE ringchat_link_flow_stalls_total counter\n"
		"ringchat_link_flow_stalls_total %" PRIu64 "\n"
		"# HELP ringchat_link_flow_give_ups_total waits that saw acks but not room "
		"for 500 ms (a message larger than the others keep queued)\n"
		"# TYPE ringchat_link_flow_give_ups_total counter\n"
		"ringchat_link_flow_give_ups_total %" PRIu64 "\n"
		"# HELP ringchat_link_queue_full_total sends refused at the 32 MiB bound\n"
		"# TYPE ringchat_link_queue_full_total counter\n"
		"ringchat_link_queue_full_total %" PRIu64 "\n",
		ls.peers_up, ls.mac_failures, ls.replays, ls.malformed + lio->recv_truncated,
		ls.unknown_source, lio->send_errors,
		atomic_load_explicit(&lio->flow_waits, memory_order_relaxed),
		atomic_load_explicit(&lio->flow_stalls, memory_order_relaxed),
		atomic_load_explicit(&lio->flow_give_ups, memory_order_relaxed),
		atomic_load_explicit(&lio->queue_full, memory_order_relaxed));
	fprintf(out,
		"# HELP ringchat_link_recv_multishot 1: datagrams come in through one multishot "
		"recvmsg into the link's buffers; 0: through single-shot recvmsg (the kernel "
		"refused multishot)\n"
		"# TYPE ringchat_link_recv_multishot gauge\nringchat_link_recv_multishot %d\n"
		"# HELP ringchat_link_recv_nobufs_total multishot receives stopped because "
		"every buffer was taken (armed again)\n"
		"# TYPE ringchat_link_recv_nobufs_total counter\n"
		"ringchat_link_recv_nobufs_total %" PRIu64 "\n"
		"# TYPE ringchat_link_recv_errors_total counter\n"
		"ringchat_link_recv_errors_total %" PRIu64 "\n",
		lio->recv_mode == LIO_RECV_MULTISHOT ? 1 : 0, lio->recv_nobufs, lio->recv_errors);
	fprintf(out, "# HELP ringchat_link_srtt_seconds smoothed round-trip time per peer\n"
		     "# TYPE ringchat_link_srtt_seconds gauge\n");
	for (int node = 0; node < LIO_NODES; node++) {
		struct link_peer_stats ps;

		if (link_peer_stats(lio->link, (uint32_t)node, &ps))
			continue;
		fprintf(out, "ringchat_link_srtt_seconds{peer=\"%d\"} %.6f\n", node,
			ps.srtt_us / 1e6);
		fprintf(out,
			"ringchat_link_retransmits_total{peer=\"%d\"} %" PRIu64 "\n"
			"ringchat_link_datagrams_total{peer=\"%d\",dir=\"out\"} %" PRIu64 "\n"
			"ringchat_link_datagrams_total{peer=\"%d\",dir=\"in\"} %" PRIu64 "\n"
			"ringchat_link_bytes_total{peer=\"%d\",dir=\"out\"} %" PRIu64 "\n"
			"ringchat_link_bytes_total{peer=\"%d\",dir=\"in\"} %" PRIu64 "\n"
			"ringchat_link_messages_total{peer=\"%d\",dir=\"out\"} %" PRIu64 "\n"
			"ringchat_link_messages_total{peer=\"%d\",dir=\"in\"} %" PRIu64 "\n"
			"ringchat_link_coalescing_ratio{peer=\"%d\"} %.3f\n"
			"ringchat_link_queued_bytes{peer=\"%d\"} %" PRIu64 "\n"
			"ringchat_link_downs_total{peer=\"%d\"} %" PRIu64 "\n"
			"ringchat_link_duplicates_total{peer=\"%d\"} %" PRIu64 "\n"
			"ringchat_link_peer_up{peer=\"%d\"} %d\n",
			node, ps.retransmits, node, ps.dgrams_sent, node, ps.dgrams_recv, node,
			ps.bytes_sent, node, ps.bytes_recv, node, ps.msgs_sent, node,
			ps.msgs_delivered, node,
			ps.data_dgrams_sent ? (double)ps.msgs_packed / (double)ps.data_dgrams_sent : 0.0,
			node, atomic_load_explicit(&lio->queued[node], memory_order_relaxed), node,
			ps.downs, node, ps.duplicates, node, ps.up ? 1 : 0);
	}
}
