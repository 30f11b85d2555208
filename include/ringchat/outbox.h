/*
 * outbox.h - frames from a worker to connections: one encoder for every
 * reply and push (header + JSON payload, with the size check), and the
 * hand-off of the encoded bytes to the I/O thread through the worker's
 * out queue.
 *
 * Ownership: a cJSON payload given to an outbox_* call is taken over (freed
 * by the callee, even on failure) unless the comment says otherwise. JSON
 * text (json, len) is copied. An out_msg from outbox_frame* belongs to the
 * caller until outbox_send, which hands it to the I/O thread.
 *
 * Threads: a worker thread, with its own struct worker.
 */
#ifndef RINGCHAT_OUTBOX_H
#define RINGCHAT_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct worker;
struct out_msg;

/*
 * Encodes one frame (header + json[0, len)) for conn. Returns a malloc'd
 * out_msg, or NULL when len exceeds FRAME_MAX_OUT_BYTES or memory ran
 * out. json need not be NUL-terminated.
 */
struct out_msg *outbox_frame(uint64_t conn, uint16_t cmd, uint32_t code, uint32_t seq,
			     const char *json, size_t len);
/* outbox_frame with payload printed by cJSON (NULL means {}); takes payload. */
struct out_msg *outbox_frame_json(uint64_t conn, uint16_t cmd, uint32_t code, uint32_t seq,
				  cJSON *payload);

/* Hands m to the I/O thread (waits while the out queue is full: a reply is
 * never dropped). Takes m. */
void outbox_send(struct worker *w, struct out_msg *m);

/* A push (seq 0, code 0) to conn, any worker's. Pushes are not replies and
 * do not wait behind deferred replies. */
void outbox_push(struct worker *w, uint64_t conn, uint16_t cmd, cJSON *payload);
/* The same with the payload as JSON text json[0, len) (json_text.h). */
void outbox_push_text(struct worker *w, uint64_t conn, uint16_t cmd, const char *json,
		      size_t len);

/*
 * A push frame encoded once, for fan-out to many connections or nodes:
 * returns malloc'd bytes (caller frees) and their count in *len, or NULL
 * (too large, out of memory). payload is NOT taken over.
 */
uint8_t *outbox_encode(uint16_t cmd, const cJSON *payload, uint32_t *len);
/* The same with the payload as JSON text json[0, jlen). */
uint8_t *outbox_encode_text(uint16_t cmd, const char *json, size_t jlen, uint32_t *len);
/* Sends a copy of an encoded frame to conn. */
void outbox_push_bytes(struct worker *w, uint64_t conn, const uint8_t *frame, uint32_t len);

/* Asks the I/O thread to close conn once everything queued for it is sent. */
void outbox_close(struct worker *w, uint64_t conn);

#endif
