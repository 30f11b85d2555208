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
 * and arms the accept. At most cfg->admin_max_clients are served at once,
 * each for at most cfg->admin_timeout_ms; a failed accept is retried on a
 * ring timer. h (may be NULL) gives the queue depths shown.
 * Returns the endpoint (owned by the caller) or NULL, after logging why,
 * when the address cannot be bound. I/O thread only.
 */
struct metrics *metrics_create(struct ring *ring, const struct config *cfg, struct handoff *h);
/* The admin listener's address as bound ("host:port"; the port is the
 * real one when cfg asked for port 0). */
const char *metrics_bound(const struct metrics *m);
/* Closes the sockets and frees m. Call after ring_destroy (no timer or
 * CQE may reach it any more). */
void metrics_destroy(struct metrics *m);

/* Writes the whole exposition text (all counters and gauges). Any thread. */
void metrics_render(FILE *out, struct handoff *h);

#endif
