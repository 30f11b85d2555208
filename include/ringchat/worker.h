/*
 * worker.h - the worker pool. Worker w owns lane w of the pool's handoff
 * (handoff.h: the in/out queues to and from the I/O thread, the messages
 * on them and the wake-up protocol); a connection is pinned to worker
 * (slot % nworkers), the same index as its lane.
 */
#ifndef RINGCHAT_WORKER_H
#define RINGCHAT_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringchat/config.h"
#include "ringchat/frame.h"
#include "ringchat/handoff.h"
#include "ringchat/spsc.h"

struct db;
struct kv;
struct worker_task;

struct worker {
	int id;
	const struct config *cfg;
	struct worker_pool *pool;
	pthread_t thread;
	struct handoff_lane *lane; /* its queues: &pool->handoff.lanes[id] */
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
	struct handoff handoff;   /* one lane per worker */
	_Atomic bool stopping;
	_Atomic uint64_t stop_deadline_ms; /* mono ms: stop waiting for deferred replies */
	_Atomic uint32_t busy;     /* workers currently handling a message */
	/* Set by worker_pool_stop: the I/O thread has ended (main stops the
	 * pool only after the ring), so nothing drains the out queues any
	 * more and worker_send_out drops instead of waiting. */
	_Atomic bool out_gone;
};

/* Creates n workers (not started) with queues of cfg->queue_depth, that
 * will run ops. Returns 0 or -errno. */
int worker_pool_init(struct worker_pool *p, const struct config *cfg, int n,
		     const struct worker_ops *ops);
/* Starts the threads. Returns 0 or -errno. */
int worker_pool_start(struct worker_pool *p);
/* Asks workers to finish what is queued and exit; joins them. Call it
 * only once the I/O thread has stopped (or never ran): from then on what
 * workers send to connections (offline presence of the sessions they end)
 * is dropped and counted (outs_dropped_at_stop), so a full out queue
 * cannot hold the stop up. */
void worker_pool_stop(struct worker_pool *p);
void worker_pool_destroy(struct worker_pool *p);

static inline struct worker *worker_for_conn(struct worker_pool *p, uint64_t conn)
{
	return &p->workers[CONN_SLOT(conn) % (uint32_t)p->n];
}

/* Any thread: wake worker w if it sleeps (after giving it work through a
 * queue other than its in queue, e.g. commit completions). */
void worker_wake(struct worker *w);

/*
 * Any thread: runs fn(w, arg) on worker w's thread, soon, in post order.
 * For completions of work done elsewhere (the hasher). Returns 0, or
 * -ENOMEM (fn will not run). arg is owned by fn from then on.
 */
int worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg);

/* Worker thread: hand an out_msg to the I/O thread, waiting while the
 * lane's out queue is full; once the pool is stopping with the I/O thread
 * gone (out_gone), m is freed and counted instead. Takes m. */
void worker_send_out(struct worker *w, struct out_msg *m);

/* True when every in queue is empty, no worker is mid-message and no
 * reply is deferred: the I/O thread's drain waits for this (ring_hooks). */
bool worker_pool_idle(struct worker_pool *p);

#endif
