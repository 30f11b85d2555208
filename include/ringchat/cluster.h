/*
 * cluster.h - this node as a member of a cluster: what crosses to other
 * nodes, what arrives from them, and where a user on another node is.
 *
 * Below it a transport carries opaque messages between nodes, in order
 * per sender, at least once: the Redis inbox streams (cluster_bus.h,
 * config cluster_route redis) or the UDP node link. This module gives the
 * messages their meaning (docs/protocol.md, "Cluster messages"):
 *
 *   PUSH    an encoded push frame for users of the receiving node; group
 *           fan-out sends one per node for all of its members
 *   KICK    a login elsewhere: close the user's session here (PUSH_KICKED)
 *           and write the marks the writer holds for it, then answer
 *   KICKED  the answer: the kick is done and the marks are stored
 *   WHERE   user U is now on node N (or offline): route caches update
 *   SOCIAL  a friendship or membership changed: social caches drop
 *   ACK     a user acknowledged messages minted by the receiving node
 *
 * Routes: where a user of another node is comes from presence in Redis
 * (rc:on:<user> = "node:conn"), cached in one table shared by the workers
 * for CLUSTER_ROUTE_TTL_MS. A login or logout sends WHERE to every node
 * that is up, so a cache is normally corrected within one message's
 * transit; the TTL bounds staleness when such a message is lost (the
 * transport was down). A push sent to a node the user has just left is
 * not lost: the message is stored and reaches the user at its next login.
 *
 * Inbound messages are handed by the transport's thread to the workers
 * through one SPSC queue per worker: all messages from one node go to the
 * same worker (node % workers), in order, except KICKED, which goes to the
 * worker of the session that waits for it, and PUSH, which the I/O thread
 * delivers itself (cluster_attach_ring).
 *
 * Threads: cluster_start/cluster_stop on the main thread (after the
 * workers' pool exists and before it starts / after it stopped); the
 * cluster_* calls taking a struct worker on that worker's thread; the
 * rest on any thread.
 */
#ifndef RINGCHAT_CLUSTER_H
#define RINGCHAT_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config;
struct conn_table;
struct handoff;
struct link_io;
struct ring;
struct worker;
struct node_info;

#define CLUSTER_ROUTE_TTL_MS 5000 /* a cached user → node answer */
#define CLUSTER_KICK_WAIT_MS 500  /* a login waits this long for KICKED */

/* A request from another node that is answered later (KICK). */
struct cluster_req {
	int from;	/* the asking node */
	uint32_t id;	/* its request id */
	int64_t user;
	uint64_t conn;	/* the asker's connection, echoed */
};

/* What the layers above provide. */
struct cluster_hooks {
	/* A friendship or membership changed on another node. Any thread. */
	void (*social_changed)(void);
	/* Write the unread marks held for req->user, then call
	 * cluster_kick_done(w, req) on w. Returns 0, or -errno when it
	 * cannot (then the caller answers at once). */
	int (*flush_user)(struct worker *w, const struct cluster_req *req);
	/* Redis (the path to the other nodes) is back after an outage: push
	 * again to w's logged-in users what they have not acknowledged (pushes
	 * from other nodes may have been lost meanwhile). On worker w. */
	void (*repush)(struct worker *w);
	/* user acknowledged ids[0, n) on another node: this node's writer
	 * settles the unread marks it holds for them. On worker w; ids are
	 * the caller's. */
	void (*acks)(struct worker *w, int64_t user, const int64_t *ids, size_t n);
};

/* cluster_route udp: the node link's socket and key, set up by main. */
struct cluster_link {
	int fd;			/* bound UDP socket, taken over */
	const char *advertise;	/* "ip:port" peers send to */
	const uint8_t *secret;	/* cluster secret, copied */
	size_t secret_len;
};

/*
 * Joins the cluster as cfg->node_id: takes the node id's lease, starts the
 * transport and installs the router's cluster layer (router.h). addr and
 * admin are the addresses actually bound; link (cluster_route udp only,
 * else NULL) the node link's socket, advertised address and key. wake(id) must wake worker id
 * (the pool's worker_wake). Returns 0;
 *   -EADDRINUSE  a live node holds the id: *holder gets its info;
 *   another -errno (Redis unreachable, no memory).
 * cfg->cluster_route "off" makes it a no-op that returns 0.
 */
int cluster_start(const struct config *cfg, int nworkers, const char *addr, const char *admin,
		  const struct cluster_link *link, void (*wake)(int worker_id),
		  const struct cluster_hooks *hooks, struct node_info *holder);
/* The node link (cluster_route udp), for main to attach to the ring on
 * the I/O thread; NULL otherwise. */
struct link_io *cluster_link_io(void);
/* I/O thread, after cluster_start and before the ring runs: PUSH
 * messages from other nodes are copied into conns' connections on the
 * I/O thread instead of going through a worker (with the node link the
 * I/O thread is the transport's thread; the Redis transport's thread
 * queues them to it and wakes it through h). With the node link, the
 * other messages that find a worker's queue full wait in an overflow list
 * that this module's ring client (added to r) empties, so the I/O thread
 * never waits for a worker. A no-op when not in a cluster. conns and h
 * must outlive the ring. Returns 0 or -ENOMEM. */
int cluster_attach_ring(struct ring *r, struct conn_table *conns, struct handoff *h);
/* Leaves the cluster: flushes what is queued (bounded), releases the
 * lease. After the workers stopped. */
void cluster_stop(void);
/* True when this node is part of a cluster (cluster_start joined one). */
bool cluster_enabled(void);
/* Any thread: false when node is another node of the cluster and is down
 * (its users count as offline whatever presence still says). */
bool cluster_node_alive(int node);

/* Worker: handles the messages other nodes sent to w and the waits that
 * timed out. Returns true if it did anything. */
bool cluster_poll(struct worker *w);
/* Worker: true while w waits for answers from other nodes. */
bool cluster_has_work(struct worker *w);

/*
 * Worker: a login of user here. Asks every other node that is up to close
 * the user's session there (if it has one) and to store the unread marks
 * its writer holds for the user (messages it minted for the user); done(w,
 * arg) runs on w once every node confirmed, or after CLUSTER_KICK_WAIT_MS
 * (a node that is down recovers its marks when it restarts). conn is the
 * new session's. Returns 0, or -errno (no node to ask: done will not run).
 */
int cluster_kick(struct worker *w, int64_t user, uint64_t conn,
		 void (*done)(struct worker *w, void *arg), void *arg);
/* Worker: the flush of a KICK is stored: answers the asking node. */
void cluster_kick_done(struct worker *w, const struct cluster_req *req);

/*
 * Worker: user acknowledged ids[0, n) here. Each id minted by another node
 * that is up (its node bits) goes back to that node in one ACK per node:
 * the writer that holds the message's unread mark in memory settles it
 * there, and that node's writer knows its own group messages, so it moves
 * the member's read cursor by primary key. The ids left to settle here
 * (minted here, by a node that is down, or whose ACK could not be queued)
 * are moved to the front of ids; returns their count (n when this node is
 * not in a cluster).
 */
size_t cluster_forward_acks(struct worker *w, int64_t user, int64_t *ids, size_t n);
/* Any thread: tells every node that user is now here (online) or
 * nowhere (offline). */
void cluster_announce(int64_t user, bool online);
/* Any thread: tells every node to drop its social caches. */
void cluster_social_changed(void);

/* Any thread: the ringchat_cluster_* metrics, Prometheus text. */
void cluster_metrics(FILE *out);

#endif
