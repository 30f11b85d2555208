/*
 * presence.h - who is online, cluster-wide, kept in Redis.
 *
 * Key rc:on:<user_id> = "<node_id>:<conn>" with a TTL of
 * PRESENCE_TTL_FACTOR x presence_refresh_s (config) that the owning worker
 * refreshes every presence_refresh_s (default 30 s). The value
 * names the session, not only the node, so a late logout of an old
 * session never deletes the entry of a newer one (compare-and-delete).
 * If a node dies, its users fall offline by themselves when the TTL runs
 * out.
 *
 * All functions run on a worker thread with that worker's Redis link.
 */
#ifndef RINGCHAT_PRESENCE_H
#define RINGCHAT_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* An entry lives this many refresh periods: one missed refresh (Redis
 * slow or away for a moment) does not make anyone look offline. */
#define PRESENCE_TTL_FACTOR 3

/*
 * Marks the user online on this node with session conn. *prev_node gets
 * the node id of the session it replaced (-1 if none). Returns 0, or -EIO
 * when Redis is unreachable.
 */
int presence_set_online(struct worker *w, int64_t user_id, uint64_t conn, int *prev_node);
/* Removes the entry if it still names this session. 1 removed, 0 not
 * ours (a newer session replaced it), -EIO Redis unreachable. */
int presence_set_offline(struct worker *w, int64_t user_id, uint64_t conn);
/* One round trip for n users: node[i] = node id or -1 when offline.
 * Returns 0, or -EIO / -ENOMEM (node[] then all -1). */
int presence_lookup(struct worker *w, const int64_t *user_ids, size_t n, int *node);
/* Refreshes the TTL of every session this worker holds, at most once per
 * presence_refresh_s; cheap to call often. When Redis fails midway it
 * still reads every reply it owes, so the link is left clean (kv.h) and
 * the next request or refresh works once Redis is back. */
void presence_refresh(struct worker *w);
/* Refreshes at once (Redis came back, maybe without our entries). */
void presence_refresh_now(struct worker *w);
/* Pushes PUSH_PRESENCE {user_id, online} to the user's friends that are
 * online. Returns 0, -EIO on a storage error, or -ENOMEM. */
int presence_notify_friends(struct worker *w, int64_t user_id, bool online);

#endif
