/*
 * dispatch.h - the worker side of a frame: session bookkeeping, the check
 * order of the contract (unknown command, not logged in, payload, rate),
 * the command table, and encoding of replies and pushes.
 */
#ifndef RINGCHAT_DISPATCH_H
#define RINGCHAT_DISPATCH_H

#include <stdbool.h>

#include "ringchat/worker.h"

/* Worker thread start/end: opens and closes the worker's storage
 * connections and the handler modules' per-worker state. */
int dispatch_worker_start(struct worker *w);
void dispatch_worker_stop(struct worker *w);

/* Handles one message from the I/O thread; takes ownership of m. */
void dispatch_in(struct worker *w, struct in_msg *m);

/* Runs the worker's periodic and asynchronous work (completions of group
 * commit, timers). Returns true if it did anything. */
bool dispatch_poll(struct worker *w);
/* True while the worker holds work that is not in its in queue. */
bool dispatch_has_work(struct worker *w);

/* Global start-up / shutdown of what handler modules share across
 * workers (registry, committer). Called before workers start and after
 * they stop. Returns 0 or -errno. */
int dispatch_global_init(struct worker_pool *pool);
void dispatch_global_stop(struct worker_pool *pool);

#endif
