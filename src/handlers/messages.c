/*
 * messages.c - MSG_SEND, GROUP_SEND, MSG_ACK, HISTORY, and the push of
 * unacknowledged messages at login.
 *
 * Durability modes (config `durability`):
 *
 *   stored (default)  A send is answered OK only once its row is committed
 *                     by the group-commit writer (commit.h): the reply is
 *                     deferred, later replies of the connection wait behind
 *                     it, and OK means the message survives any crash and
 *                     is in HISTORY. If storage stays down for
 *                     COMMIT_RETRY_MS the sender gets 12 INTERNAL and the
 *                     message is NOT accepted (the client sends it again).
 *   relay             A send is answered OK as soon as it is pushed and
 *                     handed to the writer, which nobody waits for:
 *                     - a 1:1 message its recipient got (here or on
 *                       another node) is held, whole row and unread mark,
 *                       in the writer's memory for unread_defer_ms
 *                       (hold_row, commit.h). An ack within that time
 *                       drops it: nothing is ever written (relay's speed).
 *                       Otherwise it is written when due, when its
 *                       recipient logs in anywhere (the login's flush), or
 *                       at a clean stop, and the recipient's next login
 *                       pushes it: a push into a half-open connection is
 *                       not lost. With unread_defer_ms 0 it is written at
 *                       once, in the background.
 *                     - a group message whose members but the sender
 *                       were all online at send time is held the same
 *                       way, with the members as the ones owing an ack
 *                       (owe_ids): when every one of them acked in time,
 *                       nothing is written, no row and no cursor moved.
 *                       Otherwise the one row is written when due or at
 *                       an owing member's login, and the cursors make
 *                       every member get it at its next login (again for
 *                       those that had acked it: at least once).
 *                     - a 1:1 message to a recipient not online, and a
 *                       group message with a member not online (one row;
 *                       the members' read cursors say who still needs it
 *                       at login), is written in the background.
 *                     What relay can lose is what a crash (SIGKILL, power)
 *                     takes: the rows held in memory or not yet committed
 *                     at that moment. HISTORY lacks messages acked within
 *                     the hold time (by every member, for a group), and
 *                     client_msg_id retries are recognised only by the
 *                     worker that saw the first attempt (memory, not the
 *                     database).
 *
 * The send path (stored mode), on the sender's worker, with no database
 * round trip when the caches are warm:
 *
 *   validate ─► friendship / membership (cache) ─► conversation id (cache)
 *     ─► msg_id (ids.c) and send_time ─► hand the row to the writer, defer
 *     the reply
 *   ... writer commits the batch, hands the row back ...
 *   ─► push to the recipients online now (a recipient that logged in
 *      meanwhile is covered: LOGIN registers the session before it reads
 *      the unacked rows, so either that read sees the committed row or
 *      this push finds the session) ─► reply OK
 *
 * Every stored-mode message is "held": pushed only after its row is
 * committed. A message a recipient has seen is therefore always stored
 * under the msg_id it was shown with; a send that fails (12) was never
 * shown to anyone, and the client's retry, with a new msg_id, is the only
 * copy anyone sees. (Pushing before the commit saved the recipient one
 * batch of latency, but a batch that then failed left a message seen
 * under an id that was never stored, and its sender, told 12, sent it
 * again as a second message.) The database's unique key (from_id,
 * client_msg_id) is the one judge of a retry, checked by the insert
 * itself: a retry whose first attempt is stored comes back from the
 * writer as "stored before" with the first msg_id, and is not pushed
 * again. A per-worker cache of committed (from_id, client_msg_id) answers
 * the common retry at once. Completions come back in submission order, so
 * one sender's pushes keep the order of the sends.
 *
 * Per-worker state (struct msg_worker) is touched only by its worker: the
 * caches of conversation ids (never invalidated: the mapping never
 * changes), friendships and member lists (TTL + social_changed epoch, see
 * messages.h), and the retry cache.
 * Friendships are cached only when true and member lists are re-read when
 * the sender is not in them, so a friendship or membership made a moment
 * ago is never refused because of the cache.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringchat/clock.h"
#include "ringchat/cluster.h"
#include "ringchat/commit.h"
#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/session.h"
#include "ringchat/auth.h"
#include "ringchat/ids.h"
#include "ringchat/json_text.h"
#include "ringchat/log.h"
#include "ringchat/login_push.h"
#include "ringchat/msgrow.h"
#include "ringchat/messages.h"
#include "ringchat/outbox.h"
#include "ringchat/protocol.h"
#include "ringchat/request.h"
#include "ringchat/router.h"
#include "ringchat/social.h"
#include "ringchat/worker.h"

#define MSG_ACK_MAX 1000 /* ids in one MSG_ACK */
#define MSG_CMID_MAX 64	 /* bytes of a client_msg_id */
#define MSG_HISTORY_DEFAULT 50
#define MSG_HISTORY_MAX 200
#define MSG_DEDUP_SETS 1024 /* retry cache: sets x ways entries per worker */
#define MSG_DEDUP_WAYS 4
#define MSG_ROOM_WAIT_US 200	   /* pause while the writer's lane is full */


enum msg_item_flags {
	MSG_HELD = 1u << 0,  /* push to every recipient only after the commit */
	MSG_RELAY = 1u << 1, /* relay mode: nobody waits for this row */
	MSG_FLUSH_ONLY = 1u << 2, /* a flush nobody logs in behind (logout, a kick) */
	MSG_FLUSH_REMOTE = 1u << 3, /* ... and another node waits for it: remote */
};

/* ---- per-worker state ------------------------------------------------------ */

/* A committed (from_id, client_msg_id) and what its send answered. */
struct msg_dedup {
	int64_t from; /* 0 = empty */
	int64_t msg_id, conv, send_time;
	uint64_t stamp;
	uint8_t len;
	char cmid[MSG_CMID_MAX];
};

struct msg_worker {
	char *jbuf; /* PUSH_MSG text being built (msg_push_text) */
	size_t jcap;
	struct msg_dedup *dedup; /* MSG_DEDUP_SETS * MSG_DEDUP_WAYS */
	uint64_t dedup_clock;
	struct msg_item *backlog, *backlog_tail; /* completions taken, not yet handled */
	bool *delivered; /* scratch for router_push_users */
	int64_t *ids;	 /* scratch: recipients of a late push */
	size_t scratch_cap;
};

/* A message or ack on its way through the writer. */
struct msg_item {
	struct commit_item ci;
	struct pending_reply *reply; /* the sender's, NULL when nobody waits */
	uint8_t flags;		 /* enum msg_item_flags */
	bool to_pushed;		 /* 1:1: the recipient got it at send time */
	struct social_group *group; /* group rows: the members at send time */
	uint8_t *pushed;	 /* group rows not held: bit per member, got it */
	uint64_t conn;		 /* COMMIT_FLUSH_UNREAD: the logging-in connection */
	struct cluster_req remote; /* MSG_FLUSH_REMOTE: the node to answer */
	struct msg_item *next;	 /* on the worker's backlog (msg_wait_room) */
	char data[];		 /* text, client_msg_id, pushed bits */
};

static int msg_nworkers;
static struct msg_worker *msg_workers;
static struct msg_worker *msg_worker_of(struct worker *w)
{
	return &msg_workers[w->id];
}

static bool msg_scratch_reserve(struct msg_worker *mw, size_t n)
{
	bool *d;
	int64_t *ids;

	if (n <= mw->scratch_cap)
		return true;
	d = realloc(mw->delivered, n * sizeof(*d));
	if (!d)
		return false;
	mw->delivered = d;
	ids = realloc(mw->ids, n * sizeof(*ids));
	if (!ids)
		return false;
	mw->ids = ids;
	mw->scratch_cap = n;
	return true;
}

/* ---- retry cache (client_msg_id) ---------------------------------------------- */

static struct msg_dedup *msg_dedup_set(struct msg_worker *mw, int64_t from, const char *cmid,
				       size_t len)
{
	uint64_t h = (uint64_t)from * 0x9e3779b97f4a7c15ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)cmid[i]) * 0x100000001b3ull; /* FNV-1a step */
	h ^= h >> 29;
	return &mw->dedup[(h % MSG_DEDUP_SETS) * MSG_DEDUP_WAYS];
}

static struct msg_dedup *msg_dedup_find(struct msg_worker *mw, int64_t from, const char *cmid,
					size_t len)
{
	struct msg_dedup *set = msg_dedup_set(mw, from, cmid, len);

	for (int i = 0; i < MSG_DEDUP_WAYS; i++)
		if (set[i].from == from && set[i].len == len && !memcmp(set[i].cmid, cmid, len))
			return &set[i];
	return NULL;
}

/* Remembers a committed send; the least recently stored way makes room. */
static void msg_dedup_put(struct msg_worker *mw, const struct commit_item *ci)
{
	struct msg_dedup *d = msg_dedup_find(mw, ci->from_id, ci->cmid, ci->cmid_len);

	if (!d) {
		struct msg_dedup *set = msg_dedup_set(mw, ci->from_id, ci->cmid, ci->cmid_len);

		d = &set[0];
		for (int i = 1; i < MSG_DEDUP_WAYS; i++)
			if (set[i].stamp < d->stamp)
				d = &set[i];
	}
	d->from = ci->from_id;
	d->len = (uint8_t)ci->cmid_len;
	memcpy(d->cmid, ci->cmid, ci->cmid_len);
	d->msg_id = ci->msg_id;
	d->conv = ci->conversation_id;
	d->send_time = ci->send_time;
	d->stamp = ++mw->dedup_clock;
}

/* ---- JSON -------------------------------------------------------------------- */


static cJSON *msg_item_json(const struct commit_item *ci)
{
	return msgrow_json_of(ci->msg_id, ci->conversation_id, ci->from_id, ci->to_id, ci->group_id,
			ci->type, ci->text, ci->send_time);
}

#define JLIT(p, lit) json_put_raw((p), (lit), sizeof(lit) - 1)

/*
 * ci's PUSH_MSG payload as JSON text in mw's scratch buffer (the same
 * fields as msg_json). Returns NULL when out of memory. Every message
 * makes one, so no cJSON tree is built for it.
 */
static const char *msg_push_text(struct msg_worker *mw, const struct commit_item *ci,
				 size_t *len)
{
	size_t need = json_str_len(ci->text, ci->text_len) + 7 * JSON_I64_MAX_BYTES + 96;
	char *p;

	if (need > mw->jcap) {
		char *b = realloc(mw->jbuf, need);

		if (!b)
			return NULL;
		mw->jbuf = b;
		mw->jcap = need;
	}
	p = JLIT(mw->jbuf, "{\"msg_id\":");
	p = json_put_i64(p, ci->msg_id);
	p = JLIT(p, ",\"conversation_id\":");
	p = json_put_i64(p, ci->conversation_id);
	p = JLIT(p, ",\"from\":");
	p = json_put_i64(p, ci->from_id);
	if (ci->group_id) {
		p = JLIT(p, ",\"group_id\":");
		p = json_put_i64(p, ci->group_id);
	} else {
		p = JLIT(p, ",\"to\":");
		p = json_put_i64(p, ci->to_id);
	}
	p = JLIT(p, ",\"type\":");
	p = json_put_i64(p, ci->type);
	p = JLIT(p, ",\"text\":");
	p = json_put_str(p, ci->text, ci->text_len);
	p = JLIT(p, ",\"send_time\":");
	p = json_put_i64(p, ci->send_time);
	*p++ = '}';
	*len = (size_t)(p - mw->jbuf);
	return mw->jbuf;
}

/* Pushes ci to its 1:1 recipient if online here; true when handed over. */
static bool msg_push_to(struct worker *w, const struct commit_item *ci)
{
	size_t len;
	const char *json = msg_push_text(msg_worker_of(w), ci, &len);

	if (json)
		return router_push_user_text(w, ci->to_id, CMD_PUSH_MSG, json, len);
	/* out of memory for the text: the tree may still fit */
	return router_push_user(w, ci->to_id, CMD_PUSH_MSG, msg_item_json(ci));
}

/* The OK payload of a send: {"msg_id", "conversation_id", "send_time"}. */
struct msg_result_text {
	char s[3 * JSON_I64_MAX_BYTES + 48];
	size_t len;
};

static void msg_result_text(struct msg_result_text *t, int64_t msg_id, int64_t conv,
			    int64_t send_time)
{
	char *p = JLIT(t->s, "{\"msg_id\":");

	p = json_put_i64(p, msg_id);
	p = JLIT(p, ",\"conversation_id\":");
	p = json_put_i64(p, conv);
	p = JLIT(p, ",\"send_time\":");
	p = json_put_i64(p, send_time);
	*p++ = '}';
	t->len = (size_t)(p - t->s);
}

/* Storage warnings: every message of an outage would repeat them. */
static struct log_gate msg_gate;

#define msg_warn(fmt, ...) log_limited(&msg_gate, LOG_WARN, "messages: " fmt, __VA_ARGS__)

static void msg_db_failed(struct req *r, int rc, const char *what)
{
	counter_inc(mysql_errors);
	msg_warn("%s failed: %s", what, db_errmsg(r->w->db));
	reply_err(r, ST_INTERNAL, "storage %s while %s; try again",
		  rc == DB_ERR_DOWN ? "unavailable" : "error", what);
}

/* ---- the writer's lane ------------------------------------------------------- */

/*
 * Waits until w may submit one item to the writer. Completions taken to
 * make room are only queued on the backlog: their handling (replies,
 * late pushes, a login's flush) runs from the worker loop in
 * messages_poll, never inside the handler that is waiting here.
 */
static void msg_wait_room(struct worker *w)
{
	struct msg_worker *mw = msg_worker_of(w);

	while (!commit_has_room(w->id)) {
		struct msg_item *it = (struct msg_item *)commit_take(w->id);

		if (!it) {
			usleep(MSG_ROOM_WAIT_US);
			continue;
		}
		it->next = NULL;
		if (mw->backlog_tail)
			mw->backlog_tail->next = it;
		else
			mw->backlog = it;
		mw->backlog_tail = it;
	}
}

static struct msg_item *msg_item_new(const struct commit_item *src, size_t bits_bytes)
{
	size_t cmid_len = src->cmid ? src->cmid_len : 0;
	struct msg_item *it = malloc(sizeof(*it) + src->text_len + 1 + cmid_len + bits_bytes);
	char *p;

	if (!it)
		return NULL;
	memset(it, 0, sizeof(*it));
	it->ci = *src;
	p = it->data;
	memcpy(p, src->text, src->text_len + 1);
	it->ci.text = p;
	p += src->text_len + 1;
	if (src->cmid) {
		memcpy(p, src->cmid, cmid_len);
		it->ci.cmid = p;
		p += cmid_len;
	}
	if (bits_bytes) {
		memset(p, 0, bits_bytes);
		it->pushed = (uint8_t *)p;
	}
	return it;
}

static void msg_item_free(struct msg_item *it)
{
	social_group_put(it->group);
	free(it);
}

/* ---- delivery ------------------------------------------------------------------ */

/* Pushes a group message to every online member but the sender; fills
 * mw->delivered[0..n) when it can. Returns how many got it. */
static size_t msg_push_group(struct worker *w, const struct commit_item *ci, const int64_t *ids,
			     size_t n, bool *delivered)
{
	cJSON *o = msg_item_json(ci);
	size_t got;

	if (!o)
		return 0;
	got = router_push_users(w, ids, n, ci->from_id, CMD_PUSH_MSG, o, delivered);
	cJSON_Delete(o);
	counter_add(msgs_pushed, got);
	return got;
}

/* After the commit: the pushes a held message still owes, or those for
 * recipients that were offline at send time. */
static void msg_deliver_late(struct worker *w, struct msg_item *it)
{
	struct msg_worker *mw = msg_worker_of(w);
	const struct commit_item *ci = &it->ci;
	bool held = it->flags & MSG_HELD;

	if (!ci->group_id) {
		/* the registry check first spares building a push for a
		 * recipient who is (still) not here, the common case */
		if ((!held && it->to_pushed) || router_where(w, ci->to_id).kind == ROUTE_OFFLINE)
			return;
		if (msg_push_to(w, ci))
			counter_inc(msgs_pushed);
		return;
	}
	if (!it->group)
		return;
	if (held || !it->pushed) {
		msg_push_group(w, ci, it->group->ids, it->group->n, NULL);
		return;
	}
	if (!msg_scratch_reserve(mw, it->group->n))
		return;
	size_t k = 0;

	for (size_t i = 0; i < it->group->n; i++)
		if (!(it->pushed[i / 8] & (1u << (i % 8))) &&
		    router_where(w, it->group->ids[i]).kind != ROUTE_OFFLINE)
			mw->ids[k++] = it->group->ids[i];
	if (k)
		msg_push_group(w, ci, mw->ids, k, NULL);
}

static void msg_flushed(struct worker *w, struct msg_item *it);

/* A message or ack back from the writer. */
static void msg_complete(struct worker *w, struct msg_item *it)
{
	struct msg_worker *mw = msg_worker_of(w);
	struct commit_item *ci = &it->ci;
	bool ok = ci->status == ST_OK;

	if (ci->kind == COMMIT_FLUSH_UNREAD) {
		msg_flushed(w, it);
		return;
	}
	if (ci->kind == COMMIT_ACK) {
		if (it->reply && ok)
			reply_complete_text(w, it->reply, "{}", 2);
		else if (it->reply)
			reply_complete(w, it->reply, ci->status,
				       reply_error_payload("%s", ci->error));
		free((void *)ci->ack_ids);
		free(it);
		return;
	}
	if (ok) {
		/* stored before under another msg_id: that send delivered it */
		if (!ci->stored_other)
			msg_deliver_late(w, it);
		if (ci->cmid && !(it->flags & MSG_RELAY))
			msg_dedup_put(mw, ci);
		if (!(it->flags & MSG_RELAY))
			counter_inc(msgs_accepted);
	} else if (it->flags & MSG_RELAY) {
		msg_warn("relay: message %" PRId64 " not stored: %s", ci->msg_id, ci->error);
	}
	if (it->reply && ok) {
		struct msg_result_text t;

		msg_result_text(&t, ci->msg_id, ci->conversation_id, ci->send_time);
		reply_complete_text(w, it->reply, t.s, t.len);
	} else if (it->reply) {
		reply_complete(w, it->reply, ci->status, reply_error_payload("%s", ci->error));
	}
	msg_item_free(it);
}

bool messages_poll(struct worker *w)
{
	struct msg_worker *mw;
	struct commit_item *ci;
	bool did = false;

	if (!msg_workers)
		return false; /* not started (unit tests of dispatch) */
	mw = msg_worker_of(w);
	/* taken earlier than anything still queued: first */
	while (mw->backlog) {
		struct msg_item *it = mw->backlog;

		mw->backlog = it->next;
		if (!mw->backlog)
			mw->backlog_tail = NULL;
		msg_complete(w, it);
		did = true;
	}
	while ((ci = commit_take(w->id))) {
		msg_complete(w, (struct msg_item *)ci);
		did = true;
	}
	return did;
}

bool messages_has_work(struct worker *w)
{
	return msg_workers && (commit_inflight(w->id) > 0 || msg_worker_of(w)->backlog);
}

/* ---- sending ----------------------------------------------------------------- */

/* Pushes ci at send time to its online recipients (relay mode): for a
 * 1:1 message *to_pushed says whether its recipient got it, for a group
 * message mw->delivered says who did. */
static void msg_push_now(struct worker *w, const struct commit_item *ci, struct social_group *g,
			 bool *to_pushed)
{
	struct msg_worker *mw = msg_worker_of(w);

	if (!g) {
		*to_pushed = msg_push_to(w, ci);
		if (*to_pushed)
			counter_inc(msgs_pushed);
		return;
	}
	msg_push_group(w, ci, g->ids, g->n, mw->delivered);
}

/* Copies mw->delivered (from msg_push_now) into the item's bits. */
static void msg_note_pushed(struct msg_worker *mw, struct msg_item *it, int64_t from)
{
	const struct social_group *g = it->group;

	if (!it->pushed)
		return;
	for (size_t i = 0; i < g->n; i++)
		if (mw->delivered[i] || g->ids[i] == from)
			it->pushed[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* True when every member of g but from is logged in, here or on another
 * node: the push will reach each of them (or the node they are on). */
static bool msg_group_all_online(struct worker *w, const struct social_group *g, int64_t from)
{
	for (size_t i = 0; i < g->n; i++)
		if (g->ids[i] != from && router_where(w, g->ids[i]).kind == ROUTE_OFFLINE)
			return false;
	return true;
}

/*
 * Relay mode: hand the row to the writer, push, answer OK (see the top of
 * this file). A 1:1 row whose recipient is online, and a group row whose
 * members but the sender all are, is held by the writer (a group row with
 * the members as the ones owing an ack); it is submitted before the push,
 * so an ack, submitted after the push, cannot reach the writer long
 * before it (an ack that did would find nothing to drop, and the row
 * would be written: pushed again at a login, at least once). A row held
 * whose push then failed (a recipient left meanwhile) is written when
 * due or at that recipient's login. Takes over g.
 */
static void msg_send_relay(struct req *r, struct commit_item *ci, struct social_group *g)
{
	struct worker *w = r->w;
	struct msg_worker *mw = msg_worker_of(w);
	bool to_pushed = false, queued = false;
	struct msg_item *it;

	msg_wait_room(w);
	it = msg_item_new(ci, g ? (g->n + 7) / 8 : 0);
	if (it) {
		it->flags = MSG_RELAY;
		it->group = g;
		it->ci.hold_row = commit_defers_unread() &&
				  (g ? msg_group_all_online(w, g, ci->from_id)
				     : router_where(w, ci->to_id).kind != ROUTE_OFFLINE);
		if (g && it->ci.hold_row) {
			/* g stays ours (it->group) until the item is back */
			it->ci.owe_ids = g->ids;
			it->ci.nowe = (uint32_t)g->n;
		}
		/* room was made above and nothing was submitted since; from
		 * here on the writer may read it->ci, the rest stays ours */
		queued = commit_submit(w->id, &it->ci);
		if (!queued) {
			log_error("messages: relay: writer lane full; message %" PRId64
				  " not stored",
				  ci->msg_id);
			it->group = NULL;
			msg_item_free(it);
			it = NULL;
		}
	} else {
		log_error("messages: relay: out of memory; message %" PRId64 " not stored",
			  ci->msg_id);
	}
	msg_push_now(w, ci, g, &to_pushed);
	counter_inc(msgs_accepted);
	{
		struct msg_result_text t;

		msg_result_text(&t, ci->msg_id, ci->conversation_id, ci->send_time);
		reply_ok_text(r, t.s, t.len);
	}
	if (ci->cmid)
		msg_dedup_put(mw, ci);
	if (!queued) {
		social_group_put(g);
		return;
	}
	/* read by msg_complete, on this thread, after the writer is done */
	it->to_pushed = to_pushed;
	msg_note_pushed(mw, it, ci->from_id);
}

/*
 * Everything after the checks, shared by MSG_SEND and GROUP_SEND. ci holds
 * the row with text and cmid pointing into the request; g (group sends)
 * is a reference this function takes over.
 */
static void msg_send(struct req *r, struct commit_item *ci, struct social_group *g)
{
	struct worker *w = r->w;
	struct msg_worker *mw = msg_worker_of(w);
	struct msg_item *it;
	struct msg_dedup *d;

	if (ci->cmid && (d = msg_dedup_find(mw, ci->from_id, ci->cmid, ci->cmid_len))) {
		/* a retry of a send that was answered OK: same answer, no push */
		struct msg_result_text t;

		msg_result_text(&t, d->msg_id, d->conv, d->send_time);
		reply_ok_text(r, t.s, t.len);
		social_group_put(g);
		return;
	}
	ci->msg_id = ids_next();
	ci->send_time = (int64_t)clock_epoch_ms();
	if (!ci->msg_id) {
		log_error("messages: msg_id space exhausted");
		reply_err(r, ST_INTERNAL, "cannot assign a message id");
		social_group_put(g);
		return;
	}
	if (g && !msg_scratch_reserve(mw, g->n))
		goto out_nomem;
	if (w->cfg->durability == DURABILITY_RELAY) {
		msg_send_relay(r, ci, g);
		return;
	}
	it = msg_item_new(ci, 0);
	if (!it)
		goto out_nomem;
	it->group = g;
	/* pushed after the commit (see the top of this file) */
	it->flags |= MSG_HELD;
	/* An offline recipient may log in on any node, which does not know
	 * to ask this one for held marks: its mark goes with the row. A
	 * recipient on another node acks there, and that node forwards the
	 * ack here (cluster_forward_acks), so its mark can be held. */
	if (!g && cluster_enabled())
		it->ci.mark_now = router_where(w, ci->to_id).kind == ROUTE_OFFLINE;
	msg_wait_room(w);
	it->reply = reply_defer(r);
	if (!it->reply) {
		/* reply_defer answered INTERNAL already */
		msg_item_free(it);
		return;
	}
	/* From here on the writer may touch it->ci; the item's other
	 * fields are ours until it comes back on this thread. */
	if (!commit_submit(w->id, &it->ci)) {
		/* room was made above and nothing was submitted since */
		log_error("messages: writer lane full after waiting for room");
		reply_complete(w, it->reply, ST_INTERNAL,
			       reply_error_payload("internal queue full"));
		msg_item_free(it);
		return;
	}
	return;

out_nomem:
	social_group_put(g);
	reply_err(r, ST_INTERNAL, "out of memory");
}

/* Reads type, text and client_msg_id into ci; false after a reply. */
static bool msg_read_content(struct req *r, struct commit_item *ci)
{
	int64_t type;
	const char *text, *cmid;
	bool has_cmid;

	if (!req_int(r, "type", 0, 2, &type) ||
	    !req_str(r, "text", 1, (size_t)r->w->cfg->text_max, &text) ||
	    !req_opt_str(r, "client_msg_id", 0, MSG_CMID_MAX, &cmid, &has_cmid))
		return false;
	ci->kind = COMMIT_INSERT_MSG;
	ci->type = (int)type;
	ci->text = text;
	ci->text_len = (uint32_t)strlen(text);
	/* an empty key would make every such message of a user one message */
	if (has_cmid && cmid[0]) {
		ci->cmid = cmid;
		ci->cmid_len = (uint32_t)strlen(cmid);
	}
	return true;
}

/* 6 FORBIDDEN for an existing user who is not a friend, else 5. */
static void msg_not_friends(struct req *r, int64_t uid)
{
	int rc = social_user_exists(r->w, uid);

	if (rc < 0)
		msg_db_failed(r, rc, "looking up the user");
	else if (rc)
		reply_err(r, ST_FORBIDDEN, "user %" PRId64 " is not your friend", uid);
	else
		reply_err(r, ST_NOT_FOUND, "no user %" PRId64, uid);
}

void messages_send(struct req *r)
{
	struct worker *w = r->w;
	int64_t me = r->s->user_id, to, conv;
	struct commit_item ci = {0};
	int rc;

	social_refresh(w);
	if (!req_id(r, "to", &to) || !msg_read_content(r, &ci))
		return;
	rc = social_are_friends(w, me, to);
	if (rc < 0) {
		msg_db_failed(r, rc, "checking the friendship");
		return;
	}
	if (!rc) {
		msg_not_friends(r, to);
		return;
	}
	conv = social_pair_conv(w, me, to, true);
	if (conv < 0) {
		msg_db_failed(r, (int)conv, "finding the conversation");
		return;
	}
	ci.conversation_id = conv;
	ci.from_id = me;
	ci.to_id = to;
	msg_send(r, &ci, NULL);
}

/* Member list of gid for user me, or a reply (5, 6, 12) and NULL. */
static struct social_group *msg_group_for(struct req *r, int64_t gid, int64_t me)
{
	struct social_group *g;
	int rc = social_group_get(r->w, gid, me, &g);

	if (rc) {
		if (rc == -ENOMEM)
			reply_err(r, ST_INTERNAL, "out of memory");
		else
			msg_db_failed(r, rc, "reading the group's members");
		return NULL;
	}
	if (!g) {
		reply_err(r, ST_NOT_FOUND, "no group %" PRId64, gid);
		return NULL;
	}
	if (!social_group_has(g, me)) {
		social_group_put(g);
		reply_err(r, ST_FORBIDDEN, "you are not a member of group %" PRId64, gid);
		return NULL;
	}
	return g;
}

void messages_group_send(struct req *r)
{
	struct worker *w = r->w;
	int64_t me = r->s->user_id, gid, conv;
	struct commit_item ci = {0};
	struct social_group *g;

	social_refresh(w);
	if (!req_id(r, "group_id", &gid) || !msg_read_content(r, &ci))
		return;
	g = msg_group_for(r, gid, me);
	if (!g)
		return;
	conv = social_group_conv(w, gid, true);
	if (conv < 0) {
		social_group_put(g);
		msg_db_failed(r, (int)conv, "finding the conversation");
		return;
	}
	ci.conversation_id = conv;
	ci.from_id = me;
	ci.group_id = gid;
	msg_send(r, &ci, g);
}

/* ---- MSG_ACK ------------------------------------------------------------------ */

void messages_ack(struct req *r)
{
	struct worker *w = r->w;
	struct msg_item *it;
	int64_t *ids;
	size_t n;

	if (!req_id_array(r, "msg_ids", MSG_ACK_MAX, &ids, &n))
		return;
	/* Relay mode too: an ack drops the row the writer holds for a live
	 * push (never written then), and moves a group cursor.
	 * Messages minted on other nodes go back there: their writers hold
	 * the marks (and in relay mode the rows) and know their group
	 * messages. Settling them here as well found no mark (it is held
	 * there) and sent the whole batch's acks down the slow path that
	 * looks for group messages. */
	n = cluster_forward_acks(w, r->s->user_id, ids, n);
	if (!n) {
		free(ids);
		reply_ok(r, NULL);
		return;
	}
	it = calloc(1, sizeof(*it));
	if (!it) {
		free(ids);
		reply_err(r, ST_INTERNAL, "out of memory");
		return;
	}
	it->ci.kind = COMMIT_ACK;
	it->ci.from_id = r->s->user_id;
	it->ci.ack_ids = ids;
	it->ci.nacks = (uint32_t)n;
	msg_wait_room(w);
	it->reply = reply_defer(r);
	if (!it->reply || !commit_submit(w->id, &it->ci)) {
		if (it->reply)
			reply_complete(w, it->reply, ST_INTERNAL,
				       reply_error_payload("internal queue full"));
		free(ids);
		free(it);
	}
}

/* ---- HISTORY ------------------------------------------------------------------- */

void messages_history(struct req *r)
{
	struct worker *w = r->w;
	int64_t me = r->s->user_id, with = 0, gid = 0, before = INT64_MAX,
		limit = MSG_HISTORY_DEFAULT;
	bool has_with, has_group, has_before, has_limit;
	struct db_rows *rows;
	cJSON *o, *arr;
	int64_t conv;
	int rc;

	social_refresh(w);
	if (!req_opt_id(r, "with", &with, &has_with) ||
	    !req_opt_id(r, "group_id", &gid, &has_group) ||
	    !req_opt_id(r, "before_id", &before, &has_before) ||
	    !req_opt_int(r, "limit", 1, MSG_HISTORY_MAX, &limit, &has_limit))
		return;
	if (has_with == has_group) {
		reply_err(r, ST_BAD_REQUEST, "give exactly one of with and group_id");
		return;
	}
	if (has_with) {
		rc = social_are_friends(w, me, with);
		if (rc < 0) {
			msg_db_failed(r, rc, "checking the friendship");
			return;
		}
		if (!rc) {
			msg_not_friends(r, with);
			return;
		}
		conv = social_pair_conv(w, me, with, false);
	} else {
		struct social_group *g = msg_group_for(r, gid, me);

		if (!g)
			return;
		social_group_put(g);
		conv = social_group_conv(w, gid, false);
	}
	if (conv < 0) {
		msg_db_failed(r, (int)conv, "finding the conversation");
		return;
	}
	o = cJSON_CreateObject();
	arr = cJSON_AddArrayToObject(o, "messages");
	if (!o || !arr) {
		cJSON_Delete(o);
		reply_err(r, ST_INTERNAL, "out of memory");
		return;
	}
	if (conv == 0) {
		reply_ok(r, o); /* nothing was ever said here */
		return;
	}
	rows =
	    db_query(w->db,
		     "SELECT " MSGROW_COLS " FROM messages WHERE conversation_id = ? AND msg_id < ? "
		     "ORDER BY msg_id DESC LIMIT ?",
		     "lll", conv, before, limit);
	if (!rows) {
		cJSON_Delete(o);
		msg_db_failed(r, db_last_error(w->db), "reading the history");
		return;
	}
	for (size_t i = 0; i < db_rows_count(rows); i++) {
		cJSON *m = msgrow_json(rows, i);

		if (!m) {
			db_rows_free(rows);
			cJSON_Delete(o);
			reply_err(r, ST_INTERNAL, "out of memory");
			return;
		}
		cJSON_AddItemToArray(arr, m);
	}
	db_rows_free(rows);
	reply_ok(r, o);
}

/* ---- push at login --------------------------------------------------------------- */

/*
 * With unread marks held back by the writer (commit.h), the marks of this
 * user still in its memory are written first: a message pushed to a
 * connection that died before it acked must come again now, not at some
 * later login. The session's later frames wait for that (an ack of a
 * pushed message is then never overtaken by the push it acks).
 *
 * The session is in the registry already, so every message with an id
 * made from now on finds it there and is pushed live: the login push
 * stops below a fresh id, and a message sent while the flush runs does
 * not come twice.
 */
void messages_push_unacked(struct worker *w, struct session *s)
{
	int64_t below = ids_next();
	struct msg_item *it;

	if (!below)
		below = INT64_MAX;
	if (!commit_defers_unread()) {
		login_push_unacked(w, s, below);
		return;
	}
	it = calloc(1, sizeof(*it));
	if (!it) {
		msg_warn("login of user %" PRId64 ": out of memory; held unread marks not "
			 "flushed", s->user_id);
		login_push_unacked(w, s, below);
		return;
	}
	it->ci.kind = COMMIT_FLUSH_UNREAD;
	it->ci.from_id = s->user_id;
	it->ci.msg_id = below; /* not the writer's: kept for msg_flushed */
	it->conn = s->conn;
	msg_wait_room(w);
	if (!commit_submit(w->id, &it->ci)) {
		free(it);
		msg_warn("login of user %" PRId64 ": writer lane full; held unread marks not "
			 "flushed", s->user_id);
		login_push_unacked(w, s, below);
		return;
	}
	session_hold(s);
}

/* The flush of a login is committed (or failed: then the push reads what
 * is stored, as it would with the storage down). */
static void msg_flushed(struct worker *w, struct msg_item *it)
{
	struct session *s = session_of(it->conn);

	if (it->flags & MSG_FLUSH_ONLY) {
		if (it->ci.status != ST_OK)
			msg_warn("held unread marks of user %" PRId64 " not flushed: %s",
				 it->ci.from_id, it->ci.error);
		if (it->flags & MSG_FLUSH_REMOTE)
			cluster_kick_done(w, &it->remote);
		free(it);
		return;
	}
	if (it->ci.status != ST_OK)
		msg_warn("login of user %" PRId64 ": held unread marks not flushed: %s",
			 it->ci.from_id, it->ci.error);
	if (s->conn == it->conn && s->user_id == it->ci.from_id) {
		login_push_unacked(w, s, it->ci.msg_id);
		session_resume(w, s);
	}
	free(it);
}

void messages_repush(struct worker *w, struct session *s)
{
	int64_t below = ids_next();

	login_push_unacked(w, s, below ? below : INT64_MAX);
}

void messages_remote_acks(struct worker *w, int64_t user, const int64_t *ids, size_t n)
{
	struct msg_item *it = calloc(1, sizeof(*it));
	int64_t *copy = malloc(n * sizeof(*copy));

	if (!it || !copy || !n) {
		/* the marks are written when due: at least once */
		free(it);
		free(copy);
		return;
	}
	memcpy(copy, ids, n * sizeof(*copy));
	it->ci.kind = COMMIT_ACK;
	it->ci.from_id = user;
	it->ci.ack_ids = copy;
	it->ci.nacks = (uint32_t)n;
	msg_wait_room(w);
	if (!commit_submit(w->id, &it->ci)) {
		free(copy);
		free(it);
	}
}

int messages_flush_marks(struct worker *w, int64_t user, const struct cluster_req *req)
{
	struct msg_item *it;

	if (!commit_defers_unread())
		return -ENOTSUP; /* nothing is ever held */
	it = calloc(1, sizeof(*it));
	if (!it)
		return -ENOMEM;
	it->ci.kind = COMMIT_FLUSH_UNREAD;
	it->ci.from_id = user;
	it->flags = MSG_FLUSH_ONLY;
	if (req) {
		it->flags |= MSG_FLUSH_REMOTE;
		it->remote = *req;
	}
	msg_wait_room(w);
	if (!commit_submit(w->id, &it->ci)) {
		free(it);
		return -ENOBUFS;
	}
	return 0;
}

/* ---- start / stop ------------------------------------------------------------------ */

static void msg_worker_destroy(struct msg_worker *mw)
{
	free(mw->dedup);
	free(mw->jbuf);
	free(mw->delivered);
	free(mw->ids);
}

int messages_start(const struct config *cfg, int nworkers, void (*wake)(int lane))
{
	int ret = ids_init(cfg->node_id);

	if (ret)
		return ret;
	msg_workers = calloc((size_t)nworkers, sizeof(*msg_workers));
	if (!msg_workers)
		return -ENOMEM;
	msg_nworkers = nworkers;
	for (int i = 0; i < nworkers; i++) {
		struct msg_worker *mw = &msg_workers[i];

		if (!(mw->dedup = calloc(MSG_DEDUP_SETS * MSG_DEDUP_WAYS, sizeof(*mw->dedup)))) {
			ret = -ENOMEM;
			goto out_free;
		}
	}
	ret = social_init(nworkers);
	if (ret)
		goto out_free;
	ret = commit_start(cfg, nworkers, wake);
	if (ret) {
		social_destroy();
		goto out_free;
	}
	return 0;

out_free:
	for (int i = 0; i < nworkers; i++)
		msg_worker_destroy(&msg_workers[i]);
	free(msg_workers);
	msg_workers = NULL;
	return ret;
}

void messages_stop(void)
{
	if (!msg_workers)
		return;
	/* workers have stopped, and they stop only with nothing in flight */
	commit_stop();
	social_destroy();
	for (int i = 0; i < msg_nworkers; i++)
		msg_worker_destroy(&msg_workers[i]);
	free(msg_workers);
	msg_workers = NULL;
}
