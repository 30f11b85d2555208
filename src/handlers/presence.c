#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "ringchat/clock.h"
#include "ringchat/cluster.h"
#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/session.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"
#include "ringchat/presence.h"
#include "ringchat/protocol.h"
#include "ringchat/request.h"
#include "ringchat/router.h"
#include "ringchat/worker.h"

/* Delete only if the value still names our session. */
static const char cas_del_lua[] =
	"if redis.call('get', KEYS[1]) == ARGV[1] then "
	"return redis.call('del', KEYS[1]) else return 0 end";
/* Refresh our entry, or restore it if Redis lost it; leave a newer
 * session's entry alone. */
static const char refresh_lua[] =
	"local v = redis.call('get', KEYS[1]) "
	"if v == false or v == ARGV[1] then "
	"redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end "
	"return 0";

static void fmt_key(char *buf, size_t n, int64_t uid)
{
	snprintf(buf, n, "rc:on:%" PRId64, uid);
}

static void fmt_val(struct worker *w, char *buf, size_t n, uint64_t conn)
{
	snprintf(buf, n, "%d:%" PRIu64, w->cfg->node_id, conn);
}

static int presence_ttl_s(const struct worker *w)
{
	return PRESENCE_TTL_FACTOR * w->cfg->presence_refresh_s;
}

static int parse_node(const redisReply *r)
{
	if (!r || r->type != REDIS_REPLY_STRING)
		return -1;
	return atoi(r->str);
}

int presence_set_online(struct worker *w, int64_t uid, uint64_t conn, int *prev_node)
{
	char key[40], val[48];
	redisReply *r;

	fmt_key(key, sizeof(key), uid);
	fmt_val(w, val, sizeof(val), conn);
	*prev_node = -1;
	r = kv_cmd(w->kv, "SET %s %s EX %d GET", key, val, presence_ttl_s(w));
	if (!r || r->type == REDIS_REPLY_ERROR) {
		counter_inc(redis_errors);
		if (r)
			freeReplyObject(r);
		return -EIO;
	}
	*prev_node = parse_node(r);
	freeReplyObject(r);
	return 0;
}

int presence_set_offline(struct worker *w, int64_t uid, uint64_t conn)
{
	char key[40], val[48];
	redisReply *r;
	int ret;

	fmt_key(key, sizeof(key), uid);
	fmt_val(w, val, sizeof(val), conn);
	r = kv_cmd(w->kv, "EVAL %s 1 %s %s", cas_del_lua, key, val);
	if (!r || r->type != REDIS_REPLY_INTEGER) {
		counter_inc(redis_errors);
		if (r)
			freeReplyObject(r);
		return -EIO;
	}
	ret = r->integer > 0 ? 1 : 0;
	freeReplyObject(r);
	return ret;
}

int presence_lookup(struct worker *w, const int64_t *uids, size_t n, int *node)
{
	const char **argv;
	size_t *lens;
	char (*keys)[40];
	redisReply *r;
	int ret = -EIO;

	for (size_t i = 0; i < n; i++)
		node[i] = -1;
	if (!n)
		return 0;
	argv = malloc((n + 1) * sizeof(*argv));
	lens = malloc((n + 1) * sizeof(*lens));
	keys = malloc(n * sizeof(*keys));
	if (!argv || !lens || !keys)
		goto out_free;
	argv[0] = "MGET";
	lens[0] = 4;
	for (size_t i = 0; i < n; i++) {
		fmt_key(keys[i], sizeof(keys[i]), uids[i]);
		argv[i + 1] = keys[i];
		lens[i + 1] = strlen(keys[i]);
	}
	r = kv_argv(w->kv, (int)n + 1, argv, lens);
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == n) {
		for (size_t i = 0; i < n; i++) {
			node[i] = parse_node(r->element[i]);
			/* a node that died leaves its users' entries behind
			 * until their TTL: they are offline now */
			if (node[i] >= 0 && !cluster_node_alive(node[i]))
				node[i] = -1;
		}
		ret = 0;
	} else {
		counter_inc(redis_errors);
	}
	if (r)
		freeReplyObject(r);
out_free:
	free(argv);
	free(lens);
	free(keys);
	return ret;
}


/* When this worker refreshes next (mono ms); 0 = now. */
static _Thread_local uint64_t presence_next_ms;

void presence_refresh_now(struct worker *w)
{
	presence_next_ms = 0;
	presence_refresh(w);
}

void presence_refresh(struct worker *w)
{
	uint32_t nworkers = (uint32_t)w->pool->n;
	uint64_t now = clock_mono_ms();
	size_t queued = 0;

	if (now < presence_next_ms)
		return;
	presence_next_ms = now + (uint64_t)w->cfg->presence_refresh_s * 1000;
	for (uint32_t s = (uint32_t)w->id; s < session_slots(); s += nworkers) {
		struct session *ss = session_at(s);
		char key[40], val[48];

		if (!ss->user_id || ss->closing)
			continue;
		fmt_key(key, sizeof(key), ss->user_id);
		fmt_val(w, val, sizeof(val), ss->conn);
		/* every append, even a failed one, owes one kv_reply: the
		 * link must be left with nothing pending (kv.h) */
		queued++;
		if (kv_append(w->kv, "EVAL %s 1 %s %s %d", refresh_lua, key, val,
			      presence_ttl_s(w)))
			break;
	}
	for (size_t i = 0; i < queued; i++) {
		redisReply *r = kv_reply(w->kv);

		if (!r) {
			counter_inc(redis_errors);
			continue;
		}
		freeReplyObject(r);
	}
}

int presence_notify_friends(struct worker *w, int64_t uid, bool online)
{
	struct db_rows *rows;
	int64_t *ids;
	size_t n;
	cJSON *o;

	rows = db_query(w->db, "SELECT friend_id FROM friends WHERE user_id = ?", "l", uid);
	if (!rows) {
		counter_inc(mysql_errors);
		return -EIO;
	}
	n = db_rows_count(rows);
	ids = malloc((n ? n : 1) * sizeof(*ids));
	if (!ids) {
		db_rows_free(rows);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		ids[i] = db_cell_i64(rows, i, 0);
	db_rows_free(rows);
	o = cJSON_CreateObject();
	json_add_int(o, "user_id", uid);
	cJSON_AddBoolToObject(o, "online", online);
	router_push_users(w, ids, n, uid, CMD_PUSH_PRESENCE, o, NULL);
	cJSON_Delete(o);
	free(ids);
	return 0;
}
