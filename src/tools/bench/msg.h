/*
 * msg.h - what chat and group (and offline's set-up) share: connections
 * signed up, logged in and linked on Ringchat (or subscribed on Redis),
 * the load run on them, and the report.
 *
 * Placement: connection i is member i % members of group i / members
 * (chat: pairs, members 2; even i sends to i + 1). With --nodes it
 * connects to node (i / members + i % members) % nnodes: user A of pair
 * p on node p % n and user B on node (p + 1) % n, so with two nodes or
 * more every 1:1 message crosses nodes; a group's sender is on node
 * g % n and its members follow round the ring. Signup, login and linking
 * go to the node of the connection (the nodes share one database).
 *
 * Runs on the calling (main) thread.
 */
#ifndef RINGCHAT_BENCH_MSG_H
#define RINGCHAT_BENCH_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "bconn.h"
#include "bench.h"

struct msg_setup {
	int n;	     /* connections */
	int members; /* group: connections per group; chat: 2 */
	bool group;
};

/*
 * Connections for ms on Ringchat (o's --host:--port or --nodes), signed
 * up, logged in and linked, roles and peers set; or on Redis (redis: the
 * recipients SUBSCRIBEd to chan_prefix:<channel>). *setup_s receives the
 * time it took and *rate_limited gets the set-up's RATE_LIMITED retries
 * added. Returns the array (the caller frees it with bconns_free(.., n))
 * or NULL after printing why.
 */
struct bconn *msg_setup(const struct bench_opts *o, const struct msg_setup *ms, bool redis,
			const char *chan_prefix, double *setup_s, uint64_t *rate_limited);

/*
 * Runs chat or group as ms describes on each --target in turn (the Redis
 * run's CPU is --redis-pid's) and prints a report per target. Returns the
 * exit status: 0 when each run delivered something and lost no
 * connection, 1 otherwise.
 */
int msg_scenario(const struct bench_opts *o, const struct msg_setup *ms);

#endif
