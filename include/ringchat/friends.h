/*
 * friends.h - FRIEND_REQUEST, _ACCEPT, _DELETE, _LIST, _UPDATE, and the
 * pending requests pushed at login. Handlers follow session.h.
 */
#ifndef RINGCHAT_FRIENDS_H
#define RINGCHAT_FRIENDS_H

struct req;
struct session;
struct worker;

void friends_request(struct req *r);
void friends_accept(struct req *r);
void friends_delete(struct req *r);
void friends_list(struct req *r);
void friends_update(struct req *r);
/* After LOGIN/RESUME: push the pending requests TO s->user_id
 * (PUSH_FRIEND_REQUEST each), oldest first, as many as fit in
 * out_limit_bytes / LOGIN_PUSH_REQ_DIV encoded bytes. */
void friends_push_pending(struct worker *w, struct session *s);

#endif
