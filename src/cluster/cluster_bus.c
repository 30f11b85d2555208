/*
 * cluster_bus.c - the cluster thread (see cluster_bus.h).
 *
 * The thread owns: the struct kv for heartbeats and XADDs, the inbox's
 * reader connection, the membership state. One loop turn:
 *
 *   heartbeat due?        membership_tick (one round trip; events)
 *   messages queued?      inbox_flush (one pipelined round trip), unless
 *                         the last one failed less than FLUSH_RETRY_MS ago
 *   reader                inbox_rx_step: deliver a reply that arrived,
 *                         issue the next XREADGROUP BLOCK; only while our
 *                         lease is confirmed (else the inbox may be
 *                         another instance's)
 *   poll                  eventfd (senders) + reader socket, until the
 *                         earliest deadline
 *
 * Batching comes from the loop itself: while one flush is on the wire,
 * senders keep appending, and the next turn takes all of it.
 *
 * Waking: senders write the eventfd only on the flush_wanted false -> true
 * transition (inbox_enqueue), so a burst costs one write and one wake-up.
 */
#include "ringchat/cluster_bus.h"
#include "ringchat/clock.h"
#include "ringchat/config.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* After a failed flush, wait this long before the next attempt, so that
 * sends during an outage do not turn into a busy loop. */
#define FLUSH_RETRY_MS 100
#define STOP_RETRY_MS 50

struct cluster_bus {
	struct cluster_bus_ops ops;
	void *ctx;
	struct kv *kv;
	struct membership *m;
	struct inbox *ib;
	int efd;
	pthread_t thread;

	_Atomic bool stopping;
	_Atomic bool lost;     /* lease lost: sends refused */
	_Atomic bool redis_up; /* last state reported */
	bool tx_ok, rx_ok;     /* cluster thread: last verdict of each link */
	_Atomic uint64_t heartbeats, heartbeat_failures;

	pthread_mutex_t lock; /* guards link, link_set and self_copy */
	char link[MEMBERSHIP_ADDR_MAX];
	bool link_set;
	struct node_info self_copy;
};

static void bus_wake(struct cluster_bus *b)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already non-zero: awake anyway */
	if (write(b->efd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_error("cluster: eventfd write: %s", strerror(errno));
}

/* ---- membership and inbox callbacks, forwarded -------------------------- */

static void bus_node_up(void *ctx, int id, const struct node_info *info)
{
	struct cluster_bus *b = ctx;

	if (b->ops.node_up)
		b->ops.node_up(b->ctx, id, info);
}

static void bus_node_down(void *ctx, int id)
{
	struct cluster_bus *b = ctx;

	if (b->ops.node_down)
		b->ops.node_down(b->ctx, id);
}

static void bus_lease_lost(void *ctx)
{
	struct cluster_bus *b = ctx;

	atomic_store_explicit(&b->lost, true, memory_order_relaxed);
	if (b->ops.lease_lost)
		b->ops.lease_lost(b->ctx);
}

static void bus_deliver(void *ctx, int from, uint64_t sent_ms, const uint8_t *msg, size_t len)
{
	struct cluster_bus *b = ctx;

	if (b->ops.deliver)
		b->ops.deliver(b->ctx, from, sent_ms, msg, len);
}

/*
 * Reports a change of Redis reachability once, not per failure. Redis is
 * up when both links worked at their last attempt: with only one verdict
 * the state would flap while the other link still waits out its back-off.
 */
static void bus_link_state(struct cluster_bus *b, bool *link, bool ok)
{
	bool up;

	*link = ok;
	up = b->tx_ok && b->rx_ok;
	if (atomic_load_explicit(&b->redis_up, memory_order_relaxed) == up)
		return;
	atomic_store_explicit(&b->redis_up, up, memory_order_relaxed);
	if (up)
		log_info("cluster: Redis reachable again");
	else
		log_warn("cluster: Redis unreachable; queueing sends, retrying with back-off");
	if (b->ops.redis_state)
		b->ops.redis_state(b->ctx, up);
}

/* ---- the thread --------------------------------------------------------- */

static void bus_take_link(struct cluster_bus *b)
{
	pthread_mutex_lock(&b->lock);
	if (b->link_set) {
		membership_set_link(b->m, b->link);
		b->link_set = false;
	}
	pthread_mutex_unlock(&b->lock);
}

static void bus_heartbeat(struct cluster_bus *b)
{
	int rc;

	bus_take_link(b);
	rc = membership_tick(b->m, b->kv);
	if (rc == 0) {
		atomic_fetch_add_explicit(&b->heartbeats, 1, memory_order_relaxed);
		bus_link_state(b, &b->tx_ok, true);
	} else if (rc == -ENOTCONN) {
		atomic_fetch_add_explicit(&b->heartbeat_failures, 1, memory_order_relaxed);
		bus_link_state(b, &b->tx_ok, false);
	}
	/* -ESTALE: bus_lease_lost ran inside the tick */
}

/* Flushes until empty or CLUSTER_BUS_STOP_FLUSH_MS ran out. */
static void bus_final_flush(struct cluster_bus *b)
{
	uint64_t end = clock_mono_ms() + CLUSTER_BUS_STOP_FLUSH_MS;
	struct inbox_stats st;

	while (inbox_has_queued(b->ib) && !atomic_load_explicit(&b->lost, memory_order_relaxed)) {
		if (inbox_flush(b->ib, b->kv) == 0)
			continue;
		if (clock_mono_ms() + STOP_RETRY_MS >= end)
			break;
		usleep(STOP_RETRY_MS * 1000);
	}
	inbox_stats(b->ib, &st);
	if (st.queued_msgs)
		log_warn("cluster: stopping with %" PRIu64 " messages (%" PRIu64
			 " bytes) for other nodes unsent; dropped",
			 st.queued_msgs, st.queued_bytes);
}

static void *bus_main(void *arg)
{
	struct cluster_bus *b = arg;
	uint64_t next_hb = 0, flush_at = 0, rx_next;
	bool readable = false;

	pthread_setname_np(pthread_self(), "cluster");
	while (!atomic_load_explicit(&b->stopping, memory_order_acquire)) {
		bool lost = atomic_load_explicit(&b->lost, memory_order_relaxed);
		struct pollfd pfd[2] = {{.fd = b->efd, .events = POLLIN}, {.fd = -1}};
		uint64_t now = clock_mono_ms(), until;
		int timeout, rc;

		if (!lost && now >= next_hb) {
			bus_heartbeat(b);
			next_hb = clock_mono_ms() + membership_heartbeat_ms(b->m);
			lost = atomic_load_explicit(&b->lost, memory_order_relaxed);
		}
		if (!lost && inbox_has_queued(b->ib) && now >= flush_at) {
			if (inbox_flush(b->ib, b->kv)) {
				bus_link_state(b, &b->tx_ok, false);
				flush_at = clock_mono_ms() + FLUSH_RETRY_MS;
			} else {
				bus_link_state(b, &b->tx_ok, true);
				flush_at = 0;
			}
		}
		rc =
		    inbox_rx_step(b->ib, !lost && membership_lease_valid(b->m), readable, &rx_next);
		if (rc != -EAGAIN)
			bus_link_state(b, &b->rx_ok, rc == 0);
		readable = false;

		now = clock_mono_ms();
		until = lost ? now + 1000 : next_hb;
		if (rx_next < until)
			until = rx_next;
		if (!lost && inbox_has_queued(b->ib) && flush_at < until)
			until = flush_at;
		timeout = until > now ? (int)(until - now) : 0;
		pfd[1].fd = inbox_rx_fd(b->ib);
		pfd[1].events = POLLIN;
		rc = poll(pfd, 2, timeout);
		if (rc == -1 && errno != EINTR) {
			log_error("cluster: poll: %s", strerror(errno));
			usleep(10 * 1000);
			continue;
		}
		if (rc > 0 && (pfd[0].revents & POLLIN)) {
			uint64_t v;

			if (read(b->efd, &v, sizeof(v)) == -1 && errno != EAGAIN)
				log_error("cluster: eventfd read: %s", strerror(errno));
		}
		if (rc > 0 && pfd[1].fd >= 0 && pfd[1].revents)
			readable = true; /* errors and hang-ups show up in the read */
	}
	bus_final_flush(b);
	if (!atomic_load_explicit(&b->lost, memory_order_relaxed) &&
	    membership_release(b->m, b->kv) < 0)
		log_warn("cluster: could not release node_id %d (%s); it is free once "
			 "node_ttl_ms has passed",
			 membership_self(b->m)->id, kv_errmsg(b->kv));
	return NULL;
}

/* ---- public ------------------------------------------------------------- */

static void bus_free(struct cluster_bus *b)
{
	inbox_destroy(b->ib);
	membership_destroy(b->m);
	kv_close(b->kv);
	if (b->efd >= 0)
		close(b->efd);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

int cluster_bus_start(struct cluster_bus **out, const struct config *cfg,
		      const struct node_info *self, const struct cluster_bus_ops *ops, void *ctx,
		      struct node_info *holder)
{
	static const struct membership_ops mops = {
	    .node_up = bus_node_up, .node_down = bus_node_down, .lease_lost = bus_lease_lost};
	struct cluster_bus *b = calloc(1, sizeof(*b));
	int rc;

	*out = NULL;
	if (!b)
		return -ENOMEM;
	b->efd = -1;
	if (pthread_mutex_init(&b->lock, NULL)) {
		free(b);
		return -ENOMEM;
	}
	if (ops)
		b->ops = *ops;
	b->ctx = ctx;
	atomic_init(&b->redis_up, true);
	b->tx_ok = b->rx_ok = true;
	b->kv = kv_open(cfg);
	b->m = membership_create(cfg, self, &mops, b);
	b->ib = inbox_create(cfg, bus_deliver, b);
	b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!b->kv || !b->m || !b->ib || b->efd == -1) {
		rc = b->efd == -1 ? -errno : -ENOMEM;
		goto out_free;
	}
	rc = membership_acquire(b->m, b->kv, holder);
	if (rc)
		goto out_free;
	b->self_copy = *membership_self(b->m);
	rc = -pthread_create(&b->thread, NULL, bus_main, b);
	if (rc)
		goto out_release;
	*out = b;
	return 0;
out_release:
	membership_release(b->m, b->kv);
out_free:
	bus_free(b);
	return rc;
}

int cluster_bus_send(struct cluster_bus *b, int node, const void *msg, size_t len)
{
	bool wake;
	int rc;

	if (atomic_load_explicit(&b->lost, memory_order_relaxed) ||
	    atomic_load_explicit(&b->stopping, memory_order_relaxed))
		return -ESHUTDOWN;
	rc = inbox_enqueue(b->ib, node, msg, len, &wake);
	if (rc == 0 && wake)
		bus_wake(b);
	return rc;
}

void cluster_bus_stop(struct cluster_bus *b)
{
	if (!b)
		return;
	/* pairs with the acquire load at the top of the loop: sends queued
	 * before this are seen by the final flush */
	atomic_store_explicit(&b->stopping, true, memory_order_release);
	bus_wake(b);
	pthread_join(b->thread, NULL);
	bus_free(b);
}

bool cluster_bus_is_up(const struct cluster_bus *b, int id)
{
	return membership_is_up(b->m, id);
}

uint32_t cluster_bus_up_mask(const struct cluster_bus *b)
{
	return membership_up_mask(b->m);
}

int cluster_bus_peer(struct cluster_bus *b, int id, struct node_info *info)
{
	return membership_peer(b->m, id, info);
}

void cluster_bus_self(struct cluster_bus *b, struct node_info *info)
{
	pthread_mutex_lock(&b->lock);
	*info = b->self_copy;
	pthread_mutex_unlock(&b->lock);
}

void cluster_bus_set_link(struct cluster_bus *b, const char *link)
{
	pthread_mutex_lock(&b->lock);
	snprintf(b->link, sizeof(b->link), "%s", link ? link : "");
	snprintf(b->self_copy.link, sizeof(b->self_copy.link), "%s", b->link);
	b->link_set = true;
	pthread_mutex_unlock(&b->lock);
}

void cluster_bus_stats(struct cluster_bus *b, struct cluster_bus_stats *out)
{
	memset(out, 0, sizeof(*out));
	inbox_stats(b->ib, &out->inbox);
	out->up_mask = membership_up_mask(b->m);
	out->redis_up = atomic_load_explicit(&b->redis_up, memory_order_relaxed);
	out->lease_held = !atomic_load_explicit(&b->lost, memory_order_relaxed);
	out->heartbeats = atomic_load_explicit(&b->heartbeats, memory_order_relaxed);
	out->heartbeat_failures =
	    atomic_load_explicit(&b->heartbeat_failures, memory_order_relaxed);
}

void cluster_bus_metrics(struct cluster_bus *b, FILE *out)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} per_peer[] = {
	    {"entries_sent", "stream entries XADDed to the node's inbox",
	     offsetof(struct inbox_peer_stats, entries_sent)},
	    {"messages_sent", "messages sent to the node",
	     offsetof(struct inbox_peer_stats, msgs_sent)},
	    {"bytes_sent", "message bytes sent to the node",
	     offsetof(struct inbox_peer_stats, bytes_sent)},
	    {"entries_received", "inbox entries read from the node",
	     offsetof(struct inbox_peer_stats, entries_recv)},
	    {"messages_received", "messages received from the node",
	     offsetof(struct inbox_peer_stats, msgs_recv)},
	    {"bytes_received", "message bytes received from the node",
	     offsetof(struct inbox_peer_stats, bytes_recv)},
	};
	struct cluster_bus_stats s;

	cluster_bus_stats(b, &s);
	fprintf(out,
		"# HELP ringchat_cluster_peers_up other nodes whose lease is live\n"
		"# TYPE ringchat_cluster_peers_up gauge\n"
		"ringchat_cluster_peers_up %d\n",
		__builtin_popcount(s.up_mask));
	fprintf(out, "# TYPE ringchat_cluster_redis_up gauge\nringchat_cluster_redis_up %d\n",
		s.redis_up);
	fprintf(out, "# TYPE ringchat_cluster_lease_held gauge\nringchat_cluster_lease_held %d\n",
		s.lease_held);
	fprintf(out,
		"# TYPE ringchat_cluster_heartbeats_total counter\n"
		"ringchat_cluster_heartbeats_total{result=\"ok\"} %" PRIu64 "\n"
		"ringchat_cluster_heartbeats_total{result=\"failed\"} %" PRIu64 "\n",
		s.heartbeats, s.heartbeat_failures);
	fprintf(out,
		"# HELP ringchat_cluster_queued_messages messages waiting to be XADDed\n"
		"# TYPE ringchat_cluster_queued_messages gauge\n"
		"ringchat_cluster_queued_messages %" PRIu64 "\n"
		"# TYPE ringchat_cluster_queued_bytes gauge\n"
		"ringchat_cluster_queued_bytes %" PRIu64 "\n",
		s.inbox.queued_msgs, s.inbox.queued_bytes);
	fprintf(out,
		"# HELP ringchat_cluster_send_refused_total sends refused: queue full (enobufs) "
		"or entry refused by Redis (dropped)\n"
		"# TYPE ringchat_cluster_send_refused_total counter\n"
		"ringchat_cluster_send_refused_total{why=\"enobufs\"} %" PRIu64 "\n"
		"ringchat_cluster_send_refused_total{why=\"dropped\"} %" PRIu64 "\n",
		s.inbox.enobufs, s.inbox.dropped);
	fprintf(out,
		"# TYPE ringchat_cluster_batch_max_messages gauge\n"
		"ringchat_cluster_batch_max_messages %" PRIu64 "\n"
		"# TYPE ringchat_cluster_bad_entries_total counter\n"
		"ringchat_cluster_bad_entries_total %" PRIu64 "\n",
		s.inbox.batch_max, s.inbox.bad_entries);
	fprintf(out,
		"# HELP ringchat_cluster_inbox_lag_seconds age of the oldest entry of a read\n"
		"# TYPE ringchat_cluster_inbox_lag_seconds gauge\n"
		"ringchat_cluster_inbox_lag_seconds{which=\"last\"} %.3f\n"
		"ringchat_cluster_inbox_lag_seconds{which=\"max\"} %.3f\n",
		(double)s.inbox.lag_ms_last / 1000, (double)s.inbox.lag_ms_max / 1000);
	for (size_t k = 0; k < sizeof(per_peer) / sizeof(per_peer[0]); k++) {
		fprintf(out, "# HELP ringchat_cluster_%s_total %s\n", per_peer[k].name,
			per_peer[k].help);
		fprintf(out, "# TYPE ringchat_cluster_%s_total counter\n", per_peer[k].name);
		for (int i = 0; i < MEMBERSHIP_MAX_NODES; i++) {
			uint64_t v;

			memcpy(&v, (const char *)&s.inbox.peer[i] + per_peer[k].off, sizeof(v));
			/* only nodes we ever talked to: 32 zero lines say nothing */
			if (v)
				fprintf(out, "ringchat_cluster_%s_total{node=\"%d\"} %" PRIu64 "\n",
					per_peer[k].name, i, v);
		}
	}
}
