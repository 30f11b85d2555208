/*
 * session.h - a connection as its worker sees it: who is logged in on it,
 * the replies to its requests kept in request order, and the frames held
 * while a request finishes elsewhere.
 *
 * Replies: every request gets exactly one reply_* call (dispatch answers
 * INTERNAL if a handler returns without one). A reply may be deferred
 * (group commit, password hashing): reply_defer() reserves the
 * connection's next reply slot and later replies to the same connection
 * wait behind it, so responses always leave in request order. Pushes
 * (outbox.h) are not replies and never wait.
 *
 * Holding: session_hold() makes the connection's later frames queue in
 * the session instead of running; session_resume() releases one hold and,
 * when none is left, puts the session on its worker's ready list. The
 * worker loop takes the queued frames from there (session_next_ready) and
 * runs them in order: a handler never runs another request from inside
 * itself.
 *
 * Ownership: cJSON payloads passed to reply_* are taken over (freed by
 * the callee, even on failure). r->body belongs to dispatch and is freed
 * after the handler returns. A session is owned by the worker its
 * connection is pinned to (slot % workers): only that thread touches it.
 */
#ifndef RINGCHAT_SESSION_H
#define RINGCHAT_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ringchat/protocol.h"

struct worker;
struct in_msg;
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
	uint64_t conn;            /* 0 = no connection in this slot */
	int64_t user_id;          /* 0 = not logged in */
	uint32_t peer_addr;       /* IPv4 in host order, 0 if unknown */
	uint16_t peer_port;
	uint8_t auth_failures;
	bool closing;             /* LOGOUT/kick sent; ignore further frames */
	char token[33];           /* session token of LOGIN/RESUME (32 hex + NUL),
				   * "" when not logged in; LOGOUT revokes it */
	double rate_tokens;       /* request token bucket */
	uint64_t rate_last_ms;
	double fan_tokens;        /* recipient token bucket (GROUP_SEND fan-out) */
	uint64_t fan_last_ms;
	struct pending_reply *pend_head, *pend_tail; /* replies held in order */
	uint8_t held;             /* session_hold count: later frames wait while > 0 */
	bool ready;               /* on its worker's ready list */
	struct in_msg *held_head, *held_tail;        /* frames waiting, in order */
	struct session *ready_next;
};

/*
 * The table of sessions, one per connection slot, shared by nworkers
 * workers (slot s belongs to worker s % nworkers). Called once before the
 * workers start / after they stopped. Returns 0 or -ENOMEM.
 */
int session_table_init(uint32_t nslots, int nworkers);
void session_table_destroy(void);
/* The session of conn's slot (it may still hold an older connection:
 * compare s->conn). */
struct session *session_of(uint64_t conn);
/* Slots of the table, and the session of one slot. */
uint32_t session_slots(void);
struct session *session_at(uint32_t slot);
/* Replies waiting for a completion, over all workers (shutdown waits for
 * them). Any thread. */
uint32_t session_deferred(void);

/* Makes s the session of a new connection (s->conn was 0). */
void session_open(struct session *s, uint64_t conn, uint32_t peer_addr, uint16_t peer_port);
/*
 * Forgets the connection of s: frames still held are freed, replies still
 * waiting for a completion are orphaned (their completer frees them), and
 * s is zeroed. The caller ends the login first (auth) if there was one.
 */
void session_close(struct worker *w, struct session *s);

/* True when s holds its frames, or still has frames queued from a hold:
 * then session_queue must take m, so the frames keep their order. */
bool session_is_held(const struct session *s);
void session_queue(struct session *s, struct in_msg *m);
/* Holds the session's later frames (holds nest). */
void session_hold(struct session *s);
/* Releases one hold; with none left, queued frames become ready for the
 * worker loop. Worker thread of s only. */
void session_resume(struct worker *w, struct session *s);
/* The next frame of a resumed session, oldest first, or NULL. The frame is
 * the caller's (hand it to dispatch). Worker thread only. */
struct in_msg *session_next_ready(struct worker *w);

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
/* {"error": reason} for reply_err_json / reply_complete. */
cJSON *reply_error_payload(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The one reply for a storage failure: counts it, logs "<module>: <what>
 * failed: <reason>" (rate-limited: an outage fails every request), rolls
 * back any open transaction of the worker's MariaDB link and answers 12
 * INTERNAL.
 */
void reply_db_failed(struct req *r, const char *module, const char *what);

/*
 * Reserves the reply slot of r; r counts as replied. Complete it later on
 * the same worker with reply_complete (payload NULL = {}, or an error code
 * with {"error"} from reply_error_payload). Returns NULL after answering
 * INTERNAL itself (out of memory).
 */
struct pending_reply *reply_defer(struct req *r);
void reply_complete(struct worker *w, struct pending_reply *p, uint32_t code,
		    cJSON *payload);
/* reply_complete with ST_OK and a payload written as JSON text. */
void reply_complete_text(struct worker *w, struct pending_reply *p, const char *json, size_t len);

#endif
