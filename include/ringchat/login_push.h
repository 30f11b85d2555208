/*
 * login_push.h - the messages a user has not acknowledged, pushed to its
 * new session at LOGIN/RESUME (see login_push.c). Worker thread of the
 * session; blocks on MariaDB.
 */
#ifndef RINGCHAT_LOGIN_PUSH_H
#define RINGCHAT_LOGIN_PUSH_H

#include <stdint.h>

struct session;
struct worker;

/*
 * Pushes to s every message of s->user_id not yet acknowledged with an id
 * below `below` (later ones reach the session live), oldest first, up to
 * half of out_limit_bytes. A storage error stops it with a log line: what
 * was not pushed stays stored for the next login.
 */
void login_push_unacked(struct worker *w, struct session *s, int64_t below);

#endif
