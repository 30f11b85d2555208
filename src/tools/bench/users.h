/*
 * users.h - the users of the scenarios, as step-engine scripts: sign up
 * and log in every connection, then pair them (chat: FRIEND_REQUEST +
 * FRIEND_ACCEPT) or group them (group: GROUP_CREATE by the first of each
 * group, GROUP_JOIN by the rest); and the signup storm.
 *
 * User n is named "<prefix>_<n>" with password BENCH_PASSWORD; chat and
 * group connection i carries user i. Runs on the calling thread.
 */
#ifndef RINGCHAT_BENCH_USERS_H
#define RINGCHAT_BENCH_USERS_H

#include <stddef.h>
#include <stdint.h>

#include "bench.h"
#include "steps.h"

enum users_phase { PH_LOGIN = 1, PH_SIGNUP_ONLY, PH_LOGIN_ONLY, PH_LINK, PH_ACCEPT };

/*
 * What a phase's scripts need. The caller owns it and gids; it must
 * outlive the bsteps run that uses it.
 */
struct users_ctx {
	const struct bench_opts *o;
	enum users_phase phase;
	bool group;    /* GROUP_CREATE/JOIN instead of friend requests */
	int members;   /* group: connections per group */
	int stride;    /* signup storm: user index = index + step * stride */
	int users;     /* signup storm: how many in all */
	int64_t *gids; /* group: group_id of each group, filled by PH_LINK */
};

/* The name of user i into out (n bytes). */
void users_name(const struct bench_opts *o, int i, char *out, size_t n);

/* The partner of chat connection i: senders are even, recipients odd. */
int users_partner(int i);

/*
 * The bsteps callbacks of the phases, for a struct bsteps whose ctx is a
 * struct users_ctx. PH_LOGIN: SIGNUP then LOGIN (user_id noted);
 * PH_SIGNUP_ONLY: SIGNUP of users index, index + stride, ... below users;
 * PH_LOGIN_ONLY: LOGIN; PH_LINK: senders FRIEND_REQUEST their partner, or
 * the first of each group GROUP_CREATE (gids noted); PH_ACCEPT: recipients
 * FRIEND_ACCEPT, or the rest of each group GROUP_JOIN.
 */
int users_build(struct bsteps *s, struct bconn *c, uint16_t *cmd, char *buf, size_t cap);
int users_reply(struct bsteps *s, struct bconn *c, const struct frame_hdr *h, const char *payload);

/*
 * Runs phase ph over conns[0..n) (busy_max as struct bsteps) and prints
 * how long it took on stderr; adds its RATE_LIMITED retries to
 * *rate_limited (may be NULL). 0 or -1.
 */
int users_phase_run(struct users_ctx *x, enum users_phase ph, const char *what, struct bconn *conns,
		    int n, int busy_max, uint64_t *rate_limited);

/*
 * Signs users 0..users-1 up over min(nconns, users) fresh connections to
 * --host:--port, one request at a time each; s (zeroed by the caller, its
 * hist optional) receives the results and x the context. 0 or -1.
 */
int users_signup_all(const struct bench_opts *o, int users, int nconns, struct bsteps *s,
		     struct users_ctx *x);

#endif
