/*
 * social.h - the social graph as the handlers see it: friendships, group
 * memberships and conversation ids, read from MariaDB and cached per
 * worker.
 *
 * Caches: "a and b are friends" and "the members of group g" expire after
 * SOCIAL_CACHE_TTL_MS (a safety net, and the bound on what another node
 * changed) and are dropped wholesale whenever social_changed() is called,
 * so a change made on this node is seen by the very next request of any
 * connection. Friendships are cached only when true and member lists are
 * re-read when the asking user is not in them, so a friendship or
 * membership made a moment ago is never refused because of the cache.
 * Conversation ids never change and are kept until the cache is full.
 *
 * Errors: functions returning int give 0 or a positive answer, or a
 * negative enum db_error (db.h) or -ENOMEM.
 *
 * Threads: social_init/social_destroy on the main thread (before workers
 * start / after they stopped); social_changed on any thread; the rest on
 * a worker thread with its own struct worker (they block on MariaDB).
 */
#ifndef RINGCHAT_SOCIAL_H
#define RINGCHAT_SOCIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* conversations.kind */
#define SOCIAL_CONV_PAIR 1
#define SOCIAL_CONV_GROUP 2

/* Lifetime of a cached friendship or member list. */
#define SOCIAL_CACHE_TTL_MS 2000

/* Members of a group, sorted by id; reference counted, one worker only
 * (the cache holds one reference, each user of the list another). */
struct social_group {
	uint32_t refs;
	uint64_t loaded_ms;
	size_t n;
	int64_t ids[];
};

/* Per-worker caches for nworkers workers. Returns 0 or -ENOMEM. */
int social_init(int nworkers);
void social_destroy(void);

/*
 * Call after committing any change that removes or adds a friendship or a
 * group membership, or dissolves a group (FRIEND_ACCEPT / DELETE,
 * GROUP_JOIN / QUIT / DISSOLVE). Any thread; costs one atomic add.
 */
void social_changed(void);
/* The same for a change another node made (it told the others itself). */
void social_changed_here(void);
/* Drops w's caches if social_changed() was called since it last looked;
 * handlers call it once per request before using the caches. */
void social_refresh(struct worker *w);

/* 1 when a and b are friends, 0 when not (cached when true). */
int social_are_friends(struct worker *w, int64_t a, int64_t b);
/* 1 when the user exists, 0 when not. */
int social_user_exists(struct worker *w, int64_t uid);

/*
 * The members of gid as seen by user uid: *out is a new reference (put it
 * with social_group_put) or NULL for a missing or dissolved group. A
 * cached list that lacks uid is re-read once. Returns 0 or an error.
 */
int social_group_get(struct worker *w, int64_t gid, int64_t uid, struct social_group **out);
void social_group_put(struct social_group *g);
bool social_group_has(const struct social_group *g, int64_t uid);

/*
 * The members of group_id from the database, oldest member first: 0 and
 * *ids malloc'd (caller frees; NULL when *n is 0: a missing or dissolved
 * group has no members), or an error with *ids NULL and *n 0. Uncached.
 */
int social_group_members(struct worker *w, int64_t group_id, int64_t **ids, size_t *n);

/*
 * Conversation ids (> 0): of the pair x, y (either order) or of a group.
 * 0 when none exists yet and create is false; made on first use with
 * create (INSERT IGNORE, so racing workers or nodes agree on one row).
 */
int64_t social_pair_conv(struct worker *w, int64_t x, int64_t y, bool create);
int64_t social_group_conv(struct worker *w, int64_t gid, bool create);

#endif
