#include <stdlib.h>

#include "ringchat/session.h"
#include "ringchat/outbox.h"
#include "ringchat/registry.h"
#include "ringchat/router.h"

bool router_push_user(struct worker *w, int64_t user_id, uint16_t cmd, cJSON *payload)
{
	uint64_t conn = registry_get(user_id);

	if (!conn) {
		cJSON_Delete(payload);
		return false;
	}
	outbox_push(w, conn, cmd, payload);
	return true;
}

bool router_push_user_text(struct worker *w, int64_t user_id, uint16_t cmd, const char *json,
			   size_t len)
{
	uint64_t conn = registry_get(user_id);

	if (!conn)
		return false;
	outbox_push_text(w, conn, cmd, json, len);
	return true;
}

size_t router_push_users(struct worker *w, const int64_t *user_ids, size_t n, int64_t skip_user,
			 uint16_t cmd, const cJSON *payload, bool *delivered)
{
	uint8_t *frame = NULL;
	uint32_t len = 0;
	size_t count = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t conn = user_ids[i] == skip_user ? 0 : registry_get(user_ids[i]);

		if (delivered)
			delivered[i] = false;
		if (!conn)
			continue;
		if (!frame && !(frame = outbox_encode(cmd, payload, &len)))
			break;
		outbox_push_bytes(w, conn, frame, len);
		if (delivered)
			delivered[i] = true;
		count++;
	}
	free(frame);
	return count;
}

bool router_is_local(int64_t user_id)
{
	return registry_get(user_id) != 0;
}
