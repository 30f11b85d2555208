/*
 * cluster.c - what crosses between nodes and what it means (cluster.h).
 *
 * Messages (all integers big-endian; docs/protocol.md "Cluster messages"):
 *
 *   PUSH    u8 1, u16 n, u32 flen, n × i64 user, flen bytes: a push frame
 *   KICK    u8 2, u32 id, i64 user, u64 conn
 *   KICKED  u8 3, u32 id, i64 user, u64 conn
 *   WHERE   u8 4, i8 node (-1: offline), i64 user
 *   SOCIAL  u8 5
 *   ACK     u8 6, i64 user, u16 n, n × i64 msg_id
 *
 * The transport's thread copies each message it receives into the queue
 * of one worker and wakes it; the worker handles it in cluster_poll, as
 * it handles its own requests: pushes go to local connections through the
 * outbox, kicks close sessions, answers complete waits.
 *
 * One exception: a PUSH goes to the I/O thread, which owns the
 * connections, and is copied straight into its users' connections there
 * (cluster_attach_ring): with the node link the transport's thread is the
 * I/O thread itself, and the Redis transport's thread queues it there. A
 * PUSH needs no storage and no session state, only the registry; taking
 * it to a worker and back cost two thread wake-ups per message on the
 * receiving node, which was most of what a cross-node message cost above
 * a local one.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "ringchat/be.h"
#include "ringchat/clock.h"
#include "ringchat/cluster.h"
#include "ringchat/cluster_bus.h"
#include "ringchat/config.h"
#include "ringchat/conn.h"
#include "ringchat/counters.h"
#include "ringchat/ids.h"
#include "ringchat/kmap.h"
#include "ringchat/kv.h"
#include "ringchat/link_io.h"
#include "ringchat/log.h"
#include "ringchat/outbox.h"
#include "ringchat/protocol.h"
#include "ringchat/registry.h"
#include "ringchat/ring.h"
#include "ringchat/handoff.h"
#include "ringchat/router.h"
#include "ringchat/spsc.h"
#include "ringchat/worker.h"

enum cl_type {
	CL_PUSH = 1,
	CL_KICK = 2,
	CL_KICKED = 3,
	CL_WHERE = 4,
	CL_SOCIAL = 5,
	CL_ACK = 6,
};

#define CL_PUSH_HDR 7		/* type, n, flen */
#define CL_KICK_BYTES 21	/* type, id, user, conn */
#define CL_WHERE_BYTES 10	/* type, node, user */
#define CL_ACK_HDR 11		/* type, user, n */
#define CL_ACK_MAX 1000		/* ids in one ACK (a MSG_ACK holds at most 1000) */
#define CL_PUSH_USERS_MAX 65535 /* n is 16 bits: larger fan-outs are split */
#define CL_ROUTE_SHARDS 64
#define CL_ROUTE_MAX 65536	/* cached users per shard */
#define CL_QUEUE_DEPTH 8192	/* inbound messages per worker */
#define CL_EXPIRY_BITS 56

/* One message from another node, on its way to a worker. */
struct cl_in {
	struct cl_in *next; /* on a lane's overflow list (I/O thread) */
	int from;
	uint32_t len;
	uint8_t data[];
};

/* A login waiting for a KICKED. */
struct cl_wait {
	struct cl_wait *next;
	uint32_t id;
	uint32_t remaining; /* answers still expected */
	uint64_t deadline_ms;
	void (*done)(struct worker *w, void *arg);
	void *arg;
};

struct cl_lane {
	struct spsc in;		/* transport thread → worker */
	struct cl_wait *waits;	/* worker only */
	uint32_t outages_seen;	/* worker only: cl.outages_over when it last repushed */
	uint8_t *fwd_buf;	/* worker only: a PUSH being built (cl_forward) */
	size_t fwd_cap;
	/* I/O thread only (node link): messages that found the queue full,
	 * in order; they go in before any later one */
	struct cl_in *over_head, *over_tail;
};

struct cl_route_shard {
	pthread_mutex_t lock;
	struct kmap map; /* (user, 0) → node + 1 << 56 | expiry (mono ms) */
};

static struct {
	bool on;
	int self;
	int nworkers;
	struct cluster_bus *bus;
	struct link_io *lio; /* cluster_route udp: the node link carries the messages */
	struct conn_table *conns; /* I/O thread only: PUSH delivered there */
	struct handoff *h;	  /* the I/O thread's wake-up (cluster_attach_ring) */
	_Atomic bool ring_on;	  /* the I/O thread takes PUSH (set once attached) */
	struct spsc ring_in;	  /* Redis transport's thread → I/O thread: PUSH */
	bool ring_queued;	  /* I/O thread: output queued by this iteration's flush */
	struct cl_lane *lanes;
	void (*wake)(int worker_id);
	struct cluster_hooks hooks;
	struct cl_route_shard routes[CL_ROUTE_SHARDS];
	_Atomic uint32_t next_id;
	_Atomic uint32_t outages_over; /* Redis came back this many times */
	bool redis_down;	       /* transport thread only */
	_Atomic uint64_t fwd_msgs, fwd_users, in_msgs, in_pushes, kicks_sent, kicks_done,
		kick_timeouts, route_hits, route_misses, dropped, undelivered;
} cl;

/* ---- routes ------------------------------------------------------------------ */

static struct cl_route_shard *cl_shard(int64_t user)
{
	uint64_t h = (uint64_t)user * 0x9e3779b97f4a7c15ull;

	return &cl.routes[h >> 58];
}

/* Caches user → node (-1: offline) for CLUSTER_ROUTE_TTL_MS. */
static void cl_route_put(int64_t user, int node)
{
	struct cl_route_shard *s = cl_shard(user);
	uint64_t v = (uint64_t)(node + 1) << CL_EXPIRY_BITS |
		     ((clock_mono_ms() + CLUSTER_ROUTE_TTL_MS) & ((1ull << CL_EXPIRY_BITS) - 1));
	struct kmap_slot *slot;

	pthread_mutex_lock(&s->lock);
	slot = kmap_put(&s->map, (uint64_t)user, 0);
	if (!slot) {
		kmap_clear(&s->map); /* full: start over rather than grow without bound */
		slot = kmap_put(&s->map, (uint64_t)user, 0);
	}
	if (slot)
		slot->v = v;
	pthread_mutex_unlock(&s->lock);
}

/* The cached node of user: true and *node (-1 offline), or false. */
static bool cl_route_get(int64_t user, int *node)
{
	struct cl_route_shard *s = cl_shard(user);
	struct kmap_slot *slot;
	bool hit = false;

	pthread_mutex_lock(&s->lock);
	slot = kmap_get(&s->map, (uint64_t)user, 0);
	if (slot && (slot->v & ((1ull << CL_EXPIRY_BITS) - 1)) > clock_mono_ms()) {
		*node = (int)(slot->v >> CL_EXPIRY_BITS) - 1;
		hit = true;
	}
	pthread_mutex_unlock(&s->lock);
	return hit;
}

/* The node presence names for user (-1: none), from Redis. */
static int cl_presence_node(struct worker *w, int64_t user)
{
	redisReply *r = kv_cmd(w->kv, "GET rc:on:%" PRId64, user);
	int node = -1;

	if (r && r->type == REDIS_REPLY_STRING)
		node = atoi(r->str);
	else if (!r || r->type == REDIS_REPLY_ERROR)
		counter_inc(redis_errors);
	if (r)
		freeReplyObject(r);
	return node;
}

static int cl_locate(struct worker *w, int64_t user)
{
	int node;

	if (cl_route_get(user, &node)) {
		atomic_fetch_add_explicit(&cl.route_hits, 1, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&cl.route_misses, 1, memory_order_relaxed);
		node = cl_presence_node(w, user);
		/* ours but not in the registry: a session that just ended */
		if (node == cl.self)
			node = -1;
		cl_route_put(user, node);
	}
	if (node < 0 || node >= MEMBERSHIP_MAX_NODES || !cluster_bus_is_up(cl.bus, node))
		return -1;
	return node;
}

/* ---- sending ------------------------------------------------------------------ */

static int cl_send(int node, const void *msg, size_t len)
{
	int ret = cl.lio ? link_io_send(cl.lio, node, msg, len)
			 : cluster_bus_send(cl.bus, node, msg, len);

	if (ret)
		atomic_fetch_add_explicit(&cl.dropped, 1, memory_order_relaxed);
	return ret;
}

/* Sends msg to every node that is up but this one. */
static void cl_broadcast(const void *msg, size_t len)
{
	uint32_t up = cluster_bus_up_mask(cl.bus) & ~(1u << cl.self);

	for (int node = 0; up; node++, up >>= 1)
		if (up & 1)
			cl_send(node, msg, len);
}

static int cl_forward(struct worker *w, int node, const int64_t *users, size_t n,
		      const uint8_t *frame, uint32_t flen)
{
	struct cl_lane *l = &cl.lanes[w->id];
	size_t need;

	while (n > CL_PUSH_USERS_MAX) {
		int ret = cl_forward(w, node, users, CL_PUSH_USERS_MAX, frame, flen);

		if (ret)
			return ret;
		users += CL_PUSH_USERS_MAX;
		n -= CL_PUSH_USERS_MAX;
	}
	need = CL_PUSH_HDR + 8 * n + flen;
	if (need > l->fwd_cap) {
		uint8_t *b = realloc(l->fwd_buf, need);

		if (!b)
			return -ENOMEM;
		l->fwd_buf = b;
		l->fwd_cap = need;
	}
	uint8_t *p = l->fwd_buf;

	*p++ = CL_PUSH;
	p = be_put16(p, (uint16_t)n);
	p = be_put32(p, flen);
	for (size_t i = 0; i < n; i++)
		p = be_put64(p, (uint64_t)users[i]);
	memcpy(p, frame, flen);
	if (cl_send(node, l->fwd_buf, need))
		return -ENOBUFS;
	atomic_fetch_add_explicit(&cl.fwd_msgs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&cl.fwd_users, n, memory_order_relaxed);
	return 0;
}

static const struct router_cluster cl_router = {
	.locate = cl_locate,
	.forward = cl_forward,
};

static void cl_put_kick(uint8_t *buf, enum cl_type type, uint32_t id, int64_t user, uint64_t conn)
{
	uint8_t *p = buf;

	*p++ = (uint8_t)type;
	p = be_put32(p, id);
	p = be_put64(p, (uint64_t)user);
	be_put64(p, conn);
}

int cluster_kick(struct worker *w, int64_t user, uint64_t conn,
		 void (*done)(struct worker *w, void *arg), void *arg)
{
	struct cl_lane *l = &cl.lanes[w->id];
	uint8_t buf[CL_KICK_BYTES];
	struct cl_wait *wt;
	uint32_t up;

	if (!cl.on)
		return -EHOSTUNREACH;
	up = cluster_bus_up_mask(cl.bus) & ~(1u << cl.self);
	if (!up)
		return -EHOSTUNREACH;
	wt = calloc(1, sizeof(*wt));
	if (!wt)
		return -ENOMEM;
	wt->id = atomic_fetch_add_explicit(&cl.next_id, 1, memory_order_relaxed) + 1;
	wt->deadline_ms = clock_mono_ms() + CLUSTER_KICK_WAIT_MS;
	wt->done = done;
	wt->arg = arg;
	cl_put_kick(buf, CL_KICK, wt->id, user, conn);
	for (int node = 0; up; node++, up >>= 1)
		if ((up & 1) && !cl_send(node, buf, sizeof(buf)))
			wt->remaining++;
	if (!wt->remaining) {
		free(wt);
		return -ENOBUFS;
	}
	wt->next = l->waits;
	l->waits = wt;
	atomic_fetch_add_explicit(&cl.kicks_sent, 1, memory_order_relaxed);
	return 0;
}

void cluster_kick_done(struct worker *w, const struct cluster_req *req)
{
	uint8_t buf[CL_KICK_BYTES];

	(void)w;
	cl_put_kick(buf, CL_KICKED, req->id, req->user, req->conn);
	cl_send(req->from, buf, sizeof(buf));
}

size_t cluster_forward_acks(struct worker *w, int64_t user, int64_t *ids, size_t n)
{
	uint8_t buf[CL_ACK_HDR + 8 * CL_ACK_MAX];
	uint32_t nodes = 0, sent = 0;
	size_t keep = 0;

	(void)w;
	if (!cl.on)
		return n;
	for (size_t i = 0; i < n; i++) {
		int node = ids_node(ids[i]);

		if (node != cl.self && node >= 0 && node < MEMBERSHIP_MAX_NODES)
			nodes |= 1u << node;
	}
	for (int node = 0; node < MEMBERSHIP_MAX_NODES && nodes >> node; node++) {
		uint8_t *p = buf + CL_ACK_HDR;
		uint16_t k = 0;

		/* a node that is down writes its marks when due: ours to settle */
		if (!(nodes >> node & 1) || !cluster_bus_is_up(cl.bus, node))
			continue;
		for (size_t i = 0; i < n && k < CL_ACK_MAX; i++) {
			if (ids_node(ids[i]) == node) {
				p = be_put64(p, (uint64_t)ids[i]);
				k++;
			}
		}
		buf[0] = CL_ACK;
		be_put64(buf + 1, (uint64_t)user);
		be_put16(buf + 9, k);
		if (!cl_send(node, buf, (size_t)(p - buf)))
			sent |= 1u << node;
	}
	for (size_t i = 0; i < n; i++) {
		int node = ids_node(ids[i]);

		if (node < 0 || node >= MEMBERSHIP_MAX_NODES || !(sent >> node & 1))
			ids[keep++] = ids[i];
	}
	return keep;
}

void cluster_announce(int64_t user, bool online)
{
	uint8_t buf[CL_WHERE_BYTES];

	if (!cl.on)
		return;
	buf[0] = CL_WHERE;
	buf[1] = (uint8_t)(int8_t)(online ? cl.self : -1);
	be_put64(buf + 2, (uint64_t)user);
	cl_broadcast(buf, sizeof(buf));
}

void cluster_social_changed(void)
{
	uint8_t t = CL_SOCIAL;

	if (cl.on)
		cl_broadcast(&t, 1);
}

/* ---- receiving ------------------------------------------------------------------ */

/* A copy of msg from node from, and the lane of the worker it goes to;
 * NULL when out of memory (counted). */
static struct cl_in *cl_in_new(int from, const uint8_t *msg, size_t len, int *lane)
{
	struct cl_in *in;

	*lane = from % cl.nworkers;
	/* the answer goes to the worker of the session that waits for it */
	if (msg[0] == CL_KICKED && len == CL_KICK_BYTES)
		*lane = (int)(CONN_SLOT(be_get64(msg + 13)) % (uint32_t)cl.nworkers);
	in = malloc(sizeof(*in) + len);
	if (!in) {
		atomic_fetch_add_explicit(&cl.dropped, 1, memory_order_relaxed);
		return NULL;
	}
	in->next = NULL;
	in->from = from;
	in->len = (uint32_t)len;
	memcpy(in->data, msg, len);
	return in;
}

/* Redis transport's thread: one message from node from. */
static void cl_deliver(void *ctx, int from, uint64_t sent_ms, const uint8_t *msg, size_t len)
{
	struct cl_in *in;
	int lane;

	(void)ctx;
	(void)sent_ms;
	if (!len || len > UINT32_MAX || !(in = cl_in_new(from, msg, len, &lane)))
		return;
	/* A PUSH goes to the I/O thread, which owns the connections (see
	 * the top of this file); a full queue: the reader is behind; wait
	 * for it (the transport then stops reading, and its inbox buffers
	 * the burst). */
	if (msg[0] == CL_PUSH && atomic_load_explicit(&cl.ring_on, memory_order_acquire)) {
		while (!spsc_push(&cl.ring_in, in)) {
			if (!atomic_load_explicit(&cl.ring_on, memory_order_acquire)) {
				/* the ring is stopping: the message is stored */
				atomic_fetch_add_explicit(&cl.dropped, 1, memory_order_relaxed);
				free(in);
				return;
			}
			handoff_wake_ring(cl.h);
			sched_yield();
		}
		/* pairs with the fence in cl_ring_sleep */
		atomic_thread_fence(memory_order_seq_cst);
		handoff_wake_ring(cl.h);
		return;
	}
	while (!spsc_push(&cl.lanes[lane].in, in)) {
		cl.wake(lane);
		sched_yield();
	}
	cl.wake(lane);
}

/* I/O thread: moves what waits on lane l's overflow list into its queue,
 * in order, as far as there is room. Returns true when some is left. */
static bool cl_over_flush(int lane)
{
	struct cl_lane *l = &cl.lanes[lane];
	bool moved = false;

	while (l->over_head && spsc_push(&l->in, l->over_head)) {
		l->over_head = l->over_head->next;
		moved = true;
	}
	if (!l->over_head)
		l->over_tail = NULL;
	if (moved)
		cl.wake(lane);
	return l->over_head != NULL;
}

/* I/O thread (node link): like cl_deliver, but the I/O thread never waits
 * for a worker: a message that finds the queue full (or others waiting
 * before it) goes on the lane's overflow list, emptied by the ring client
 * below. A worker the link makes wait for acks (flow control) must not
 * find the ring waiting for it. */
static void cl_deliver_ring(int from, const uint8_t *msg, size_t len)
{
	struct cl_in *in;
	struct cl_lane *l;
	int lane;

	if (!len || len > UINT32_MAX || !(in = cl_in_new(from, msg, len, &lane)))
		return;
	l = &cl.lanes[lane];
	if (!l->over_head && spsc_push(&l->in, in)) {
		cl.wake(lane);
		return;
	}
	if (l->over_tail)
		l->over_tail->next = in;
	else
		l->over_head = in;
	l->over_tail = in;
	cl_over_flush(lane);
}

static bool cl_ring_over_flush(void)
{
	bool left = false;

	for (int i = 0; i < cl.nworkers; i++)
		if (cl.lanes[i].over_head && cl_over_flush(i))
			left = true;
	return left;
}

static void cl_push_here(const uint8_t *p, size_t len);

#define CL_RING_TAKE_MAX 4096 /* PUSH messages taken per ring iteration */

/* I/O thread: the PUSH messages the Redis transport's thread queued.
 * Returns true if it took any. */
static bool cl_ring_take(void)
{
	struct cl_in *in;
	int k;

	for (k = 0; k < CL_RING_TAKE_MAX && (in = spsc_pop(&cl.ring_in)); k++) {
		atomic_fetch_add_explicit(&cl.in_msgs, 1, memory_order_relaxed);
		cl_push_here(in->data, in->len);
		free(in);
	}
	return k > 0;
}

static void cl_ring_flush(void *ctx)
{
	(void)ctx;
	/* The connections' sends start in their own flush, which ran
	 * before this one: output queued here leaves in the next
	 * iteration, which must not wait (cl_ring_wait_ms). */
	cl.ring_queued = cl_ring_take();
	cl_ring_over_flush();
}

static int cl_ring_wait_ms(void *ctx)
{
	(void)ctx;
	if (cl.ring_queued || spsc_size(&cl.ring_in))
		return 0;
	/* workers do not signal room in their queues: look again shortly */
	for (int i = 0; i < cl.nworkers; i++)
		if (cl.lanes[i].over_head)
			return 1;
	return -1;
}

/* Dekker with cl_deliver: announce the sleep, fence, re-check. */
static bool cl_ring_sleep(void *ctx)
{
	(void)ctx;
	atomic_store_explicit(&cl.h->ring_sleeping, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (spsc_size(&cl.ring_in)) {
		atomic_store_explicit(&cl.h->ring_sleeping, 0, memory_order_relaxed);
		return false;
	}
	return true;
}

static void cl_ring_awake(void *ctx)
{
	(void)ctx;
	atomic_store_explicit(&cl.h->ring_sleeping, 0, memory_order_relaxed);
}

static bool cl_ring_drain(void *ctx, bool first)
{
	(void)ctx;
	/* from now on PUSH goes to the workers, which outlive the ring */
	if (first)
		atomic_store_explicit(&cl.ring_on, false, memory_order_release);
	cl_ring_take();
	return !cl_ring_over_flush() && !spsc_size(&cl.ring_in);
}

static void cl_node_up(void *ctx, int id, const struct node_info *info)
{
	(void)ctx;
	if (cl.lio)
		link_io_set_peer(cl.lio, id, info->link);
	log_info("cluster: node %d is up (clients %s, started %" PRIu64 ")", id, info->addr,
		 info->start_ms);
}

static void cl_node_down(void *ctx, int id)
{
	(void)ctx;
	/* The link keeps the peer: it sees for itself when the node stops
	 * answering, and a lease that only blinked (a Redis restart) must not
	 * reset a working link. A node that comes back at another address
	 * is updated by its node_up. */
	log_warn("cluster: node %d is down; its users' messages stay stored for their next login",
		 id);
}

static void cl_lease_lost(void *ctx)
{
	(void)ctx;
	log_error("cluster: another node took node_id %d; stopping", cl.self);
	/* two nodes minting msg_ids with one id would collide: never go on */
	kill(getpid(), SIGTERM);
}

static void cl_redis_state(void *ctx, bool up)
{
	(void)ctx;
	if (!up) {
		cl.redis_down = true;
		log_warn("cluster: Redis unreachable; messages to other nodes are queued");
		return;
	}
	log_info("cluster: Redis reachable again; messages to other nodes resume");
	if (!cl.redis_down)
		return;
	cl.redis_down = false;
	/* release pairs with the acquire in cluster_poll */
	atomic_fetch_add_explicit(&cl.outages_over, 1, memory_order_release);
	for (int i = 0; i < cl.nworkers; i++)
		cl.wake(i);
}

/* I/O thread: a message the node link gave up on (its node went down or
 * restarted). What it carried is stored (a message) or answered by a
 * timeout (a kick); it is counted. */
static void cl_link_undelivered(void *ctx, int node, const uint8_t *msg, size_t len)
{
	(void)ctx;
	(void)node;
	(void)msg;
	(void)len;
	atomic_fetch_add_explicit(&cl.undelivered, 1, memory_order_relaxed);
}

static const struct link_io_ops cl_link_ops = {
	.deliver = NULL, /* set in cluster_start: cl_link_deliver */
	.undelivered = cl_link_undelivered,
};

/* I/O thread (node link): a PUSH into the connections of its users here. */
static void cl_push_here(const uint8_t *p, size_t len)
{
	uint32_t n, flen;
	const uint8_t *frame;

	if (len < CL_PUSH_HDR)
		return;
	n = (uint32_t)p[1] << 8 | p[2];
	flen = be_get32(p + 3);
	if (len != CL_PUSH_HDR + 8 * (size_t)n + flen)
		return;
	frame = p + CL_PUSH_HDR + 8 * (size_t)n;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t ref = registry_get((int64_t)be_get64(p + CL_PUSH_HDR + 8 * (size_t)i));
		struct conn *c;

		/* not here (any more): what was stored reaches it at its
		 * login. The generation tells a reused slot from the session
		 * the registry named. */
		if (!ref || !(c = conn_lookup(cl.conns, CONN_SLOT(ref), CONN_GEN(ref))))
			continue;
		conn_queue(cl.conns, c, frame, flen);
		atomic_fetch_add_explicit(&cl.in_pushes, 1, memory_order_relaxed);
	}
}

static void cl_link_deliver(void *ctx, int from, const uint8_t *msg, size_t len)
{
	(void)ctx;
	if (cl.conns && len && msg[0] == CL_PUSH) {
		atomic_fetch_add_explicit(&cl.in_msgs, 1, memory_order_relaxed);
		cl_push_here(msg, len);
		return;
	}
	cl_deliver_ring(from, msg, len);
}

int cluster_attach_ring(struct ring *r, struct conn_table *conns, struct handoff *h)
{
	struct ring_client c = {
		.flush = cl_ring_flush, .wait_ms = cl_ring_wait_ms, .sleep = cl_ring_sleep,
		.awake = cl_ring_awake, .drain = cl_ring_drain,
	};
	int ret;

	if (!cl.on)
		return 0;
	cl.conns = conns;
	cl.h = h;
	ret = ring_add_client(r, &c);
	if (!ret)
		atomic_store_explicit(&cl.ring_on, true, memory_order_release);
	return ret;
}

static const struct cluster_bus_ops cl_bus_ops = {
	.deliver = cl_deliver,
	.node_up = cl_node_up,
	.node_down = cl_node_down,
	.lease_lost = cl_lease_lost,
	.redis_state = cl_redis_state,
};

static void cl_on_push(struct worker *w, const uint8_t *p, size_t len)
{
	uint32_t n, flen;
	const uint8_t *frame;

	if (len < CL_PUSH_HDR)
		return;
	n = (uint32_t)p[1] << 8 | p[2];
	flen = be_get32(p + 3);
	if (len != CL_PUSH_HDR + 8 * (size_t)n + flen)
		return;
	frame = p + CL_PUSH_HDR + 8 * (size_t)n;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t conn = registry_get((int64_t)be_get64(p + CL_PUSH_HDR + 8 * (size_t)i));

		/* not here (any more): what was stored reaches it at its login */
		if (conn) {
			outbox_push_bytes(w, conn, frame, flen);
			atomic_fetch_add_explicit(&cl.in_pushes, 1, memory_order_relaxed);
		}
	}
}

static void cl_on_kick(struct worker *w, int from, const uint8_t *p)
{
	struct cluster_req req = {
		.from = from, .id = be_get32(p + 1), .user = (int64_t)be_get64(p + 5), .conn = be_get64(p + 13),
	};
	uint64_t old = registry_get(req.user);

	if (old && registry_remove(req.user, old)) {
		cJSON *k = cJSON_CreateObject();

		/* removed from the registry first: its close is no logout, so
		 * no offline presence goes out */
		cJSON_AddStringToObject(k, "reason", "logged in elsewhere");
		outbox_push(w, old, CMD_PUSH_KICKED, k);
		outbox_close(w, old);
		counter_inc(kicks);
		log_info("event=kick user=%" PRId64 " conn=%u by_node=%d", req.user, CONN_SLOT(old),
			 from);
	}
	if (!cl.hooks.flush_user || cl.hooks.flush_user(w, &req))
		cluster_kick_done(w, &req);
}

static void cl_on_kicked(struct worker *w, const uint8_t *p)
{
	struct cl_lane *l = &cl.lanes[w->id];
	uint32_t id = be_get32(p + 1);

	for (struct cl_wait **pp = &l->waits; *pp; pp = &(*pp)->next) {
		struct cl_wait *wt = *pp;

		if (wt->id != id)
			continue;
		if (--wt->remaining)
			return; /* other nodes still flushing */
		*pp = wt->next;
		atomic_fetch_add_explicit(&cl.kicks_done, 1, memory_order_relaxed);
		wt->done(w, wt->arg);
		free(wt);
		return;
	}
	/* late: the wait timed out already */
}

static void cl_on_ack(struct worker *w, const uint8_t *p, size_t len)
{
	int64_t ids[CL_ACK_MAX];
	uint16_t n;

	if (len < CL_ACK_HDR || !cl.hooks.acks)
		return;
	n = be_get16(p + 9);
	if (n > CL_ACK_MAX || len != CL_ACK_HDR + 8 * (size_t)n)
		return;
	for (uint16_t i = 0; i < n; i++)
		ids[i] = (int64_t)be_get64(p + CL_ACK_HDR + 8 * (size_t)i);
	cl.hooks.acks(w, (int64_t)be_get64(p + 1), ids, n);
}

static void cl_handle(struct worker *w, const struct cl_in *in)
{
	const uint8_t *p = in->data;

	atomic_fetch_add_explicit(&cl.in_msgs, 1, memory_order_relaxed);
	switch (p[0]) {
	case CL_PUSH:
		cl_on_push(w, p, in->len);
		break;
	case CL_KICK:
		if (in->len == CL_KICK_BYTES)
			cl_on_kick(w, in->from, p);
		break;
	case CL_KICKED:
		if (in->len == CL_KICK_BYTES)
			cl_on_kicked(w, p);
		break;
	case CL_WHERE:
		if (in->len == CL_WHERE_BYTES)
			cl_route_put((int64_t)be_get64(p + 2), (int8_t)p[1]);
		break;
	case CL_SOCIAL:
		if (cl.hooks.social_changed)
			cl.hooks.social_changed();
		break;
	case CL_ACK:
		cl_on_ack(w, p, in->len);
		break;
	default:
		break; /* a newer node's message: ignored */
	}
}

bool cluster_poll(struct worker *w)
{
	struct cl_lane *l;
	struct cl_in *in;
	bool did = false;
	uint64_t now;

	if (!cl.on)
		return false;
	l = &cl.lanes[w->id];
	uint32_t over = atomic_load_explicit(&cl.outages_over, memory_order_acquire);

	if (over != l->outages_seen) {
		l->outages_seen = over;
		if (cl.hooks.repush)
			cl.hooks.repush(w);
		did = true;
	}
	while ((in = spsc_pop(&l->in))) {
		cl_handle(w, in);
		free(in);
		did = true;
	}
	if (!l->waits)
		return did;
	now = clock_mono_ms();
	for (struct cl_wait **pp = &l->waits; *pp;) {
		struct cl_wait *wt = *pp;

		if (wt->deadline_ms > now) {
			pp = &wt->next;
			continue;
		}
		*pp = wt->next;
		atomic_fetch_add_explicit(&cl.kick_timeouts, 1, memory_order_relaxed);
		wt->done(w, wt->arg);
		free(wt);
		did = true;
	}
	return did;
}

bool cluster_has_work(struct worker *w)
{
	return cl.on && (cl.lanes[w->id].waits || spsc_size(&cl.lanes[w->id].in));
}

bool cluster_enabled(void)
{
	return cl.on;
}

struct link_io *cluster_link_io(void)
{
	return cl.lio;
}

bool cluster_node_alive(int node)
{
	if (!cl.on || node == cl.self)
		return true;
	return node >= 0 && node < MEMBERSHIP_MAX_NODES && cluster_bus_is_up(cl.bus, node);
}

/* ---- start / stop ------------------------------------------------------------------ */

static void cl_free(void)
{
	if (cl.lanes) {
		for (int i = 0; i < cl.nworkers; i++) {
			struct cl_in *in;

			while (cl.lanes[i].in.slots && (in = spsc_pop(&cl.lanes[i].in)))
				free(in);
			spsc_destroy(&cl.lanes[i].in);
			while ((in = cl.lanes[i].over_head)) {
				cl.lanes[i].over_head = in->next;
				free(in);
			}
			free(cl.lanes[i].fwd_buf);
			while (cl.lanes[i].waits) {
				struct cl_wait *wt = cl.lanes[i].waits;

				cl.lanes[i].waits = wt->next;
				free(wt);
			}
		}
		free(cl.lanes);
	}
	if (cl.ring_in.slots) {
		struct cl_in *in;

		while ((in = spsc_pop(&cl.ring_in)))
			free(in);
		spsc_destroy(&cl.ring_in);
	}
	for (int i = 0; i < CL_ROUTE_SHARDS; i++) {
		kmap_destroy(&cl.routes[i].map);
		pthread_mutex_destroy(&cl.routes[i].lock);
	}
	memset(&cl, 0, sizeof(cl));
}

int cluster_start(const struct config *cfg, int nworkers, const char *addr, const char *admin,
		  const struct cluster_link *link, void (*wake)(int worker_id),
		  const struct cluster_hooks *hooks, struct node_info *holder)
{
	struct node_info self = { 0 };
	int ret;

	memset(&cl, 0, sizeof(cl));
	if (cfg->cluster_route == CLUSTER_ROUTE_OFF)
		return 0;
	cl.self = cfg->node_id;
	cl.nworkers = nworkers;
	cl.wake = wake;
	cl.hooks = *hooks;
	for (int i = 0; i < CL_ROUTE_SHARDS; i++) {
		pthread_mutex_init(&cl.routes[i].lock, NULL);
		if (kmap_init(&cl.routes[i].map, 64, CL_ROUTE_MAX)) {
			cl_free();
			return -ENOMEM;
		}
	}
	cl.lanes = calloc((size_t)nworkers, sizeof(*cl.lanes));
	if (!cl.lanes) {
		cl_free();
		return -ENOMEM;
	}
	for (int i = 0; i < nworkers; i++) {
		if (spsc_init(&cl.lanes[i].in, CL_QUEUE_DEPTH)) {
			cl_free();
			return -ENOMEM;
		}
	}
	if (spsc_init(&cl.ring_in, CL_QUEUE_DEPTH)) {
		cl_free();
		return -ENOMEM;
	}
	snprintf(self.addr, sizeof(self.addr), "%s", addr);
	snprintf(self.admin, sizeof(self.admin), "%s", admin ? admin : "");
	struct cluster_bus_ops bus_ops = cl_bus_ops;

	if (cfg->cluster_route == CLUSTER_ROUTE_UDP) {
		struct link_io_ops lops = cl_link_ops;

		lops.deliver = cl_link_deliver;
		cl.lio = link_io_new(cfg, link->fd, link->secret, link->secret_len, &lops, NULL);
		if (!cl.lio) {
			cl_free();
			return -ENOMEM;
		}
		snprintf(self.link, sizeof(self.link), "%s", link->advertise);
		/* one producer per worker queue: in udp mode only the I/O
		 * thread delivers; the inbox stays unread */
		bus_ops.deliver = NULL;
	}
	ret = cluster_bus_start(&cl.bus, cfg, &self, &bus_ops, NULL, holder);
	if (ret) {
		link_io_free(cl.lio);
		cl.lio = NULL;
		cl_free();
		return ret;
	}
	cl.on = true;
	router_set_cluster(&cl_router);
	log_info("cluster: joined as node %d, routing through %s", cl.self,
		 cl.lio ? "the node link (UDP)" : "Redis");
	return 0;
}

void cluster_stop(void)
{
	if (!cl.on)
		return;
	router_set_cluster(NULL);
	cluster_bus_stop(cl.bus);
	link_io_free(cl.lio);
	cl_free();
}

void cluster_metrics(FILE *out)
{
	fprintf(out, "# HELP ringchat_cluster_routing 1 when pushes reach users on other nodes.\n"
		     "# TYPE ringchat_cluster_routing gauge\nringchat_cluster_routing %d\n",
		cl.on ? 1 : 0);
	if (!cl.on)
		return;
#define CL_COUNTER(name, field, help)                                                   \
	fprintf(out, "# HELP ringchat_cluster_" name " " help "\n# TYPE ringchat_cluster_" name \
		     " counter\nringchat_cluster_" name " %" PRIu64 "\n",                     \
		atomic_load_explicit(&cl.field, memory_order_relaxed))
	CL_COUNTER("pushes_forwarded_total", fwd_msgs, "push messages sent to other nodes");
	CL_COUNTER("push_users_forwarded_total", fwd_users, "users those pushes were for");
	CL_COUNTER("messages_received_total", in_msgs, "messages received from other nodes");
	CL_COUNTER("pushes_delivered_total", in_pushes, "pushes from other nodes delivered here");
	CL_COUNTER("kicks_sent_total", kicks_sent, "logins here that kicked a session elsewhere");
	CL_COUNTER("kicks_confirmed_total", kicks_done, "kicks the other node confirmed");
	CL_COUNTER("kick_timeouts_total", kick_timeouts, "kicks answered by nobody in time");
	CL_COUNTER("route_cache_hits_total", route_hits, "user locations answered by the cache");
	CL_COUNTER("route_cache_misses_total", route_misses, "user locations read from Redis");
	CL_COUNTER("send_failures_total", dropped, "messages that could not be queued");
	CL_COUNTER("link_undelivered_total", undelivered,
		   "messages the node link gave up on (their node went down)");
#undef CL_COUNTER
	cluster_bus_metrics(cl.bus, out);
	if (cl.lio)
		link_io_metrics(cl.lio, out);
}
