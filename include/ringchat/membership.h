/*
 * membership.h - which nodes are alive, and this node's lease on its id.
 *
 * Redis layout (all nodes of a cluster share one Redis):
 *
 *   rc:node:<id>   hash, PEXPIRE node_ttl_ms, one per live node:
 *                  token     random 64-bit instance token, 16 hex digits
 *                  addr      client address ("127.0.0.1:7701")
 *                  admin     admin/metrics address ("" = off)
 *                  link      node-link address ("" until the caller sets one)
 *                  start_ms  start time of the instance, epoch ms
 *                  pid       process id, for operators
 *
 * The key is a LEASE on the node id: acquiring it is atomic (Lua: create
 * only when absent), refreshing and deleting it compare the token first,
 * so an instance never refreshes or deletes another instance's lease.
 * After a crash the id is free once node_ttl_ms has passed.
 *
 * Peers: each heartbeat (every node_ttl_ms / 5) is ONE round trip, a Lua
 * script that refreshes our lease and returns the hash of every id
 * 0..MEMBERSHIP_MAX_NODES-1 that exists. A node is up while its key
 * exists, so the peer view agrees with the leases by construction: a
 * crashed node goes down when its TTL runs out (noticed at most one
 * heartbeat later), a cleanly stopped one at the next heartbeat. The
 * script touches keys it was not given in KEYS: fine for a standalone or
 * replicated Redis, not for Redis Cluster.
 *
 * Threads: membership_create/acquire/tick/release/destroy run on one
 * thread at a time (the cluster thread once it runs) with a struct kv of
 * that thread; the callbacks run inside membership_tick on that thread.
 * membership_is_up, membership_peer and membership_up_mask may be called
 * from any thread at any time between create and destroy.
 */
#ifndef RINGCHAT_MEMBERSHIP_H
#define RINGCHAT_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct kv;
struct membership;

/* node_id is 5 bits of every msg_id (config.h), so ids are 0..31. */
#define MEMBERSHIP_MAX_NODES 32
#define MEMBERSHIP_ADDR_MAX 128

struct node_info {
	int id;
	uint64_t token;	   /* instance token; a restart changes it */
	uint64_t start_ms; /* epoch ms */
	int pid;
	char addr[MEMBERSHIP_ADDR_MAX];	 /* client address */
	char admin[MEMBERSHIP_ADDR_MAX]; /* admin address, "" = none */
	char link[MEMBERSHIP_ADDR_MAX];	 /* node-link address, "" = none yet */
};

/*
 * Events, called on the thread running membership_tick, never with a
 * lock held (a callback may call membership_peer).
 *
 * node_up: peer id is up with *info (valid during the call). Also called
 *   again for a peer that stays up when its addresses changed (same
 *   token). A peer that restarted between two heartbeats (new token) gets
 *   node_down then node_up.
 * node_down: peer id went away (lease expired or deleted).
 * lease_lost: our own lease is held by another instance now (it expired
 *   while Redis was out of reach and someone took the id). Called once;
 *   afterwards membership_tick does nothing and returns -ESTALE. The node
 *   must stop using the id: stop reading its inbox and shut down.
 * Events never concern our own id.
 */
struct membership_ops {
	void (*node_up)(void *ctx, int id, const struct node_info *info);
	void (*node_down)(void *ctx, int id);
	void (*lease_lost)(void *ctx);
};

/*
 * Creates the state for node cfg->node_id with lease TTL cfg->node_ttl_ms.
 * self gives addr/admin/link (copied; id, token, start_ms and pid are
 * filled in here: a fresh random token, now, getpid()). ops is copied.
 * Does not talk to Redis. Returns NULL when out of memory or when no
 * random token could be made.
 */
struct membership *membership_create(const struct config *cfg, const struct node_info *self,
				     const struct membership_ops *ops, void *ctx);
/* Frees m. Does not release the lease (membership_release does). */
void membership_destroy(struct membership *m);

/*
 * Takes the lease on our id: one atomic create-if-absent. Returns
 *   0             the id is ours until node_ttl_ms from now;
 *   -EADDRINUSE   a live instance holds it; *holder (if not NULL) gets its
 *                 info (holder->id is our id);
 *   -ENOTCONN     Redis could not be reached (kv_errmsg says why);
 *   -EPROTO       an unexpected reply (e.g. the key has another type).
 * Calling it again after success refreshes nothing and returns
 * -EADDRINUSE with our own info: acquire once.
 */
int membership_acquire(struct membership *m, struct kv *kv, struct node_info *holder);

/*
 * One heartbeat: refresh the lease (re-creating it if Redis lost it, e.g.
 * after a restart without persistence), read the live set, call the
 * events. Call it every membership_heartbeat_ms. Returns
 *   0           done;
 *   -ENOTCONN   Redis unreachable: nothing changed, no events (the last
 *               known peer view stays);
 *   -ESTALE     the lease belongs to another instance (lease_lost was
 *               called, now or at an earlier tick).
 */
int membership_tick(struct membership *m, struct kv *kv);

/* Deletes our lease if it is still ours (compare-and-delete), so the id is
 * free at once. Returns 1 deleted, 0 not ours / not there, -ENOTCONN. */
int membership_release(struct membership *m, struct kv *kv);

/* Sets the link address written at the next heartbeat (copied, truncated
 * to MEMBERSHIP_ADDR_MAX - 1). Same thread as membership_tick. */
void membership_set_link(struct membership *m, const char *link);

/* Heartbeat period: node_ttl_ms / 5. */
unsigned membership_heartbeat_ms(const struct membership *m);
/* True when the lease was confirmed less than node_ttl_ms ago (monotonic
 * clock), i.e. no other instance can hold it yet. Tick thread only. */
bool membership_lease_valid(const struct membership *m);
/* Our own info (token, start time, addresses). Tick thread only, or
 * any thread once no tick runs any more. */
const struct node_info *membership_self(const struct membership *m);

/*
 * Writes the line a node prints when membership_acquire (or
 * cluster_bus_start) gave -EADDRINUSE, naming the id and its holder:
 *   node_id 2 is held by a live node: 127.0.0.1:7702 (admin
 *   127.0.0.1:7782, pid 4242, started 2026-12-04T13:55:28.040Z); it is
 *   free when that node stops, or 5000 ms after it died
 * No newline. Returns what snprintf returns. Any thread.
 */
int membership_format_holder(char *buf, size_t size, const struct node_info *holder, int ttl_ms);

/* Any thread. True when peer id is up in the last view. Our own id is
 * never "up" here: it is not a peer. */
bool membership_is_up(const struct membership *m, int id);
/* Any thread. Bit i set = peer i up. */
uint32_t membership_up_mask(const struct membership *m);
/* Any thread. Copies peer id's info to *info; returns 0, or -ENOENT when
 * it is not up (or id is out of range). */
int membership_peer(struct membership *m, int id, struct node_info *info);

#endif
