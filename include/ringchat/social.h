/*
 * social.h - the social graph as other modules see it: friendships
 * (friends.c) and group memberships (groups.c).
 *
 * These are plain lookups on the worker's MySQL connection (one indexed
 * statement each); a caller that needs them on a hot path may cache the
 * answers. All functions run on a worker thread and block on MySQL. They
 * may be called inside a transaction the caller holds on w->db, and then
 * read as that transaction reads.
 */
#ifndef RINGCHAT_SOCIAL_H
#define RINGCHAT_SOCIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/*
 * True when a has b as a friend. Friendships are stored once per direction
 * and always created and removed in pairs, so one row (a, b) answers.
 * *err is set to 0, or to a negative enum db_error (then the result is
 * false and says nothing).
 */
bool friends_are_friends(struct worker *w, int64_t a, int64_t b, int *err);

/* What groups_is_member found. */
enum group_membership {
	GROUP_GONE = 0,	      /* no such group, or it was dissolved */
	GROUP_NOT_MEMBER = 1, /* a live group; user_id is not in it */
	GROUP_MEMBER = 2,     /* a live group with user_id among its members */
};

/*
 * Whether user_id belongs to group_id, in one statement. Returns an enum
 * group_membership (>= 0) or a negative enum db_error. Callers map the
 * outcomes as the protocol does: GROUP_GONE is 5 NOT_FOUND, GROUP_NOT_MEMBER
 * is 6 FORBIDDEN.
 */
int groups_is_member(struct worker *w, int64_t group_id, int64_t user_id);

/*
 * The members of group_id, oldest member first. On success returns 0 and
 * *ids is a malloc'd array of *n ids that the caller frees (*ids may be
 * NULL when *n is 0: a missing or dissolved group has no members). Returns
 * a negative enum db_error, or -ENOMEM, with *ids NULL and *n 0 otherwise.
 * The list is bounded by config group_member_cap.
 */
int groups_member_ids(struct worker *w, int64_t group_id, int64_t **ids, size_t *n);

#endif
