/*
 * conn.h - client connections on the I/O thread's ring: the connection
 * table (slots, generations), each connection's output buffers, limits
 * and life cycle, and the hand-over of its frames to the workers.
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
 * gone (straight from DEAD to FREE when the worker never saw a frame),
 * and every user_data and conn reference carries the slot's generation,
 * so a late CQE or a reply for an old connection is recognised and
 * dropped (stale_outs).
 *
 * Thread rules: the I/O thread only (the thread of the ring).
 */
#ifndef RINGCHAT_CONN_H
#define RINGCHAT_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "ringchat/config.h"
#include "ringchat/frame.h"
#include "ringchat/handoff.h"
#include "ringchat/ring.h"
#include "ringchat/sock.h"
#include "ringchat/timer.h"

#define CONN_LINGER_MS 1000 /* LINGER: longest wait for the client's EOF */
#define CONN_SWEEP_MS 1000  /* period of the idle / linger sweep */

enum conn_state { CONN_FREE = 0, CONN_OPEN, CONN_LINGER, CONN_CLOSING, CONN_DEAD };

/* A growable byte buffer; data is NULL while nothing was ever appended. */
struct obuf {
	uint8_t *data;
	uint32_t len;
	uint32_t cap;
};

struct conn {
	uint32_t gen;      /* generation, 24 bits, never 0 for a used slot */
	uint8_t state;     /* enum conn_state */
	bool recv_armed;
	bool send_inflight;
	bool paused;       /* on the paused list: a worker queue was full */
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

struct conn_table {
	struct ring *ring;
	struct handoff *h;
	struct conn *conns;
	uint32_t max_conns;  /* slots (cfg max_connections) */
	uint32_t high_water; /* slots [0, high_water) have been used */
	uint32_t *free_slots;
	uint32_t nfree;
	uint32_t nopen;      /* OPEN, LINGER or CLOSING */
	uint32_t max_frame;
	uint32_t out_limit;  /* unsent bytes per connection */
	uint64_t idle_timeout_ms;
	int listen_fd;
	bool accept_armed;
	bool draining;
	char bound[SOCK_ADDR_STRLEN]; /* the listener's address */
	struct slot_list paused;
	struct slot_list rearm;     /* recvs ended by ENOBUFS */
	struct slot_list dead;      /* IN_CLOSED not yet delivered */
	struct slot_list send_list; /* connections with new output */
	struct ring_timer sweep;    /* idle and linger deadlines */
};

/*
 * Opens the client listener on cfg->listen, registers the client op kinds
 * (RING_OP_ACCEPT, RECV, SEND, CANCEL, WAKE) and an iteration client on r,
 * arms the accept, the poll of h->ring_wake_fd and the sweep timer.
 * Limits come from cfg (max_connections, max_frame, out_limit_bytes,
 * idle_timeout_ms). r, cfg and h must outlive the table.
 * Returns the table (owned by the caller) or NULL after logging why; then
 * handlers registered so far still point at the freed table, so the ring
 * must not run (start-up fails and destroys it).
 */
struct conn_table *conn_table_create(struct ring *r, const struct config *cfg,
				     struct handoff *h);
/* Closes every socket and frees the table. Call after ring_destroy
 * (no CQE or timer may reach the table any more). */
void conn_table_destroy(struct conn_table *t);

/* The reference workers use for c (slot | generation << 32). */
static inline uint64_t conn_ref(const struct conn_table *t, const struct conn *c)
{
	return CONN_REF((uint32_t)(c - t->conns), c->gen);
}

/* The live connection (any state but FREE) at slot whose generation is
 * gen (24 bits compared), or NULL for a stale or unknown pair. */
struct conn *conn_lookup(struct conn_table *t, uint32_t slot, uint32_t gen);

/*
 * Queues n bytes of output for c (OPEN only; otherwise ignored). Past
 * out_limit unsent bytes the connection is closed instead (counted in
 * conn_out_limit_closed). The send starts at the end of the iteration.
 */
void conn_queue(struct conn_table *t, struct conn *c, const uint8_t *data, uint32_t n);
/* OPEN → flush the output, then the lingering close (OUT_CLOSE). */
void conn_close_lingering(struct conn_table *t, struct conn *c);
/* OPEN or LINGER → CLOSING (→ DEAD → FREE once its operations ended). */
void conn_close(struct conn_table *t, struct conn *c, const char *why);

/* Unsent output bytes of c. */
static inline uint32_t conn_unsent(const struct conn *c)
{
	return (c->sending.len - c->send_off) + c->pending.len;
}

#endif
