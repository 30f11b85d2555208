/*
 * registry.h - which connection of this node each logged-in user holds.
 *
 * One entry per user (a newer login replaces the older one, which is
 * then kicked). Shared by all workers: 64 shards, each a small open-
 * addressing table under its own mutex, so two workers rarely meet on a
 * lock and a lookup is a hash and a probe or two.
 */
#ifndef RINGCHAT_REGISTRY_H
#define RINGCHAT_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Returns 0 or -ENOMEM. Call once before workers start. */
int registry_init(void);
void registry_destroy(void);

/* Maps user_id to conn; *replaced gets the connection it replaced, or 0.
 * Returns 0, or -ENOMEM (and changes nothing). */
int registry_set(int64_t user_id, uint64_t conn, uint64_t *replaced);
/* Removes the entry only if it still maps to conn; true if removed. */
bool registry_remove(int64_t user_id, uint64_t conn);
/* The user's connection on this node, or 0 when not logged in here. */
uint64_t registry_get(int64_t user_id);
size_t registry_count(void);

#endif
