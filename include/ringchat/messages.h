/*
 * messages.h - what the messaging module offers other modules besides its
 * command handlers and hooks (those are in handlers.h).
 *
 * The messaging module keeps, per worker, caches of the social graph it
 * checks on every send: "a and b are friends" and "the members of group
 * g". They expire after a short TTL (a safety net, and the only bound on
 * what another node changed) and are dropped wholesale whenever
 * social_changed() is called, so that a change made on this node is seen
 * by the very next request of any connection.
 */
#ifndef RINGCHAT_MESSAGES_H
#define RINGCHAT_MESSAGES_H

/* Lifetime of a cached friendship or member list. */
#define MESSAGES_SOCIAL_TTL_MS 2000

/*
 * Call after committing any change that removes or adds a friendship or a
 * group membership, or dissolves a group (FRIEND_ACCEPT / DELETE,
 * GROUP_JOIN / QUIT / DISSOLVE). Any thread; costs one atomic add.
 */
void social_changed(void);

#endif
