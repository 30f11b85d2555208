/*
 * conn.h - client connections on the I/O thread's ring: the connection
 * table (slots, generations), each connection's output buffers, limits
 * and life cycle, and the hand-over of its frames to the workers.
 *
 * Connection states:
 *
 *   FREE ──accept──► OPEN ──error / EOF / timeout / out limit─► CLOSING
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
#define CONN_SWEEP_MS 1000  /* longest period of the deadline sweep */
/* After a failed accept (EMFILE, ENFILE, ...) the accept pauses this long,
 * doubling per consecutive failure up to the maximum. */
#define CONN_ACCEPT_BACKOFF_MS 5
#define CONN_ACCEPT_BACKOFF_MAX_MS 200
/*
 * Descriptors kept out of max_connections at start: stdio, the ring,
 * signalfd, the listeners (client, admin, node link), the ring's eventfd,
 * the writer's MariaDB connection, the cluster bus's Redis connections,
 * log and spare (CONN_FD_RESERVE_BASE); per worker its eventfd, MariaDB
 * and Redis connections and a spare (CONN_FD_PER_WORKER); per hasher
 * thread 2; plus admin_max_clients. With the defaults on 2 cores:
 * 32 + 2 * 4 + 2 + 16 = 58.
 */
#define CONN_FD_RESERVE_BASE 32
#define CONN_FD_PER_WORKER 4

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
	bool logged_in;       /* OUT_LOGGED_IN seen: no login deadline */
	bool pend_blocked;    /* reading stopped at max_pending_frames/bytes */
	bool recv_cancelling; /* a cancel of the recv is on its way */
	bool dead_listed;     /* DEAD and on the dead list (else the sweep retries) */
	uint64_t opened_ms;      /* accept: the login deadline counts from here */
	uint64_t frame_start_ms; /* an incomplete frame began; 0 = none */
	/* Frames handed to the worker and not answered yet (OUT_REPLY), with
	 * their sizes in arrival order: replies come in request order, so the
	 * oldest size is the one a reply settles. */
	uint32_t pend_frames;
	uint32_t pend_bytes;
	uint32_t *pend_len; /* ring of pend_cap sizes, from pend_head */
	uint32_t pend_head, pend_cap;
};

/* Connections of one peer address (the per-address caps). */
struct addr_count {
	uint32_t addr;   /* IPv4, host order; an entry with conns 0 is free */
	uint32_t conns;  /* open connections */
	uint32_t unauth; /* of them not logged in */
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
	uint64_t frame_timeout_ms;
	uint64_t login_timeout_ms;
	uint64_t sweep_ms;           /* period of the deadline sweep */
	uint32_t max_per_addr;       /* 0 = no cap */
	uint32_t max_unauth_per_addr;
	uint32_t max_pending_frames;
	uint32_t max_pending_bytes;
	uint32_t fd_reserve;         /* descriptors kept out of max_conns */
	struct addr_count *addrs;    /* open addressing, addr_mask + 1 entries */
	uint32_t addr_mask;
	int listen_fd;
	bool accept_armed;
	bool accept_backoff;         /* paused after a failed accept */
	uint32_t backoff_ms;         /* the current pause, 0 after a success */
	struct ring_timer accept_retry;
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
 * arms the accept, the read of h->ring_wake_fd and the sweep timer.
 * Limits come from cfg (max_connections, max_frame, out_limit_bytes,
 * idle_timeout_ms, frame_timeout_ms, login_timeout_ms, max_conns_per_addr,
 * max_unauth_per_addr, max_pending_frames, max_pending_bytes).
 *
 * max_connections must fit the open-file limit (RLIMIT_NOFILE) with the
 * descriptors the node needs besides clients (CONN_FD_RESERVE_BASE ...):
 * the soft limit is raised toward the hard one if that is enough; if not,
 * the table is made smaller (t->max_conns) with a warning naming both
 * numbers; if not even one connection fits, creation fails.
 * r, cfg and h must outlive the table.
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

/* Tests only: the next n pushes onto the table's slot lists fail as if
 * memory ran out (fault injection; 0 in production). */
extern unsigned conn_fault_list_nomem;

/* Unsent output bytes of c. */
static inline uint32_t conn_unsent(const struct conn *c)
{
	return (c->sending.len - c->send_off) + c->pending.len;
}

#endif
