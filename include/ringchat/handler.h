/*
 * handler.h - what a command handler sees and may do. Handlers run on a
 * worker thread, one request at a time per worker; all requests of one
 * connection run on the same worker, in order.
 *
 * Replies: every request gets exactly one reply_* call (the dispatcher
 * sends INTERNAL if a handler returns without replying). A reply may be
 * deferred (group commit): reply_defer() reserves the connection's next
 * reply slot and later replies to the same connection wait behind it, so
 * responses always leave in request order.
 *
 * Ownership: cJSON payloads passed to reply_ and push_ functions are
 * taken over (freed by the callee, even on failure). r->body belongs to
 * the dispatcher and is freed after the handler returns.
 */
#ifndef RINGCHAT_HANDLER_H
#define RINGCHAT_HANDLER_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ringchat/protocol.h"

struct worker;
struct session;
struct pending_reply;

struct req {
	struct worker *w;
	struct session *s;  /* the connection's session, worker-owned */
	uint64_t conn;      /* connection reference (slot | generation) */
	uint16_t cmd;
	uint32_t seq;
	cJSON *body;        /* always a JSON object ({} when len was 0) */
	bool replied;
	bool close_after;   /* close the connection once the reply is sent */
};

typedef void (*handler_fn)(struct req *r);

/* Per-connection state, owned by the connection's worker. */
struct session {
	uint64_t conn;
	int64_t user_id;          /* 0 = not logged in */
	uint32_t peer_addr;       /* IPv4 in host order, 0 if unknown */
	uint16_t peer_port;
	uint8_t auth_failures;
	bool closing;             /* LOGOUT/kick sent; ignore further frames */
	char token[33];           /* session token of LOGIN/RESUME (32 hex + NUL),
				   * "" when not logged in; LOGOUT revokes it */
	double rate_tokens;       /* request token bucket */
	uint64_t rate_last_ms;
	struct pending_reply *pend_head, *pend_tail; /* replies held in order */
	int64_t stored_pushed_max; /* largest stored msg_id pushed at login: in
				    * durability relay, acks of later ids (live
				    * pushes, never stored) need no write */
	uint8_t held;             /* session_hold count: later frames wait while > 0 */
	struct in_msg *held_head, *held_tail;        /* frames waiting, in order */
};

/* Sends an OK response with payload (NULL means {}). */
void reply_ok(struct req *r, cJSON *payload);
/* As reply_ok with a payload already written as JSON text (json_text.h),
 * for hot paths: no cJSON tree is built. json need not be terminated. */
void reply_ok_text(struct req *r, const char *json, size_t len);
/* Sends an error response {"error": reason}. */
void reply_err(struct req *r, uint32_t code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sends an error response with a payload that already holds "error"
 * (e.g. RATE_LIMITED with retry_after_ms). */
void reply_err_json(struct req *r, uint32_t code, cJSON *payload);

/*
 * A storage call failed: counts it, logs "<module>: <what> failed: <db
 * error>" (rate-limited: an outage fails every request), rolls back any
 * open transaction of the worker's MariaDB link and answers 12 INTERNAL.
 */
void reply_db_failed(struct req *r, const char *module, const char *what);

/*
 * Reserves the reply slot of r; r counts as replied. Complete it later on
 * the same worker with reply_complete (payload NULL = {}, or an error code
 * with {"error"} built by the caller via reply_error_payload).
 */
struct pending_reply *reply_defer(struct req *r);
void reply_complete(struct worker *w, struct pending_reply *p, uint32_t code,
		    cJSON *payload);
/* reply_complete with ST_OK and a payload written as JSON text. */
void reply_complete_text(struct worker *w, struct pending_reply *p, const char *json, size_t len);
cJSON *reply_error_payload(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/*
 * Holds the connection's later frames: they queue in the session instead
 * of running, until session_resume. For a request whose outcome is decided
 * off the worker (a password hashed on the hasher thread): the requests
 * after it must see what it did (a pipelined FRIEND_LIST after LOGIN must
 * not be NOT_LOGGED_IN). Holds nest: each session_hold needs its own
 * session_resume. Worker thread of the session only.
 */
void session_hold(struct session *s);
/* Releases one hold; when none is left, runs the queued frames in order
 * (they may hold again). Worker thread only; s must still be the same
 * connection's. */
void session_resume(struct worker *w, struct session *s);

/*
 * Any thread: runs fn(w, arg) on worker w's thread, soon, in post order.
 * For completions of work done elsewhere (the hasher). Returns 0, or
 * -ENOMEM (fn will not run). arg is owned by fn from then on.
 */
int worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg);

/* Sends a push frame (seq 0) to a connection on this node, any worker's.
 * Pushes do not wait behind deferred replies: they may overtake them. */
void push_to_conn(struct worker *w, uint64_t conn, uint16_t cmd, cJSON *payload);
/* Encodes a push frame once, for fan-out: malloc'd, caller frees. payload
 * is NOT taken over here. Returns NULL when out of memory. */
uint8_t *push_encode(uint16_t cmd, const cJSON *payload, uint32_t *len);
/* Sends bytes of an already encoded frame (copied) to a connection. */
void push_bytes_to_conn(struct worker *w, uint64_t conn, const uint8_t *frame, uint32_t len);
/* A push (seq 0, code 0) whose payload is JSON text json[0, len). */
void push_text_to_conn(struct worker *w, uint64_t conn, uint16_t cmd, const char *json,
		       size_t len);

/* Asks the node to close conn once everything queued for it is sent. */
void conn_close_after_flush(struct worker *w, uint64_t conn);

#endif
