/*
 * auth.c - accounts and sessions: SIGNUP, LOGIN, RESUME, LOGOUT, kicks.
 *
 * Storage. An account is a users row (hot: id, name) and a user_auth row
 * (cold: password hash, phone), written in one transaction by SIGNUP. A
 * session token is 128 random bits; Redis keeps rc:tok:<its SHA-256> =
 * user_id with a TTL of token_ttl_s set at LOGIN (not extended by RESUME: the token
 * lives token_ttl_s from its LOGIN, or until LOGOUT deletes it). Every
 * node of a cluster therefore accepts every token.
 *
 * Sessions. A successful LOGIN/RESUME records the user in the session and
 * in the node's registry; the connection the registry held for that user
 * before (if any) gets PUSH_KICKED and is closed. When a connection goes,
 * auth_on_close removes it from the registry only if it is still the
 * user's current session, so a kicked session sends no offline presence.
 * One connection carries one user for its whole life: LOGIN or RESUME on
 * a connection that is already logged in is 6 FORBIDDEN (even for the
 * same user), and LOGOUT closes the connection. Switching users in place
 * would let pushes addressed to the first user, already on their way from
 * other workers, reach the second one.
 *
 * Hashing. Password hashing is slow on purpose (tens of ms of CPU), so it
 * never runs on a worker: a worker would stall every other request of the
 * connections pinned to it. LOGIN does its quick checks and its lookup on
 * the worker, then holds the connection's later frames (session_hold),
 * reserves its reply slot (reply_defer) and hands the password to the
 * hasher threads (hasher.h); the completion runs on the same worker, starts
 * the session, answers, sends the pushes and then lets the held frames run
 * (session_resume), so a FRIEND_LIST pipelined behind a LOGIN sees the
 * login. SIGNUP hashes the same way and inserts the account in its
 * completion. RESUME needs no hash and stays synchronous. A login whose
 * connection closes while its password is hashed just drops its answer
 * (a wrong password still counts against the failed-login limit); a
 * SIGNUP still happens (it was asked for; the retry of a client that never
 * heard meets ALREADY_EXISTS and can LOGIN).
 *
 * Admission control. When a node restarts, all its users reconnect at once.
 * SIGNUP, LOGIN and RESUME therefore pass a gate before any work:
 *   - at most login_concurrency of them are in progress on the node (an
 *     atomic count shared by the workers), counting those queued for or
 *     running on the hasher, from admission until their answer. This
 *     bounds the jobs a storm queues and so how long an admitted login
 *     waits: login_concurrency hashes divided among hash_threads;
 *   - none starts while the worker's input queue holds more than
 *     AUTH_SHED_QUEUE_ITEMS frames (or half of queue_depth if smaller): a
 *     login still costs MySQL and Redis round trips and the pushes of
 *     everything pending on the worker, so a backed-up worker serves the
 *     users already logged in first.
 * A refused request gets 8 RATE_LIMITED at once, with a retry_after_ms
 * drawn from AUTH_SHED_RETRY_MIN_MS..AUTH_SHED_RETRY_MAX_MS so the retries
 * of a reconnect storm spread out instead of coming back together. Behind
 * the gate, the hasher's own queue is bounded too (hasher_submit): a job it
 * refuses is answered 8 RATE_LIMITED with retry_after_ms of about the time
 * its queue takes to drain, jittered up to half again. With the defaults
 * (login_concurrency 64, one hasher thread) that bound is never reached.
 * Refusals are counted and logged (at most one line per LOG_GATE_EVERY_MS,
 * like every line here that a storm or an outage would repeat).
 *
 * Failed logins. Wrong passwords are counted in Redis, so every node of a
 * cluster sees them, INCR on each failure, each key expiring
 * login_fail_window_s after its first failure:
 *   rc:lf:a:<ipv4>          per address, limit login_fail_addr_limit
 *   rc:lf:ua:<name>:<ipv4>  per (username, address), limit login_fail_limit
 *   rc:lf:u:<name>          per username, from anywhere
 * A LOGIN from an address over either of the first two is refused with 8
 * RATE_LIMITED and the key's remaining TTL as retry_after_ms, before the
 * password is looked at. The username alone never refuses a login: whoever
 * knows a name must not be able to keep its owner out by guessing at it.
 * Past login_fail_user_limit failures the name is only slowed: one attempt
 * per login_fail_user_gap_ms goes on (rc:lf:us:<name>, SET NX PX), the
 * others get 8 with the short time left as retry_after_ms, and an address
 * the user logged in from before (rc:lf:ok:<name>:<ipv4>, kept token_ttl_s)
 * is not slowed at all. All of it is one Lua script, one round trip. A
 * success clears the name's and the pair's counts (not the address's: a
 * client must not clear its address's record by logging in to an account
 * of its own). RESUME is not counted: a 128-bit token cannot be guessed,
 * and it has no username to count against. SIGNUP is counted per address
 * (rc:su:a:<ipv4>, signup_addr_limit per signup_window_s); it fails open
 * when Redis is down, since it otherwise needs only MariaDB.
 * Unknown users cost a password verification too (against a dummy hash
 * of the current cost), so the time of an answer does not tell whether a
 * username exists; both cases answer the same AUTH_FAILED text.
 *
 * Tokens. Redis holds rc:tok:<SHA-256 of the token> (auth_key_token), not
 * the token: a copy of Redis's data gives no session away.
 *
 * Storage failures. Any MySQL or Redis failure answers 12 INTERNAL
 * "storage unavailable, retry" and changes no session; db.c and kv.c
 * reconnect by themselves (with back-off), so requests succeed again once
 * the services return. The Redis work of LOGIN is done before anything
 * is recorded, so a LOGIN either fully happens or not at all.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "ringchat/clock.h"
#include "ringchat/cluster.h"
#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/session.h"
#include "ringchat/auth.h"
#include "ringchat/friends.h"
#include "ringchat/messages.h"
#include "ringchat/hasher.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"
#include "ringchat/passwd.h"
#include "ringchat/outbox.h"
#include "ringchat/protocol.h"
#include "ringchat/registry.h"
#include "ringchat/request.h"
#include "ringchat/worker.h"
#include "ringchat/presence.h"

#define AUTH_NAME_MIN_BYTES 3
#define AUTH_NAME_MAX_BYTES 32
#define AUTH_PASSWORD_MIN_BYTES 8 /* at SIGNUP; LOGIN accepts any length up to the max */
#define AUTH_PHONE_MAX_BYTES 32
#define AUTH_AVATAR_MAX_BYTES 255
/* A token is opaque to clients; this only bounds what RESUME reads. */
#define AUTH_TOKEN_FIELD_MAX_BYTES 256

#define AUTH_SHED_QUEUE_ITEMS 256u
#define AUTH_SHED_RETRY_MIN_MS 100
#define AUTH_SHED_RETRY_MAX_MS 1000
/* Cap of the retry hint when the hasher is full (its queue is bounded, so
 * this only guards against a mean spoilt by a stalled thread). */
#define AUTH_HASHER_RETRY_MAX_MS 60000

/* Redis keys: a prefix + a 32-byte name + a dotted IPv4, or the prefix +
 * a token's 64-hex-digit digest. */
#define AUTH_KEY_BYTES 96

#define AUTH_ERR_STORAGE "storage unavailable, retry"
#define AUTH_ERR_CREDENTIALS "wrong username or password"

/* Counts one failure: INCR every key given, each starting its window
 * (ARGV[1] ms) on its first failure. The PTTL test (rather than n == 1)
 * also repairs a key left without a TTL. One command however many keys,
 * so one reply. */
static const char auth_fail_lua[] = "for i = 1, #KEYS do "
				    "redis.call('INCR', KEYS[i]) "
				    "if redis.call('PTTL', KEYS[i]) < 0 then "
				    "redis.call('PEXPIRE', KEYS[i], ARGV[1]) end end "
				    "return 1";

/*
 * May this LOGIN go on? KEYS: address count, (name, address) count, name
 * count, "logged in from this address before" mark, the name's slot.
 * ARGV: address limit, pair limit, name limit, slot ms, 1 when there is
 * an address. Returns {0, 0} (go on) or {why, retry ms}: 1 address over,
 * 2 pair over, 3 the name is slowed and its slot is taken. A name over
 * its limit is never refused outright: one attempt per slot goes on, and
 * an address it logged in from before is not slowed at all.
 */
static const char auth_check_lua[] =
	"local function n(k) return tonumber(redis.call('GET', k) or '0') end "
	"if ARGV[5] == '1' then "
	"if n(KEYS[1]) >= tonumber(ARGV[1]) then return {1, redis.call('PTTL', KEYS[1])} end "
	"if n(KEYS[2]) >= tonumber(ARGV[2]) then return {2, redis.call('PTTL', KEYS[2])} end "
	"if redis.call('EXISTS', KEYS[4]) == 1 then return {0, 0} end "
	"end "
	"if n(KEYS[3]) >= tonumber(ARGV[3]) then "
	"if redis.call('SET', KEYS[5], '1', 'PX', ARGV[4], 'NX') then return {0, 0} end "
	"return {3, redis.call('PTTL', KEYS[5])} end "
	"return {0, 0}";

/* Counts a SIGNUP of an address: {count, ms left in the window}. */
static const char auth_signup_lua[] = "local n = redis.call('INCR', KEYS[1]) "
				      "if redis.call('PTTL', KEYS[1]) < 0 then "
				      "redis.call('PEXPIRE', KEYS[1], ARGV[1]) end "
				      "return {n, redis.call('PTTL', KEYS[1])}";

/* Logins (SIGNUP, LOGIN, RESUME) in progress on this node, those waiting
 * for the hasher included. Relaxed atomics: it is a count, it publishes
 * no data to anyone. */
static _Atomic int auth_inflight;
/* Verified against when the username is unknown, so that case costs the
 * same time as a wrong password. Written once before workers start. */
static char auth_dummy_hash[PASSWD_HASH_SIZE];

/*
 * Where the answer to a SIGNUP/LOGIN/RESUME goes: straight through the
 * request (RESUME, and every answer given before hashing), or through the
 * reply slot the request reserved, once the hasher is done (r NULL).
 */
struct auth_to {
	struct worker *w;
	struct session *s;
	uint64_t conn;
	uint16_t cmd;
	struct req *r;
	struct pending_reply *p;
};

/*
 * A SIGNUP or LOGIN on its way through the hasher, owned by the hasher
 * from hasher_submit until its completion runs on the worker, then by the
 * completion (which frees it). Wiped before it is freed: it held a
 * password and a hash.
 */
struct auth_job {
	struct hash_job hash; /* first: the hasher hands back &hash */
	struct worker *w;     /* the completion runs on this worker */
	void (*done)(struct worker *w, void *job);
	struct pending_reply *p;
	uint64_t conn;
	uint16_t cmd;
	int64_t uid;          /* LOGIN: the account, 0 when the name is unknown */
	uint32_t peer_addr;   /* LOGIN: the client's, for the failure count */
	bool active;          /* LOGIN: the account may log in */
	char name[AUTH_NAME_MAX_BYTES + 1];
	char phone[AUTH_PHONE_MAX_BYTES + 1];   /* SIGNUP */
	char avatar[AUTH_AVATAR_MAX_BYTES + 1]; /* SIGNUP */
};

/* ---- rate-limited log lines ----------------------------------------------- */

/* Lines every request of an outage or a storm would repeat go through
 * rate-limited gates (log.h). */
static struct log_gate auth_gate_storage, auth_gate_shed, auth_gate_locked, auth_gate_presence,
	auth_gate_hasher;

/* ---- answers ------------------------------------------------------------- */

static const struct config *auth_cfg(const struct req *r)
{
	return r->w->cfg;
}

static struct auth_to auth_to_req(struct req *r)
{
	return (struct auth_to){ .w = r->w, .s = r->s, .conn = r->conn, .cmd = r->cmd, .r = r };
}

/* Answers code with payload (taken over; NULL = {}). */
static void auth_answer(const struct auth_to *to, uint32_t code, cJSON *payload)
{
	if (!to->r)
		reply_complete(to->w, to->p, code, payload);
	else if (code == ST_OK)
		reply_ok(to->r, payload);
	else
		reply_err_json(to->r, code, payload);
}

static void auth_answer_err(const struct auth_to *to, uint32_t code, const char *text)
{
	auth_answer(to, code, reply_error_payload("%s", text));
}

static void auth_storage_error(const struct auth_to *to)
{
	auth_answer_err(to, ST_INTERNAL, AUTH_ERR_STORAGE);
}

static void auth_db_failed(const struct auth_to *to, const char *what)
{
	counter_inc(mysql_errors);
	log_limited(&auth_gate_storage, LOG_WARN, "auth: %s failed: %s", what,
			 db_errmsg(to->w->db));
	auth_storage_error(to);
}

static void auth_kv_failed(const struct auth_to *to, const char *what)
{
	counter_inc(redis_errors);
	log_limited(&auth_gate_storage, LOG_WARN, "auth: %s failed: %s", what,
			 kv_errmsg(to->w->kv));
	auth_storage_error(to);
}

/* The same when Redis answered, but not as expected: an error reply
 * (NOAUTH, OOM, ...) names its reason itself. Frees rep (may be NULL). */
static void auth_kv_failed_rep(const struct auth_to *to, const char *what, redisReply *rep)
{
	if (!rep || rep->type != REDIS_REPLY_ERROR) {
		if (rep)
			freeReplyObject(rep);
		auth_kv_failed(to, what);
		return;
	}
	counter_inc(redis_errors);
	log_limited(&auth_gate_storage, LOG_WARN, "auth: %s failed: Redis: %s", what, rep->str);
	freeReplyObject(rep);
	auth_storage_error(to);
}

/* ---- helpers ------------------------------------------------------------- */

/* [A-Za-z0-9_.-] only: names are compared byte for byte everywhere and
 * end up in Redis keys and an ascii_bin column. */
static bool auth_name_chars_ok(const char *name)
{
	for (const char *p = name; *p; p++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* Validates "username" (replying 1 BAD_REQUEST when it is not valid). */
static bool auth_req_username(struct req *r, const char **name)
{
	if (!req_str(r, "username", AUTH_NAME_MIN_BYTES, AUTH_NAME_MAX_BYTES, name))
		return false;
	if (!auth_name_chars_ok(*name)) {
		reply_err(r, ST_BAD_REQUEST, "username may only hold A-Z a-z 0-9 _ . -");
		return false;
	}
	return true;
}

static bool auth_token_well_formed(const char *t)
{
	size_t i;

	for (i = 0; t[i]; i++) {
		if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
			return false;
	}
	return i == TOKEN_HEX_LEN;
}

/*
 * rc:tok:<SHA-256 of the token, hex>. Redis holds only the digest, so
 * whoever reads Redis (a dump, a replica, a MONITOR) learns no token that
 * RESUME would accept; a 128-bit random token needs no salt or slow hash.
 */
static void auth_key_token(char key[AUTH_KEY_BYTES], const char *token)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t off;

	off = (size_t)snprintf(key, AUTH_KEY_BYTES, "rc:tok:");
	if (!EVP_Digest(token, strlen(token), md, &mdlen, EVP_sha256(), NULL) ||
	    off + 2 * (size_t)mdlen >= AUTH_KEY_BYTES) {
		/* Cannot happen with a working libcrypto; a key no token
		 * maps to fails closed (unknown token). */
		snprintf(key, AUTH_KEY_BYTES, "rc:tok:!");
		return;
	}
	for (unsigned int i = 0; i < mdlen; i++) {
		key[off++] = hex[md[i] >> 4];
		key[off++] = hex[md[i] & 0xf];
	}
	key[off] = '\0';
	explicit_bzero(md, sizeof(md));
}

static void auth_fmt_addr(char out[16], uint32_t addr)
{
	snprintf(out, 16, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 0xff, (addr >> 8) & 0xff,
		 addr & 0xff);
}

/*
 * The keys of the failed-login limit (see the top comment). With no
 * address (peer_addr 0) only the name's keys mean anything; the others
 * are still filled, the check script ignores them.
 */
struct auth_fail_keys {
	char addr[AUTH_KEY_BYTES];  /* rc:lf:a:<ip>         failures from the address */
	char pair[AUTH_KEY_BYTES];  /* rc:lf:ua:<name>:<ip> failures of name from it */
	char name[AUTH_KEY_BYTES];  /* rc:lf:u:<name>       failures of name, anywhere */
	char known[AUTH_KEY_BYTES]; /* rc:lf:ok:<name>:<ip> name logged in from there */
	char slot[AUTH_KEY_BYTES];  /* rc:lf:us:<name>      a slowed name's next attempt */
};

static void auth_fail_keys(struct auth_fail_keys *k, const char *name, uint32_t addr)
{
	char ip[16];

	auth_fmt_addr(ip, addr);
	snprintf(k->addr, sizeof(k->addr), "rc:lf:a:%s", ip);
	snprintf(k->pair, sizeof(k->pair), "rc:lf:ua:%s:%s", name, ip);
	snprintf(k->name, sizeof(k->name), "rc:lf:u:%s", name);
	snprintf(k->known, sizeof(k->known), "rc:lf:ok:%s:%s", name, ip);
	snprintf(k->slot, sizeof(k->slot), "rc:lf:us:%s", name);
}

/* xorshift64*, per thread: the jitter of retry hints needs no more. */
static uint32_t auth_rand(void)
{
	static _Thread_local uint64_t state;

	if (!state)
		state = clock_mono_ns() ^ (uint64_t)(uintptr_t)&state ^ 0x9e3779b97f4a7c15ULL;
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return (uint32_t)((state * 0x2545f4914f6cdd1dULL) >> 32);
}

static void auth_answer_rate_limited(const struct auth_to *to, const char *why,
				     uint64_t retry_ms)
{
	cJSON *o = reply_error_payload("%s", why);

	json_add_int(o, "retry_after_ms", (int64_t)retry_ms);
	auth_answer(to, ST_RATE_LIMITED, o);
}

/* ---- admission control ---------------------------------------------------- */

/*
 * Lets a SIGNUP/LOGIN/RESUME start, or replies 8 RATE_LIMITED and returns
 * false. After true the caller must see that auth_leave is called once
 * the request is answered (a request handed to the hasher: its completion).
 */
static bool auth_enter(struct req *r)
{
	const struct config *cfg = auth_cfg(r);
	struct auth_to to = auth_to_req(r);
	uint32_t backlog_max = AUTH_SHED_QUEUE_ITEMS;
	uint64_t retry_ms;

	if ((uint32_t)cfg->queue_depth / 2 < backlog_max)
		backlog_max = (uint32_t)cfg->queue_depth / 2;
	if (spsc_size(&r->w->lane->in) <= backlog_max) {
		if (atomic_fetch_add_explicit(&auth_inflight, 1, memory_order_relaxed) <
		    cfg->login_concurrency)
			return true;
		atomic_fetch_sub_explicit(&auth_inflight, 1, memory_order_relaxed);
	}
	counter_inc(login_shed);
	log_limited(&auth_gate_shed, LOG_WARN,
			 "auth: login shed (node busy), %" PRIu64 " since start",
			 atomic_load_explicit(&counters.login_shed, memory_order_relaxed));
	retry_ms = AUTH_SHED_RETRY_MIN_MS +
		   auth_rand() % (AUTH_SHED_RETRY_MAX_MS - AUTH_SHED_RETRY_MIN_MS + 1);
	auth_answer_rate_limited(&to, "node busy with logins, retry later", retry_ms);
	return false;
}

static void auth_leave(void)
{
	atomic_fetch_sub_explicit(&auth_inflight, 1, memory_order_relaxed);
}

/* ---- failed-login limit ------------------------------------------------- */

/*
 * Checks the failed-login limit for name from the request's address.
 * Returns 0 when the login may go on; otherwise it has replied (8 with
 * retry_after_ms when over a limit or slowed, 12 when Redis failed) and
 * returns -1.
 */
static int auth_fail_check(struct req *r, const char *name)
{
	const struct config *cfg = auth_cfg(r);
	struct auth_to to = auth_to_req(r);
	struct auth_fail_keys k;
	redisReply *rep;
	long long why, pttl;
	const char *text;

	auth_fail_keys(&k, name, r->s->peer_addr);
	rep = kv_cmd(r->w->kv, "EVAL %s 5 %s %s %s %s %s %d %d %d %d %d", auth_check_lua, k.addr,
		     k.pair, k.name, k.known, k.slot, cfg->login_fail_addr_limit,
		     cfg->login_fail_limit, cfg->login_fail_user_limit,
		     cfg->login_fail_user_gap_ms, r->s->peer_addr ? 1 : 0);
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER) {
		auth_kv_failed_rep(&to, "failed-login check", rep);
		return -1;
	}
	why = rep->element[0]->integer;
	pttl = rep->element[1]->integer;
	freeReplyObject(rep);
	if (why == 0)
		return 0;

	if (pttl == -2) /* expired since it was read: retry at once */
		pttl = 1;
	else if (pttl <= 0) /* no TTL (cannot happen with auth_fail_lua) */
		pttl = why == 3 ? cfg->login_fail_user_gap_ms
				: (long long)cfg->login_fail_window_s * 1000;
	if (why == 3) {
		/* Slowed, not locked: a short hint, the owner gets in soon. */
		counter_inc(login_locked);
		auth_answer_rate_limited(&to, "too many failed logins for this username, retry "
					      "shortly", (uint64_t)pttl);
		return -1;
	}
	text = why == 1 ? "too many failed logins from this address, retry later"
			: "too many failed logins for this username from this address, retry "
			  "later";
	counter_inc(login_locked);
	log_limited(&auth_gate_locked, LOG_INFO,
		    "auth: login refused, %s over its limit (retry in %lld ms)",
		    why == 1 ? k.addr : k.pair, pttl);
	auth_answer_rate_limited(&to, text, (uint64_t)pttl);
	return -1;
}

/* Counts one failure against name, the client's address and the pair
 * (IPv4, 0 if none: the name only). Best effort: the answer
 * (AUTH_FAILED) is known already, so a Redis failure here is only
 * logged. */
static void auth_fail_record(struct worker *w, uint32_t peer_addr, const char *name)
{
	const struct config *cfg = w->cfg;
	long long window_ms = (long long)cfg->login_fail_window_s * 1000;
	struct auth_fail_keys k;
	redisReply *rep;

	auth_fail_keys(&k, name, peer_addr);
	if (peer_addr)
		rep = kv_cmd(w->kv, "EVAL %s 3 %s %s %s %lld", auth_fail_lua, k.name, k.addr,
			     k.pair, window_ms);
	else
		rep = kv_cmd(w->kv, "EVAL %s 1 %s %lld", auth_fail_lua, k.name, window_ms);
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		counter_inc(redis_errors);
		log_limited(&auth_gate_storage, LOG_WARN, "auth: cannot count a failed login: %s",
			    rep ? rep->str : kv_errmsg(w->kv));
	}
	if (rep)
		freeReplyObject(rep);
}

/*
 * Counts a SIGNUP from the request's address. Returns 0 when it may go
 * on; -1 after answering 8 RATE_LIMITED. Fails open: SIGNUP otherwise
 * needs only MariaDB, and an outage of Redis should not stop it (the
 * hasher queue and login_concurrency still bound the work).
 */
static int auth_signup_check(struct req *r)
{
	const struct config *cfg = auth_cfg(r);
	struct auth_to to = auth_to_req(r);
	char key[AUTH_KEY_BYTES], ip[16];
	long long n, pttl;
	redisReply *rep;

	if (!cfg->signup_addr_limit || !r->s->peer_addr)
		return 0;
	auth_fmt_addr(ip, r->s->peer_addr);
	snprintf(key, sizeof(key), "rc:su:a:%s", ip);
	rep = kv_cmd(r->w->kv, "EVAL %s 1 %s %lld", auth_signup_lua, key,
		     (long long)cfg->signup_window_s * 1000);
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER) {
		counter_inc(redis_errors);
		log_limited(&auth_gate_storage, LOG_WARN,
			    "auth: signup limit not checked (Redis: %s); allowed",
			    rep && rep->type == REDIS_REPLY_ERROR ? rep->str : kv_errmsg(r->w->kv));
		if (rep)
			freeReplyObject(rep);
		return 0;
	}
	n = rep->element[0]->integer;
	pttl = rep->element[1]->integer;
	freeReplyObject(rep);
	if (n <= cfg->signup_addr_limit)
		return 0;
	if (pttl <= 0)
		pttl = 1;
	counter_inc(login_locked);
	log_limited(&auth_gate_locked, LOG_INFO,
		    "auth: signup refused, %s over %d per %d s (retry in %lld ms)", key,
		    cfg->signup_addr_limit, cfg->signup_window_s, pttl);
	auth_answer_rate_limited(&to, "too many signups from this address, retry later",
				 (uint64_t)pttl);
	return -1;
}

/* ---- sessions ------------------------------------------------------------ */

/*
 * The login is recorded: answers OK with reply (taken over), then sends
 * what the user missed and tells its friends it is online.
 */
static void auth_session_finish(const struct auth_to *to, cJSON *reply)
{
	struct worker *w = to->w;
	struct session *s = to->s;

	auth_answer(to, ST_OK, reply);
	friends_push_pending(w, s);
	messages_push_unacked(w, s);
	if (presence_notify_friends(w, s->user_id, true))
		log_limited(&auth_gate_presence, LOG_WARN,
			    "auth: online presence of user %" PRId64 " not sent", s->user_id);
}

/* A login waiting for the node of the user's previous session to kick it
 * and store the marks it holds (cluster_kick). */
struct auth_kick_wait {
	uint64_t conn;
	uint16_t cmd;
	struct pending_reply *p;
	cJSON *reply;
};

static void auth_kick_done(struct worker *w, void *arg)
{
	struct auth_kick_wait *kw = arg;
	struct auth_to to = {
		.w = w, .s = session_of(kw->conn), .conn = kw->conn, .cmd = kw->cmd, .p = kw->p,
	};

	if (to.s->conn == kw->conn) {
		auth_session_finish(&to, kw->reply);
		session_resume(w, to.s);
	} else {
		/* closed meanwhile: the reply slot was orphaned, this frees it */
		cJSON_Delete(kw->reply);
		reply_complete(w, kw->p, ST_INTERNAL, NULL);
	}
	free(kw);
}

/*
 * In a cluster: asks the other nodes to kick the user's session there (a
 * login elsewhere) and to store the unread marks their writers hold for
 * the user, so the login push below misses nothing, and answers once they
 * confirmed (or after CLUSTER_KICK_WAIT_MS: a node that is down recovers
 * its marks when it restarts). Returns false when it could not ask (then the caller goes on
 * at once); true when the answer now waits for the kick.
 */
static bool auth_kick_remote(struct auth_to *to, cJSON *reply)
{
	struct auth_kick_wait *kw = calloc(1, sizeof(*kw));

	if (!kw)
		return false;
	if (to->r) {
		/* RESUME answers through its request: reserve the slot */
		to->p = reply_defer(to->r);
		if (!to->p) {
			free(kw);
			return false; /* it answered INTERNAL */
		}
		to->r = NULL;
	}
	*kw = (struct auth_kick_wait){ .conn = to->conn, .cmd = to->cmd, .p = to->p, .reply = reply };
	session_hold(to->s);
	if (cluster_kick(to->w, to->s->user_id, to->conn, auth_kick_done, kw) == 0)
		return true;
	session_resume(to->w, to->s);
	free(kw);
	return false;
}

/*
 * Makes the connection of `to` the session of user uid with token (already
 * stored in Redis) and answers OK with reply (taken over); then sends
 * what the user missed. Kicks the session the user had, on this node or
 * another. RESUME calls it from its handler, LOGIN from its hash completion.
 */
static void auth_session_begin(const struct auth_to *to_in, int64_t uid, const char *token,
			       cJSON *reply)
{
	struct auth_to to = *to_in;
	struct worker *w = to.w;
	struct session *s = to.s;
	int prev_node = -1;
	uint64_t old;

	if (registry_set(uid, to.conn, &old)) {
		cJSON_Delete(reply);
		log_error("auth: registry out of memory, login of user %" PRId64 " refused", uid);
		auth_answer_err(&to, ST_INTERNAL, "out of memory");
		return;
	}
	s->user_id = uid;
	snprintf(s->token, sizeof(s->token), "%s", token);
	if (old && old != to.conn) {
		cJSON *k = cJSON_CreateObject();

		cJSON_AddStringToObject(k, "reason", "logged in elsewhere");
		outbox_push(w, old, CMD_PUSH_KICKED, k);
		outbox_close(w, old);
		counter_inc(kicks);
		log_info("event=kick user=%" PRId64 " conn=%u by_conn=%u", uid, CONN_SLOT(old),
			 CONN_SLOT(to.conn));
	}
	/* Presence is soft state: if Redis fails now, the session still
	 * stands and presence_refresh restores the entry later. */
	if (presence_set_online(w, uid, to.conn, &prev_node))
		log_limited(&auth_gate_presence, LOG_WARN,
			    "auth: presence of user %" PRId64 " not recorded", uid);
	cluster_announce(uid, true);
	counter_inc(logins);
	log_info("event=login user=%" PRId64 " conn=%u via=%s", uid, CONN_SLOT(to.conn),
		 to.cmd == CMD_RESUME ? "resume" : "password");
	/* the other nodes: a session of the user to close, marks to store */
	if (cluster_enabled() && auth_kick_remote(&to, reply))
		return;
	auth_session_finish(&to, reply);
}

/* A LOGIN or RESUME on a connection that already carries a user. */
static bool auth_refuse_relogin(struct req *r)
{
	if (!r->s->user_id)
		return false;
	reply_err(r, ST_FORBIDDEN, "already logged in; use a new connection for another login");
	return true;
}

/* ---- the hasher ----------------------------------------------------------- */

static struct auth_job *auth_job_new(struct req *r, enum hash_kind kind, const char *password,
				     void (*done)(struct worker *w, void *job))
{
	struct auth_job *job = calloc(1, sizeof(*job));

	if (!job) {
		reply_err(r, ST_INTERNAL, "out of memory");
		return NULL;
	}
	job->hash.kind = kind;
	job->w = r->w;
	job->done = done;
	/* req_str bounded it to PASSWD_MAX_BYTES */
	snprintf(job->hash.password, sizeof(job->hash.password), "%s", password);
	job->conn = r->conn;
	job->cmd = r->cmd;
	return job;
}

static void auth_job_free(struct auth_job *job)
{
	explicit_bzero(job, sizeof(*job));
	free(job);
}

/* The answer of a job, through the reply slot its request reserved. */
static struct auth_to auth_to_job(struct worker *w, struct auth_job *job)
{
	return (struct auth_to){
		.w = w, .s = session_of(job->conn),
		.conn = job->conn, .cmd = job->cmd, .p = job->p,
	};
}

/* True while the session slot of the job still is its connection's. */
static bool auth_job_conn_open(const struct auth_to *to)
{
	return to->s->conn == to->conn;
}

/*
 * Hands job to the hasher for r, which was admitted (auth_enter): reserves
 * r's reply slot and holds the connection's later frames until the job's
 * completion has answered. Takes over the job and the admission: when the
 * hasher refuses the job, answers 8 RATE_LIMITED (queue full) or 12, frees
 * the job, leaves and resumes the connection here.
 */
static void auth_submit(struct req *r, struct auth_job *job)
{
	struct auth_to to;
	uint64_t retry_ms;
	int ret;

	job->p = reply_defer(r);
	if (!job->p) { /* it answered 12 */
		auth_job_free(job);
		auth_leave();
		return;
	}
	session_hold(r->s);
	ret = hasher_submit(&job->hash);
	if (!ret)
		return;

	to = auth_to_job(r->w, job);
	if (ret == -EBUSY) {
		retry_ms = hasher_wait_ms();
		retry_ms += auth_rand() % (retry_ms / 2 + 1);
		if (retry_ms > AUTH_HASHER_RETRY_MAX_MS)
			retry_ms = AUTH_HASHER_RETRY_MAX_MS;
		counter_inc(hash_busy);
		log_limited(&auth_gate_hasher, LOG_WARN,
			    "auth: hasher queue full, %s refused (retry in %" PRIu64 " ms)",
			    rc_cmd_name(r->cmd), retry_ms);
		auth_answer_rate_limited(&to, "node busy with logins, retry later", retry_ms);
	} else {
		log_limited(&auth_gate_hasher, LOG_ERROR, "auth: hasher refused a job: %s",
			    strerror(-ret));
		auth_answer_err(&to, ST_INTERNAL, "cannot hash the password");
	}
	auth_job_free(job);
	auth_leave();
	session_resume(r->w, r->s);
}

/* ---- SIGNUP --------------------------------------------------------------- */

/* SIGNUP with its password hashed: insert the account and answer. */
static void auth_signup_hashed(const struct auth_to *to, struct auth_job *job)
{
	struct db *db = to->w->db;
	int64_t rc;
	uint64_t uid;
	cJSON *o;

	if (job->hash.err) {
		log_error("auth: passwd_hash: %s", strerror(-job->hash.err));
		auth_answer_err(to, ST_INTERNAL, "cannot hash the password");
		return;
	}
	if (db_begin(db)) {
		auth_db_failed(to, "signup begin");
		return;
	}
	rc = db_exec(db, "INSERT INTO users (username, avatar_url) VALUES (?, ?)", "ss",
		     job->name, job->avatar);
	if (rc == DB_ERR_DUP) {
		db_rollback(db);
		auth_answer(to, ST_ALREADY_EXISTS,
			    reply_error_payload("username %s is taken", job->name));
		return;
	}
	if (rc < 0)
		goto out_rollback;
	uid = db_insert_id(db);
	rc = db_exec(db, "INSERT INTO user_auth (user_id, password_hash, phone) VALUES (?, ?, ?)",
		     "uss", uid, job->hash.hash, job->phone);
	if (rc < 0)
		goto out_rollback;
	/* A failed COMMIT may still have landed (link lost at that moment):
	 * the client's retry then meets ALREADY_EXISTS and can LOGIN. */
	if (db_commit(db)) {
		auth_db_failed(to, "signup commit");
		return;
	}
	o = cJSON_CreateObject();
	json_add_int(o, "user_id", (int64_t)uid);
	auth_answer(to, ST_OK, o);
	return;

out_rollback:
	counter_inc(mysql_errors);
	log_limited(&auth_gate_storage, LOG_WARN, "auth: signup insert failed: %s",
			 db_errmsg(db));
	db_rollback(db);
	auth_storage_error(to);
}

/* Hasher completion of a SIGNUP, on the submitting worker. The account is
 * made even when the connection closed meanwhile (see the top comment). */
static void auth_signup_done(struct worker *w, void *arg)
{
	struct auth_job *job = arg;
	struct auth_to to = auth_to_job(w, job);

	auth_signup_hashed(&to, job);
	auth_leave();
	if (auth_job_conn_open(&to))
		session_resume(w, to.s);
	auth_job_free(job);
}

void auth_signup(struct req *r)
{
	const char *name, *password, *phone = "", *avatar = "";
	struct auth_job *job;
	bool present;

	if (!auth_req_username(r, &name) ||
	    !req_str(r, "password", AUTH_PASSWORD_MIN_BYTES, PASSWD_MAX_BYTES, &password) ||
	    !req_opt_str(r, "phone", 0, AUTH_PHONE_MAX_BYTES, &phone, &present) ||
	    !req_opt_str(r, "avatar_url", 0, AUTH_AVATAR_MAX_BYTES, &avatar, &present))
		return;
	if (!auth_enter(r))
		return;
	if (auth_signup_check(r)) {
		auth_leave();
		return;
	}
	/* Whether the name is free is not asked first: the INSERT's unique
	 * key is the real check, and a taken name is the rare case. */
	job = auth_job_new(r, HASH_MAKE, password, auth_signup_done);
	if (!job) {
		auth_leave();
		return;
	}
	job->hash.cost = auth_cfg(r)->hash_cost;
	snprintf(job->name, sizeof(job->name), "%s", name);
	snprintf(job->phone, sizeof(job->phone), "%s", phone);
	snprintf(job->avatar, sizeof(job->avatar), "%s", avatar);
	auth_submit(r, job);
}

/* ---- LOGIN --------------------------------------------------------------- */

static bool auth_login_ok(const struct auth_job *job)
{
	return job->hash.match && job->uid && job->active;
}

/* A wrong password counts whether or not its client stayed to hear it. */
static void auth_login_failed(struct worker *w, const struct auth_job *job)
{
	counter_inc(login_failures);
	auth_fail_record(w, job->peer_addr, job->name);
}

/* LOGIN with its password verified (or not): start the session or refuse. */
static void auth_login_verified(const struct auth_to *to, struct auth_job *job)
{
	struct worker *w = to->w;
	struct session *s = to->s;
	struct kv *kv = w->kv;
	char token[TOKEN_HEX_LEN + 1], key[AUTH_KEY_BYTES];
	struct auth_fail_keys fk;
	unsigned queued;
	redisReply *rep;
	int ret;
	cJSON *o;

	if (!auth_login_ok(job)) {
		if (s->auth_failures < UINT8_MAX)
			s->auth_failures++;
		auth_login_failed(w, job);
		auth_answer_err(to, ST_AUTH_FAILED, AUTH_ERR_CREDENTIALS);
		return;
	}

	ret = token_new(token);
	if (ret) {
		log_error("auth: token_new: %s", strerror(-ret));
		auth_answer_err(to, ST_INTERNAL, "cannot make a token");
		return;
	}
	auth_key_token(key, token);
	auth_fail_keys(&fk, job->name, job->peer_addr);
	/*
	 * One round trip: store the token, clear the name's failures and the
	 * pair's (not the address's: a client must not clear its address's
	 * record by logging in to an account of its own), and remember the
	 * address, which the name's slow-down then spares. Every kv_append,
	 * even a failed one, owes one kv_reply (kv.h).
	 */
	kv_append(kv, "SET %s %lld EX %d", key, (long long)job->uid, w->cfg->token_ttl_s);
	queued = 1;
	if (job->peer_addr) {
		kv_append(kv, "DEL %s %s", fk.name, fk.pair);
		kv_append(kv, "SET %s 1 EX %d", fk.known, w->cfg->token_ttl_s);
		queued += 2;
	} else {
		kv_append(kv, "DEL %s", fk.name);
		queued++;
	}
	rep = kv_reply(kv);
	for (unsigned i = 1; i < queued; i++) {
		redisReply *more = kv_reply(kv);

		if (more)
			freeReplyObject(more);
	}
	if (!rep || rep->type != REDIS_REPLY_STATUS) {
		auth_kv_failed_rep(to, "token store", rep);
		return;
	}
	freeReplyObject(rep);
	s->auth_failures = 0;

	o = cJSON_CreateObject();
	json_add_int(o, "user_id", job->uid);
	cJSON_AddStringToObject(o, "token", token);
	auth_session_begin(to, job->uid, token, o);
	explicit_bzero(token, sizeof(token));
}

/* Hasher completion of a LOGIN, on the submitting worker. */
static void auth_login_done(struct worker *w, void *arg)
{
	struct auth_job *job = arg;
	struct auth_to to = auth_to_job(w, job);

	if (!auth_job_conn_open(&to)) {
		/* Closed while hashing: the slot was orphaned, this frees it. */
		if (!auth_login_ok(job))
			auth_login_failed(w, job);
		reply_complete(w, job->p, ST_INTERNAL, NULL);
		auth_leave();
		auth_job_free(job);
		return;
	}
	auth_login_verified(&to, job);
	/* Before the held frames run: one of them may be a LOGIN of its own. */
	auth_leave();
	session_resume(w, to.s);
	auth_job_free(job);
}

void auth_login(struct req *r)
{
	const char *name, *password;
	struct auth_job *job;
	struct db_rows *rows;

	if (!auth_req_username(r, &name) || !req_str(r, "password", 1, PASSWD_MAX_BYTES, &password))
		return;
	if (auth_refuse_relogin(r))
		return;
	if (!auth_enter(r))
		return;
	if (auth_fail_check(r, name))
		goto out_leave;
	job = auth_job_new(r, HASH_VERIFY, password, auth_login_done);
	if (!job)
		goto out_leave;
	/*
	 * One round trip: the join reads the same two rows as two lookups
	 * would (the users row through the unique name index, then user_auth
	 * by primary key); the cold table is still read only here.
	 */
	rows = db_query(r->w->db,
			"SELECT u.id, u.state, a.password_hash FROM users u "
			"JOIN user_auth a ON a.user_id = u.id WHERE u.username = ?",
			"s", name);
	if (!rows) {
		struct auth_to to = auth_to_req(r);

		auth_job_free(job);
		auth_db_failed(&to, "login lookup");
		goto out_leave;
	}
	if (db_rows_count(rows) == 1 && db_cell_len(rows, 0, 2) < sizeof(job->hash.hash)) {
		job->uid = db_cell_i64(rows, 0, 0);
		job->active = db_cell_i64(rows, 0, 1) == 0;
		memcpy(job->hash.hash, db_cell_str(rows, 0, 2), db_cell_len(rows, 0, 2) + 1);
	} else {
		/* Unknown user: verify anyway, so the answer takes as long. */
		job->uid = 0;
		memcpy(job->hash.hash, auth_dummy_hash, sizeof(job->hash.hash));
	}
	db_rows_free(rows);
	snprintf(job->name, sizeof(job->name), "%s", name);
	job->peer_addr = r->s->peer_addr;
	auth_submit(r, job);
	return;

out_leave:
	auth_leave();
}

/* ---- RESUME -------------------------------------------------------------- */

static void auth_resume_admitted(struct req *r, const char *token)
{
	struct auth_to to = auth_to_req(r);
	char key[AUTH_KEY_BYTES];
	redisReply *rep;
	int64_t uid = 0;
	int64_t rc;
	cJSON *o;

	/* A token is opaque to clients: a malformed one is merely unknown. */
	if (!auth_token_well_formed(token)) {
		reply_err(r, ST_AUTH_FAILED, "unknown or expired token");
		return;
	}
	auth_key_token(key, token);
	rep = kv_cmd(r->w->kv, "GET %s", key);
	if (!rep || (rep->type != REDIS_REPLY_STRING && rep->type != REDIS_REPLY_NIL)) {
		auth_kv_failed_rep(&to, "token lookup", rep);
		return;
	}
	if (rep->type == REDIS_REPLY_STRING)
		uid = strtoll(rep->str, NULL, 10);
	freeReplyObject(rep);
	if (uid <= 0) {
		reply_err(r, ST_AUTH_FAILED, "unknown or expired token");
		return;
	}
	/* The account may have been disabled since the token was made. */
	rc = db_exec(r->w->db, "SELECT 1 FROM users WHERE id = ? AND state = 0", "l", uid);
	if (rc < 0) {
		auth_db_failed(&to, "resume lookup");
		return;
	}
	if (rc == 0) {
		reply_err(r, ST_AUTH_FAILED, "unknown or expired token");
		return;
	}
	o = cJSON_CreateObject();
	json_add_int(o, "user_id", uid);
	auth_session_begin(&to, uid, token, o);
}

void auth_resume(struct req *r)
{
	const char *token;

	if (!req_str(r, "token", 1, AUTH_TOKEN_FIELD_MAX_BYTES, &token))
		return;
	if (auth_refuse_relogin(r))
		return;
	if (!auth_enter(r))
		return;
	auth_resume_admitted(r, token);
	auth_leave();
}

/* ---- LOGOUT and close ----------------------------------------------------- */

void auth_logout(struct req *r)
{
	struct session *s = r->s;
	char key[AUTH_KEY_BYTES];
	redisReply *rep;

	/*
	 * Revoke before answering: a client told OK may rely on the token
	 * being dead (e.g. RESUME elsewhere at once). If Redis cannot revoke
	 * it, say so and keep the session, so the client can retry.
	 */
	if (s->token[0]) {
		auth_key_token(key, s->token);
		rep = kv_cmd(r->w->kv, "DEL %s", key);
		if (!rep || rep->type != REDIS_REPLY_INTEGER) {
			struct auth_to to = auth_to_req(r);

			if (rep)
				freeReplyObject(rep);
			auth_kv_failed(&to, "token revoke");
			return;
		}
		freeReplyObject(rep);
		explicit_bzero(s->token, sizeof(s->token));
	}
	/* The session ends when the connection does: auth_on_close. */
	log_info("event=logout user=%" PRId64 " conn=%u", s->user_id, CONN_SLOT(r->conn));
	r->close_after = true;
	reply_ok(r, NULL);
}

void auth_on_close(struct worker *w, struct session *s)
{
	/* Still the user's current session here? A kicked one is not, and a
	 * kick sends no offline presence. */
	if (!registry_remove(s->user_id, s->conn))
		return;
	/* The marks the writer holds for the user are stored now, before
	 * presence says it is gone: a login on another node that reads
	 * presence first finds them stored or asks us to (KICK). */
	if (cluster_enabled())
		messages_flush_marks(w, s->user_id, NULL);
	/* 0: a newer session (on another node) owns the entry; the user is
	 * still online. Negative (Redis down): nothing newer is known, say
	 * offline. */
	if (presence_set_offline(w, s->user_id, s->conn) == 0)
		return;
	cluster_announce(s->user_id, false);
	if (presence_notify_friends(w, s->user_id, false))
		log_limited(&auth_gate_presence, LOG_WARN,
			    "auth: offline presence of user %" PRId64 " not sent", s->user_id);
}

/* ---- global -------------------------------------------------------------- */

/* The worker pool's post, for the hasher's completions. */
static int (*auth_post)(struct worker *owner, void (*fn)(struct worker *, void *), void *arg);

/* Hasher thread: takes a finished job to the worker that submitted it. */
static int auth_hash_post(struct hash_job *hash)
{
	struct auth_job *job = (struct auth_job *)hash;

	return auth_post(job->w, job->done, job);
}

int auth_start(const struct config *cfg,
	       int (*post)(struct worker *owner, void (*fn)(struct worker *, void *), void *arg))
{
	static const char dummy_password[] = "no user has this password";
	int ret;

	atomic_store_explicit(&auth_inflight, 0, memory_order_relaxed);
	ret = passwd_hash(dummy_password, cfg->hash_cost, auth_dummy_hash,
			  sizeof(auth_dummy_hash));
	if (ret) {
		log_error("auth: cannot make the dummy hash: %s", strerror(-ret));
		return ret;
	}
	/* Last: nothing after it can fail and leave the threads running. */
	auth_post = post;
	ret = hasher_start(cfg, auth_hash_post);
	if (ret) {
		log_error("auth: cannot start the hasher: %s", strerror(-ret));
		return ret;
	}
	return 0;
}

void auth_stop(void)
{
	uint64_t shed = atomic_load_explicit(&counters.login_shed, memory_order_relaxed);
	uint64_t locked = atomic_load_explicit(&counters.login_locked, memory_order_relaxed);
	uint64_t busy = atomic_load_explicit(&counters.hash_busy, memory_order_relaxed);

	hasher_stop();
	if (shed || locked || busy)
		log_info("auth: %" PRIu64 " logins shed (node busy), %" PRIu64
			 " refused by the failed-login limit, %" PRIu64 " refused by a full hasher",
			 shed, locked, busy);
}
