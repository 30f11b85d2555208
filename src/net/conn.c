/*
 * conn.c - client connections on the ring: accept, multishot recv into
 * provided buffers, frame reassembly, hand-over to the workers, output
 * buffering with one send in flight, and the life cycle drawn in conn.h.
 *
 * Path of a frame:
 *   multishot recv (provided buffer) ─► frame_reader of the connection
 *   ─► complete frame copied into an in_msg ─► its lane's in queue
 *   The provided buffer goes back to the ring in the same iteration.
 *   worker ─► out_msg ─► lane's out queue ─► conn_queue appends it to the
 *   connection's pending output ─► one send in flight per connection
 *   (pending batches up while a send is in flight, so many small replies
 *   leave in one send).
 *
 * Each loop iteration (the ring calls conn_flush before it waits):
 *   out queues ─► connections' output, paused connections retried,
 *   IN_CLOSED retried for DEAD slots, sends started, ENOBUFS recvs
 *   re-armed, sleeping workers woken once.
 *
 * Backpressure: when a worker's queue is full the frame stays in the
 * connection's reader and the connection is paused: its recv is cancelled
 * (the kernel's socket buffer and the TCP window push back on the client)
 * and re-armed once the queued frames have been handed over. The same
 * happens, per connection, when it has max_pending_frames frames (or
 * max_pending_bytes) handed to its worker and not answered yet, e.g.
 * held behind a LOGIN that waits for the hasher: such a connection is
 * not polled (pend_blocked); the reply that brings it under the bounds
 * (OUT_REPLY) puts it back on the paused list.
 *
 * Deadlines (one sweep, every sweep_ms <= 1 s): a frame whose first byte
 * came must be complete within frame_timeout_ms; a connection must log in
 * (OUT_LOGGED_IN) within login_timeout_ms; idle_timeout_ms counts from the
 * last complete frame (a byte now and then keeps nothing alive).
 *
 * Admission at accept: max_connections (sized to the open-file limit at
 * start), max_conns_per_addr and max_unauth_per_addr (a small open
 * addressing table of peer addresses). A failed accept (EMFILE, ENFILE)
 * pauses the accept for a few ms (ring timer, doubling to 200 ms) instead
 * of spinning on it; the waiting clients stay in the listen backlog.
 *
 * user_data: RING_OP_RECV / SEND / CANCEL carry the slot's generation and
 * the slot (ring.h), checked against the table before anything is done.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringchat/conn.h"
#include "ringchat/counters.h"
#include "ringchat/log.h"
#include "ringchat/protocol.h"

#define OUT_DRAIN_MAX 8192 /* out_msgs taken from one lane per iteration */
#define LISTEN_BACKLOG 4096
#define CANCEL_NO_SLOT UINT32_MAX /* a cancel that is not a connection's */

#define PEND_MIN_CAP 8u /* sizes of the first allocation */

unsigned conn_fault_list_nomem;

/* ---- small helpers ---------------------------------------------------- */

/* Returns 0 or -ENOMEM; every caller handles the failure (a slot that
 * silently misses its list stalls: never resumed, sent or released). */
static int slot_list_push(struct slot_list *l, uint32_t slot)
{
	if (conn_fault_list_nomem) {
		conn_fault_list_nomem--;
		return -ENOMEM;
	}
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

static inline uint32_t conn_slot(const struct conn_table *t, const struct conn *c)
{
	return (uint32_t)(c - t->conns);
}

static void conn_nomem_close(struct conn_table *t, struct conn *c, const char *what)
{
	static struct log_gate gate;

	counter_inc(conn_nomem_closed);
	log_limited(&gate, LOG_ERROR, "event=nomem_close conn=%u: out of memory %s",
		    conn_slot(t, c), what);
	conn_close(t, c, "out of memory");
}

/* ---- peer addresses (max_conns_per_addr, max_unauth_per_addr) ---------- */

static uint32_t addr_hash(const struct conn_table *t, uint32_t addr)
{
	return (uint32_t)(((uint64_t)addr * 0x9E3779B97F4A7C15ull) >> 32) & t->addr_mask;
}

/* The entry of addr, or the free entry where it would go. The table has
 * twice as many entries as connections, so a free one always exists. */
static struct addr_count *addr_find(struct conn_table *t, uint32_t addr)
{
	uint32_t i = addr_hash(t, addr);

	while (t->addrs[i].conns && t->addrs[i].addr != addr)
		i = (i + 1) & t->addr_mask;
	return &t->addrs[i];
}

/* Drops an entry whose count reached 0 (backward-shift deletion keeps
 * every other key reachable from its home slot without tombstones). */
static void addr_remove(struct conn_table *t, struct addr_count *e)
{
	uint32_t i = (uint32_t)(e - t->addrs), j = i;

	for (;;) {
		uint32_t k;

		j = (j + 1) & t->addr_mask;
		if (!t->addrs[j].conns)
			break;
		k = addr_hash(t, t->addrs[j].addr);
		/* move j back to i unless its home k lies cyclically in (i, j] */
		if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
			t->addrs[i] = t->addrs[j];
			i = j;
		}
	}
	memset(&t->addrs[i], 0, sizeof(t->addrs[i]));
}

/* Connections of unknown address (0: not IPv4) are not capped per address. */
static bool addr_admit(struct conn_table *t, uint32_t addr)
{
	static struct log_gate gate;
	struct addr_count *e;

	if (!addr)
		return true;
	e = addr_find(t, addr);
	if (t->max_per_addr && e->conns >= t->max_per_addr) {
		counter_inc(conn_refused_addr);
		log_limited(&gate, LOG_WARN,
			    "event=refused peer=%u.%u.%u.%u reason=\"max_conns_per_addr %u\"",
			    addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255, addr & 255,
			    t->max_per_addr);
		return false;
	}
	if (t->max_unauth_per_addr && e->unauth >= t->max_unauth_per_addr) {
		counter_inc(conn_refused_unauth);
		log_limited(&gate, LOG_WARN,
			    "event=refused peer=%u.%u.%u.%u reason=\"max_unauth_per_addr %u\"",
			    addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255, addr & 255,
			    t->max_unauth_per_addr);
		return false;
	}
	e->addr = addr;
	e->conns++;
	e->unauth++;
	return true;
}

static void addr_logged_in(struct conn_table *t, struct conn *c)
{
	if (c->logged_in)
		return;
	c->logged_in = true;
	if (c->peer_addr)
		addr_find(t, c->peer_addr)->unauth--;
}

static void addr_release(struct conn_table *t, struct conn *c)
{
	struct addr_count *e;

	if (!c->peer_addr)
		return;
	e = addr_find(t, c->peer_addr);
	if (!e->conns)
		return; /* not counted (cannot happen) */
	if (!c->logged_in)
		e->unauth--;
	if (!--e->conns)
		addr_remove(t, e);
}

/* ---- frames handed on and not answered (max_pending_*) ----------------- */

/* Makes room for one more size. Returns 0 or -ENOMEM. */
static int pend_reserve(struct conn *c)
{
	uint32_t cap, *v;

	if (c->pend_frames < c->pend_cap)
		return 0;
	cap = c->pend_cap ? c->pend_cap * 2 : PEND_MIN_CAP;
	v = malloc(cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < c->pend_frames; i++) /* unwrap the ring */
		v[i] = c->pend_len[(c->pend_head + i) % c->pend_cap];
	free(c->pend_len);
	c->pend_len = v;
	c->pend_cap = cap;
	c->pend_head = 0;
	return 0;
}

static void pend_push(struct conn *c, uint32_t bytes)
{
	c->pend_len[(c->pend_head + c->pend_frames) % c->pend_cap] = bytes;
	c->pend_frames++;
	c->pend_bytes += bytes;
}

/* A reply settled the oldest frame. Extra replies (to a framing error,
 * which was never counted) change nothing. */
static void pend_pop(struct conn *c)
{
	if (!c->pend_frames)
		return;
	c->pend_bytes -= c->pend_len[c->pend_head];
	c->pend_head = (c->pend_head + 1) % c->pend_cap;
	if (!--c->pend_frames) {
		/* Everything answered: give the memory back. An idle
		 * connection then holds no buffer at all (docs/benchmarks.md,
		 * memory per idle connection); the price is a malloc and a
		 * free per request of a connection that waits for each
		 * answer, tens of nanoseconds against microseconds. */
		free(c->pend_len);
		c->pend_len = NULL;
		c->pend_cap = 0;
		c->pend_head = 0;
	}
}

static bool pend_full(const struct conn_table *t, const struct conn *c, uint32_t bytes)
{
	/* one frame always passes, whatever its size (max_frame bounds it) */
	return c->pend_frames >= t->max_pending_frames ||
	       (c->pend_frames && (uint64_t)c->pend_bytes + bytes > t->max_pending_bytes);
}

struct conn *conn_lookup(struct conn_table *t, uint32_t slot, uint32_t gen)
{
	struct conn *c;

	if (slot >= t->high_water)
		return NULL;
	c = &t->conns[slot];
	if (c->state == CONN_FREE || c->gen != (gen & RING_UD_GEN_MASK))
		return NULL;
	return c;
}

/* ---- arming operations ------------------------------------------------ */

static void arm_accept(struct conn_table *t)
{
	struct io_uring_sqe *sqe;

	if (t->accept_armed || t->listen_fd < 0 || t->draining)
		return;
	sqe = ring_get_sqe(t->ring);
	if (!sqe)
		return;
	io_uring_prep_multishot_accept(sqe, t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	ring_sqe_tag(sqe, RING_OP_ACCEPT, 0, 0);
	t->accept_armed = true;
}

static void arm_recv(struct conn_table *t, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->state == CONN_CLOSING || c->state == CONN_DEAD)
		return;
	sqe = ring_get_sqe(t->ring);
	if (!sqe)
		return;
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = ring_buf_group(t->ring);
	ring_sqe_tag(sqe, RING_OP_RECV, c->gen, conn_slot(t, c));
	c->recv_armed = true;
	c->recv_cancelling = false;
	c->inflight++;
}

/* One read of the wake-up eventfd stays pending on the ring: its
 * completion both wakes the loop and empties the eventfd, so a wake-up
 * costs the I/O thread no read syscall (a multishot poll needed a read
 * after every completion). Re-armed from the completion; the SQE goes
 * out with the loop's next submit. */
static void arm_wake_read(struct conn_table *t)
{
	struct io_uring_sqe *sqe = ring_get_sqe(t->ring);

	if (!sqe)
		return;
	io_uring_prep_read(sqe, t->h->ring_wake_fd, &t->h->ring_wake_val,
			   sizeof(t->h->ring_wake_val), 0);
	ring_sqe_tag(sqe, RING_OP_WAKE, 0, 0);
}

/* Cancels every request on the connection's fd (recv and send). */
static void cancel_conn_ops(struct conn_table *t, struct conn *c)
{
	struct io_uring_sqe *sqe = ring_get_sqe(t->ring);

	if (!sqe)
		return;
	io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
	ring_sqe_tag(sqe, RING_OP_CANCEL, c->gen, conn_slot(t, c));
	c->inflight++;
}

/* Cancels only the multishot recv (pausing must not kill a send). */
static void cancel_recv(struct conn_table *t, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_cancelling)
		return;
	sqe = ring_get_sqe(t->ring);
	if (!sqe)
		return;
	c->recv_cancelling = true;
	io_uring_prep_cancel64(sqe, ring_ud(RING_OP_RECV, c->gen, conn_slot(t, c)), 0);
	ring_sqe_tag(sqe, RING_OP_CANCEL, c->gen, conn_slot(t, c));
	c->inflight++;
}

static void start_send(struct conn_table *t, struct conn *c)
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
	sqe = ring_get_sqe(t->ring);
	if (!sqe)
		return;
	io_uring_prep_send(sqe, c->fd, c->sending.data + c->send_off,
			   c->sending.len - c->send_off, MSG_NOSIGNAL);
	ring_sqe_tag(sqe, RING_OP_SEND, c->gen, conn_slot(t, c));
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

/*
 * The per-connection cap on unsent output is what keeps a client that
 * stops reading from growing our memory: past it the connection is
 * closed (its undelivered messages stay stored and are pushed again at
 * its next login).
 */
void conn_queue(struct conn_table *t, struct conn *c, const uint8_t *data, uint32_t n)
{
	if (c->state != CONN_OPEN)
		return;
	if (conn_unsent(c) + (uint64_t)n > (uint64_t)t->out_limit) {
		counter_inc(conn_out_limit_closed);
		log_warn("event=out_limit conn=%u unsent=%u limit=%u: client is not reading",
			 conn_slot(t, c), conn_unsent(c), t->out_limit);
		conn_close(t, c, "output limit");
		return;
	}
	if (obuf_append(&c->pending, data, n)) {
		conn_nomem_close(t, c, "queueing output");
		return;
	}
	if (!c->in_send_list) {
		if (slot_list_push(&t->send_list, conn_slot(t, c))) {
			conn_nomem_close(t, c, "listing a connection to send");
			return;
		}
		c->in_send_list = true;
	}
}

/* Flush, then shutdown(SHUT_WR) and wait (bounded) for the client's EOF,
 * so that the final frame is not destroyed by a RST caused by unread
 * input (nginx's lingering close). */
void conn_close_lingering(struct conn_table *t, struct conn *c)
{
	if (c->state != CONN_OPEN)
		return;
	c->no_read = true;
	c->close_after_flush = true;
	if (!c->send_inflight && !conn_unsent(c) && !c->in_send_list) {
		shutdown(c->fd, SHUT_WR);
		c->state = CONN_LINGER;
		c->deadline_ms = ring_now_ms(t->ring) + CONN_LINGER_MS;
		if (!c->recv_armed)
			conn_close(t, c, "closed after flush");
	}
}

/* ---- connection lifetime ---------------------------------------------- */

static struct conn *conn_alloc(struct conn_table *t)
{
	uint32_t slot, gen;
	struct conn *c;

	if (t->nfree) {
		slot = t->free_slots[--t->nfree];
	} else if (t->high_water < t->max_conns) {
		slot = t->high_water++;
	} else {
		return NULL;
	}
	c = &t->conns[slot];
	gen = c->gen + 1;
	memset(c, 0, sizeof(*c));
	c->gen = gen & RING_UD_GEN_MASK; /* matches the 24 bits kept in user_data */
	if (!c->gen)
		c->gen = 1;
	c->state = CONN_OPEN;
	c->fd = -1;
	frame_reader_init(&c->rd, t->max_frame);
	return c;
}

static void pend_free(struct conn *c)
{
	free(c->pend_len);
	c->pend_len = NULL;
	c->pend_cap = c->pend_head = c->pend_frames = c->pend_bytes = 0;
}

static void conn_release(struct conn_table *t, struct conn *c)
{
	c->state = CONN_FREE;
	t->free_slots[t->nfree++] = conn_slot(t, c);
}

static bool conn_tell_worker_closed(struct conn_table *t, struct conn *c)
{
	struct in_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return false;
	m->conn = conn_ref(t, c);
	m->kind = IN_CLOSED;
	if (!handoff_submit(handoff_lane_for(t->h, m->conn), m)) {
		free(m);
		return false;
	}
	return true;
}

/* Called whenever inflight may have reached 0 on a closing connection. */
static void conn_maybe_finish(struct conn_table *t, struct conn *c)
{
	if (c->state != CONN_CLOSING || c->inflight)
		return;
	close(c->fd);
	c->fd = -1;
	obuf_free(&c->sending);
	obuf_free(&c->pending);
	frame_reader_reset(&c->rd);
	pend_free(c);
	addr_release(t, c);
	c->state = CONN_DEAD;
	t->nopen--;
	atomic_fetch_sub_explicit(&counters.conn_open, 1, memory_order_relaxed);
	counter_inc(conn_closed);
	if (!c->seen_frame || conn_tell_worker_closed(t, c))
		conn_release(t, c);
	else if (slot_list_push(&t->dead, conn_slot(t, c)) == 0)
		c->dead_listed = true;
	/* else the sweep finds the DEAD slot and tells the worker */
}

void conn_close(struct conn_table *t, struct conn *c, const char *why)
{
	if (c->state != CONN_OPEN && c->state != CONN_LINGER)
		return;
	log_info("event=disconnect conn=%u peer=%u.%u.%u.%u:%u reason=\"%s\"", conn_slot(t, c),
		 c->peer_addr >> 24, (c->peer_addr >> 16) & 255, (c->peer_addr >> 8) & 255,
		 c->peer_addr & 255, c->peer_port, why);
	c->state = CONN_CLOSING;
	if (c->recv_armed || c->send_inflight)
		cancel_conn_ops(t, c);
	conn_maybe_finish(t, c);
}

static void on_accept_retry(void *ctx, struct ring_timer *timer)
{
	struct conn_table *t = ctx;

	(void)timer;
	t->accept_backoff = false;
	arm_accept(t);
}

/*
 * A failed accept. With EMFILE/ENFILE the multishot accept would fail
 * again at once for every client waiting in the backlog: pause it, retry
 * after a short ring timer (doubling while it keeps failing), and log at
 * most one line per 10 s.
 */
static void accept_failed(struct conn_table *t, int err, bool still_armed)
{
	static struct log_gate gate;

	counter_inc(accept_backoffs);
	t->backoff_ms = t->backoff_ms ? t->backoff_ms * 2 : CONN_ACCEPT_BACKOFF_MS;
	if (t->backoff_ms > CONN_ACCEPT_BACKOFF_MAX_MS)
		t->backoff_ms = CONN_ACCEPT_BACKOFF_MAX_MS;
	log_limited(&gate, LOG_WARN, "accept failed: %s (open=%u); accepting again in %u ms%s",
		    strerror(err), t->nopen, t->backoff_ms,
		    err == EMFILE || err == ENFILE ? ": out of file descriptors" : "");
	if (t->accept_backoff)
		return;
	if (still_armed) {
		struct io_uring_sqe *sqe = ring_get_sqe(t->ring);

		if (sqe) {
			io_uring_prep_cancel64(sqe, ring_ud(RING_OP_ACCEPT, 0, 0), 0);
			ring_sqe_tag(sqe, RING_OP_CANCEL, 0, CANCEL_NO_SLOT);
		}
	}
	if (ring_timer_arm(t->ring, &t->accept_retry, ring_now_ms(t->ring) + t->backoff_ms,
			   on_accept_retry, t) == 0)
		t->accept_backoff = true; /* else the sweep re-arms it */
}

static void on_accept(void *ctx, struct io_uring_cqe *cqe)
{
	struct conn_table *t = ctx;
	static struct log_gate gate;
	struct sockaddr_in sa;
	socklen_t salen = sizeof(sa);
	uint32_t peer_addr = 0;
	uint16_t peer_port = 0;
	struct conn *c;
	int fd = cqe->res;
	int one = 1;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		t->accept_armed = false;
	if (fd < 0) {
		if (fd != -ECANCELED)
			accept_failed(t, -fd, t->accept_armed);
		else if (!t->accept_armed && !t->accept_backoff)
			arm_accept(t); /* not ours to stop (drain checks itself) */
		return;
	}
	t->backoff_ms = 0;
	if (t->draining || t->nopen >= t->max_conns) {
		counter_inc(conn_refused_max);
		log_limited(&gate, LOG_WARN, "event=refused reason=\"max_connections %u\"",
			    t->max_conns);
		close(fd);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&sa, &salen) == 0 &&
	    sa.sin_family == AF_INET) {
		peer_addr = ntohl(sa.sin_addr.s_addr);
		peer_port = ntohs(sa.sin_port);
	}
	if (!addr_admit(t, peer_addr)) {
		close(fd);
		return;
	}
	c = conn_alloc(t);
	if (!c) { /* slots still held by DEAD connections the workers must see */
		counter_inc(conn_refused_max);
		if (peer_addr) {
			struct addr_count *e = addr_find(t, peer_addr);

			e->unauth--;
			if (!--e->conns)
				addr_remove(t, e);
		}
		close(fd);
		return;
	}
	/* Replies are small and latency-bound; the batching Nagle would
	 * give is already done by queueing output per loop iteration. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->peer_addr = peer_addr;
	c->peer_port = peer_port;
	c->fd = fd;
	c->last_rx_ms = ring_now_ms(t->ring);
	c->opened_ms = c->last_rx_ms;
	t->nopen++;
	atomic_fetch_add_explicit(&counters.conn_open, 1, memory_order_relaxed);
	counter_inc(conn_accepted);
	log_info("event=connect conn=%u peer=%u.%u.%u.%u:%u open=%u", conn_slot(t, c),
		 c->peer_addr >> 24, (c->peer_addr >> 16) & 255, (c->peer_addr >> 8) & 255,
		 c->peer_addr & 255, c->peer_port, t->nopen);
	arm_recv(t, c);
}

/* ---- input ------------------------------------------------------------ */

struct feed_ctx {
	struct conn_table *t;
	struct conn *c;
};

static int on_frame(void *arg, const struct frame_hdr *hdr, const uint8_t *payload)
{
	struct feed_ctx *fc = arg;
	struct conn *c = fc->c;
	struct in_msg *m;

	if (c->no_read)
		return 0; /* closing: the rest of the input is discarded */
	if (pend_full(fc->t, c, FRAME_HDR_BYTES + hdr->len)) {
		if (!c->pend_blocked)
			counter_inc(pending_pauses);
		c->pend_blocked = true; /* resumed by the reply that makes room */
		return 1;
	}
	if (pend_reserve(c))
		return 1; /* treat as a full queue: retried later */
	m = malloc(sizeof(*m) + hdr->len);
	if (!m)
		return 1; /* treat as a full queue: retried later */
	m->conn = conn_ref(fc->t, c);
	m->kind = IN_FRAME;
	m->peer_addr = c->peer_addr;
	m->peer_port = c->peer_port;
	m->hdr = *hdr;
	if (hdr->len)
		memcpy(m->payload, payload, hdr->len);
	if (!handoff_submit(handoff_lane_for(fc->t->h, m->conn), m)) {
		free(m);
		return 1;
	}
	c->seen_frame = true;
	pend_push(c, FRAME_HDR_BYTES + hdr->len);
	/* the idle timeout counts whole frames, not bytes trickling in */
	c->last_rx_ms = ring_now_ms(fc->t->ring);
	counter_inc(frames_in);
	return 0;
}

/* Hands the pending framing error to the worker. false = queue full. */
static bool conn_send_bad_frame(struct conn_table *t, struct conn *c)
{
	struct in_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return false;
	m->conn = conn_ref(t, c);
	m->kind = IN_BAD_FRAME;
	m->peer_addr = c->peer_addr;
	m->peer_port = c->peer_port;
	m->hdr = c->bad;
	if (!handoff_submit(handoff_lane_for(t->h, m->conn), m)) {
		free(m);
		return false;
	}
	c->seen_frame = true;
	c->bad_frame_pending = false;
	return true;
}

/* Puts c on the paused list (retried every iteration). false: out of
 * memory, c was closed. */
static bool conn_list_paused(struct conn_table *t, struct conn *c)
{
	if (slot_list_push(&t->paused, conn_slot(t, c))) {
		c->paused = false;
		conn_nomem_close(t, c, "pausing a connection");
		return false;
	}
	c->paused = true;
	return true;
}

static void conn_pause(struct conn_table *t, struct conn *c)
{
	if (c->paused)
		return;
	if (c->pend_blocked) {
		/* waits for replies, not for the queue: off the polled list */
		if (c->recv_armed)
			cancel_recv(t, c);
		return;
	}
	counter_inc(backpressure_events);
	if (!conn_list_paused(t, c))
		return;
	if (c->recv_armed)
		cancel_recv(t, c);
}

/* The frame deadline runs while the reader holds an incomplete frame. */
static void conn_track_frame(struct conn_table *t, struct conn *c)
{
	if (c->state == CONN_OPEN && !c->no_read && frame_reader_partial(&c->rd)) {
		if (!c->frame_start_ms)
			c->frame_start_ms = ring_now_ms(t->ring);
	} else {
		c->frame_start_ms = 0;
	}
}

/* Handles the result of feeding or draining the reader. */
static void conn_after_feed(struct conn_table *t, struct conn *c, enum frame_feed_result res,
			    enum frame_verdict verdict, const struct frame_hdr *bad)
{
	switch (res) {
	case FEED_OK:
		break;
	case FEED_PAUSED:
		conn_pause(t, c);
		break;
	case FEED_NOMEM:
		conn_close(t, c, "out of memory buffering a frame");
		break;
	case FEED_ERROR:
		counter_inc(conn_bad_frame_closed);
		log_info("event=bad_frame conn=%u verdict=%d", conn_slot(t, c), (int)verdict);
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
		if (!conn_send_bad_frame(t, c) && !c->paused)
			conn_list_paused(t, c);
		break;
	}
	conn_track_frame(t, c);
}

/* The connection a RECV/SEND/CANCEL completion is for, or NULL (logged)
 * when the slot was reused: cannot happen, slots are freed only at
 * inflight 0, but a buffer it carries still goes back. */
static struct conn *conn_for_cqe(struct conn_table *t, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	struct conn *c = conn_lookup(t, ring_ud_idx(ud), ring_ud_gen(ud));

	if (!c) {
		log_error("stale CQE op=%u slot=%u", ring_ud_kind(ud), ring_ud_idx(ud));
		if (cqe->flags & IORING_CQE_F_BUFFER)
			ring_buf_return(t->ring, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
	}
	return c;
}

static void on_recv(void *ctx, struct io_uring_cqe *cqe)
{
	struct conn_table *t = ctx;
	struct conn *c = conn_for_cqe(t, cqe);
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!c)
		return;
	if (!more) {
		c->recv_armed = false;
		c->inflight--;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (res > 0 && c->state == CONN_OPEN && !c->no_read) {
			struct feed_ctx fc = { t, c };
			enum frame_verdict verdict = FRAME_OK;
			struct frame_hdr bad;
			enum frame_feed_result fr;

			counter_add(bytes_in, (uint64_t)res);
			fr = frame_reader_feed(&c->rd, ring_buf(t->ring, bid), (size_t)res,
					       on_frame, &fc, &verdict, &bad);
			conn_after_feed(t, c, fr, verdict, &bad);
		}
		ring_buf_return(t->ring, bid);
	}
	if (res == 0) {
		if (c->state == CONN_OPEN || c->state == CONN_LINGER)
			conn_close(t, c, "peer closed");
	} else if (res < 0 && !more) {
		if (c->state == CONN_OPEN && (res == -ENOBUFS || res == -ECANCELED)) {
			/* out of buffers, or cancelled to pause: re-armed once
			 * buffers are back / the queued frames are handed over */
			if (res == -ENOBUFS)
				counter_inc(recv_enobufs);
			if (!c->paused && !c->no_read && !c->pend_blocked &&
			    slot_list_push(&t->rearm, conn_slot(t, c)))
				conn_nomem_close(t, c, "re-arming a receive");
		} else if (c->state == CONN_OPEN || c->state == CONN_LINGER) {
			conn_close(t, c, strerror(-res));
		}
	} else if (!more && c->state == CONN_OPEN && !c->paused && !c->pend_blocked) {
		/* the kernel ended the multishot (e.g. overflow); re-arm */
		if (slot_list_push(&t->rearm, conn_slot(t, c)))
			conn_nomem_close(t, c, "re-arming a receive");
	}
	conn_maybe_finish(t, c);
}

static void on_send(void *ctx, struct io_uring_cqe *cqe)
{
	struct conn_table *t = ctx;
	struct conn *c = conn_for_cqe(t, cqe);

	if (!c)
		return;
	c->send_inflight = false;
	c->inflight--;
	if (cqe->res < 0) {
		if (c->state == CONN_OPEN || c->state == CONN_LINGER)
			conn_close(t, c, strerror(-cqe->res));
		conn_maybe_finish(t, c);
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
			start_send(t, c);
		else if (c->close_after_flush && c->state == CONN_OPEN)
			conn_close_lingering(t, c);
	}
	conn_maybe_finish(t, c);
}

static void on_cancel(void *ctx, struct io_uring_cqe *cqe)
{
	struct conn_table *t = ctx;
	struct conn *c;

	if (ring_ud_idx(io_uring_cqe_get_data64(cqe)) == CANCEL_NO_SLOT)
		return; /* the listener's accept: its own CQE says it ended */
	c = conn_for_cqe(t, cqe);
	if (!c)
		return;
	c->inflight--;
	conn_maybe_finish(t, c);
}

static void on_wake(void *ctx, struct io_uring_cqe *cqe)
{
	struct conn_table *t = ctx;

	if (cqe->res == -ECANCELED)
		return; /* the ring is being torn down */
	if (cqe->res < 0)
		log_error("wake-up eventfd read failed: %s", strerror(-cqe->res));
	counter_inc(ring_wakeups);
	arm_wake_read(t);
}

/* ---- per-iteration work ----------------------------------------------- */

/* A reply settled one pending frame; a connection stopped at the bounds
 * reads again once under them (via the paused list, which first hands
 * over the frames its reader holds). */
static void conn_settle_reply(struct conn_table *t, struct conn *c)
{
	pend_pop(c);
	if (!c->pend_blocked || c->pend_frames >= t->max_pending_frames ||
	    c->pend_bytes >= t->max_pending_bytes)
		return;
	c->pend_blocked = false;
	if (!c->paused)
		conn_list_paused(t, c);
}

static void drain_out_queues(struct conn_table *t)
{
	for (int i = 0; i < t->h->n; i++) {
		struct handoff_lane *l = &t->h->lanes[i];
		struct out_msg *m;

		for (int k = 0; k < OUT_DRAIN_MAX && (m = spsc_pop(&l->out)); k++) {
			struct conn *c = conn_lookup(t, CONN_SLOT(m->conn), CONN_GEN(m->conn));

			if (!c || c->state != CONN_OPEN) {
				counter_inc(stale_outs);
				free(m);
				continue;
			}
			if (m->flags & OUT_LOGGED_IN)
				addr_logged_in(t, c);
			if (m->flags & OUT_REPLY)
				conn_settle_reply(t, c);
			if (m->len && c->state == CONN_OPEN)
				conn_queue(t, c, m->data, m->len);
			if ((m->flags & OUT_CLOSE) && c->state == CONN_OPEN) {
				c->no_read = true;
				c->close_after_flush = true;
				if (!c->in_send_list && !c->send_inflight)
					conn_close_lingering(t, c);
			}
			free(m);
		}
	}
}

static void flush_send_list(struct conn_table *t)
{
	for (uint32_t i = 0; i < t->send_list.n; i++) {
		struct conn *c = &t->conns[t->send_list.v[i]];

		c->in_send_list = false;
		if (c->state != CONN_OPEN && c->state != CONN_LINGER)
			continue;
		if (conn_unsent(c))
			start_send(t, c);
		else if (c->close_after_flush && c->state == CONN_OPEN)
			conn_close_lingering(t, c);
	}
	t->send_list.n = 0;
}

static void retry_paused(struct conn_table *t)
{
	uint32_t keep = 0;

	for (uint32_t i = 0; i < t->paused.n; i++) {
		struct conn *c = &t->conns[t->paused.v[i]];
		struct feed_ctx fc = { t, c };
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
			if (conn_send_bad_frame(t, c))
				c->paused = false;
			else
				t->paused.v[keep++] = t->paused.v[i];
			continue;
		}
		fr = frame_reader_drain(&c->rd, on_frame, &fc, &verdict, &bad);
		if (fr == FEED_PAUSED && !c->pend_blocked) {
			t->paused.v[keep++] = t->paused.v[i];
			continue;
		}
		c->paused = false;
		if (fr == FEED_PAUSED)
			continue; /* waits for replies now: not polled */
		conn_after_feed(t, c, fr, verdict, &bad);
		if (c->state == CONN_OPEN && !c->recv_armed && !c->no_read && !c->paused &&
		    !c->pend_blocked)
			arm_recv(t, c);
	}
	t->paused.n = keep;
}

static void retry_rearm(struct conn_table *t)
{
	for (uint32_t i = 0; i < t->rearm.n; i++) {
		struct conn *c = &t->conns[t->rearm.v[i]];

		if (c->state == CONN_OPEN && !c->paused && !c->pend_blocked && !c->no_read)
			arm_recv(t, c);
	}
	t->rearm.n = 0;
}

static void retry_dead(struct conn_table *t)
{
	uint32_t keep = 0;

	for (uint32_t i = 0; i < t->dead.n; i++) {
		struct conn *c = &t->conns[t->dead.v[i]];

		if (conn_tell_worker_closed(t, c)) {
			c->dead_listed = false;
			conn_release(t, c);
		} else {
			t->dead.v[keep++] = t->dead.v[i];
		}
	}
	t->dead.n = keep;
}

static void on_sweep(void *ctx, struct ring_timer *timer)
{
	struct conn_table *t = ctx;
	uint64_t now = ring_now_ms(t->ring);

	for (uint32_t s = 0; s < t->high_water; s++) {
		struct conn *c = &t->conns[s];

		if (c->state == CONN_OPEN && c->frame_start_ms &&
		    now - c->frame_start_ms >= t->frame_timeout_ms) {
			counter_inc(conn_frame_timeout_closed);
			log_info("event=frame_timeout conn=%u held=%u timeout_ms=%llu", s,
				 c->rd.len, (unsigned long long)t->frame_timeout_ms);
			conn_close(t, c, "frame timeout");
		} else if (c->state == CONN_OPEN && !c->logged_in &&
			   now - c->opened_ms >= t->login_timeout_ms) {
			counter_inc(conn_login_timeout_closed);
			log_info("event=login_timeout conn=%u timeout_ms=%llu", s,
				 (unsigned long long)t->login_timeout_ms);
			conn_close(t, c, "login timeout");
		} else if (c->state == CONN_OPEN && now - c->last_rx_ms > t->idle_timeout_ms) {
			counter_inc(conn_idle_closed);
			log_info("event=idle_close conn=%u idle_ms=%llu", s,
				 (unsigned long long)(now - c->last_rx_ms));
			conn_close(t, c, "idle timeout");
		} else if (c->state == CONN_LINGER && now >= c->deadline_ms) {
			conn_close(t, c, "linger timeout");
		} else if (c->state == CONN_DEAD && !c->dead_listed &&
			   conn_tell_worker_closed(t, c)) {
			conn_release(t, c); /* its dead-list push had failed */
		}
	}
	if (!t->accept_armed && !t->accept_backoff)
		arm_accept(t); /* an accept that could not get an SQE */
	ring_timer_arm(t->ring, timer, now + t->sweep_ms, on_sweep, t);
}

/* ---- the table's share of the loop (struct ring_client) ---------------- */

static void conn_flush(void *ctx)
{
	struct conn_table *t = ctx;

	drain_out_queues(t);
	retry_paused(t);
	retry_dead(t);
	flush_send_list(t);
	retry_rearm(t);
	handoff_flush_wakes(t->h);
}

static int conn_wait_ms(void *ctx)
{
	struct conn_table *t = ctx;

	if (handoff_out_pending(t->h))
		return 0;
	/* the workers do not signal progress on their in queues: poll
	 * again shortly */
	if (t->paused.n || t->dead.n)
		return 1;
	return -1;
}

static bool conn_sleep(void *ctx)
{
	return handoff_ring_sleep(((struct conn_table *)ctx)->h);
}

static void conn_awake(void *ctx)
{
	handoff_ring_awake(((struct conn_table *)ctx)->h);
}

/* Orderly shutdown: stop accepting and reading; done once every reply
 * the workers produced has been sent. */
static bool conn_drain(void *ctx, bool first)
{
	struct conn_table *t = ctx;

	if (first) {
		t->draining = true;
		if (t->accept_armed) {
			/* the listener is closed once the accept ends */
			struct io_uring_sqe *sqe = ring_get_sqe(t->ring);

			if (sqe) {
				io_uring_prep_cancel64(sqe, ring_ud(RING_OP_ACCEPT, 0, 0), 0);
				ring_sqe_tag(sqe, RING_OP_CANCEL, 0, CANCEL_NO_SLOT);
			}
		}
	}
	if (t->listen_fd >= 0 && !t->accept_armed) {
		close(t->listen_fd);
		t->listen_fd = -1;
	}
	for (uint32_t s = 0; s < t->high_water; s++) {
		struct conn *c = &t->conns[s];

		if (c->state == CONN_OPEN && !c->no_read) {
			c->no_read = true;
			if (c->recv_armed)
				cancel_recv(t, c);
		}
	}
	if (handoff_out_pending(t->h) || t->paused.n)
		return false;
	if (t->accept_backoff) {
		ring_timer_cancel(t->ring, &t->accept_retry);
		t->accept_backoff = false;
	}
	for (uint32_t s = 0; s < t->high_water; s++) {
		struct conn *c = &t->conns[s];

		if ((c->state == CONN_OPEN || c->state == CONN_LINGER) &&
		    (c->send_inflight || conn_unsent(c)))
			return false;
	}
	return true;
}

/* ---- set-up ----------------------------------------------------------- */

/*
 * max_connections against RLIMIT_NOFILE: every connection is a
 * descriptor, and a node that runs out of them at accept time fails in
 * the middle of a storm. Raises the soft limit toward the hard one when
 * that is enough; otherwise lowers max_connections (with a warning naming
 * both numbers). Returns the connections to allow, 0 when not even one
 * fits (logged). *reserve receives the descriptors kept back.
 */
static uint32_t conn_fit_fd_limit(const struct config *cfg, uint32_t *reserve)
{
	uint64_t want = (uint64_t)cfg->max_connections, need, workers = (uint64_t)cfg->workers;
	struct rlimit rl;

	if (!workers) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		workers = n > 0 ? (uint64_t)n : 1;
	}
	*reserve = (uint32_t)(CONN_FD_RESERVE_BASE + CONN_FD_PER_WORKER * workers +
			      2 * (uint64_t)cfg->hash_threads + (uint64_t)cfg->admin_max_clients);
	need = want + *reserve;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY ||
	    need <= rl.rlim_cur)
		return (uint32_t)want;
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > rl.rlim_cur) {
		struct rlimit nl = rl;

		nl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need
										  : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &nl) == 0) {
			log_info("raised the open-file limit (RLIMIT_NOFILE) from %llu to %llu "
				 "for max_connections %llu",
				 (unsigned long long)rl.rlim_cur, (unsigned long long)nl.rlim_cur,
				 (unsigned long long)want);
			rl.rlim_cur = nl.rlim_cur;
		}
	}
	if (need <= rl.rlim_cur)
		return (uint32_t)want;
	if (rl.rlim_cur <= *reserve) {
		log_error("the open-file limit (RLIMIT_NOFILE) %llu leaves no descriptor for "
			  "clients: %u are needed besides them; raise it (ulimit -n, LimitNOFILE=)",
			  (unsigned long long)rl.rlim_cur, *reserve);
		return 0;
	}
	log_warn("max_connections %llu does not fit the open-file limit (RLIMIT_NOFILE) %llu "
		 "(hard limit %llu) with %u descriptors kept for listeners, eventfds, storage and "
		 "admin connections: max_connections lowered to %llu; raise the limit (ulimit -n, "
		 "LimitNOFILE=) to allow more",
		 (unsigned long long)want, (unsigned long long)rl.rlim_cur,
		 (unsigned long long)rl.rlim_max, *reserve,
		 (unsigned long long)(rl.rlim_cur - *reserve));
	return (uint32_t)(rl.rlim_cur - *reserve);
}

struct conn_table *conn_table_create(struct ring *r, const struct config *cfg,
				     struct handoff *h)
{
	static const struct {
		unsigned kind;
		ring_cqe_fn fn;
	} ops[] = {
		{ RING_OP_ACCEPT, on_accept }, { RING_OP_RECV, on_recv },
		{ RING_OP_SEND, on_send },     { RING_OP_CANCEL, on_cancel },
		{ RING_OP_WAKE, on_wake },
	};
	struct conn_table *t = calloc(1, sizeof(*t));
	struct ring_client client = {
		.flush = conn_flush,
		.wait_ms = conn_wait_ms,
		.sleep = conn_sleep,
		.awake = conn_awake,
		.drain = conn_drain,
	};

	if (!t)
		goto out_nomem;
	t->ring = r;
	t->h = h;
	t->listen_fd = -1;
	t->max_conns = conn_fit_fd_limit(cfg, &t->fd_reserve);
	if (!t->max_conns)
		goto out_destroy;
	t->max_frame = (uint32_t)cfg->max_frame;
	t->out_limit = (uint32_t)cfg->out_limit_bytes;
	t->idle_timeout_ms = (uint64_t)cfg->idle_timeout_ms;
	t->frame_timeout_ms = (uint64_t)cfg->frame_timeout_ms;
	t->login_timeout_ms = (uint64_t)cfg->login_timeout_ms;
	t->max_per_addr = (uint32_t)cfg->max_conns_per_addr;
	t->max_unauth_per_addr = (uint32_t)cfg->max_unauth_per_addr;
	t->max_pending_frames = (uint32_t)cfg->max_pending_frames;
	t->max_pending_bytes = (uint32_t)cfg->max_pending_bytes;
	/* a deadline is overshot by at most a quarter of itself */
	t->sweep_ms = CONN_SWEEP_MS;
	if (t->sweep_ms > t->frame_timeout_ms / 4)
		t->sweep_ms = t->frame_timeout_ms / 4;
	if (t->sweep_ms > t->login_timeout_ms / 4)
		t->sweep_ms = t->login_timeout_ms / 4;
	if (t->sweep_ms > t->idle_timeout_ms / 4)
		t->sweep_ms = t->idle_timeout_ms / 4;
	if (t->sweep_ms < 2)
		t->sweep_ms = 2;
	t->addr_mask = 63;
	while (t->addr_mask < 2 * t->max_conns)
		t->addr_mask = t->addr_mask * 2 + 1;
	t->conns = calloc(t->max_conns, sizeof(*t->conns));
	t->free_slots = calloc(t->max_conns, sizeof(*t->free_slots));
	t->addrs = calloc((size_t)t->addr_mask + 1, sizeof(*t->addrs));
	if (!t->conns || !t->free_slots || !t->addrs)
		goto out_nomem;
	t->listen_fd = sock_listen_tcp(cfg->listen, LISTEN_BACKLOG, t->bound, sizeof(t->bound));
	if (t->listen_fd < 0) {
		log_error("cannot listen on %s: %s", cfg->listen, strerror(-t->listen_fd));
		goto out_destroy;
	}
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		int ret = ring_register_op(r, ops[i].kind, ops[i].fn, t);

		if (ret) {
			log_error("cannot register op kind %u: %s", ops[i].kind, strerror(-ret));
			goto out_destroy;
		}
	}
	client.ctx = t;
	if (ring_add_client(r, &client) ||
	    ring_timer_arm(r, &t->sweep, ring_now_ms(r) + t->sweep_ms, on_sweep, t))
		goto out_nomem;
	log_info("listening on %s", t->bound);
	arm_accept(t);
	arm_wake_read(t);
	return t;

out_nomem:
	log_error("cannot allocate the table of %d connections", cfg->max_connections);
out_destroy:
	if (t)
		conn_table_destroy(t);
	return NULL;
}

void conn_table_destroy(struct conn_table *t)
{
	for (uint32_t s = 0; s < t->high_water; s++) {
		struct conn *c = &t->conns[s];

		if (c->fd >= 0 && c->state != CONN_FREE && c->state != CONN_DEAD)
			close(c->fd);
		obuf_free(&c->sending);
		obuf_free(&c->pending);
		frame_reader_reset(&c->rd);
		pend_free(c);
	}
	if (t->listen_fd >= 0)
		close(t->listen_fd);
	free(t->conns);
	free(t->free_slots);
	free(t->addrs);
	free(t->paused.v);
	free(t->rearm.v);
	free(t->dead.v);
	free(t->send_list.v);
	free(t);
}
