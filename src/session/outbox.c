/*
 * outbox.c - encoding of the frames a worker sends, and their hand-off to
 * the I/O thread. Every reply and push goes through outbox_frame, so the
 * header and the size check exist once.
 */
#include <stdlib.h>
#include <string.h>

#include "ringchat/counters.h"
#include "ringchat/frame.h"
#include "ringchat/outbox.h"
#include "ringchat/worker.h"

/* Writes the frame header and payload at dst; the one encoder. */
static void outbox_put(uint8_t *dst, uint16_t cmd, uint32_t code, uint32_t seq, const char *json,
		       size_t len)
{
	struct frame_hdr h = {
		.magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = cmd,
		.code = code, .seq = seq, .len = (uint32_t)len,
	};

	frame_hdr_encode(dst, &h);
	if (len)
		memcpy(dst + FRAME_HDR_BYTES, json, len);
}

struct out_msg *outbox_frame(uint64_t conn, uint16_t cmd, uint32_t code, uint32_t seq,
			     const char *json, size_t len)
{
	struct out_msg *m;

	if (len > FRAME_MAX_OUT_BYTES)
		return NULL;
	m = malloc(sizeof(*m) + FRAME_HDR_BYTES + len);
	if (!m)
		return NULL;
	m->conn = conn;
	m->flags = 0;
	m->len = (uint32_t)(FRAME_HDR_BYTES + len);
	outbox_put(m->data, cmd, code, seq, json, len);
	counter_inc(frames_out);
	return m;
}

struct out_msg *outbox_frame_json(uint64_t conn, uint16_t cmd, uint32_t code, uint32_t seq,
				  cJSON *payload)
{
	struct out_msg *m;
	char *json;

	if (!payload)
		return outbox_frame(conn, cmd, code, seq, "{}", 2);
	json = cJSON_PrintUnformatted(payload);
	cJSON_Delete(payload);
	if (!json)
		return NULL;
	m = outbox_frame(conn, cmd, code, seq, json, strlen(json));
	free(json);
	return m;
}

void outbox_send(struct worker *w, struct out_msg *m)
{
	worker_send_out(w, m);
}

void outbox_push(struct worker *w, uint64_t conn, uint16_t cmd, cJSON *payload)
{
	struct out_msg *m = outbox_frame_json(conn, cmd, 0, 0, payload);

	if (m)
		outbox_send(w, m);
}

void outbox_push_text(struct worker *w, uint64_t conn, uint16_t cmd, const char *json,
		      size_t len)
{
	struct out_msg *m = outbox_frame(conn, cmd, 0, 0, json, len);

	if (m)
		outbox_send(w, m);
}

uint8_t *outbox_encode_text(uint16_t cmd, const char *json, size_t jlen, uint32_t *len)
{
	uint8_t *buf;

	if (jlen > FRAME_MAX_OUT_BYTES || !(buf = malloc(FRAME_HDR_BYTES + jlen)))
		return NULL;
	outbox_put(buf, cmd, 0, 0, json, jlen);
	*len = (uint32_t)(FRAME_HDR_BYTES + jlen);
	return buf;
}

uint8_t *outbox_encode(uint16_t cmd, const cJSON *payload, uint32_t *len)
{
	char *json = cJSON_PrintUnformatted(payload);
	uint8_t *buf;

	if (!json)
		return NULL;
	buf = outbox_encode_text(cmd, json, strlen(json), len);
	free(json);
	return buf;
}

void outbox_push_bytes(struct worker *w, uint64_t conn, const uint8_t *frame, uint32_t len)
{
	struct out_msg *m = malloc(sizeof(*m) + len);

	if (!m)
		return;
	m->conn = conn;
	m->flags = 0;
	m->len = len;
	memcpy(m->data, frame, len);
	counter_inc(frames_out);
	outbox_send(w, m);
}

void outbox_close(struct worker *w, uint64_t conn)
{
	struct out_msg *m = malloc(sizeof(*m));

	if (!m)
		return;
	m->conn = conn;
	m->flags = OUT_CLOSE;
	m->len = 0;
	outbox_send(w, m);
}
