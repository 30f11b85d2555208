/*
 * msgrow.h - a stored message as the protocol shows it: the columns every
 * message SELECT reads, and the PUSH_MSG / HISTORY JSON object of a row.
 */
#ifndef RINGCHAT_MSGROW_H
#define RINGCHAT_MSGROW_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct db_rows;

/* Columns of every message SELECT, in this order (msgrow_json reads them). */
#define MSGROW_COLS "msg_id, conversation_id, from_id, to_id, group_id, type, text, send_time"

/* {"msg_id", "conversation_id", "from", "to" or "group_id", "type", "text",
 * "send_time"}: a new object (caller deletes it), or NULL out of memory. */
cJSON *msgrow_json_of(int64_t msg_id, int64_t conv, int64_t from, int64_t to, int64_t group_id,
		      int type, const char *text, int64_t send_time);
/* The same for row i of a SELECT MSGROW_COLS. */
cJSON *msgrow_json(const struct db_rows *rows, size_t i);

#endif
