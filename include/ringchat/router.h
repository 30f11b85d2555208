/*
 * router.h - where a user is, and how a push gets there.
 *
 * Handlers never look at connections or nodes: they ask the router to
 * deliver to a user. Today a user is either logged in on this node (the
 * registry holds its connection) or not reachable now (the message stays
 * stored and is pushed at its next login). The cluster layer adds "on
 * node N" behind the same calls.
 */
#ifndef RINGCHAT_ROUTER_H
#define RINGCHAT_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct worker;

/* Pushes cmd/payload to the user's session. Takes over payload. Returns
 * true when it was handed to a live session. */
bool router_push_user(struct worker *w, int64_t user_id, uint16_t cmd, cJSON *payload);
/* As router_push_user with the payload as JSON text json[0, len) (see
 * json_text.h); json stays the caller's. */
bool router_push_user_text(struct worker *w, int64_t user_id, uint16_t cmd, const char *json,
			   size_t len);

/* Pushes one frame to many users, encoding it once; skips skip_user (e.g.
 * the sender). payload is NOT taken over. Returns how many were handed to
 * a live session; delivered[i] (if not NULL) says which. */
size_t router_push_users(struct worker *w, const int64_t *user_ids, size_t n,
			 int64_t skip_user, uint16_t cmd, const cJSON *payload, bool *delivered);

/* True when the user has a session on this node. */
bool router_is_local(int64_t user_id);

#endif
