/*
 * presence.h - who is online, cluster-wide, kept in Redis.
 *
 * Key rc:on:<user_id> = "<node_id>:<conn>" with a TTL of PRESENCE_TTL_S
 * that the owning worker refreshes every PRESENCE_REFRESH_S. The value
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

#define PRESENCE_TTL_S 90
#define PRESENCE_REFRESH_S 30

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
 * PRESENCE_REFRESH_S; cheap to call often. */
void presence_refresh(struct worker *w);
/* Refreshes at once (Redis came back, maybe without our entries). */
void presence_refresh_now(struct worker *w);
/* Pushes PUSH_PRESENCE {user_id, online} to the user's friends that are
 * online. Returns 0, -EIO on a storage error, or -ENOMEM. */
int presence_notify_friends(struct worker *w, int64_t user_id, bool online);

#endif
