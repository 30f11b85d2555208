/*
 * handoff.h - the queues between the I/O thread and the workers, and the
 * wake-ups that go with them.
 *
 *   I/O thread ──lane[w].in (SPSC)──► worker w ──lane[w].out (SPSC)──► I/O thread
 *
 * One lane per worker. A connection is pinned to lane (slot % nlanes),
 * so its frames are handled in order. Any worker may send to any
 * connection through its own out queue (pushes to other users). Both
 * directions are bounded: a full in queue pauses reading of that
 * connection (the I/O thread never blocks); a full out queue makes the
 * worker wait for the I/O thread, which always drains (a reply is never
 * dropped).
 *
 * Wake-ups follow the sleeping → notified rule: a producer wakes the
 * other side (a futex wake for a worker, an eventfd write for the I/O
 * thread, whose ring reads it) only when it sees that side's `sleeping`
 * flag set and wins the exchange that clears it, with a seq_cst fence between its
 * queue push and that check; the sleeper sets the flag, fences, then
 * re-checks its queues before blocking (handoff_ring_sleep for the I/O
 * thread; the worker loop does the same with its lane's flag). Under
 * load nobody sleeps, so no eventfd is written at all.
 *
 * This module knows nothing of sockets or handlers: the net layer
 * (src/net/conn.c) is the I/O-thread side, src/worker.c the worker side.
 */
#ifndef RINGCHAT_HANDOFF_H
#define RINGCHAT_HANDOFF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringchat/frame.h"
#include "ringchat/spsc.h"

/* conn reference: slot in the low 32 bits, generation in the high 32. */
#define CONN_REF(slot, gen) (((uint64_t)(gen) << 32) | (uint32_t)(slot))
#define CONN_SLOT(ref) ((uint32_t)(ref))
#define CONN_GEN(ref) ((uint32_t)((ref) >> 32))

enum in_kind {
	IN_FRAME = 1, /* a decoded frame of the connection */
	IN_CLOSED,    /* the connection is gone; sent once, after its frames */
	IN_BAD_FRAME, /* framing error: hdr.code is the status to answer with,
		       * hdr.cmd/seq the frame's (0/0 for BAD_FRAME and
		       * FRAME_TOO_LARGE); answer after the replies to earlier
		       * frames, then close */
};

/* I/O thread → worker. Allocated by the I/O thread, freed by the worker. */
struct in_msg {
	struct in_msg *next; /* worker-side: a held session's queue */
	uint64_t conn;
	uint8_t kind;
	uint16_t peer_port;
	uint32_t peer_addr;
	struct frame_hdr hdr;
	uint8_t payload[]; /* hdr.len bytes */
};

enum out_flags {
	OUT_CLOSE = 1u << 0, /* close the connection once this is sent */
	/* The reply to one request frame (exactly one per IN_FRAME, in request
	 * order): the I/O thread counts the frames it handed on and has not
	 * seen answered, and stops reading a connection past
	 * max_pending_frames / max_pending_bytes (conn.c). */
	OUT_REPLY = 1u << 1,
	/* The OK reply of a LOGIN or RESUME: the connection is logged in, its
	 * login deadline (login_timeout_ms) and its place in the per-address
	 * count of connections not logged in are cleared (conn.c). */
	OUT_LOGGED_IN = 1u << 2,
};

/* worker → I/O thread. Allocated by a worker, freed by the I/O thread. */
struct out_msg {
	uint64_t conn;
	uint32_t flags;
	uint32_t len; /* bytes of encoded frames in data (may be 0) */
	uint8_t data[];
};

/* The two queues of one worker and how to wake it. */
struct handoff_lane {
	struct spsc in;       /* I/O thread → worker */
	struct spsc out;      /* worker → I/O thread */
	_Atomic int sleeping; /* set by the worker before it blocks; also the
			       * futex word it blocks on */
	bool wake_pending;    /* I/O thread only: wake the worker at loop end */
};

struct handoff {
	int n;                      /* lanes */
	struct handoff_lane *lanes; /* cache-line aligned (spsc indices) */
	_Atomic int ring_sleeping;  /* set by the I/O thread before it blocks */
	int ring_wake_fd;           /* eventfd the I/O thread reads through its
				     * ring; blocking (an io_uring read of an
				     * O_NONBLOCK file fails with EAGAIN
				     * instead of waiting) */
	uint64_t ring_wake_val;     /* I/O thread only: where that read lands */
};

/* Creates n lanes with queues of depth entries each, and the ring's
 * eventfd.
 * Returns 0 or -errno (everything allocated so far is released). */
int handoff_init(struct handoff *h, int n, uint32_t depth);
/* Frees the lanes, the messages still queued in them and the ring's
 * eventfd.
 * No thread may use h any more. Safe on a zeroed or failed handoff. */
void handoff_destroy(struct handoff *h);

/* The lane a connection is pinned to. */
static inline struct handoff_lane *handoff_lane_for(struct handoff *h, uint64_t conn)
{
	return &h->lanes[CONN_SLOT(conn) % (uint32_t)h->n];
}

/* I/O thread: queue m for lane l's worker; the wake-up is deferred to
 * handoff_flush_wakes. false = queue full (m not taken). */
bool handoff_submit(struct handoff_lane *l, struct in_msg *m);
/* I/O thread: wake every worker that was given work since the last call
 * (one futex wake per sleeping worker per loop iteration at most). */
void handoff_flush_wakes(struct handoff *h);

/* Any thread: wake lane l's worker if it sleeps (after giving it work
 * through a queue other than its in queue, e.g. commit completions). */
void handoff_wake_worker(struct handoff_lane *l);
/* Any thread: wake lane l's worker unconditionally (stop requests). */
void handoff_kick_worker(struct handoff_lane *l);
/* Worker thread owning l, after it announced its sleep (sleeping = 1,
 * seq_cst fence, queues re-checked): blocks until a producer claims the
 * wake-up, timeout_ms passes, or a signal. A futex on the flag itself: a
 * wake-up is one syscall on each side and nothing to drain. */
void handoff_worker_wait(struct handoff_lane *l, int timeout_ms);

/* Worker thread owning l: hand m to the I/O thread, waking it if it
 * sleeps. Waits (yielding) while the out queue is full. Takes m. */
void handoff_send_out(struct handoff *h, struct handoff_lane *l, struct out_msg *m);

/* Any thread (exact when the producers are idle): true when some out
 * queue holds a message for the I/O thread. */
/* Any thread, after publishing work for the I/O thread elsewhere (the node
 * link's queue): wakes it if it announced a sleep; the caller fenced. */
void handoff_wake_ring(struct handoff *h);
bool handoff_out_pending(struct handoff *h);
/* Any thread: true when every in queue is empty. */
bool handoff_in_empty(struct handoff *h);

/*
 * I/O thread, before blocking: announces the sleep (ring_sleeping = 1,
 * seq_cst fence) and re-checks the out queues. Returns true when the
 * thread may block; false when work arrived (the flag is cleared again).
 * After a true return the caller calls handoff_ring_awake once it runs
 * again.
 */
bool handoff_ring_sleep(struct handoff *h);
void handoff_ring_awake(struct handoff *h);
/* I/O thread, only after ring_wake_fd polled readable: empties it with
 * one read (the read takes the whole count). The ring itself does not
 * need this: its pending io_uring read of ring_wake_fd is the drain. */
void handoff_ring_drain_wake(struct handoff *h);

#endif
