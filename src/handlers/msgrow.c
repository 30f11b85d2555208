/*
 * msgrow.c - a stored message as PUSH_MSG / HISTORY show it (msgrow.h).
 */
#include "ringchat/db.h"
#include "ringchat/msgrow.h"
#include "ringchat/request.h"

cJSON *msgrow_json_of(int64_t msg_id, int64_t conv, int64_t from, int64_t to, int64_t group_id,
		       int type, const char *text, int64_t send_time)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	json_add_int(o, "msg_id", msg_id);
	json_add_int(o, "conversation_id", conv);
	json_add_int(o, "from", from);
	if (group_id)
		json_add_int(o, "group_id", group_id);
	else
		json_add_int(o, "to", to);
	json_add_int(o, "type", type);
	cJSON_AddStringToObject(o, "text", text);
	json_add_int(o, "send_time", send_time);
	return o;
}

cJSON *msgrow_json(const struct db_rows *rows, size_t i)
{
	return msgrow_json_of(db_cell_i64(rows, i, 0), db_cell_i64(rows, i, 1), db_cell_i64(rows, i, 2),
			db_cell_i64(rows, i, 3), db_cell_i64(rows, i, 4),
			(int)db_cell_i64(rows, i, 5), db_cell_str(rows, i, 6),
			db_cell_i64(rows, i, 7));
}
