/*
 * session.c - sessions and the order of replies (see session.h).
 *
 * Reply order: while a connection has a deferred reply outstanding, later
 * replies queue behind it in the session's pending list and leave when
 * everything before them is complete.
 *
 * Held frames: a session that is held keeps its frames in arrival order;
 * the last session_resume moves the session to its worker's ready list,
 * and the worker loop runs those frames. Nothing here calls a handler.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/frame.h"
#include "ringchat/log.h"
#include "ringchat/outbox.h"
#include "ringchat/protocol.h"
#include "ringchat/session.h"
#include "ringchat/worker.h"

struct pending_reply {
	struct pending_reply *next;
	struct out_msg *out; /* NULL until complete */
	uint64_t conn;
	uint16_t cmd;
	uint32_t seq;
	bool done;
	bool orphan; /* the connection closed while this was outstanding */
	bool close_after;
};

/* Sessions whose held frames may run, one list per worker. */
struct ready_list {
	struct session *head, *tail;
};

static struct session *sessions; /* one per connection slot */
static uint32_t nsessions;
static struct ready_list *ready; /* one per worker */
static int nready;
/* Replies waiting for a completion; read by the shutdown drain. */
static _Atomic uint32_t deferred;

int session_table_init(uint32_t nslots, int nworkers)
{
	/* calloc'd pages are touched only when a slot is first used, so an
	 * unused session costs no resident memory */
	sessions = calloc(nslots, sizeof(*sessions));
	ready = calloc((size_t)nworkers, sizeof(*ready));
	if (!sessions || !ready) {
		session_table_destroy();
		return -ENOMEM;
	}
	nsessions = nslots;
	nready = nworkers;
	atomic_store_explicit(&deferred, 0, memory_order_relaxed);
	return 0;
}

void session_table_destroy(void)
{
	free(sessions);
	free(ready);
	sessions = NULL;
	ready = NULL;
	nsessions = 0;
	nready = 0;
}

struct session *session_of(uint64_t conn)
{
	return &sessions[CONN_SLOT(conn)];
}

uint32_t session_slots(void)
{
	return nsessions;
}

struct session *session_at(uint32_t slot)
{
	return &sessions[slot];
}

uint32_t session_deferred(void)
{
	return atomic_load_explicit(&deferred, memory_order_seq_cst);
}

void session_open(struct session *s, uint64_t conn, uint32_t peer_addr, uint16_t peer_port)
{
	s->conn = conn;
	s->peer_addr = peer_addr;
	s->peer_port = peer_port;
}

/* ---- replies --------------------------------------------------------------- */

/* Sends the completed replies at the head of the session's pending list. */
static void pending_flush(struct worker *w, struct session *s)
{
	struct pending_reply *p;

	while ((p = s->pend_head) && p->done) {
		s->pend_head = p->next;
		if (!s->pend_head)
			s->pend_tail = NULL;
		if (p->out) {
			if (p->close_after)
				p->out->flags |= OUT_CLOSE;
			outbox_send(w, p->out);
		}
		free(p);
	}
}

static struct pending_reply *pending_append(struct session *s, struct req *r)
{
	struct pending_reply *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->conn = r->conn;
	p->cmd = r->cmd;
	p->seq = r->seq;
	if (s->pend_tail)
		s->pend_tail->next = p;
	else
		s->pend_head = p;
	s->pend_tail = p;
	return p;
}

static void count_status(uint32_t code)
{
	if (code < ST_COUNT)
		atomic_fetch_add_explicit(&counters.resp_by_status[code], 1, memory_order_relaxed);
}

/* What the I/O thread learns from a reply (handoff.h): it answers one
 * frame, and a LOGIN/RESUME OK logs the connection in. */
static uint32_t reply_flags(uint16_t cmd, uint32_t code)
{
	if (code == ST_OK && (cmd == CMD_LOGIN || cmd == CMD_RESUME))
		return OUT_REPLY | OUT_LOGGED_IN;
	return OUT_REPLY;
}

/* Sends m (NULL: it could not be encoded) as r's reply, in request order. */
static void reply_send_frame(struct req *r, uint32_t code, struct out_msg *m)
{
	struct session *s = r->s;

	r->replied = true;
	count_status(code);
	if (!m) {
		log_error("cannot encode reply to cmd %u", r->cmd);
		m = outbox_frame_json(r->conn, r->cmd, ST_INTERNAL, r->seq,
				      reply_error_payload("reply could not be encoded"));
		if (!m)
			return;
	}
	if (r->close_after)
		s->closing = true;
	m->flags |= reply_flags(r->cmd, code);
	if (s->pend_head) {
		struct pending_reply *p = pending_append(s, r);

		if (p) {
			p->out = m;
			p->done = true;
			p->close_after = r->close_after;
			return;
		}
	}
	if (r->close_after)
		m->flags |= OUT_CLOSE;
	outbox_send(r->w, m);
}

static bool reply_twice(struct req *r)
{
	if (!r->replied)
		return false;
	log_error("handler for cmd %u replied twice", r->cmd);
	return true;
}

static void reply_send(struct req *r, uint32_t code, cJSON *payload)
{
	if (reply_twice(r)) {
		cJSON_Delete(payload);
		return;
	}
	reply_send_frame(r, code, outbox_frame_json(r->conn, r->cmd, code, r->seq, payload));
}

void reply_ok_text(struct req *r, const char *json, size_t len)
{
	if (reply_twice(r))
		return;
	reply_send_frame(r, ST_OK, outbox_frame(r->conn, r->cmd, ST_OK, r->seq, json, len));
}

static cJSON *error_payload(const char *fmt, va_list ap)
{
	char buf[512];
	cJSON *o = cJSON_CreateObject();

	vsnprintf(buf, sizeof(buf), fmt, ap);
	cJSON_AddStringToObject(o, "error", buf);
	return o;
}

cJSON *reply_error_payload(const char *fmt, ...)
{
	va_list ap;
	cJSON *o;

	va_start(ap, fmt);
	o = error_payload(fmt, ap);
	va_end(ap);
	return o;
}

void reply_ok(struct req *r, cJSON *payload)
{
	reply_send(r, ST_OK, payload);
}

void reply_err(struct req *r, uint32_t code, const char *fmt, ...)
{
	va_list ap;
	cJSON *o;

	va_start(ap, fmt);
	o = error_payload(fmt, ap);
	va_end(ap);
	reply_send(r, code, o);
}

void reply_db_failed(struct req *r, const char *module, const char *what)
{
	static struct log_gate gate;

	counter_inc(mysql_errors);
	log_limited(&gate, LOG_WARN, "%s: %s failed: %s", module, what, db_errmsg(r->w->db));
	db_rollback(r->w->db);
	reply_err(r, ST_INTERNAL, "storage error while %s; retry later", what);
}

void reply_err_json(struct req *r, uint32_t code, cJSON *payload)
{
	reply_send(r, code, payload);
}

struct pending_reply *reply_defer(struct req *r)
{
	struct pending_reply *p;

	if (r->replied)
		return NULL;
	p = pending_append(r->s, r);
	if (!p) {
		reply_err(r, ST_INTERNAL, "out of memory");
		return NULL;
	}
	r->replied = true;
	atomic_fetch_add_explicit(&deferred, 1, memory_order_seq_cst);
	return p;
}

/* Completes p with m (built for it; freed here if p is orphaned). */
static void reply_complete_frame(struct worker *w, struct pending_reply *p, uint32_t code,
				 struct out_msg *m)
{
	struct session *s;

	atomic_fetch_sub_explicit(&deferred, 1, memory_order_seq_cst);
	if (p->orphan) {
		free(m);
		free(p);
		return;
	}
	count_status(code);
	if (m)
		m->flags |= reply_flags(p->cmd, code);
	p->out = m;
	p->done = true;
	s = session_of(p->conn);
	if (s->conn == p->conn)
		pending_flush(w, s);
}

void reply_complete(struct worker *w, struct pending_reply *p, uint32_t code, cJSON *payload)
{
	if (p->orphan) {
		cJSON_Delete(payload);
		reply_complete_frame(w, p, code, NULL);
		return;
	}
	reply_complete_frame(w, p, code, outbox_frame_json(p->conn, p->cmd, code, p->seq, payload));
}

void reply_complete_text(struct worker *w, struct pending_reply *p, const char *json, size_t len)
{
	reply_complete_frame(w, p, ST_OK,
			     p->orphan ? NULL
				       : outbox_frame(p->conn, p->cmd, ST_OK, p->seq, json, len));
}

/* ---- holding ----------------------------------------------------------------- */

bool session_is_held(const struct session *s)
{
	/* frames still queued run first, even once the hold is released */
	return s->held > 0 || s->held_head;
}

void session_queue(struct session *s, struct in_msg *m)
{
	m->next = NULL;
	if (s->held_tail)
		s->held_tail->next = m;
	else
		s->held_head = m;
	s->held_tail = m;
}

void session_hold(struct session *s)
{
	s->held++;
}

void session_resume(struct worker *w, struct session *s)
{
	struct ready_list *l = &ready[w->id];

	if (s->held)
		s->held--;
	if (s->held || !s->held_head || s->ready)
		return;
	s->ready = true;
	s->ready_next = NULL;
	if (l->tail)
		l->tail->ready_next = s;
	else
		l->head = s;
	l->tail = s;
}

struct in_msg *session_next_ready(struct worker *w)
{
	struct ready_list *l = &ready[w->id];

	while (l->head) {
		struct session *s = l->head;
		struct in_msg *m = s->held_head;

		if (!s->held && m) {
			s->held_head = m->next;
			if (s->held_head)
				return m; /* s stays first: its next frame follows */
			s->held_tail = NULL;
		}
		/* drained, or held again by the frame that ran last: it
		 * leaves the list until its next resume */
		l->head = s->ready_next;
		if (!l->head)
			l->tail = NULL;
		s->ready = false;
		s->ready_next = NULL;
		if (!s->held && m)
			return m;
	}
	return NULL;
}

/* ---- closing ------------------------------------------------------------------ */

static void ready_remove(struct worker *w, struct session *s)
{
	struct ready_list *l = &ready[w->id];
	struct session *prev = NULL;

	for (struct session *it = l->head; it; prev = it, it = it->ready_next) {
		if (it != s)
			continue;
		if (prev)
			prev->ready_next = it->ready_next;
		else
			l->head = it->ready_next;
		if (l->tail == it)
			l->tail = prev;
		return;
	}
}

void session_close(struct worker *w, struct session *s)
{
	struct pending_reply *p = s->pend_head;

	if (s->ready)
		ready_remove(w, s);
	while (s->held_head) {
		struct in_msg *m = s->held_head;

		s->held_head = m->next;
		free(m); /* the connection is gone: nobody to answer */
	}
	while (p) {
		struct pending_reply *next = p->next;

		if (p->done) {
			free(p->out);
			free(p);
		} else {
			p->orphan = true;
		}
		p = next;
	}
	memset(s, 0, sizeof(*s));
}
