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
struct session;
struct worker_task;

struct worker {
	int id;
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

struct worker_pool {
	const struct config *cfg;
	int n;
	struct worker *workers;
	struct session *sessions; /* one per conn slot; slot s owned by worker s % n */
	uint32_t nsessions;
	struct handoff handoff;   /* one lane per worker */
	_Atomic bool stopping;
	_Atomic uint64_t stop_deadline_ms; /* mono ms: stop waiting for deferred replies */
	_Atomic uint32_t busy;     /* workers currently handling a message */
	_Atomic uint32_t deferred; /* replies waiting for a group commit */
};

/* Creates n workers (not started) with queues of cfg->queue_depth.
 * Returns 0 or -errno. */
int worker_pool_init(struct worker_pool *p, const struct config *cfg, int n,
		     uint32_t max_conns);
/* Starts the threads. Returns 0 or -errno. */
int worker_pool_start(struct worker_pool *p);
/* Asks workers to finish what is queued and exit; joins them. */
void worker_pool_stop(struct worker_pool *p);
void worker_pool_destroy(struct worker_pool *p);

static inline struct worker *worker_for_conn(struct worker_pool *p, uint64_t conn)
{
	return &p->workers[CONN_SLOT(conn) % (uint32_t)p->n];
}

/* Any thread: wake worker w if it sleeps (after giving it work through a
 * queue other than its in queue, e.g. commit completions). */
void worker_wake(struct worker *w);

/* Worker thread: hand an out_msg to the I/O thread (waits while full);
 * handoff_send_out on the worker's lane. */
void worker_send_out(struct worker *w, struct out_msg *m);

/* True when every in queue is empty, no worker is mid-message and no
 * reply is deferred: the I/O thread's drain waits for this (ring_hooks). */
bool worker_pool_idle(struct worker_pool *p);

#endif
