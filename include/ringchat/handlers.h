/*
 * handlers.h - the command handlers and the hooks of each handler module.
 * dispatch.c wires a module in when its source exists (HAVE_<MODULE>).
 * Every handler follows handler.h: exactly one reply per request.
 */
#ifndef RINGCHAT_HANDLERS_H
#define RINGCHAT_HANDLERS_H

#include "ringchat/handler.h"
#include "ringchat/worker.h"

/* auth.c: SIGNUP, LOGIN, RESUME, LOGOUT; sessions and kicks. */
void auth_signup(struct req *r);
void auth_login(struct req *r);
void auth_resume(struct req *r);
void auth_logout(struct req *r);
/* The connection of s is gone (session still filled in). */
void auth_on_close(struct worker *w, struct session *s);
int auth_global_init(struct worker_pool *pool);
void auth_global_stop(void);

/* friends.c */
void friends_request(struct req *r);
void friends_accept(struct req *r);
void friends_delete(struct req *r);
void friends_list(struct req *r);
void friends_update(struct req *r);
/* After LOGIN/RESUME: push the pending requests TO s->user_id
 * (PUSH_FRIEND_REQUEST each). Called by auth after the OK reply. */
void friends_push_pending(struct worker *w, struct session *s);

/* groups.c */
void groups_create(struct req *r);
void groups_dissolve(struct req *r);
void groups_join(struct req *r);
void groups_quit(struct req *r);
void groups_members(struct req *r);
void groups_list(struct req *r);

/* messages.c */
void messages_send(struct req *r);
void messages_group_send(struct req *r);
void messages_ack(struct req *r);
void messages_history(struct req *r);
/* After LOGIN/RESUME: push every message s->user_id has not acknowledged
 * (1:1 and group), oldest first. Called by auth after the OK reply. */
void messages_push_unacked(struct worker *w, struct session *s);
int messages_global_init(struct worker_pool *pool);
void messages_global_stop(void);
/* Worker thread: take completions of the group-commit writer. Returns
 * true if any were handled. */
bool messages_poll(struct worker *w);
bool messages_has_work(struct worker *w);

#endif
