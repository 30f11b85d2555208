/*
 * membership.c - the lease on node_id and the live set of peers, in Redis.
 *
 * Our lease goes through these states (tick thread only):
 *
 *            acquire ok               refresh ok / restored
 *   NONE ---------------> HELD <-------------------------+
 *     |                    |  \__________________________|
 *     | acquire: key       |  refresh finds another token
 *     | exists             v
 *     +-> (-EADDRINUSE)   LOST  (lease_lost called once; ticks do nothing)
 *
 * "Restored": the key was gone when we refreshed it (Redis restarted
 * without persistence, or we were cut off longer than the TTL and nobody
 * took the id meanwhile); the refresh re-creates it with our token, which
 * is safe because creating is only done when the key is absent.
 *
 * Time. The lease is valid for ttl from the moment Redis ran the refresh;
 * we only know an upper bound of that moment, the send time, so
 * confirmed_ms is taken before the command is sent and
 * membership_lease_valid errs on the safe side.
 *
 * Peer table. Only the tick thread writes it: it builds the new view from
 * the heartbeat reply, swaps it in under the mutex and publishes the up
 * mask (release store, paired with the acquire load in membership_is_up),
 * then calls the events without holding the mutex.
 */
#include "ringchat/membership.h"
#include "ringchat/clock.h"
#include "ringchat/config.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MEMBERSHIP_KEY_PREFIX "rc:node:"
/* Fields the heartbeat script returns per live node, after its id. */
#define MEMBERSHIP_PEER_FIELDS 6

/* KEYS[1] our key; ARGV: token ttl_ms addr admin link start_ms pid. Create
 * only when absent; else return the holder's fields. */
static const char acquire_lua[] =
    "local h = redis.call('hgetall', KEYS[1]) "
    "if #h > 0 then return h end "
    "redis.call('hset', KEYS[1], 'token', ARGV[1], 'addr', ARGV[3], 'admin', ARGV[4], "
    "'link', ARGV[5], 'start_ms', ARGV[6], 'pid', ARGV[7]) "
    "redis.call('pexpire', KEYS[1], ARGV[2]) "
    "return 1";

/*
 * KEYS[1] our key; ARGV as acquire_lua, then the highest node id and the
 * key prefix. Returns {state, id, token, addr, admin, link, start_ms,
 * pid, id, ...}: state 1 refreshed, 2 re-created, 0 held by another
 * token; then every live node, ours included. "or ''" because a nil
 * would end the Lua table there.
 */
static const char heartbeat_lua[] =
    "local t = redis.call('hget', KEYS[1], 'token') "
    "local st = 0 "
    "if t == ARGV[1] then "
    "  redis.call('hset', KEYS[1], 'link', ARGV[5]) "
    "  redis.call('pexpire', KEYS[1], ARGV[2]) "
    "  st = 1 "
    "elseif redis.call('exists', KEYS[1]) == 0 then "
    "  redis.call('hset', KEYS[1], 'token', ARGV[1], 'addr', ARGV[3], 'admin', ARGV[4], "
    "  'link', ARGV[5], 'start_ms', ARGV[6], 'pid', ARGV[7]) "
    "  redis.call('pexpire', KEYS[1], ARGV[2]) "
    "  st = 2 "
    "end "
    "local r = {st} "
    "for i = 0, tonumber(ARGV[8]) do "
    "  local h = redis.call('hmget', ARGV[9] .. i, 'token', 'addr', 'admin', 'link', "
    "  'start_ms', 'pid') "
    "  if h[1] then "
    "    r[#r + 1] = i "
    "    for j = 1, 6 do r[#r + 1] = h[j] or '' end "
    "  end "
    "end "
    "return r";

/* Delete only if the lease is still ours. */
static const char release_lua[] = "if redis.call('hget', KEYS[1], 'token') == ARGV[1] then "
				  "return redis.call('del', KEYS[1]) else return 0 end";

enum membership_state { MEMBERSHIP_NONE, MEMBERSHIP_HELD, MEMBERSHIP_LOST };

struct membership {
	struct membership_ops ops;
	void *ctx;
	struct node_info self;
	char key[32];
	char token_hex[17];
	unsigned ttl_ms;
	enum membership_state state;
	uint64_t grace_until_ms; /* after Redis lost the leases: peers missing until then are kept up */
	uint64_t confirmed_ms; /* mono ms of the last refresh's send; 0 = never */
	bool outage_logged;    /* "lease unconfirmed" said once per outage */

	pthread_mutex_t lock;			      /* guards peers[] for readers */
	struct node_info peers[MEMBERSHIP_MAX_NODES]; /* valid where up_mask has the bit */
	_Atomic uint32_t up_mask;
};

struct membership *membership_create(const struct config *cfg, const struct node_info *self,
				     const struct membership_ops *ops, void *ctx)
{
	struct membership *m = calloc(1, sizeof(*m));
	uint64_t token = 0;

	if (!m)
		return NULL;
	/* a zero token could not be told from "no token" in logs; redraw */
	while (token == 0)
		if (getrandom(&token, sizeof(token), 0) != sizeof(token))
			goto out_free;
	m->self = *self;
	m->self.id = cfg->node_id;
	m->self.token = token;
	m->self.start_ms = clock_epoch_ms();
	m->self.pid = (int)getpid();
	m->self.addr[sizeof(m->self.addr) - 1] = '\0';
	m->self.admin[sizeof(m->self.admin) - 1] = '\0';
	m->self.link[sizeof(m->self.link) - 1] = '\0';
	snprintf(m->key, sizeof(m->key), MEMBERSHIP_KEY_PREFIX "%d", cfg->node_id);
	snprintf(m->token_hex, sizeof(m->token_hex), "%016" PRIx64, token);
	m->ttl_ms = (unsigned)cfg->node_ttl_ms;
	if (ops)
		m->ops = *ops;
	m->ctx = ctx;
	if (pthread_mutex_init(&m->lock, NULL))
		goto out_free;
	return m;
out_free:
	free(m);
	return NULL;
}

void membership_destroy(struct membership *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static bool membership_reply_str(const redisReply *r)
{
	return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static void membership_copy(char *dst, size_t size, const redisReply *r)
{
	size_t n = membership_reply_str(r) ? r->len : 0;

	if (n >= size)
		n = size - 1;
	if (n)
		memcpy(dst, r->str, n);
	dst[n] = '\0';
}

static uint64_t membership_u64(const redisReply *r, int base)
{
	char buf[32];

	membership_copy(buf, sizeof(buf), r);
	return strtoull(buf, NULL, base);
}

/* Fills one field of *info from a hash field name and its value. */
static void membership_field(struct node_info *info, const redisReply *name, const redisReply *v)
{
	if (!membership_reply_str(name))
		return;
	if (strcmp(name->str, "token") == 0)
		info->token = membership_u64(v, 16);
	else if (strcmp(name->str, "addr") == 0)
		membership_copy(info->addr, sizeof(info->addr), v);
	else if (strcmp(name->str, "admin") == 0)
		membership_copy(info->admin, sizeof(info->admin), v);
	else if (strcmp(name->str, "link") == 0)
		membership_copy(info->link, sizeof(info->link), v);
	else if (strcmp(name->str, "start_ms") == 0)
		info->start_ms = membership_u64(v, 10);
	else if (strcmp(name->str, "pid") == 0)
		info->pid = (int)membership_u64(v, 10);
}

/* Appends the EVAL of script with our fields; same shape for both. */
static redisReply *membership_eval(struct membership *m, struct kv *kv, const char *script)
{
	return kv_cmd(kv, "EVAL %s 1 %s %s %u %s %s %s %" PRIu64 " %d %d %s", script, m->key,
		      m->token_hex, m->ttl_ms, m->self.addr, m->self.admin, m->self.link,
		      m->self.start_ms, m->self.pid, MEMBERSHIP_MAX_NODES - 1,
		      MEMBERSHIP_KEY_PREFIX);
}

int membership_acquire(struct membership *m, struct kv *kv, struct node_info *holder)
{
	uint64_t sent = clock_mono_ms();
	redisReply *r = membership_eval(m, kv, acquire_lua);
	int ret = -EPROTO;

	if (!r)
		return -ENOTCONN;
	if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		m->state = MEMBERSHIP_HELD;
		m->confirmed_ms = sent;
		log_info("membership: node_id %d leased (token %s, ttl %u ms)", m->self.id,
			 m->token_hex, m->ttl_ms);
		ret = 0;
	} else if (r->type == REDIS_REPLY_ARRAY) {
		if (holder) {
			memset(holder, 0, sizeof(*holder));
			holder->id = m->self.id;
			for (size_t i = 0; i + 1 < r->elements; i += 2)
				membership_field(holder, r->element[i], r->element[i + 1]);
		}
		ret = -EADDRINUSE;
	} else {
		log_error("membership: unexpected reply to the lease of %s (type %d%s%s)", m->key,
			  r->type, r->type == REDIS_REPLY_ERROR ? ": " : "",
			  r->type == REDIS_REPLY_ERROR ? r->str : "");
	}
	freeReplyObject(r);
	return ret;
}

/* Reads the live set from a heartbeat reply into view; returns its mask,
 * our own id left out. */
static uint32_t membership_parse_view(const struct membership *m, const redisReply *r,
				      struct node_info *view)
{
	uint32_t mask = 0;

	for (size_t i = 1; i + MEMBERSHIP_PEER_FIELDS < r->elements;
	     i += 1 + MEMBERSHIP_PEER_FIELDS) {
		redisReply *const *f = &r->element[i + 1];
		long long id =
		    r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : -1;
		struct node_info *p;

		if (id < 0 || id >= MEMBERSHIP_MAX_NODES || id == m->self.id)
			continue;
		p = &view[id];
		memset(p, 0, sizeof(*p));
		p->id = (int)id;
		p->token = membership_u64(f[0], 16);
		membership_copy(p->addr, sizeof(p->addr), f[1]);
		membership_copy(p->admin, sizeof(p->admin), f[2]);
		membership_copy(p->link, sizeof(p->link), f[3]);
		p->start_ms = membership_u64(f[4], 10);
		p->pid = (int)membership_u64(f[5], 10);
		mask |= 1u << id;
	}
	return mask;
}

static bool membership_same_addrs(const struct node_info *a, const struct node_info *b)
{
	return strcmp(a->addr, b->addr) == 0 && strcmp(a->admin, b->admin) == 0 &&
	       strcmp(a->link, b->link) == 0;
}

/* Swaps in the new view and calls the events; see "Peer table" above. */
static void membership_apply_view(struct membership *m, const struct node_info *view, uint32_t mask)
{
	/* only this thread writes the table, so reading it unlocked is fine */
	uint32_t old = atomic_load_explicit(&m->up_mask, memory_order_relaxed);
	uint32_t down = 0, up = 0, changed = 0;
	int i;

	for (i = 0; i < MEMBERSHIP_MAX_NODES; i++) {
		uint32_t bit = 1u << i;

		if ((old & bit) && !(mask & bit)) {
			down |= bit;
		} else if (!(old & bit) && (mask & bit)) {
			up |= bit;
		} else if (old & bit) {
			if (m->peers[i].token != view[i].token) {
				/* restarted between two heartbeats */
				down |= bit;
				up |= bit;
			} else if (!membership_same_addrs(&m->peers[i], &view[i])) {
				changed |= bit;
			}
		}
	}
	if (!(down | up | changed))
		return;
	pthread_mutex_lock(&m->lock);
	for (i = 0; i < MEMBERSHIP_MAX_NODES; i++)
		if (mask & (1u << i))
			m->peers[i] = view[i];
	/* pairs with the acquire loads of membership_is_up/up_mask */
	atomic_store_explicit(&m->up_mask, mask, memory_order_release);
	pthread_mutex_unlock(&m->lock);

	for (i = 0; i < MEMBERSHIP_MAX_NODES; i++) {
		if (!(down & (1u << i)))
			continue;
		log_info("membership: node %d down", i);
		if (m->ops.node_down)
			m->ops.node_down(m->ctx, i);
	}
	for (i = 0; i < MEMBERSHIP_MAX_NODES; i++) {
		if (!((up | changed) & (1u << i)))
			continue;
		log_info("membership: node %d %s: addr=%s admin=%s link=%s started=%" PRIu64
			 " pid=%d",
			 i, up & (1u << i) ? "up" : "changed", view[i].addr, view[i].admin,
			 view[i].link, view[i].start_ms, view[i].pid);
		if (m->ops.node_up)
			m->ops.node_up(m->ctx, i, &view[i]);
	}
}

int membership_tick(struct membership *m, struct kv *kv)
{
	struct node_info view[MEMBERSHIP_MAX_NODES];
	uint64_t sent;
	redisReply *r;
	uint32_t mask;

	if (m->state == MEMBERSHIP_LOST)
		return -ESTALE;
	if (m->state != MEMBERSHIP_HELD)
		return -EINVAL;
	sent = clock_mono_ms();
	r = membership_eval(m, kv, heartbeat_lua);
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER) {
		if (r) {
			log_error("membership: unexpected heartbeat reply (type %d%s%s)", r->type,
				  r->type == REDIS_REPLY_ERROR ? ": " : "",
				  r->type == REDIS_REPLY_ERROR ? r->str : "");
			freeReplyObject(r);
		}
		if (!m->outage_logged && sent >= m->confirmed_ms + m->ttl_ms) {
			m->outage_logged = true;
			log_warn("membership: lease of node_id %d unconfirmed for %u ms; another "
				 "node may take it",
				 m->self.id, m->ttl_ms);
		}
		return -ENOTCONN;
	}
	switch (r->element[0]->integer) {
	case 0:
		freeReplyObject(r);
		m->state = MEMBERSHIP_LOST;
		log_error("membership: lease of node_id %d (token %s) is now held by another "
			  "instance; this node must not use the id any more",
			  m->self.id, m->token_hex);
		if (m->ops.lease_lost)
			m->ops.lease_lost(m->ctx);
		return -ESTALE;
	case 2:
		log_warn("membership: lease of node_id %d was gone from Redis; re-created",
			 m->self.id);
		/* Redis lost every lease (a restart without persistence): the
		 * others re-create theirs at their next heartbeat. Until a TTL
		 * has passed, a peer missing from the view is not down. */
		m->grace_until_ms = sent + m->ttl_ms;
		break;
	default:
		break;
	}
	m->confirmed_ms = sent;
	m->outage_logged = false;
	memset(view, 0, sizeof(view));
	mask = membership_parse_view(m, r, view);
	freeReplyObject(r);
	if (sent < m->grace_until_ms) {
		uint32_t kept = atomic_load_explicit(&m->up_mask, memory_order_relaxed) & ~mask;

		for (int i = 0; i < MEMBERSHIP_MAX_NODES; i++)
			if (kept & (1u << i))
				view[i] = m->peers[i];
		mask |= kept;
	}
	membership_apply_view(m, view, mask);
	return 0;
}

int membership_release(struct membership *m, struct kv *kv)
{
	redisReply *r;
	int ret;

	if (m->state != MEMBERSHIP_HELD)
		return 0;
	r = kv_cmd(kv, "EVAL %s 1 %s %s", release_lua, m->key, m->token_hex);
	if (!r)
		return -ENOTCONN;
	ret = r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? 1 : 0;
	freeReplyObject(r);
	m->state = MEMBERSHIP_NONE;
	if (ret)
		log_info("membership: node_id %d released", m->self.id);
	return ret;
}

void membership_set_link(struct membership *m, const char *link)
{
	snprintf(m->self.link, sizeof(m->self.link), "%s", link ? link : "");
}

unsigned membership_heartbeat_ms(const struct membership *m)
{
	return m->ttl_ms / 5;
}

bool membership_lease_valid(const struct membership *m)
{
	return m->state == MEMBERSHIP_HELD && clock_mono_ms() < m->confirmed_ms + m->ttl_ms;
}

const struct node_info *membership_self(const struct membership *m)
{
	return &m->self;
}

int membership_format_holder(char *buf, size_t size, const struct node_info *h, int ttl_ms)
{
	time_t secs = (time_t)(h->start_ms / 1000);
	char when[32] = "?";
	struct tm tm;

	if (gmtime_r(&secs, &tm))
		snprintf(when + strftime(when, sizeof(when) - 5, "%Y-%m-%dT%H:%M:%S", &tm), 6,
			 ".%03uZ", (unsigned)(h->start_ms % 1000));
	return snprintf(buf, size,
			"node_id %d is held by a live node: %s (admin %s, pid %d, started %s); "
			"it is free when that node stops, or %d ms after it died",
			h->id, h->addr[0] ? h->addr : "?", h->admin[0] ? h->admin : "off", h->pid,
			when, ttl_ms);
}

bool membership_is_up(const struct membership *m, int id)
{
	if (id < 0 || id >= MEMBERSHIP_MAX_NODES)
		return false;
	/* pairs with the release store in membership_apply_view */
	return atomic_load_explicit(&m->up_mask, memory_order_acquire) & (1u << id);
}

uint32_t membership_up_mask(const struct membership *m)
{
	/* pairs with the release store in membership_apply_view */
	return atomic_load_explicit(&m->up_mask, memory_order_acquire);
}

int membership_peer(struct membership *m, int id, struct node_info *info)
{
	int ret = -ENOENT;

	if (id < 0 || id >= MEMBERSHIP_MAX_NODES)
		return -ENOENT;
	pthread_mutex_lock(&m->lock);
	if (atomic_load_explicit(&m->up_mask, memory_order_relaxed) & (1u << id)) {
		*info = m->peers[id];
		ret = 0;
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}
