/*
 * dispatch.h - the worker side of a frame: the contract's check order
 * (unknown command, not logged in, payload, rate), the command table, and
 * the wiring of the handler modules into the node. Only dispatch knows
 * the handlers.
 *
 * The worker pool reaches it through dispatch_worker_ops (worker.h's
 * struct worker_ops), handed over by main.
 */
#ifndef RINGCHAT_DISPATCH_H
#define RINGCHAT_DISPATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "ringchat/worker.h"

struct config;

/* The calls a worker thread makes into the request layer. */
extern const struct worker_ops dispatch_worker_ops;
/* What the cluster layer asks of the handlers (cluster_start). */
extern const struct cluster_hooks dispatch_cluster_hooks;

/*
 * Starts what the handler modules share across workers: the session table
 * (max_conns slots), the registry, the hasher (auth) and the group-commit
 * writer (messages). post and wake are the worker pool's worker_post and
 * wake-up, which the hasher and the writer use to hand work back. Call
 * before the workers start. Returns 0 or -errno (nothing left running).
 */
int dispatch_start(const struct config *cfg, int nworkers, uint32_t max_conns,
		   int (*post)(struct worker *owner, void (*fn)(struct worker *, void *), void *arg),
		   void (*wake)(int worker_id));
/* After the workers stopped: stops the writer and the hasher, frees the
 * shared state. */
void dispatch_stop(void);

/* Replies still waiting for a completion (the shutdown drain waits). */
uint32_t dispatch_deferred(void);

#endif
