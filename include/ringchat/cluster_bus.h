/*
 * cluster_bus.h - the node's cluster thread: membership (membership.h)
 * and the inbox transport (inbox.h) driven together, behind one handle.
 *
 * The bus owns a thread named "cluster" and two Redis connections of its
 * own: one (struct kv) for heartbeats and XADDs, one for the blocking
 * XREADGROUP of our inbox, so a read that waits never delays a heartbeat
 * or a send. Workers only ever enqueue (cluster_bus_send) and, on the
 * first message of a burst, write an eventfd; they never touch Redis for
 * the cluster.
 *
 * What happens when things fail:
 *   Redis unreachable  redis_state(false) once; heartbeats, flushes and the
 *                      reader retry with back-off; sends keep queueing up
 *                      to cluster_queue_bytes, then get -ENOBUFS (counted);
 *                      the peer view keeps its last state (no node_down
 *                      for every peer because Redis is away). When Redis
 *                      answers again: redis_state(true), the lease is
 *                      refreshed (or re-created if Redis lost it), queued
 *                      messages go out in order, the reader resumes.
 *   lease taken        if the lease expired during the outage and another
 *                      instance took our id: lease_lost() once, the reader
 *                      stops, sends get -ESHUTDOWN. The node must exit.
 *   peer crash         node_down(id) at most node_ttl_ms + one heartbeat
 *                      later; messages already XADDed for it wait in its
 *                      inbox (up to inbox_maxlen) and reach it if it comes
 *                      back with the same id.
 *
 * Several buses may run in one process (tests do), each with its own
 * node_id; the node runs one.
 */
#ifndef RINGCHAT_CLUSTER_BUS_H
#define RINGCHAT_CLUSTER_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ringchat/inbox.h"
#include "ringchat/membership.h"

struct config;
struct cluster_bus;

/*
 * Callbacks, all on the cluster thread, one at a time; any may be NULL.
 * They should return quickly: heartbeats and sends wait meanwhile (the
 * lease is at risk after node_ttl_ms). None may call cluster_bus_stop.
 *
 * deliver      one message from node from, in the sender's order (see
 *              inbox.h: sent_ms, at least once); msg valid during the call.
 * node_up      a peer came up, or its addresses changed (membership.h).
 * node_down    a peer went away.
 * lease_lost   our id is held by another instance now; see above.
 * redis_state  Redis became unreachable (false) or answers again (true);
 *              called on changes only.
 */
struct cluster_bus_ops {
	void (*deliver)(void *ctx, int from, uint64_t sent_ms, const uint8_t *msg, size_t len);
	void (*node_up)(void *ctx, int id, const struct node_info *info);
	void (*node_down)(void *ctx, int id);
	void (*lease_lost)(void *ctx);
	void (*redis_state)(void *ctx, bool up);
};

struct cluster_bus_stats {
	struct inbox_stats inbox;
	uint32_t up_mask; /* peers up */
	bool redis_up;
	bool lease_held;     /* false after lease_lost */
	uint64_t heartbeats; /* successful */
	uint64_t heartbeat_failures;
};

/*
 * Takes the lease on cfg->node_id (on the calling thread) and starts the
 * cluster thread. self gives our addresses (addr: the client address
 * actually bound; admin; link, may be ""); its other fields are ignored.
 * cfg and self are copied; ops is copied, ctx is passed to every callback.
 * Returns 0 and *out, or
 *   -EADDRINUSE  a live instance holds the id; *holder (if not NULL) gets
 *                its info (address, start time, pid). ringchatd exits 2
 *                with the line of membership_format_holder.
 *   -ENOTCONN    Redis could not be reached, so the lease cannot be checked.
 *   -EPROTO, -ENOMEM, or another -errno (thread creation).
 * On failure no callback is ever called and nothing is left to stop.
 */
int cluster_bus_start(struct cluster_bus **out, const struct config *cfg,
		      const struct node_info *self, const struct cluster_bus_ops *ops, void *ctx,
		      struct node_info *holder);

/*
 * Any thread. Queues a copy of msg[0, len) for node (0..31) and wakes the
 * cluster thread if it sleeps; never blocks on Redis. A node that is not
 * up still gets the message queued (it may be starting; its inbox keeps
 * it): callers that want to skip dead nodes check cluster_bus_is_up.
 * Returns 0, -EINVAL, -EMSGSIZE, -ENOBUFS (queue bound reached, counted),
 * -ENOMEM, or -ESHUTDOWN after lease_lost or once stopping.
 */
int cluster_bus_send(struct cluster_bus *b, int node, const void *msg, size_t len);

/*
 * Stops the thread: flushes what is queued (for at most
 * CLUSTER_BUS_STOP_FLUSH_MS; what is left is dropped and logged),
 * releases the lease (the id is free at once), closes the connections,
 * joins and frees b. Not from a callback. NULL is a no-op.
 */
#define CLUSTER_BUS_STOP_FLUSH_MS 2000
void cluster_bus_stop(struct cluster_bus *b);

/* Any thread: peer queries, see membership.h. */
bool cluster_bus_is_up(const struct cluster_bus *b, int id);
uint32_t cluster_bus_up_mask(const struct cluster_bus *b);
int cluster_bus_peer(struct cluster_bus *b, int id, struct node_info *info);
/* Our own info (token, start time); any thread, constant after start
 * except link. */
void cluster_bus_self(struct cluster_bus *b, struct node_info *info);

/* Any thread: publish our node-link address (copied); peers see it within
 * a heartbeat (node_up with the new info). */
void cluster_bus_set_link(struct cluster_bus *b, const char *link);

/* Any thread. */
void cluster_bus_stats(struct cluster_bus *b, struct cluster_bus_stats *out);
/* Any thread: the ringchat_cluster_* metrics in Prometheus text, for
 * metrics_render (docs/operations.md lists them). */
void cluster_bus_metrics(struct cluster_bus *b, FILE *out);

#endif
