/*
 * dispatch.c - runs one frame on a worker: the contract's check order and
 * the command table. It is the only module that knows the handlers.
 *
 * Check order (protocol-v1 "Clarifications"): frame errors were found by
 * the I/O thread and arrive here as IN_BAD_FRAME, so they are answered
 * after the replies to earlier frames; then unknown command (9), not
 * logged in (2), the payload must be a JSON object (1), the
 * per-connection rate (8), then the handler (which validates its fields
 * and decides the outcome).
 *
 * A held session's frames wait in the session (session.h); when it is
 * resumed they run from dispatch_poll, on the worker loop, in order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringchat/auth.h"
#include "ringchat/clock.h"
#include "ringchat/cluster.h"
#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/dispatch.h"
#include "ringchat/friends.h"
#include "ringchat/groups.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"
#include "ringchat/messages.h"
#include "ringchat/presence.h"
#include "ringchat/protocol.h"
#include "ringchat/registry.h"
#include "ringchat/request.h"
#include "ringchat/session.h"
#include "ringchat/social.h"
#include "ringchat/worker.h"

/* At stop, how long a worker waits for the writer to hand back what its
 * last sessions submitted: longer than the writer's retry bound
 * (COMMIT_RETRY_MS, 3 s). */
#define DISPATCH_STOP_DRAIN_MS 5000

static void cmd_ping(struct req *r)
{
	cJSON *o = cJSON_CreateObject();

	json_add_int(o, "time_ms", (int64_t)clock_epoch_ms());
	reply_ok(r, o);
}

static const handler_fn cmd_table[CMD_MAX] = {
	[CMD_PING] = cmd_ping,
	[CMD_SIGNUP] = auth_signup,
	[CMD_LOGIN] = auth_login,
	[CMD_RESUME] = auth_resume,
	[CMD_LOGOUT] = auth_logout,
	[CMD_FRIEND_REQUEST] = friends_request,
	[CMD_FRIEND_ACCEPT] = friends_accept,
	[CMD_FRIEND_DELETE] = friends_delete,
	[CMD_FRIEND_LIST] = friends_list,
	[CMD_FRIEND_UPDATE] = friends_update,
	[CMD_GROUP_CREATE] = groups_create,
	[CMD_GROUP_DISSOLVE] = groups_dissolve,
	[CMD_GROUP_JOIN] = groups_join,
	[CMD_GROUP_QUIT] = groups_quit,
	[CMD_GROUP_MEMBERS] = groups_members,
	[CMD_GROUP_LIST] = groups_list,
	[CMD_MSG_SEND] = messages_send,
	[CMD_GROUP_SEND] = messages_group_send,
	[CMD_MSG_ACK] = messages_ack,
	[CMD_HISTORY] = messages_history,
};

/* Requests of the protocol (pushes are not requests). */
static bool cmd_is_request(uint32_t cmd)
{
	return cmd < CMD_PUSH_MSG && cmd_table[cmd] != NULL;
}

/* Commands a connection may send before it has logged in. */
static bool cmd_before_login(uint32_t cmd)
{
	return cmd == CMD_PING || cmd == CMD_SIGNUP || cmd == CMD_LOGIN || cmd == CMD_RESUME;
}

/* The connection is gone: end its login (if any), forget its session. */
static void dispatch_end(struct worker *w, struct session *s)
{
	if (s->user_id)
		auth_on_close(w, s);
	session_close(w, s);
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

/* Token bucket of depth burst refilled at rate per second: takes cost
 * tokens (cost <= burst) and returns 0, or returns the milliseconds until
 * they are due (taking nothing). A first call fills the bucket. */
static uint64_t rate_bucket_take(double *tokens, uint64_t *last_ms, double rate, double burst,
				 double cost, uint64_t now)
{
	if (!*last_ms) {
		*tokens = burst;
		*last_ms = now;
	}
	*tokens += (double)(now - *last_ms) * rate / 1000.0;
	if (*tokens > burst)
		*tokens = burst;
	*last_ms = now;
	if (*tokens >= cost) {
		*tokens -= cost;
		return 0;
	}
	return (uint64_t)((cost - *tokens) * 1000.0 / rate) + 1;
}

/* Token bucket per connection: rate_msgs_per_s refill, rate_burst depth.
 * Returns 0 when allowed, else the milliseconds until a token is due. */
static uint64_t rate_take(const struct config *cfg, struct session *s, uint64_t now)
{
	return rate_bucket_take(&s->rate_tokens, &s->rate_last_ms, cfg->rate_msgs_per_s,
				cfg->rate_burst, 1.0, now);
}

/*
 * The second bucket: recipients. A request costs one token of rate_take
 * whatever its fan-out, so a GROUP_SEND to 500 members would let one
 * connection reach rate_msgs_per_s x 500 recipients a second. GROUP_SEND
 * therefore also takes one token per other member from a bucket of
 * rate_recipients_per_s / rate_recipients_burst. The member list comes
 * from the worker's social cache, which the handler reads right after; a
 * request the handler will refuse (bad or missing group, not a member)
 * costs nothing here. Returns 0 or the milliseconds until allowed.
 */
static uint64_t rate_take_recipients(struct worker *w, struct session *s, const cJSON *body,
				     uint64_t now)
{
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(body, "group_id");
	double burst = w->cfg->rate_recipients_burst, cost;
	struct social_group *grp = NULL;
	int64_t gid;

	if (!cJSON_IsNumber(g) || g->valuedouble < 1 || g->valuedouble > 9007199254740991.0)
		return 0;
	gid = (int64_t)g->valuedouble;
	if ((double)gid != g->valuedouble)
		return 0;
	social_refresh(w);
	if (social_group_get(w, gid, s->user_id, &grp) || !grp)
		return 0;
	cost = social_group_has(grp, s->user_id) && grp->n > 1 ? (double)(grp->n - 1) : 0.0;
	social_group_put(grp);
	if (cost > burst) /* a group larger than the burst still gets through */
		cost = burst;
	if (cost == 0.0)
		return 0;
	return rate_bucket_take(&s->fan_tokens, &s->fan_last_ms, w->cfg->rate_recipients_per_s,
				burst, cost, now);
}

/* Runs one frame of s (not held); takes m. */
static void dispatch_run(struct worker *w, struct session *s, struct in_msg *m)
{
	struct req r = { 0 };
	uint64_t wait_ms, now;

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
	if (!s->user_id && !cmd_before_login(r.cmd)) {
		reply_err(&r, ST_NOT_LOGGED_IN, "log in first");
		goto out_free;
	}
	r.body = m->hdr.len ? req_parse_body(m->payload, m->hdr.len) : cJSON_CreateObject();
	if (!r.body) {
		reply_err(&r, ST_BAD_REQUEST,
			  "payload must be one JSON object (UTF-8, no NUL characters)");
		goto out_free;
	}
	now = clock_mono_ms();
	wait_ms = rate_take(w->cfg, s, now);
	if (wait_ms) {
		cJSON *o = reply_error_payload("rate limit: %d requests/s, burst %d",
					       w->cfg->rate_msgs_per_s, w->cfg->rate_burst);

		counter_inc(rate_limited);
		json_add_int(o, "retry_after_ms", (int64_t)wait_ms);
		reply_err_json(&r, ST_RATE_LIMITED, o);
		goto out_free;
	}
	if (r.cmd == CMD_GROUP_SEND && (wait_ms = rate_take_recipients(w, s, r.body, now))) {
		cJSON *o = reply_error_payload("rate limit: %d recipients/s, burst %d",
					       w->cfg->rate_recipients_per_s,
					       w->cfg->rate_recipients_burst);

		counter_inc(rate_limited);
		json_add_int(o, "retry_after_ms", (int64_t)wait_ms);
		reply_err_json(&r, ST_RATE_LIMITED, o);
		goto out_free;
	}
	cmd_table[r.cmd](&r);
	if (!r.replied) {
		log_error("handler for %s returned without a reply", rc_cmd_name(r.cmd));
		reply_err(&r, ST_INTERNAL, "internal error");
	}
out_free:
	cJSON_Delete(r.body);
	free(m);
}

/* A message from the I/O thread; takes m. */
static void dispatch_in(struct worker *w, struct in_msg *m)
{
	struct session *s = session_of(m->conn);

	if (s->conn != m->conn) {
		if (s->conn)
			dispatch_end(w, s); /* IN_CLOSED of the slot's last user was lost? */
		session_open(s, m->conn, m->peer_addr, m->peer_port);
	}
	if (m->kind == IN_CLOSED) {
		dispatch_end(w, s);
		free(m);
		return;
	}
	if (session_is_held(s)) {
		session_queue(s, m);
		return;
	}
	dispatch_run(w, s, m);
}

/* ---- the worker's calls ---------------------------------------------------- */

static int dispatch_worker_start(struct worker *w)
{
	db_thread_init();
	w->db = db_open(w->cfg);
	w->kv = kv_open(w->cfg);
	return w->db && w->kv ? 0 : -ENOMEM;
}

static void dispatch_worker_stop(struct worker *w)
{
	uint32_t nworkers = (uint32_t)w->pool->n;

	/* The I/O thread has closed every connection without telling the
	 * workers (it is gone). End this worker's sessions here, so users
	 * are marked offline in Redis now rather than when their presence
	 * TTL runs out, and their friends elsewhere hear of it. */
	for (uint32_t slot = (uint32_t)w->id; slot < session_slots(); slot += nworkers)
		if (session_at(slot)->conn)
			dispatch_end(w, session_at(slot));
	/* Ending a session may have handed the writer an item (the flush of
	 * the user's held unread marks, in a cluster); the writer still runs
	 * and answers within its retry bound. Take the completions back, or
	 * they stay in the done queue and their items are never freed. */
	for (uint64_t deadline = clock_mono_ms() + DISPATCH_STOP_DRAIN_MS;
	     messages_has_work(w) && clock_mono_ms() < deadline;)
		if (!messages_poll(w))
			usleep(1000);
	db_close(w->db);
	kv_close(w->kv);
	w->db = NULL;
	w->kv = NULL;
	db_thread_end();
}

static bool dispatch_poll(struct worker *w)
{
	struct in_msg *m;
	bool did;

	presence_refresh(w);
	did = messages_poll(w);
	if (cluster_poll(w))
		did = true;
	/* frames of sessions that a completion above (or an earlier one)
	 * resumed: they run here, in order, not inside that completion */
	while ((m = session_next_ready(w))) {
		dispatch_run(w, session_of(m->conn), m);
		did = true;
	}
	return did;
}

static bool dispatch_has_work(struct worker *w)
{
	return messages_has_work(w) || cluster_has_work(w);
}

/* What the cluster layer asks of the layers above it. */
static int dispatch_flush_user(struct worker *w, const struct cluster_req *req)
{
	return messages_flush_marks(w, req->user, req);
}

/* After an outage of the path to other nodes: what w's users may have
 * missed comes again (at least once; clients deduplicate by msg_id). */
static void dispatch_repush(struct worker *w)
{
	uint32_t nworkers = (uint32_t)w->pool->n;

	/* first our users' presence, which a Redis restart may have lost:
	 * other nodes find them again */
	presence_refresh_now(w);
	for (uint32_t slot = (uint32_t)w->id; slot < session_slots(); slot += nworkers) {
		struct session *s = session_at(slot);

		if (s->user_id && !s->closing)
			messages_repush(w, s);
	}
}

const struct cluster_hooks dispatch_cluster_hooks = {
	.social_changed = social_changed_here,
	.flush_user = dispatch_flush_user,
	.repush = dispatch_repush,
	.acks = messages_remote_acks,
};

uint32_t dispatch_deferred(void)
{
	return session_deferred();
}

const struct worker_ops dispatch_worker_ops = {
	.start = dispatch_worker_start,
	.stop = dispatch_worker_stop,
	.handle = dispatch_in,
	.poll = dispatch_poll,
	.has_work = dispatch_has_work,
	.deferred = dispatch_deferred,
};

/* ---- start and stop --------------------------------------------------------- */

int dispatch_start(const struct config *cfg, int nworkers, uint32_t max_conns,
		   int (*post)(struct worker *owner, void (*fn)(struct worker *, void *), void *arg),
		   void (*wake)(int worker_id))
{
	int ret;

	db_global_init();
	ret = session_table_init(max_conns, nworkers);
	if (ret)
		return ret;
	ret = registry_init();
	if (ret)
		goto out_sessions;
	ret = auth_start(cfg, post);
	if (ret)
		goto out_registry;
	ret = messages_start(cfg, nworkers, wake);
	if (ret)
		goto out_auth;
	return 0;

out_auth:
	auth_stop();
out_registry:
	registry_destroy();
out_sessions:
	session_table_destroy();
	return ret;
}

void dispatch_stop(void)
{
	messages_stop();
	auth_stop();
	registry_destroy();
	session_table_destroy();
}
