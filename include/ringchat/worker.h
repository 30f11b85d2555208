/*
 * worker.h - the worker pool and the messages that travel between the I/O
 * thread and the workers.
 *
 *   I/O thread ──in[w] (SPSC)──► worker w ──out[w] (SPSC)──► I/O thread
 *
 * A connection is pinned to worker (slot % nworkers), so its frames are
 * handled in order. Any worker may send to any connection through its own
 * out queue (pushes to other users). Both directions are bounded: a full
 * in queue pauses reading of that connection (the I/O thread never
 * blocks); a full out queue makes the worker wait for the I/O thread,
 * which always drains (a reply is never dropped).
 *
 * Wake-ups follow the sleeping → notified rule: a side writes the other's
 * eventfd only when it saw the other's `sleeping` flag set, with a
 * seq_cst fence between its queue push and that check (the sleeper sets
 * the flag, fences, then re-checks its queues before blocking).
 */
#ifndef RINGCHAT_WORKER_H
#define RINGCHAT_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringchat/config.h"
#include "ringchat/frame.h"
#include "ringchat/spsc.h"

struct db;
struct kv;
struct worker_task;

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
};

/* worker → I/O thread. Allocated by a worker, freed by the I/O thread. */
struct out_msg {
	uint64_t conn;
	uint32_t flags;
	uint32_t len; /* bytes of encoded frames in data (may be 0) */
	uint8_t data[];
};

struct worker {
	int id;
	const struct config *cfg;
	struct worker_pool *pool;
	pthread_t thread;
	struct spsc in;
	struct spsc out;
	_Atomic int sleeping; /* set by the worker before it blocks */
	int wake_fd;          /* eventfd the worker blocks on */
	bool wake_pending;    /* I/O thread only: write wake_fd at loop end */
	struct db *db;
	struct kv *kv;
	void *ext;            /* handler modules' per-worker state */
	/* worker_post: tasks from other threads (handler.h). Low rate (one
	 * per login), so a mutex is fine; the flag spares the lock when empty. */
	pthread_mutex_t post_lock;
	struct worker_task *post_head, *post_tail;
	_Atomic bool post_pending;
};

/*
 * What a worker thread runs: the request layer above the pool, handed to
 * worker_pool_init by main (dispatch_worker_ops), so the pool calls up
 * only through these.
 */
struct worker_ops {
	int (*start)(struct worker *w);	 /* on the thread, first: storage links */
	void (*stop)(struct worker *w);	 /* on the thread, last */
	void (*handle)(struct worker *w, struct in_msg *m); /* takes m */
	bool (*poll)(struct worker *w);	 /* asynchronous work; true if it did any */
	bool (*has_work)(struct worker *w); /* work held outside the in queue */
	uint32_t (*deferred)(void);	 /* replies waiting for completions, all workers */
};

struct worker_pool {
	const struct config *cfg;
	const struct worker_ops *ops;
	int n;
	struct worker *workers;
	_Atomic int ring_sleeping; /* set by the I/O thread before it blocks */
	int ring_wake_fd;          /* eventfd polled by the I/O thread */
	_Atomic bool stopping;
	_Atomic uint64_t stop_deadline_ms; /* mono ms: stop waiting for deferred replies */
	_Atomic uint32_t busy;     /* workers currently handling a message */
};

/* Creates n workers (not started) with queues of cfg->queue_depth, that
 * will run ops. Returns 0 or -errno. */
int worker_pool_init(struct worker_pool *p, const struct config *cfg, int n,
		     const struct worker_ops *ops);
/* Starts the threads. Returns 0 or -errno. */
int worker_pool_start(struct worker_pool *p);
/* Asks workers to finish what is queued and exit; joins them. */
void worker_pool_stop(struct worker_pool *p);
void worker_pool_destroy(struct worker_pool *p);

static inline struct worker *worker_for_conn(struct worker_pool *p, uint64_t conn)
{
	return &p->workers[CONN_SLOT(conn) % (uint32_t)p->n];
}

/* I/O thread: queue m for its worker. false = queue full (m not taken). */
bool worker_submit(struct worker *w, struct in_msg *m);
/* I/O thread: wake every worker that was given work this iteration. */
void worker_pool_flush_wakes(struct worker_pool *p);

/* Any thread: wake worker w if it sleeps (after giving it work through a
 * queue other than its in queue, e.g. commit completions). */
void worker_wake(struct worker *w);

/*
 * Any thread: runs fn(w, arg) on worker w's thread, soon, in post order.
 * For completions of work done elsewhere (the hasher). Returns 0, or
 * -ENOMEM (fn will not run). arg is owned by fn from then on.
 */
int worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg);

/* Worker thread: hand an out_msg to the I/O thread (waits while full). */
void worker_send_out(struct worker *w, struct out_msg *m);

/* True when every worker queue is empty and no worker is mid-message. */
bool worker_pool_idle(struct worker_pool *p);

#endif
