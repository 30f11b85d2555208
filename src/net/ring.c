/*
 * ring.c - the I/O thread. One io_uring ring owns every socket of the node:
 * the TCP listener, client connections, the eventfd the workers use to
 * wake it, a signalfd and a 1 s tick. It never blocks and never touches
 * MySQL or Redis.
 *
 * Path of a frame:
 *   multishot recv (provided buffer) ─► frame_reader of the connection
 *   ─► complete frame copied into an in_msg ─► worker's SPSC queue
 *   The provided buffer goes back to the ring in the same iteration.
 *   worker ─► out_msg ─► out SPSC ─► appended to the connection's pending
 *   output ─► one send in flight per connection (pending batches up while
 *   a send is in flight, so many small replies leave in one send).
 *
 * Connection states:
 *
 *   FREE ──accept──► OPEN ──error / EOF / idle / out limit──► CLOSING
 *                     │                                        │
 *                     └─OUT_CLOSE or bad frame: flush output,  │ cancel ops,
 *                       shutdown(SHUT_WR), discard input until │ wait until
 *                       EOF or 1 s (LINGER) ──────────────────►│ inflight == 0
 *                                                              ▼
 *               FREE ◄── IN_CLOSED handed to the worker ── DEAD (fd closed)
 *
 * A slot is reused only after its worker has been told the connection is
 * gone, and every user_data carries the slot's generation, so a late CQE
 * or a reply for an old connection is recognised and dropped.
 *
 * Backpressure: when a worker's queue is full the frame stays in the
 * connection's reader and the connection is paused: its recv is cancelled
 * (the kernel's socket buffer and the TCP window push back on the client)
 * and re-armed once the queued frames have been handed over.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringchat/clock.h"
#include "ringchat/counters.h"
#include "ringchat/frame.h"
#include "ringchat/log.h"
#include "ringchat/metrics.h"
#include "ringchat/protocol.h"
#include "ringchat/ring.h"
#include "ringchat/worker.h"

#define RING_SQ_ENTRIES 4096
#define RING_CQ_ENTRIES 65536
#define RECV_BUF_BYTES 2048
#define RECV_BUF_COUNT 2048 /* power of two; 4 MiB of receive buffers */
#define RECV_BGID 0
#define TICK_MS 1000
#define LINGER_MS 1000
#define OUT_DRAIN_MAX 8192 /* out_msgs taken from one worker per iteration */
#define LISTEN_BACKLOG 4096
#define DRAIN_TIMEOUT_MS 5000

/* user_data: op in the top 8 bits, generation (24 bits), slot (32 bits). */
enum op {
	OP_ACCEPT = 1,
	OP_RECV,
	OP_SEND,
	OP_CANCEL,
	OP_WAKE,
	OP_SIGNAL,
	OP_TICK,
	OP_ADMIN, /* admin/metrics sockets: routed to metrics.c */
};

#define UD(op, gen, slot)                                                      \
	(((uint64_t)(op) << 56) | (((uint64_t)(gen) & 0xffffff) << 32) |      \
	 (uint32_t)(slot))
#define UD_OP(ud) ((unsigned)((ud) >> 56))
#define UD_GEN(ud) ((uint32_t)(((ud) >> 32) & 0xffffff))
#define UD_SLOT(ud) ((uint32_t)(ud))

enum conn_state { CONN_FREE = 0, CONN_OPEN, CONN_LINGER, CONN_CLOSING, CONN_DEAD };

struct obuf {
	uint8_t *data;
	uint32_t len;
	uint32_t cap;
};

struct conn {
	uint32_t gen;
	uint8_t state;
	bool recv_armed;
	bool send_inflight;
	bool paused;
	bool no_read;      /* closing after flush: input is discarded */
	bool close_after_flush;
	bool seen_frame;   /* the worker knows this connection */
	bool in_send_list;
	bool bad_frame_pending; /* the error below still has to reach the worker */
	int fd;
	uint32_t inflight; /* SQEs whose final CQE has not arrived */
	uint32_t send_off;
	struct obuf sending; /* the buffer the in-flight send reads */
	struct obuf pending; /* output queued behind it */
	struct frame_reader rd;
	uint64_t deadline_ms; /* LINGER: when to give up waiting for EOF */
	uint64_t last_rx_ms;
	uint32_t peer_addr;
	uint16_t peer_port;
	struct frame_hdr bad; /* bad_frame_pending: code, cmd, seq to answer */
};

struct slot_list {
	uint32_t *v;
	uint32_t n, cap;
};

struct ring {
	struct io_uring uring;
	const struct config *cfg;
	struct worker_pool *pool;
	struct conn *conns;
	uint32_t max_conns;
	uint32_t high_water; /* slots [0, high_water) have been used */
	uint32_t *free_slots;
	uint32_t nfree;
	uint32_t nopen;
	int listen_fd;
	bool accept_armed;
	int signal_fd;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	uint32_t bufs_returned; /* returned this iteration, not yet advanced */
	struct slot_list paused;
	struct slot_list rearm;     /* recvs ended by ENOBUFS */
	struct slot_list dead;      /* IN_CLOSED not yet delivered */
	struct slot_list send_list; /* connections with new output */
	struct __kernel_timespec tick_ts;
	uint64_t now_ms;
	bool draining;
	uint64_t drain_deadline_ms;
	struct metrics *metrics;
};

static void conn_close(struct ring *r, struct conn *c, const char *why);

/* ---- small helpers ---------------------------------------------------- */

static int slot_list_push(struct slot_list *l, uint32_t slot)
{
	if (l->n == l->cap) {
		uint32_t cap = l->cap ? l->cap * 2 : 64;
		uint32_t *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = slot;
	return 0;
}

static struct io_uring_sqe *get_sqe(struct ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);

	if (!sqe) {
		/* SQ full: submit what we have and retry; the SQ drains at
		 * once since submission never waits here. */
		io_uring_submit(&r->uring);
		sqe = io_uring_get_sqe(&r->uring);
	}
	return sqe;
}

static inline uint32_t conn_slot(struct ring *r, struct conn *c)
{
	return (uint32_t)(c - r->conns);
}

static inline uint64_t conn_ref(struct ring *r, struct conn *c)
{
	return CONN_REF(conn_slot(r, c), c->gen);
}

/* ---- provided buffers (liburing 2.3 has no io_uring_setup_buf_ring) --- */

static int bufring_setup(struct ring *r)
{
	size_t ring_bytes = RECV_BUF_COUNT * sizeof(struct io_uring_buf);
	struct io_uring_buf_reg reg = { 0 };
	void *mem;
	int ret;

	mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE,
		   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	r->br = mem;
	io_uring_buf_ring_init(r->br);
	reg.ring_addr = (unsigned long)mem;
	reg.ring_entries = RECV_BUF_COUNT;
	reg.bgid = RECV_BGID;
	ret = io_uring_register_buf_ring(&r->uring, &reg, 0);
	if (ret)
		goto out_unmap;
	r->bufs = malloc((size_t)RECV_BUF_COUNT * RECV_BUF_BYTES);
	if (!r->bufs) {
		ret = -ENOMEM;
		goto out_unmap;
	}
	for (uint32_t i = 0; i < RECV_BUF_COUNT; i++)
		io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * RECV_BUF_BYTES,
				      RECV_BUF_BYTES, (unsigned short)i,
				      io_uring_buf_ring_mask(RECV_BUF_COUNT), (int)i);
	io_uring_buf_ring_advance(r->br, RECV_BUF_COUNT);
	return 0;

out_unmap:
	munmap(mem, ring_bytes);
	r->br = NULL;
	return ret;
}

/* Gives buffer bid back; published to the kernel by bufring_publish. */
static void bufring_return(struct ring *r, unsigned bid)
{
	io_uring_buf_ring_add(r->br, r->bufs + (size_t)bid * RECV_BUF_BYTES,
			      RECV_BUF_BYTES, (unsigned short)bid,
			      io_uring_buf_ring_mask(RECV_BUF_COUNT),
			      (int)r->bufs_returned);
	r->bufs_returned++;
}

static void bufring_publish(struct ring *r)
{
	if (r->bufs_returned) {
		io_uring_buf_ring_advance(r->br, (int)r->bufs_returned);
		r->bufs_returned = 0;
	}
}

/* ---- arming operations ------------------------------------------------ */

static void arm_accept(struct ring *r)
{
	struct io_uring_sqe *sqe;

	if (r->accept_armed || r->listen_fd < 0 || r->draining)
		return;
	sqe = get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_multishot_accept(sqe, r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0, 0));
	r->accept_armed = true;
}

static void arm_recv(struct ring *r, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->state == CONN_CLOSING || c->state == CONN_DEAD)
		return;
	sqe = get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RECV_BGID;
	io_uring_sqe_set_data64(sqe, UD(OP_RECV, c->gen, conn_slot(r, c)));
	c->recv_armed = true;
	c->inflight++;
}

static void arm_poll(struct ring *r, int fd, enum op op)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	if (!sqe)
		return;
	io_uring_prep_poll_multishot(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, UD(op, 0, 0));
}

static void arm_tick(struct ring *r)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	if (!sqe)
		return;
	r->tick_ts.tv_sec = TICK_MS / 1000;
	r->tick_ts.tv_nsec = (TICK_MS % 1000) * 1000000L;
	io_uring_prep_timeout(sqe, &r->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

/* Cancels every request on the connection's fd (recv and send). */
static void cancel_conn_ops(struct ring *r, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	if (!sqe)
		return;
	io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, c->gen, conn_slot(r, c)));
	c->inflight++;
}

/* Cancels only the multishot recv (pausing must not kill a send). */
static void cancel_recv(struct ring *r, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, UD(OP_RECV, c->gen, conn_slot(r, c)), 0);
	io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, c->gen, conn_slot(r, c)));
	c->inflight++;
}

static void start_send(struct ring *r, struct conn *c)
{
	struct io_uring_sqe *sqe;
	struct obuf tmp;

	if (c->send_inflight || c->state == CONN_CLOSING || c->state == CONN_DEAD)
		return;
	if (c->sending.len == c->send_off) {
		if (!c->pending.len)
			return;
		/* swap: the pending bytes become the in-flight buffer */
		tmp = c->sending;
		c->sending = c->pending;
		c->pending = tmp;
		c->pending.len = 0;
		c->send_off = 0;
	}
	sqe = get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_send(sqe, c->fd, c->sending.data + c->send_off,
			   c->sending.len - c->send_off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, UD(OP_SEND, c->gen, conn_slot(r, c)));
	c->send_inflight = true;
	c->inflight++;
}

/* ---- output ----------------------------------------------------------- */

static int obuf_append(struct obuf *b, const uint8_t *data, uint32_t n)
{
	if (b->len + n > b->cap) {
		uint32_t cap = b->cap ? b->cap : 512;
		uint8_t *p;

		while (cap < b->len + n)
			cap *= 2;
		p = realloc(b->data, cap);
		if (!p)
			return -ENOMEM;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	return 0;
}

static void obuf_free(struct obuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static uint32_t conn_unsent(const struct conn *c)
{
	return (c->sending.len - c->send_off) + c->pending.len;
}

/*
 * Queues bytes for the connection. The per-connection cap on unsent
 * output is what keeps a client that stops reading from growing our
 * memory: past it the connection is closed (its undelivered messages stay
 * stored and are pushed again at its next login).
 */
static void conn_queue(struct ring *r, struct conn *c, const uint8_t *data, uint32_t n)
{
	if (c->state != CONN_OPEN)
		return;
	if (conn_unsent(c) + (uint64_t)n > (uint64_t)r->cfg->out_limit_bytes) {
		counter_inc(conn_out_limit_closed);
		log_warn("event=out_limit conn=%u unsent=%u limit=%d: client is not reading",
			 conn_slot(r, c), conn_unsent(c), r->cfg->out_limit_bytes);
		conn_close(r, c, "output limit");
		return;
	}
	if (obuf_append(&c->pending, data, n)) {
		conn_close(r, c, "out of memory");
		return;
	}
	if (!c->in_send_list) {
		c->in_send_list = true;
		slot_list_push(&r->send_list, conn_slot(r, c));
	}
}

/* Flush, then shutdown(SHUT_WR) and wait (bounded) for the client's EOF,
 * so that the final frame is not destroyed by a RST caused by unread
 * input (nginx's lingering close). */
static void conn_close_after_flush(struct ring *r, struct conn *c)
{
	if (c->state != CONN_OPEN)
		return;
	c->no_read = true;
	c->close_after_flush = true;
	if (!c->send_inflight && !conn_unsent(c) && !c->in_send_list) {
		shutdown(c->fd, SHUT_WR);
		c->state = CONN_LINGER;
		c->deadline_ms = r->now_ms + LINGER_MS;
		if (!c->recv_armed)
			conn_close(r, c, "closed after flush");
	}
}

/* ---- connection lifetime ---------------------------------------------- */

static struct conn *conn_alloc(struct ring *r)
{
	uint32_t slot;
	struct conn *c;

	if (r->nfree) {
		slot = r->free_slots[--r->nfree];
	} else if (r->high_water < r->max_conns) {
		slot = r->high_water++;
	} else {
		return NULL;
	}
	c = &r->conns[slot];
	uint32_t gen = c->gen + 1;

	memset(c, 0, sizeof(*c));
	c->gen = gen & 0xffffff; /* matches the 24 bits kept in user_data */
	if (!c->gen)
		c->gen = 1;
	c->state = CONN_OPEN;
	c->fd = -1;
	frame_reader_init(&c->rd, (uint32_t)r->cfg->max_frame);
	return c;
}

static void conn_release(struct ring *r, struct conn *c)
{
	c->state = CONN_FREE;
	r->free_slots[r->nfree++] = conn_slot(r, c);
}

static bool conn_tell_worker_closed(struct ring *r, struct conn *c)
{
	struct worker *w = worker_for_conn(r->pool, conn_ref(r, c));
	struct in_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return false;
	m->conn = conn_ref(r, c);
	m->kind = IN_CLOSED;
	if (!worker_submit(w, m)) {
		free(m);
		return false;
	}
	return true;
}

/* Called whenever inflight may have reached 0 on a closing connection. */
static void conn_maybe_finish(struct ring *r, struct conn *c)
{
	if (c->state != CONN_CLOSING || c->inflight)
		return;
	close(c->fd);
	c->fd = -1;
	obuf_free(&c->sending);
	obuf_free(&c->pending);
	frame_reader_reset(&c->rd);
	c->state = CONN_DEAD;
	r->nopen--;
	atomic_fetch_sub_explicit(&counters.conn_open, 1, memory_order_relaxed);
	counter_inc(conn_closed);
	if (!c->seen_frame || conn_tell_worker_closed(r, c))
		conn_release(r, c);
	else
		slot_list_push(&r->dead, conn_slot(r, c));
}

static void conn_close(struct ring *r, struct conn *c, const char *why)
{
	if (c->state != CONN_OPEN && c->state != CONN_LINGER)
		return;
	log_info("event=disconnect conn=%u peer=%u.%u.%u.%u:%u reason=\"%s\"", conn_slot(r, c),
		 c->peer_addr >> 24, (c->peer_addr >> 16) & 255, (c->peer_addr >> 8) & 255,
		 c->peer_addr & 255, c->peer_port, why);
	c->state = CONN_CLOSING;
	if (c->recv_armed || c->send_inflight)
		cancel_conn_ops(r, c);
	conn_maybe_finish(r, c);
}

static void on_accept(struct ring *r, struct io_uring_cqe *cqe)
{
	struct sockaddr_in sa;
	socklen_t salen = sizeof(sa);
	struct conn *c;
	int fd = cqe->res;
	int one = 1;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		r->accept_armed = false;
	if (fd < 0) {
		if (fd != -ECANCELED)
			log_warn("accept failed: %s", strerror(-fd));
		return;
	}
	if (r->draining || r->nopen >= (uint32_t)r->cfg->max_connections ||
	    !(c = conn_alloc(r))) {
		counter_inc(conn_refused_max);
		close(fd);
		return;
	}
	/* Replies are small and latency-bound; the batching Nagle would
	 * give is already done by queueing output per loop iteration. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (getpeername(fd, (struct sockaddr *)&sa, &salen) == 0 &&
	    sa.sin_family == AF_INET) {
		c->peer_addr = ntohl(sa.sin_addr.s_addr);
		c->peer_port = ntohs(sa.sin_port);
	}
	c->fd = fd;
	c->last_rx_ms = r->now_ms;
	r->nopen++;
	atomic_fetch_add_explicit(&counters.conn_open, 1, memory_order_relaxed);
	counter_inc(conn_accepted);
	log_info("event=connect conn=%u peer=%u.%u.%u.%u:%u open=%u", conn_slot(r, c),
		 c->peer_addr >> 24, (c->peer_addr >> 16) & 255, (c->peer_addr >> 8) & 255,
		 c->peer_addr & 255, c->peer_port, r->nopen);
	arm_recv(r, c);
}

/* ---- input ------------------------------------------------------------ */

struct feed_ctx {
	struct ring *r;
	struct conn *c;
};

static int on_frame(void *arg, const struct frame_hdr *hdr, const uint8_t *payload)
{
	struct feed_ctx *fc = arg;
	struct conn *c = fc->c;
	struct worker *w = worker_for_conn(fc->r->pool, conn_ref(fc->r, c));
	struct in_msg *m;

	if (c->no_read)
		return 0; /* closing: the rest of the input is discarded */
	m = malloc(sizeof(*m) + hdr->len);
	if (!m)
		return 1; /* treat as a full queue: retried later */
	m->conn = conn_ref(fc->r, c);
	m->kind = IN_FRAME;
	m->peer_addr = c->peer_addr;
	m->peer_port = c->peer_port;
	m->hdr = *hdr;
	if (hdr->len)
		memcpy(m->payload, payload, hdr->len);
	if (!worker_submit(w, m)) {
		free(m);
		return 1;
	}
	c->seen_frame = true;
	counter_inc(frames_in);
	return 0;
}

/* Hands the pending framing error to the worker. false = queue full. */
static bool conn_send_bad_frame(struct ring *r, struct conn *c)
{
	struct worker *w = worker_for_conn(r->pool, conn_ref(r, c));
	struct in_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return false;
	m->conn = conn_ref(r, c);
	m->kind = IN_BAD_FRAME;
	m->peer_addr = c->peer_addr;
	m->peer_port = c->peer_port;
	m->hdr = c->bad;
	if (!worker_submit(w, m)) {
		free(m);
		return false;
	}
	c->seen_frame = true;
	c->bad_frame_pending = false;
	return true;
}

static void conn_pause(struct ring *r, struct conn *c)
{
	if (c->paused)
		return;
	c->paused = true;
	counter_inc(backpressure_events);
	slot_list_push(&r->paused, conn_slot(r, c));
	if (c->recv_armed)
		cancel_recv(r, c);
}

/* Handles the result of feeding or draining the reader. */
static void conn_after_feed(struct ring *r, struct conn *c, enum frame_feed_result res,
			    enum frame_verdict verdict, const struct frame_hdr *bad)
{
	switch (res) {
	case FEED_OK:
		break;
	case FEED_PAUSED:
		conn_pause(r, c);
		break;
	case FEED_NOMEM:
		conn_close(r, c, "out of memory buffering a frame");
		break;
	case FEED_ERROR:
		counter_inc(conn_bad_frame_closed);
		log_info("event=bad_frame conn=%u verdict=%d", conn_slot(r, c), (int)verdict);
		/* The error frame is answered by the worker, so it leaves after
		 * the replies to the frames before it (order is the contract);
		 * from here on the input is discarded. */
		memset(&c->bad, 0, sizeof(c->bad));
		if (verdict == FRAME_BAD_MAGIC) {
			c->bad.code = ST_BAD_FRAME;
		} else if (verdict == FRAME_TOO_LARGE) {
			c->bad.code = ST_FRAME_TOO_LARGE;
		} else {
			c->bad.code = ST_UNSUPPORTED_VERSION;
			c->bad.cmd = bad->cmd;
			c->bad.seq = bad->seq;
		}
		c->no_read = true;
		c->bad_frame_pending = true;
		if (!conn_send_bad_frame(r, c) && !c->paused) {
			c->paused = true;
			slot_list_push(&r->paused, conn_slot(r, c));
		}
		break;
	}
}

static void on_recv(struct ring *r, struct conn *c, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more) {
		c->recv_armed = false;
		c->inflight--;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (res > 0 && c->state == CONN_OPEN && !c->no_read) {
			struct feed_ctx fc = { r, c };
			enum frame_verdict verdict = FRAME_OK;
			struct frame_hdr bad;
			enum frame_feed_result fr;

			c->last_rx_ms = r->now_ms;
			counter_add(bytes_in, (uint64_t)res);
			fr = frame_reader_feed(&c->rd, r->bufs + (size_t)bid * RECV_BUF_BYTES,
					       (size_t)res, on_frame, &fc, &verdict, &bad);
			conn_after_feed(r, c, fr, verdict, &bad);
		}
		bufring_return(r, bid);
	}
	if (res == 0) {
		if (c->state == CONN_OPEN || c->state == CONN_LINGER)
			conn_close(r, c, "peer closed");
	} else if (res < 0 && !more) {
		if (c->state == CONN_OPEN && (res == -ENOBUFS || res == -ECANCELED)) {
			/* out of buffers, or cancelled to pause: re-armed once
			 * buffers are back / the queued frames are handed over */
			if (res == -ENOBUFS)
				counter_inc(recv_enobufs);
			if (!c->paused && !c->no_read)
				slot_list_push(&r->rearm, conn_slot(r, c));
		} else if (c->state == CONN_OPEN || c->state == CONN_LINGER) {
			conn_close(r, c, strerror(-res));
		}
	} else if (!more && c->state == CONN_OPEN && !c->paused) {
		/* the kernel ended the multishot (e.g. overflow); re-arm */
		slot_list_push(&r->rearm, conn_slot(r, c));
	}
	conn_maybe_finish(r, c);
}

static void on_send(struct ring *r, struct conn *c, struct io_uring_cqe *cqe)
{
	c->send_inflight = false;
	c->inflight--;
	if (cqe->res < 0) {
		if (c->state == CONN_OPEN || c->state == CONN_LINGER)
			conn_close(r, c, strerror(-cqe->res));
		conn_maybe_finish(r, c);
		return;
	}
	counter_add(bytes_out, (uint64_t)cqe->res);
	c->send_off += (uint32_t)cqe->res;
	if (c->send_off == c->sending.len) {
		c->sending.len = 0;
		c->send_off = 0;
		/* Idle connections keep no output memory. */
		if (!c->pending.len) {
			obuf_free(&c->sending);
			obuf_free(&c->pending);
		}
	}
	if (c->state == CONN_OPEN || c->state == CONN_LINGER) {
		if (conn_unsent(c))
			start_send(r, c);
		else if (c->close_after_flush && c->state == CONN_OPEN)
			conn_close_after_flush(r, c);
	}
	conn_maybe_finish(r, c);
}

/* ---- per-iteration work ----------------------------------------------- */

static void drain_out_queues(struct ring *r)
{
	for (int i = 0; i < r->pool->n; i++) {
		struct worker *w = &r->pool->workers[i];
		struct out_msg *m;

		for (int k = 0; k < OUT_DRAIN_MAX && (m = spsc_pop(&w->out)); k++) {
			uint32_t slot = CONN_SLOT(m->conn);
			struct conn *c = slot < r->high_water ? &r->conns[slot] : NULL;

			if (!c || c->gen != (CONN_GEN(m->conn) & 0xffffff) ||
			    (c->state != CONN_OPEN)) {
				counter_inc(stale_outs);
				free(m);
				continue;
			}
			if (m->len)
				conn_queue(r, c, m->data, m->len);
			if ((m->flags & OUT_CLOSE) && c->state == CONN_OPEN) {
				c->no_read = true;
				c->close_after_flush = true;
				if (!c->in_send_list && !c->send_inflight)
					conn_close_after_flush(r, c);
			}
			free(m);
		}
	}
}

static void flush_send_list(struct ring *r)
{
	for (uint32_t i = 0; i < r->send_list.n; i++) {
		struct conn *c = &r->conns[r->send_list.v[i]];

		c->in_send_list = false;
		if (c->state != CONN_OPEN && c->state != CONN_LINGER)
			continue;
		if (conn_unsent(c))
			start_send(r, c);
		else if (c->close_after_flush && c->state == CONN_OPEN)
			conn_close_after_flush(r, c);
	}
	r->send_list.n = 0;
}

static void retry_paused(struct ring *r)
{
	uint32_t keep = 0;

	for (uint32_t i = 0; i < r->paused.n; i++) {
		struct conn *c = &r->conns[r->paused.v[i]];
		struct feed_ctx fc = { r, c };
		enum frame_verdict verdict = FRAME_OK;
		struct frame_hdr bad;
		enum frame_feed_result fr;

		if (!c->paused)
			continue;
		if (c->state != CONN_OPEN) {
			c->paused = false;
			continue;
		}
		if (c->bad_frame_pending) {
			if (conn_send_bad_frame(r, c))
				c->paused = false;
			else
				r->paused.v[keep++] = r->paused.v[i];
			continue;
		}
		fr = frame_reader_drain(&c->rd, on_frame, &fc, &verdict, &bad);
		if (fr == FEED_PAUSED) {
			r->paused.v[keep++] = r->paused.v[i];
			continue;
		}
		c->paused = false;
		conn_after_feed(r, c, fr, verdict, &bad);
		if (c->state == CONN_OPEN && !c->recv_armed && !c->no_read)
			arm_recv(r, c);
	}
	r->paused.n = keep;
}

static void retry_rearm(struct ring *r)
{
	for (uint32_t i = 0; i < r->rearm.n; i++) {
		struct conn *c = &r->conns[r->rearm.v[i]];

		if (c->state == CONN_OPEN && !c->paused)
			arm_recv(r, c);
	}
	r->rearm.n = 0;
}

static void retry_dead(struct ring *r)
{
	uint32_t keep = 0;

	for (uint32_t i = 0; i < r->dead.n; i++) {
		struct conn *c = &r->conns[r->dead.v[i]];

		if (conn_tell_worker_closed(r, c))
			conn_release(r, c);
		else
			r->dead.v[keep++] = r->dead.v[i];
	}
	r->dead.n = keep;
}

static void on_tick(struct ring *r)
{
	uint64_t idle = (uint64_t)r->cfg->idle_timeout_ms;

	for (uint32_t s = 0; s < r->high_water; s++) {
		struct conn *c = &r->conns[s];

		if (c->state == CONN_OPEN && r->now_ms - c->last_rx_ms > idle) {
			counter_inc(conn_idle_closed);
			log_info("event=idle_close conn=%u idle_ms=%llu", s,
				 (unsigned long long)(r->now_ms - c->last_rx_ms));
			conn_close(r, c, "idle timeout");
		} else if (c->state == CONN_LINGER && r->now_ms >= c->deadline_ms) {
			conn_close(r, c, "linger timeout");
		}
	}
	if (!r->accept_armed)
		arm_accept(r); /* after EMFILE/ENFILE the accept ended */
	arm_tick(r);
}

static void on_signal(struct ring *r)
{
	struct signalfd_siginfo si;

	while (read(r->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR1) {
			counters_dump(stderr);
			continue;
		}
		if (!r->draining) {
			log_info("event=shutdown signal=%u: draining", si.ssi_signo);
			r->draining = true;
			r->drain_deadline_ms = r->now_ms + DRAIN_TIMEOUT_MS;
			if (r->accept_armed) {
				/* the listener is closed once the accept ends */
				struct io_uring_sqe *sqe = get_sqe(r);

				if (sqe) {
					io_uring_prep_cancel64(sqe, UD(OP_ACCEPT, 0, 0), 0);
					io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, UINT32_MAX));
				}
			}
		}
	}
}

static void on_wake(struct ring *r)
{
	uint64_t v;

	counter_inc(ring_wakeups);
	while (read(r->pool->ring_wake_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
}

static void handle_cqe(struct ring *r, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned op = UD_OP(ud);
	struct conn *c = NULL;

	if (op == OP_RECV || op == OP_SEND || (op == OP_CANCEL && UD_SLOT(ud) != UINT32_MAX)) {
		uint32_t slot = UD_SLOT(ud);

		if (slot >= r->high_water || r->conns[slot].gen != UD_GEN(ud)) {
			/* cannot happen: slots are freed only at inflight 0 */
			log_error("stale CQE op=%u slot=%u", op, slot);
			if (op == OP_RECV && (cqe->flags & IORING_CQE_F_BUFFER))
				bufring_return(r, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
			return;
		}
		c = &r->conns[slot];
	}
	switch (op) {
	case OP_ACCEPT:
		on_accept(r, cqe);
		break;
	case OP_RECV:
		on_recv(r, c, cqe);
		break;
	case OP_SEND:
		on_send(r, c, cqe);
		break;
	case OP_CANCEL:
		if (c) {
			c->inflight--;
			conn_maybe_finish(r, c);
		}
		break;
	case OP_WAKE:
		on_wake(r);
		if (!(cqe->flags & IORING_CQE_F_MORE))
			arm_poll(r, r->pool->ring_wake_fd, OP_WAKE);
		break;
	case OP_SIGNAL:
		on_signal(r);
		if (!(cqe->flags & IORING_CQE_F_MORE))
			arm_poll(r, r->signal_fd, OP_SIGNAL);
		break;
	case OP_TICK:
		on_tick(r);
		break;
	case OP_ADMIN:
		if (r->metrics)
			metrics_on_cqe(r->metrics, cqe);
		break;
	default:
		log_error("unknown CQE op %u", op);
	}
}

/* ---- set-up ----------------------------------------------------------- */

int ring_parse_hostport(const char *s, struct sockaddr_in *sa)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535 || end == colon + 1)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (!strcmp(host, "localhost") || !host[0])
		strcpy(host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

int ring_listen_tcp(const char *hostport, int backlog, char *bound, size_t boundsz)
{
	struct sockaddr_in sa;
	socklen_t salen = sizeof(sa);
	int fd, one = 1, ret;

	ret = ring_parse_hostport(hostport, &sa);
	if (ret)
		return ret;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    listen(fd, backlog) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sa, &salen) == -1) {
		ret = -errno;
		close(fd);
		return ret;
	}
	if (bound) {
		char ip[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
		snprintf(bound, boundsz, "%s:%u", ip, ntohs(sa.sin_port));
	}
	return fd;
}

static int ring_setup(struct ring *r)
{
	struct io_uring_params p = { 0 };
	sigset_t mask;
	int ret;

	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL |
		  IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
	p.cq_entries = RING_CQ_ENTRIES;
	ret = io_uring_queue_init_params(RING_SQ_ENTRIES, &r->uring, &p);
	if (ret) {
		log_error("io_uring set-up failed: %s (kernel 6.1+ with io_uring enabled is required)",
			  strerror(-ret));
		return ret;
	}
	if (!(p.features & IORING_FEAT_NODROP))
		log_warn("kernel lacks IORING_FEAT_NODROP: CQ overflow would drop completions");
	io_uring_register_ring_fd(&r->uring);
	log_info("io_uring ready: sq=%u cq=%u features=0x%x", p.sq_entries, p.cq_entries,
		 p.features);
	ret = bufring_setup(r);
	if (ret) {
		log_error("provided buffer ring set-up failed: %s", strerror(-ret));
		return ret;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGUSR1);
	r->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (r->signal_fd == -1)
		return -errno;
	return 0;
}

static void ring_teardown(struct ring *r)
{
	for (uint32_t s = 0; s < r->high_water; s++) {
		struct conn *c = &r->conns[s];

		if (c->fd >= 0 && c->state != CONN_FREE && c->state != CONN_DEAD)
			close(c->fd);
		obuf_free(&c->sending);
		obuf_free(&c->pending);
		frame_reader_reset(&c->rd);
	}
	if (r->metrics)
		metrics_destroy(r->metrics);
	io_uring_queue_exit(&r->uring);
	if (r->br)
		munmap(r->br, RECV_BUF_COUNT * sizeof(struct io_uring_buf));
	free(r->bufs);
	free(r->conns);
	free(r->free_slots);
	free(r->paused.v);
	free(r->rearm.v);
	free(r->dead.v);
	free(r->send_list.v);
	if (r->signal_fd >= 0)
		close(r->signal_fd);
	if (r->listen_fd >= 0)
		close(r->listen_fd);
}

static bool has_out_work(struct ring *r)
{
	for (int i = 0; i < r->pool->n; i++)
		if (spsc_size(&r->pool->workers[i].out))
			return true;
	return false;
}

/* Orderly shutdown: every connection has stopped reading; wait until the
 * workers are idle and every reply has been sent, then close. */
static bool drain_done(struct ring *r)
{
	if (!worker_pool_idle(r->pool) || has_out_work(r) || r->paused.n)
		return false;
	for (uint32_t s = 0; s < r->high_water; s++) {
		struct conn *c = &r->conns[s];

		if ((c->state == CONN_OPEN || c->state == CONN_LINGER) &&
		    (c->send_inflight || conn_unsent(c)))
			return false;
	}
	return true;
}

int ring_run(const struct config *cfg, struct worker_pool *pool)
{
	struct ring r = { 0 };
	char bound[64];
	int ret;

	r.cfg = cfg;
	r.pool = pool;
	r.listen_fd = -1;
	r.signal_fd = -1;
	r.max_conns = (uint32_t)cfg->max_connections;
	r.conns = calloc(r.max_conns, sizeof(*r.conns));
	r.free_slots = calloc(r.max_conns, sizeof(*r.free_slots));
	if (!r.conns || !r.free_slots) {
		ret = -ENOMEM;
		goto out;
	}
	ret = ring_setup(&r);
	if (ret)
		goto out;
	r.listen_fd = ring_listen_tcp(cfg->listen, LISTEN_BACKLOG, bound, sizeof(bound));
	if (r.listen_fd < 0) {
		ret = r.listen_fd;
		log_error("cannot listen on %s: %s", cfg->listen, strerror(-ret));
		goto out;
	}
	log_info("listening on %s", bound);
	if (cfg->admin_listen[0]) {
		r.metrics = metrics_create(&r.uring, cfg, pool, OP_ADMIN);
		if (!r.metrics) {
			ret = -EADDRNOTAVAIL;
			goto out;
		}
	}
	r.now_ms = clock_mono_ms();
	arm_accept(&r);
	arm_poll(&r, pool->ring_wake_fd, OP_WAKE);
	arm_poll(&r, r.signal_fd, OP_SIGNAL);
	arm_tick(&r);

	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		bool busy;

		drain_out_queues(&r);
		retry_paused(&r);
		retry_dead(&r);
		flush_send_list(&r);
		bufring_publish(&r);
		retry_rearm(&r);
		worker_pool_flush_wakes(pool);

		if (r.draining) {
			if (r.listen_fd >= 0 && !r.accept_armed) {
				close(r.listen_fd);
				r.listen_fd = -1;
			}
			for (uint32_t s = 0; s < r.high_water; s++) {
				struct conn *c = &r.conns[s];

				if (c->state == CONN_OPEN && !c->no_read) {
					c->no_read = true;
					if (c->recv_armed)
						cancel_recv(&r, c);
				}
			}
			if (drain_done(&r) || r.now_ms >= r.drain_deadline_ms)
				break;
		}

		busy = has_out_work(&r) || r.paused.n || r.dead.n || r.draining;
		if (!busy) {
			/* Dekker with worker_send_out: announce the sleep, then
			 * re-check the queues; a worker pushes, fences, then
			 * checks the flag. One of the two sees the other. */
			atomic_store_explicit(&pool->ring_sleeping, 1, memory_order_seq_cst);
			atomic_thread_fence(memory_order_seq_cst);
			busy = has_out_work(&r);
		}
		if (busy) {
			atomic_store_explicit(&pool->ring_sleeping, 0, memory_order_relaxed);
			if (r.paused.n || r.dead.n || r.draining) {
				/* the workers do not signal progress on their
				 * in queues: poll again shortly */
				struct __kernel_timespec ts = { 0, 1000000 };

				io_uring_submit_and_wait_timeout(&r.uring, &cqe, 1, &ts, NULL);
			} else {
				io_uring_submit_and_get_events(&r.uring);
			}
		} else {
			io_uring_submit_and_wait_timeout(&r.uring, &cqe, 1, NULL, NULL);
			atomic_store_explicit(&pool->ring_sleeping, 0, memory_order_relaxed);
		}
		r.now_ms = clock_mono_ms();
		if (io_uring_cq_has_overflow(&r.uring))
			counter_inc(cq_overflow);
		io_uring_for_each_cqe(&r.uring, head, cqe) {
			handle_cqe(&r, cqe);
			seen++;
		}
		io_uring_cq_advance(&r.uring, seen);
	}
	log_info("event=drained open_connections=%u", r.nopen);
	ret = 0;
out:
	ring_teardown(&r);
	return ret;
}
