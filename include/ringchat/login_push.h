/*
 * login_push.h - the messages a user has not acknowledged, pushed to its
 * new session at LOGIN/RESUME (see login_push.c). Worker thread of the
 * session; blocks on MariaDB.
 */
#ifndef RINGCHAT_LOGIN_PUSH_H
#define RINGCHAT_LOGIN_PUSH_H

#include <stdint.h>

/* Share of out_limit_bytes the pending friend requests pushed at a login
 * may take (1 / this), encoded; the messages take half (login_push.c). */
#define LOGIN_PUSH_REQ_DIV 8

struct session;
struct worker;

/*
 * Pushes to s every message of s->user_id not yet acknowledged with an id
 * below `below` (later ones reach the session live), oldest first, up to
 * half of out_limit_bytes counted as encoded frames. A storage error stops
 * it with a log line: what was not pushed stays stored for the next login.
 */
void login_push_unacked(struct worker *w, struct session *s, int64_t below);

#endif
