/*
 * router.h - where a user is, and how a push gets there.
 *
 * Handlers never look at connections or nodes: they ask the router where
 * a user is, or ask it to deliver a push to users. A user is here (logged
 * in on this node: the registry holds its connection), on another node of
 * the cluster (the cluster layer below the router knows which), or
 * offline (not reachable now: what was stored reaches it at its next
 * login). A push for a user on another node is handed to the cluster
 * layer, which forwards it to that node; group fan-out hands each node one
 * copy for all of its users.
 *
 * Threads: worker threads (router_set_cluster once at start-up, before
 * the workers run).
 */
#ifndef RINGCHAT_ROUTER_H
#define RINGCHAT_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct worker;

enum route_kind {
	ROUTE_OFFLINE = 0, /* not logged in anywhere we know of */
	ROUTE_HERE,	   /* logged in on this node: conn */
	ROUTE_NODE,	   /* logged in on another node: node */
};

struct route {
	enum route_kind kind;
	int node;      /* ROUTE_NODE */
	uint64_t conn; /* ROUTE_HERE */
};

/*
 * The cluster below the router: how users on other nodes are found and
 * reached. Every call runs on a worker thread and must not block for long
 * (locate may ask Redis on a cache miss; forward queues, and over the
 * node link may wait, bounded, for the peer's acks: link_io.h flow control).
 */
struct router_cluster {
	/* The node user_id is logged in on, when it is not this one: >= 0,
	 * or -1 (offline, or unknown). */
	int (*locate)(struct worker *w, int64_t user_id);
	/* Queues an encoded push frame[0, len) for users[0, n) on node.
	 * Returns 0, or -errno when it could not be queued (the push is then
	 * lost for now; what is stored reaches the users at their next login). */
	int (*forward)(struct worker *w, int node, const int64_t *users, size_t n,
		       const uint8_t *frame, uint32_t len);
};

/* Sets the cluster layer (NULL: a single node). Before workers start. */
void router_set_cluster(const struct router_cluster *c);

/* Where user_id is now. */
struct route router_where(struct worker *w, int64_t user_id);

/* Pushes cmd/payload to the user. Takes over payload. Returns true when it
 * was handed to a session here or to the user's node. */
bool router_push_user(struct worker *w, int64_t user_id, uint16_t cmd, cJSON *payload);
/* As router_push_user with the payload as JSON text json[0, len) (see
 * json_text.h); json stays the caller's. */
bool router_push_user_text(struct worker *w, int64_t user_id, uint16_t cmd, const char *json,
			   size_t len);

/* Pushes one frame to many users, encoding it once and handing each other
 * node one copy for all its users; skips skip_user (e.g. the sender).
 * payload is NOT taken over. Returns how many users it was handed to;
 * delivered[i] (if not NULL) says which. */
size_t router_push_users(struct worker *w, const int64_t *user_ids, size_t n,
			 int64_t skip_user, uint16_t cmd, const cJSON *payload, bool *delivered);

#endif
