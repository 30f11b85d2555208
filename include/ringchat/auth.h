/*
 * auth.h - accounts and sessions: SIGNUP, LOGIN, RESUME, LOGOUT, and the
 * end of a login when its connection goes. Handlers follow session.h:
 * exactly one reply per request. Worker threads, except the start/stop
 * calls (main thread, before workers start / after they stopped).
 */
#ifndef RINGCHAT_AUTH_H
#define RINGCHAT_AUTH_H

struct req;
struct session;
struct worker;
struct config;

void auth_signup(struct req *r);
void auth_login(struct req *r);
void auth_resume(struct req *r);
void auth_logout(struct req *r);
/* The connection of s is gone and s->user_id is set: ends the login
 * (registry, presence, friends told) if it is still the user's current one. */
void auth_on_close(struct worker *w, struct session *s);

/*
 * Makes the dummy hash and starts the hasher threads. post(owner, fn, arg)
 * must run fn(owner, arg) soon on the worker thread `owner` (the worker
 * pool's worker_post): the hasher hands finished jobs back through it.
 * Returns 0 or -errno.
 */
int auth_start(const struct config *cfg,
	       int (*post)(struct worker *owner, void (*fn)(struct worker *, void *), void *arg));
void auth_stop(void);

#endif
