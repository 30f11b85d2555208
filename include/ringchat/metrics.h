/*
 * metrics.h - the admin endpoint: GET /metrics in the Prometheus text
 * format, served by the I/O thread's ring on cfg->admin_listen
 * (loopback by default). It reads only relaxed counters and queue sizes,
 * so serving it never stalls the node.
 */
#ifndef RINGCHAT_METRICS_H
#define RINGCHAT_METRICS_H

#include <liburing.h>
#include <stdio.h>

#include "ringchat/config.h"
#include "ringchat/worker.h"

struct metrics;

/*
 * Opens the admin listener and arms its accept on ring. CQEs whose
 * user_data op (top 8 bits) equals op must be passed to metrics_on_cqe.
 * Returns NULL (after logging why) when the address cannot be bound.
 * I/O thread only.
 */
struct metrics *metrics_create(struct io_uring *ring, const struct config *cfg,
			       struct worker_pool *pool, unsigned op);
void metrics_on_cqe(struct metrics *m, struct io_uring_cqe *cqe);
void metrics_destroy(struct metrics *m);

/* Writes the whole exposition text (all counters and gauges). */
void metrics_render(FILE *out, struct worker_pool *pool);

#endif
