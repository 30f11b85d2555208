/*
 * router.c - where a user is (registry here, the cluster layer for other
 * nodes), and pushes to users wherever they are (router.h).
 */
#include <stdlib.h>
#include <string.h>

#include "ringchat/outbox.h"
#include "ringchat/registry.h"
#include "ringchat/router.h"

/* Distinct nodes one fan-out hands frames to, at most (node ids are
 * 0..31: five bits of a msg_id). */
#define ROUTER_NODES_MAX 32

static const struct router_cluster *router_cluster;

void router_set_cluster(const struct router_cluster *c)
{
	router_cluster = c;
}

struct route router_where(struct worker *w, int64_t user_id)
{
	struct route r = { .kind = ROUTE_OFFLINE, .node = -1 };
	int node;

	r.conn = registry_get(user_id);
	if (r.conn) {
		r.kind = ROUTE_HERE;
		return r;
	}
	if (router_cluster && (node = router_cluster->locate(w, user_id)) >= 0) {
		r.kind = ROUTE_NODE;
		r.node = node;
	}
	return r;
}

/* Hands an encoded frame to where r says; true when it was handed on. */
static bool router_send(struct worker *w, const struct route *r, int64_t user_id,
			const uint8_t *frame, uint32_t len)
{
	switch (r->kind) {
	case ROUTE_HERE:
		outbox_push_bytes(w, r->conn, frame, len);
		return true;
	case ROUTE_NODE:
		return router_cluster->forward(w, r->node, &user_id, 1, frame, len) == 0;
	default:
		return false;
	}
}

bool router_push_user(struct worker *w, int64_t user_id, uint16_t cmd, cJSON *payload)
{
	struct route r = router_where(w, user_id);
	uint8_t *frame;
	uint32_t len;
	bool sent;

	if (r.kind == ROUTE_OFFLINE) {
		cJSON_Delete(payload);
		return false;
	}
	if (r.kind == ROUTE_HERE) {
		outbox_push(w, r.conn, cmd, payload);
		return true;
	}
	frame = outbox_encode(cmd, payload, &len);
	cJSON_Delete(payload);
	if (!frame)
		return false;
	sent = router_send(w, &r, user_id, frame, len);
	free(frame);
	return sent;
}

bool router_push_user_text(struct worker *w, int64_t user_id, uint16_t cmd, const char *json,
			   size_t len)
{
	struct route r = router_where(w, user_id);
	uint8_t *frame;
	uint32_t flen;
	bool sent;

	if (r.kind == ROUTE_OFFLINE)
		return false;
	if (r.kind == ROUTE_HERE) {
		outbox_push_text(w, r.conn, cmd, json, len);
		return true;
	}
	frame = outbox_encode_text(cmd, json, len, &flen);
	if (!frame)
		return false;
	sent = router_send(w, &r, user_id, frame, flen);
	free(frame);
	return sent;
}

/* The users of one other node in a fan-out. */
struct router_batch {
	int node;
	size_t n;
	int64_t *users;
	size_t *index; /* positions in the caller's list, for delivered[] */
};

size_t router_push_users(struct worker *w, const int64_t *user_ids, size_t n, int64_t skip_user,
			 uint16_t cmd, const cJSON *payload, bool *delivered)
{
	struct router_batch batch[ROUTER_NODES_MAX];
	uint8_t *frame = NULL;
	uint32_t len = 0;
	size_t count = 0, nbatch = 0;

	for (size_t i = 0; i < n; i++) {
		struct route r;

		if (delivered)
			delivered[i] = false;
		if (user_ids[i] == skip_user)
			continue;
		r = router_where(w, user_ids[i]);
		if (r.kind == ROUTE_OFFLINE)
			continue;
		if (!frame && !(frame = outbox_encode(cmd, payload, &len)))
			break;
		if (r.kind == ROUTE_HERE) {
			outbox_push_bytes(w, r.conn, frame, len);
			if (delivered)
				delivered[i] = true;
			count++;
			continue;
		}
		/* another node: gathered, one copy per node below */
		size_t b = 0;

		while (b < nbatch && batch[b].node != r.node)
			b++;
		if (b == nbatch) {
			if (nbatch == ROUTER_NODES_MAX)
				continue;
			batch[b] = (struct router_batch){
				.node = r.node,
				.users = malloc(n * sizeof(int64_t)),
				.index = malloc(n * sizeof(size_t)),
			};
			if (!batch[b].users || !batch[b].index) {
				free(batch[b].users);
				free(batch[b].index);
				continue;
			}
			nbatch++;
		}
		batch[b].index[batch[b].n] = i;
		batch[b].users[batch[b].n++] = user_ids[i];
	}
	for (size_t b = 0; b < nbatch; b++) {
		if (frame && router_cluster->forward(w, batch[b].node, batch[b].users, batch[b].n,
						     frame, len) == 0) {
			count += batch[b].n;
			for (size_t k = 0; delivered && k < batch[b].n; k++)
				delivered[batch[b].index[k]] = true;
		}
		free(batch[b].users);
		free(batch[b].index);
	}
	free(frame);
	return count;
}
