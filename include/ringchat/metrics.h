/*
 * metrics.h - the admin endpoint: GET /metrics in the Prometheus text
 * format, served on the I/O thread's ring on cfg->admin_listen
 * (loopback by default). It reads only relaxed counters and queue sizes,
 * so serving it never stalls the node.
 */
#ifndef RINGCHAT_METRICS_H
#define RINGCHAT_METRICS_H

#include <stdio.h>

#include "ringchat/config.h"
#include "ringchat/handoff.h"
#include "ringchat/ring.h"

struct metrics;

/*
 * Opens the admin listener, registers the RING_OP_ADMIN handler on ring
 * and arms the accept. h (may be NULL) gives the queue depths shown.
 * Returns the endpoint (owned by the caller) or NULL, after logging why,
 * when the address cannot be bound. I/O thread only.
 */
struct metrics *metrics_create(struct ring *ring, const struct config *cfg, struct handoff *h);
/* Closes the sockets and frees m. Call after ring_destroy. */
void metrics_destroy(struct metrics *m);

/* Writes the whole exposition text (all counters and gauges). Any thread. */
void metrics_render(FILE *out, struct handoff *h);

#endif
