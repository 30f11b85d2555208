/*
 * dispatch.c - runs one frame on a worker: the contract's check order,
 * the command table, replies kept in request order, and pushes.
 *
 * Check order (protocol-v1 "Clarifications"): frame errors were handled by
 * the I/O thread; here come unknown command (9), not logged in (2), the
 * payload must be a JSON object (1), the per-connection rate (8), then
 * the handler (which validates its fields and decides the outcome).
 *
 * Reply order: a handler may defer its reply (group commit). While a
 * connection has a deferred reply outstanding, later replies queue behind
 * it in the session's pending list and leave when everything before them
 * is complete. Pushes never wait: they are not replies.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/clock.h"
#include "ringchat/counters.h"
#include "ringchat/dispatch.h"
#include "ringchat/frame.h"
#include "ringchat/handler.h"
#include "ringchat/handlers.h"
#include "ringchat/log.h"
#include "ringchat/protocol.h"
#include "ringchat/request.h"
#ifdef HAVE_STORE
#include "ringchat/db.h"
#include "ringchat/kv.h"
#endif
#ifdef HAVE_PRESENCE
#include "ringchat/presence.h"
#endif
#ifdef HAVE_REGISTRY
#include "ringchat/registry.h"
#endif

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

struct cmd_def {
	handler_fn fn;
};

static void cmd_ping(struct req *r)
{
	cJSON *o = cJSON_CreateObject();

	json_add_int(o, "time_ms", (int64_t)clock_epoch_ms());
	reply_ok(r, o);
}

static const struct cmd_def cmd_table[CMD_MAX] = {
	[CMD_PING] = { cmd_ping },
#ifdef HAVE_AUTH
	[CMD_SIGNUP] = { auth_signup },
	[CMD_LOGIN] = { auth_login },
	[CMD_RESUME] = { auth_resume },
	[CMD_LOGOUT] = { auth_logout },
#endif
#ifdef HAVE_FRIENDS
	[CMD_FRIEND_REQUEST] = { friends_request },
	[CMD_FRIEND_ACCEPT] = { friends_accept },
	[CMD_FRIEND_DELETE] = { friends_delete },
	[CMD_FRIEND_LIST] = { friends_list },
	[CMD_FRIEND_UPDATE] = { friends_update },
#endif
#ifdef HAVE_GROUPS
	[CMD_GROUP_CREATE] = { groups_create },
	[CMD_GROUP_DISSOLVE] = { groups_dissolve },
	[CMD_GROUP_JOIN] = { groups_join },
	[CMD_GROUP_QUIT] = { groups_quit },
	[CMD_GROUP_MEMBERS] = { groups_members },
	[CMD_GROUP_LIST] = { groups_list },
#endif
#ifdef HAVE_MESSAGES
	[CMD_MSG_SEND] = { messages_send },
	[CMD_GROUP_SEND] = { messages_group_send },
	[CMD_MSG_ACK] = { messages_ack },
	[CMD_HISTORY] = { messages_history },
#endif
};

/* Requests of the protocol (pushes are not requests). A request whose
 * module is not built is still checked for login first, then answered
 * UNKNOWN_CMD, so the check order stays the contract's. */
static bool cmd_is_request(uint32_t cmd)
{
	return cmd < CMD_PUSH_MSG && rc_cmd_name(cmd) != NULL;
}

/* ---- frames out --------------------------------------------------------- */

/* An out frame of json[0, len), written by the caller (see json_text.h). */
static struct out_msg *out_frame_text(uint64_t conn, uint16_t cmd, uint32_t code, uint32_t seq,
				      const char *json, size_t len)
{
	struct out_msg *m;
	struct frame_hdr h = {
		.magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = cmd,
		.code = code, .seq = seq, .len = (uint32_t)len,
	};

	if (len > FRAME_MAX_OUT_BYTES)
		return NULL;
	m = malloc(sizeof(*m) + FRAME_HDR_BYTES + len);
	if (!m)
		return NULL;
	m->conn = conn;
	m->flags = 0;
	m->len = (uint32_t)(FRAME_HDR_BYTES + len);
	frame_hdr_encode(m->data, &h);
	memcpy(m->data + FRAME_HDR_BYTES, json, len);
	counter_inc(frames_out);
	return m;
}

static struct out_msg *out_frame(uint64_t conn, uint16_t cmd, uint32_t code, uint32_t seq,
				 cJSON *payload)
{
	char *json = NULL;
	size_t jlen = 0;
	struct out_msg *m;
	struct frame_hdr h = {
		.magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = cmd,
		.code = code, .seq = seq,
	};

	if (payload) {
		json = cJSON_PrintUnformatted(payload);
		cJSON_Delete(payload);
		if (!json)
			return NULL;
		jlen = strlen(json);
		if (jlen > FRAME_MAX_OUT_BYTES) {
			free(json);
			return NULL;
		}
	}
	m = malloc(sizeof(*m) + FRAME_HDR_BYTES + jlen);
	if (!m) {
		free(json);
		return NULL;
	}
	m->conn = conn;
	m->flags = 0;
	m->len = (uint32_t)(FRAME_HDR_BYTES + jlen);
	h.len = (uint32_t)jlen;
	frame_hdr_encode(m->data, &h);
	if (jlen)
		memcpy(m->data + FRAME_HDR_BYTES, json, jlen);
	free(json);
	counter_inc(frames_out);
	return m;
}

static struct session *session_of(struct worker *w, uint64_t conn)
{
	return &w->pool->sessions[CONN_SLOT(conn)];
}

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
			worker_send_out(w, p->out);
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

/* Sends m (NULL: it could not be encoded) as r's reply, in request order. */
static void reply_send_frame(struct req *r, uint32_t code, struct out_msg *m)
{
	struct session *s = r->s;

	r->replied = true;
	if (code < ST_COUNT)
		atomic_fetch_add_explicit(&counters.resp_by_status[code], 1,
					  memory_order_relaxed);
	if (!m) {
		log_error("cannot encode reply to cmd %u", r->cmd);
		m = out_frame(r->conn, r->cmd, ST_INTERNAL, r->seq,
			      reply_error_payload("reply could not be encoded"));
		if (!m)
			return;
	}
	if (r->close_after)
		s->closing = true;
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
	worker_send_out(r->w, m);
}

static void reply_send(struct req *r, uint32_t code, cJSON *payload)
{
	if (r->replied) {
		log_error("handler for cmd %u replied twice", r->cmd);
		cJSON_Delete(payload);
		return;
	}
	reply_send_frame(r, code, out_frame(r->conn, r->cmd, code, r->seq, payload));
}

void reply_ok_text(struct req *r, const char *json, size_t len)
{
	if (r->replied) {
		log_error("handler for cmd %u replied twice", r->cmd);
		return;
	}
	reply_send_frame(r, ST_OK, out_frame_text(r->conn, r->cmd, ST_OK, r->seq, json, len));
}

void push_text_to_conn(struct worker *w, uint64_t conn, uint16_t cmd, const char *json,
		       size_t len)
{
	struct out_msg *m = out_frame_text(conn, cmd, 0, 0, json, len);

	if (m)
		worker_send_out(w, m);
}

cJSON *reply_error_payload(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	cJSON *o = cJSON_CreateObject();

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	cJSON_AddStringToObject(o, "error", buf);
	return o;
}

void reply_ok(struct req *r, cJSON *payload)
{
	reply_send(r, ST_OK, payload ? payload : cJSON_CreateObject());
}

void reply_err(struct req *r, uint32_t code, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	cJSON *o = cJSON_CreateObject();

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	cJSON_AddStringToObject(o, "error", buf);
	reply_send(r, code, o);
}

void reply_db_failed(struct req *r, const char *module, const char *what)
{
	static struct log_gate gate;

	counter_inc(mysql_errors);
#ifdef HAVE_STORE
	log_limited(&gate, LOG_WARN, "%s: %s failed: %s", module, what, db_errmsg(r->w->db));
	db_rollback(r->w->db);
#else
	log_limited(&gate, LOG_WARN, "%s: %s failed", module, what);
#endif
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
	atomic_fetch_add_explicit(&r->w->pool->deferred, 1, memory_order_seq_cst);
	return p;
}

/* Completes p with m (built for it; freed here if p is orphaned). */
static void reply_complete_frame(struct worker *w, struct pending_reply *p, uint32_t code,
				 struct out_msg *m)
{
	struct session *s;

	atomic_fetch_sub_explicit(&w->pool->deferred, 1, memory_order_seq_cst);
	if (p->orphan) {
		free(m);
		free(p);
		return;
	}
	if (code < ST_COUNT)
		atomic_fetch_add_explicit(&counters.resp_by_status[code], 1,
					  memory_order_relaxed);
	p->out = m;
	p->done = true;
	s = session_of(w, p->conn);
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
	reply_complete_frame(w, p, code,
			     out_frame(p->conn, p->cmd, code, p->seq,
				       payload ? payload : cJSON_CreateObject()));
}

void reply_complete_text(struct worker *w, struct pending_reply *p, const char *json, size_t len)
{
	reply_complete_frame(w, p, ST_OK,
			     p->orphan ? NULL
				       : out_frame_text(p->conn, p->cmd, ST_OK, p->seq, json, len));
}

void push_to_conn(struct worker *w, uint64_t conn, uint16_t cmd, cJSON *payload)
{
	struct out_msg *m = out_frame(conn, cmd, 0, 0, payload ? payload : cJSON_CreateObject());

	if (m)
		worker_send_out(w, m);
}

uint8_t *push_encode(uint16_t cmd, const cJSON *payload, uint32_t *len)
{
	char *json = cJSON_PrintUnformatted(payload);
	size_t jlen;
	uint8_t *buf;
	struct frame_hdr h = {
		.magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = cmd,
	};

	if (!json)
		return NULL;
	jlen = strlen(json);
	h.len = (uint32_t)jlen;
	buf = malloc(FRAME_HDR_BYTES + jlen);
	if (buf) {
		frame_hdr_encode(buf, &h);
		memcpy(buf + FRAME_HDR_BYTES, json, jlen);
		*len = (uint32_t)(FRAME_HDR_BYTES + jlen);
	}
	free(json);
	return buf;
}

void push_bytes_to_conn(struct worker *w, uint64_t conn, const uint8_t *frame, uint32_t len)
{
	struct out_msg *m = malloc(sizeof(*m) + len);

	if (!m)
		return;
	m->conn = conn;
	m->flags = 0;
	m->len = len;
	memcpy(m->data, frame, len);
	counter_inc(frames_out);
	worker_send_out(w, m);
}

void conn_close_after_flush(struct worker *w, uint64_t conn)
{
	struct out_msg *m = malloc(sizeof(*m));

	if (!m)
		return;
	m->conn = conn;
	m->flags = OUT_CLOSE;
	m->len = 0;
	worker_send_out(w, m);
}

/* ---- sessions ------------------------------------------------------------ */

/* Forget the session of a connection that is gone. Replies still waiting
 * for a group commit are orphaned: the committer still holds them and
 * frees them when it completes. */
static void session_end(struct worker *w, struct session *s)
{
	struct pending_reply *p = s->pend_head;

#ifdef HAVE_AUTH
	if (s->user_id)
		auth_on_close(w, s);
#else
	(void)w;
#endif
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

/* A framing error found by the I/O thread: answered here so that it
 * leaves after the replies to the frames that came before it. */
static void bad_frame(struct worker *w, struct session *s, const struct in_msg *m)
{
	struct req r = {
		.w = w, .s = s, .conn = m->conn, .cmd = m->hdr.cmd, .seq = m->hdr.seq,
		.close_after = true,
	};
	const char *why = m->hdr.code == ST_BAD_FRAME ? "bad frame: wrong magic"
			  : m->hdr.code == ST_FRAME_TOO_LARGE
				  ? "frame too large: len exceeds max_frame"
				  : "unsupported protocol version";

	if (s->closing)
		return;
	reply_err(&r, m->hdr.code, "%s", why);
}

/* A JSON payload must be exactly one object: nothing but white space may
 * follow it, and no string may hold a NUL (C strings would silently cut
 * it short: "secret\u0000junk" must not compare equal to "secret"). */
static bool payload_has_nul(const uint8_t *p, uint32_t n)
{
	if (memchr(p, 0, n))
		return true;
	for (uint32_t i = 0; i + 5 < n; i++) {
		if (p[i] == '\\') {
			if (p[i + 1] == 'u' && p[i + 2] == '0' && p[i + 3] == '0' &&
			    p[i + 4] == '0' && p[i + 5] == '0')
				return true;
			i++; /* skip the escaped character */
		}
	}
	return false;
}

static cJSON *parse_object(const uint8_t *p, uint32_t n)
{
	const char *end = NULL;
	cJSON *o;

	if (payload_has_nul(p, n))
		return NULL;
	o = cJSON_ParseWithLengthOpts((const char *)p, n, &end, 0);
	if (!o)
		return NULL;
	while (end && end < (const char *)p + n &&
	       (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
		end++;
	if (!cJSON_IsObject(o) || !end || end != (const char *)p + n) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

void session_hold(struct session *s)
{
	s->held++;
}

void session_resume(struct worker *w, struct session *s)
{
	uint64_t conn = s->conn;

	if (s->held)
		s->held--;
	while (!s->held && s->conn == conn && s->held_head) {
		struct in_msg *m = s->held_head;

		s->held_head = m->next;
		if (!s->held_head)
			s->held_tail = NULL;
		dispatch_in(w, m);
	}
}

/* Token bucket per connection: rate_msgs_per_s refill, rate_burst depth.
 * Returns 0 when allowed, else the milliseconds until a token is due. */
static uint64_t rate_take(const struct config *cfg, struct session *s, uint64_t now)
{
	double rate = cfg->rate_msgs_per_s, burst = cfg->rate_burst;

	if (!s->rate_last_ms) {
		s->rate_tokens = burst;
		s->rate_last_ms = now;
	}
	s->rate_tokens += (double)(now - s->rate_last_ms) * rate / 1000.0;
	if (s->rate_tokens > burst)
		s->rate_tokens = burst;
	s->rate_last_ms = now;
	if (s->rate_tokens >= 1.0) {
		s->rate_tokens -= 1.0;
		return 0;
	}
	return (uint64_t)((1.0 - s->rate_tokens) * 1000.0 / rate) + 1;
}

void dispatch_in(struct worker *w, struct in_msg *m)
{
	struct session *s = session_of(w, m->conn);
	const struct cmd_def *def;
	struct req r = { 0 };
	uint64_t wait_ms;

	if (s->conn != m->conn) {
		if (s->conn)
			session_end(w, s); /* IN_CLOSED of the slot's last user was lost? */
		s->conn = m->conn;
		s->peer_addr = m->peer_addr;
		s->peer_port = m->peer_port;
	}
	if (m->kind == IN_CLOSED) {
		session_end(w, s);
		free(m);
		return;
	}
	if (s->held) {
		m->next = NULL;
		if (s->held_tail)
			s->held_tail->next = m;
		else
			s->held_head = m;
		s->held_tail = m;
		return;
	}
	if (m->kind == IN_BAD_FRAME) {
		bad_frame(w, s, m);
		free(m);
		return;
	}
	if (s->closing)
		goto out_free; /* LOGOUT or kick already answered: ignore the rest */

	r.w = w;
	r.s = s;
	r.conn = m->conn;
	r.cmd = m->hdr.cmd;
	r.seq = m->hdr.seq;
	if (r.cmd < CMD_MAX)
		atomic_fetch_add_explicit(&counters.req_by_cmd[r.cmd], 1, memory_order_relaxed);

	if (!cmd_is_request(r.cmd)) {
		reply_err(&r, ST_UNKNOWN_CMD, "unknown command %u", r.cmd);
		goto out_free;
	}
	def = &cmd_table[r.cmd];
	if (!s->user_id && r.cmd != CMD_PING && r.cmd != CMD_SIGNUP &&
	    r.cmd != CMD_LOGIN && r.cmd != CMD_RESUME) {
		reply_err(&r, ST_NOT_LOGGED_IN, "log in first");
		goto out_free;
	}
	if (m->hdr.len == 0) {
		r.body = cJSON_CreateObject();
	} else {
		r.body = parse_object(m->payload, m->hdr.len);
		if (!r.body) {
			reply_err(&r, ST_BAD_REQUEST,
				  "payload must be one JSON object (UTF-8, no NUL characters)");
			goto out_free;
		}
	}
	wait_ms = rate_take(w->pool->cfg, s, clock_mono_ms());
	if (wait_ms) {
		cJSON *o = reply_error_payload("rate limit: %d requests/s, burst %d",
					       w->pool->cfg->rate_msgs_per_s,
					       w->pool->cfg->rate_burst);

		counter_inc(rate_limited);
		json_add_int(o, "retry_after_ms", (int64_t)wait_ms);
		reply_err_json(&r, ST_RATE_LIMITED, o);
		goto out_free;
	}
	if (!def->fn) {
		reply_err(&r, ST_UNKNOWN_CMD, "command %s is not served by this node",
			  rc_cmd_name(r.cmd));
		goto out_free;
	}
	def->fn(&r);
	if (!r.replied) {
		log_error("handler for %s returned without a reply", rc_cmd_name(r.cmd));
		reply_err(&r, ST_INTERNAL, "internal error");
	}
out_free:
	cJSON_Delete(r.body);
	free(m);
}

/* ---- worker and global hooks --------------------------------------------- */

int dispatch_worker_start(struct worker *w)
{
#ifdef HAVE_STORE
	db_thread_init();
	w->db = db_open(w->pool->cfg);
	w->kv = kv_open(w->pool->cfg);
	if (!w->db || !w->kv)
		return -1;
#else
	(void)w;
#endif
	return 0;
}

void dispatch_worker_stop(struct worker *w)
{
	struct worker_pool *p = w->pool;

	/* The I/O thread has closed every connection without telling the
	 * workers (it is gone). End this worker's sessions here, so users
	 * are marked offline in Redis now rather than when their presence
	 * TTL runs out, and their friends elsewhere hear of it. */
	for (uint32_t slot = (uint32_t)w->id; slot < p->nsessions; slot += (uint32_t)p->n)
		if (p->sessions[slot].conn)
			session_end(w, &p->sessions[slot]);
#ifdef HAVE_STORE
	if (w->db)
		db_close(w->db);
	if (w->kv)
		kv_close(w->kv);
	w->db = NULL;
	w->kv = NULL;
	db_thread_end();
#else
	(void)w;
#endif
}

bool dispatch_poll(struct worker *w)
{
	bool did = false;

#if defined(HAVE_PRESENCE) && defined(HAVE_STORE)
	presence_refresh(w);
#endif
#ifdef HAVE_MESSAGES
	did = messages_poll(w);
#endif
	(void)w;
	return did;
}

bool dispatch_has_work(struct worker *w)
{
#ifdef HAVE_MESSAGES
	return messages_has_work(w);
#else
	(void)w;
	return false;
#endif
}

int dispatch_global_init(struct worker_pool *pool)
{
	int ret = 0;

#ifdef HAVE_STORE
	db_global_init();
#endif
#ifdef HAVE_REGISTRY
	ret = registry_init();
	if (ret)
		return ret;
#endif
#ifdef HAVE_AUTH
	ret = auth_global_init(pool);
	if (ret)
		return ret;
#endif
#ifdef HAVE_MESSAGES
	ret = messages_global_init(pool);
#endif
	(void)pool;
	return ret;
}

void dispatch_global_stop(struct worker_pool *pool)
{
	(void)pool;
#ifdef HAVE_MESSAGES
	messages_global_stop();
#endif
#ifdef HAVE_AUTH
	auth_global_stop();
#endif
#ifdef HAVE_REGISTRY
	registry_destroy();
#endif
}
