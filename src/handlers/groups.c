/*
 * groups.c - chat groups: GROUP_CREATE, _DISSOLVE, _JOIN, _QUIT, _MEMBERS,
 * _LIST, and the membership lookups other modules use (social.h).
 *
 * Storage (sql/schema.sql): a chat_groups row per group (state 0 live,
 * 1 dissolved; the row stays so the id is never reused) and a group_members
 * row per member, ordered by join_seq.
 *
 * Concurrency. Every transaction that changes who is in a group, or who
 * owns it, starts by locking the group's row (SELECT ... FOR UPDATE), so
 * such changes of one group run one after the other on any worker or node:
 * two joins cannot both take the last seat, an owner's quit and a join
 * cannot both see the group with one member left, a dissolve sees the
 * final member list. The reads that follow are plain reads: InnoDB takes a
 * transaction's snapshot at its first non-locking read, after the lock was
 * granted, so they see what the previous holder committed. Each such
 * transaction locks a single group row, so they cannot deadlock on them.
 *
 * Refusals, where the contract leaves a choice:
 *   GROUP_QUIT by a non-member of a live group   5 NOT_FOUND (no such
 *                                                membership)
 *   GROUP_JOIN of a full group                   6 FORBIDDEN, "group is
 *                                                full (N members)"
 *   GROUP_DISSOLVE by a non-owner                6 FORBIDDEN, member or not
 *   GROUP_CREATE past groups_created_max live    6 FORBIDDEN, "group limit
 *   groups owned, or past groups_joined_max      reached: ..."
 *   memberships
 *   GROUP_JOIN past groups_joined_max            6 FORBIDDEN, the same
 * The caps are counted before the change, under a lock of the user's row
 * (SELECT ... FOR UPDATE on users), so one user's concurrent creates or
 * joins cannot all take the last place. Lock order: the group row (join),
 * then the user row; GROUP_CREATE locks only the user row. Ownership moves
 * to an heir when an owner quits, which may leave the heir above
 * groups_created_max: the cap bounds what a user makes, not what it
 * inherits.
 *
 * GROUP_LIST pages by group_id: "limit" (1..list_page_default, default
 * list_page_default) and "after" (a group_id, exclusive); the reply has
 * "next" (pass it as "after") when more follow.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/session.h"
#include "ringchat/log.h"
#include "ringchat/presence.h"
#include "ringchat/protocol.h"
#include "ringchat/request.h"
#include "ringchat/router.h"
#include "ringchat/social.h"
#include "ringchat/worker.h"

/* Bytes of a group name (protocol GROUP_CREATE). */
#define GROUP_NAME_MIN_BYTES 1
#define GROUP_NAME_MAX_BYTES 64

/* chat_groups.state */
#define GROUP_STATE_LIVE 0
#define GROUP_STATE_DISSOLVED 1
/* conversations.kind of a group's conversation (sql/schema.sql) */
#define GROUP_CONV_KIND 2

/* Logs a storage failure and answers 12 INTERNAL. Reads the reason before
 * the rollback, which would replace it. */
static void groups_db_failed(struct req *r, const char *what)
{
	reply_db_failed(r, "groups", what);
}

/*
 * Inside a transaction: locks the group's row (see the top comment).
 * Returns 1 for a live group (*owner set), 0 when it is missing or
 * dissolved, or a negative enum db_error.
 */
static int groups_lock(struct worker *w, int64_t group_id, int64_t *owner)
{
	struct db_rows *rows;
	int ret = 0;

	rows = db_query(w->db, "SELECT owner_id, state FROM chat_groups WHERE id = ? FOR UPDATE",
			"l", group_id);
	if (!rows)
		return db_last_error(w->db);
	if (db_rows_count(rows) == 1 && db_cell_i64(rows, 0, 1) == GROUP_STATE_LIVE) {
		*owner = db_cell_i64(rows, 0, 0);
		ret = 1;
	}
	db_rows_free(rows);
	return ret;
}

/*
 * Starts a transaction and locks the live group's row. Returns 1 when
 * locked (*owner set); otherwise it has answered (5 NOT_FOUND for a
 * missing or dissolved group, 12 INTERNAL), ended the transaction and
 * returns 0.
 */
static int groups_begin_locked(struct req *r, int64_t group_id, int64_t *owner)
{
	int ret;

	if (db_begin(r->w->db)) {
		groups_db_failed(r, "locking the group");
		return 0;
	}
	ret = groups_lock(r->w, group_id, owner);
	if (ret < 0) {
		groups_db_failed(r, "locking the group");
		return 0;
	}
	if (ret == 0) {
		db_rollback(r->w->db);
		reply_err(r, ST_NOT_FOUND, "no group %" PRId64, group_id);
		return 0;
	}
	return 1;
}

/*
 * The newest msg_id of the group (0 when it has none), the read cursor a
 * newcomer starts from so that older traffic is not pushed to it. Returns
 * 0 or a negative enum db_error.
 */
static int groups_newest_msg_id(struct worker *w, int64_t group_id, int64_t *msg_id)
{
	struct db_rows *rows;

	/* Through the group's conversation (uk_conversations), then one dive
	 * to the end of its range of idx_messages_conv: the scalar subquery is
	 * a constant, so MAX is read off the index (a join would scan every
	 * message of the group). A group that never had a message has no
	 * conversation row: the subquery is NULL, no row matches, MAX is NULL. */
	rows = db_query(w->db,
			"SELECT COALESCE(MAX(msg_id), 0) FROM messages WHERE conversation_id = "
			"(SELECT id FROM conversations WHERE kind = ? AND a = ? AND b = 0)",
			"il", GROUP_CONV_KIND, group_id);
	if (!rows)
		return db_last_error(w->db);
	*msg_id = db_rows_count(rows) ? db_cell_i64(rows, 0, 0) : 0;
	db_rows_free(rows);
	return 0;
}

/*
 * Inside a transaction: locks the user's row, then checks its caps: with
 * owned set, live groups it owns (groups_created_max); always, groups it
 * is in (groups_joined_max). Returns 0 when under both, 1 after answering
 * 6 FORBIDDEN (the transaction rolled back), or a negative enum db_error.
 */
static int groups_check_caps(struct req *r, bool owned)
{
	struct worker *w = r->w;
	struct db_rows *rows;
	int64_t joined, made;

	if (db_exec(w->db, "SELECT id FROM users WHERE id = ? FOR UPDATE", "l", r->s->user_id) <
	    0)
		return db_last_error(w->db);
	rows = db_query(w->db,
			"SELECT (SELECT COUNT(*) FROM group_members WHERE user_id = ?), "
			"(SELECT COUNT(*) FROM chat_groups WHERE owner_id = ? AND state = ?)",
			"lli", r->s->user_id, r->s->user_id, GROUP_STATE_LIVE);
	if (!rows)
		return db_last_error(w->db);
	joined = db_cell_i64(rows, 0, 0);
	made = db_cell_i64(rows, 0, 1);
	db_rows_free(rows);
	if (owned && made >= w->cfg->groups_created_max) {
		db_rollback(w->db);
		reply_err(r, ST_FORBIDDEN, "group limit reached: you own %d groups",
			  w->cfg->groups_created_max);
		return 1;
	}
	if (joined >= w->cfg->groups_joined_max) {
		db_rollback(w->db);
		reply_err(r, ST_FORBIDDEN, "group limit reached: you are in %d groups",
			  w->cfg->groups_joined_max);
		return 1;
	}
	return 0;
}

void groups_create(struct req *r)
{
	struct db *db = r->w->db;
	int64_t me = r->s->user_id, group_id;
	const char *name;
	cJSON *out;

	int ret;

	if (!req_str(r, "name", GROUP_NAME_MIN_BYTES, GROUP_NAME_MAX_BYTES, &name))
		return;
	if (db_begin(db))
		goto out_db_failed;
	ret = groups_check_caps(r, true);
	if (ret > 0)
		return;
	if (ret < 0)
		goto out_db_failed;
	if (db_exec(db, "INSERT INTO chat_groups (name, owner_id) VALUES (?, ?)", "sl", name, me) <
	    0)
		goto out_db_failed;
	group_id = (int64_t)db_insert_id(db);
	if (db_exec(db, "INSERT INTO group_members (group_id, user_id) VALUES (?, ?)", "ll",
		    group_id, me) < 0 ||
	    db_commit(db))
		goto out_db_failed;
	social_changed();
	out = cJSON_CreateObject();
	json_add_int(out, "group_id", group_id);
	reply_ok(r, out);
	return;

out_db_failed:
	groups_db_failed(r, "creating the group");
}

void groups_dissolve(struct req *r)
{
	struct worker *w = r->w;
	struct db *db = w->db;
	struct db_rows *rows = NULL;
	int64_t me = r->s->user_id, group_id, owner = 0, *ids = NULL;
	size_t n;
	cJSON *o;

	if (!req_id(r, "group_id", &group_id))
		return;
	if (groups_begin_locked(r, group_id, &owner) != 1)
		return;
	if (owner != me) {
		db_rollback(db);
		reply_err(r, ST_FORBIDDEN, "only the owner may dissolve group %" PRId64, group_id);
		return;
	}
	/* Under the lock this is the final list: nobody joins in between. */
	rows = db_query(db, "SELECT user_id FROM group_members WHERE group_id = ?", "l", group_id);
	if (!rows)
		goto out_db_failed;
	if (db_exec(db, "UPDATE chat_groups SET state = ? WHERE id = ?", "il",
		    GROUP_STATE_DISSOLVED, group_id) < 0 ||
	    db_exec(db, "DELETE FROM group_members WHERE group_id = ?", "l", group_id) < 0 ||
	    db_commit(db))
		goto out_db_failed;
	social_changed();
	reply_ok(r, NULL);

	n = db_rows_count(rows);
	ids = malloc((n ? n : 1) * sizeof(*ids));
	o = cJSON_CreateObject();
	if (ids && o) {
		for (size_t i = 0; i < n; i++)
			ids[i] = db_cell_i64(rows, i, 0);
		json_add_int(o, "group_id", group_id);
		router_push_users(w, ids, n, me, CMD_PUSH_GROUP_DISSOLVED, o, NULL);
	} else {
		log_warn("groups: out of memory: group %" PRId64 " dissolved without pushes",
			 group_id);
	}
	cJSON_Delete(o);
	free(ids);
	db_rows_free(rows);
	return;

out_db_failed:
	db_rows_free(rows);
	groups_db_failed(r, "dissolving the group");
}

void groups_join(struct req *r)
{
	struct worker *w = r->w;
	struct db *db = w->db;
	struct db_rows *rows;
	int64_t me = r->s->user_id, group_id, owner, count, already, newest = 0;
	int cap = w->cfg->group_member_cap, ret;

	if (!req_id(r, "group_id", &group_id))
		return;
	if (groups_begin_locked(r, group_id, &owner) != 1)
		return;
	/* Size and our own membership in one pass over the group's members. */
	rows = db_query(db,
			"SELECT COUNT(*), COALESCE(SUM(user_id = ?), 0) FROM group_members "
			"WHERE group_id = ?",
			"ll", me, group_id);
	if (!rows)
		goto out_db_failed;
	count = db_cell_i64(rows, 0, 0);
	already = db_cell_i64(rows, 0, 1);
	db_rows_free(rows);
	if (already) {
		db_rollback(db);
		reply_err(r, ST_ALREADY_EXISTS, "you are already a member of group %" PRId64,
			  group_id);
		return;
	}
	if (count >= cap) {
		db_rollback(db);
		reply_err(r, ST_FORBIDDEN, "group %" PRId64 " is full (%d members)", group_id, cap);
		return;
	}
	ret = groups_check_caps(r, false);
	if (ret > 0)
		return;
	if (ret < 0)
		goto out_db_failed;
	if (groups_newest_msg_id(w, group_id, &newest) ||
	    db_exec(db,
		    "INSERT INTO group_members (group_id, user_id, read_msg_id) VALUES (?, ?, ?)",
		    "lll", group_id, me, newest) < 0 ||
	    db_commit(db))
		goto out_db_failed;
	social_changed();
	reply_ok(r, NULL);
	return;

out_db_failed:
	groups_db_failed(r, "joining the group");
}

void groups_quit(struct req *r)
{
	struct worker *w = r->w;
	struct db *db = w->db;
	struct db_rows *rows;
	int64_t me = r->s->user_id, group_id, owner = 0, n;

	if (!req_id(r, "group_id", &group_id))
		return;
	if (groups_begin_locked(r, group_id, &owner) != 1)
		return;
	/* Read before deleting: a DELETE of a missing row would gap-lock. */
	n = db_exec(db, "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", "ll",
		    group_id, me);
	if (n < 0)
		goto out_db_failed;
	if (n == 0) {
		db_rollback(db);
		reply_err(r, ST_NOT_FOUND, "you are not a member of group %" PRId64, group_id);
		return;
	}
	if (db_exec(db, "DELETE FROM group_members WHERE group_id = ? AND user_id = ?", "ll",
		    group_id, me) < 0)
		goto out_db_failed;
	/* Who is left, longest-standing first: the heir if the owner left. */
	rows = db_query(db,
			"SELECT user_id FROM group_members WHERE group_id = ? "
			"ORDER BY join_seq LIMIT 1",
			"l", group_id);
	if (!rows)
		goto out_db_failed;
	if (db_rows_count(rows) == 0)
		n = db_exec(db, "UPDATE chat_groups SET state = ? WHERE id = ?", "il",
			    GROUP_STATE_DISSOLVED, group_id);
	else if (owner == me)
		n = db_exec(db, "UPDATE chat_groups SET owner_id = ? WHERE id = ?", "ll",
			    db_cell_i64(rows, 0, 0), group_id);
	else
		n = 0;
	db_rows_free(rows);
	if (n < 0 || db_commit(db))
		goto out_db_failed;
	social_changed();
	reply_ok(r, NULL);
	return;

out_db_failed:
	groups_db_failed(r, "leaving the group");
}

void groups_members(struct req *r)
{
	struct worker *w = r->w;
	struct db_rows *rows;
	int64_t me = r->s->user_id, group_id, *ids = NULL;
	int *nodes = NULL;
	cJSON *out = NULL, *members;
	bool is_member = false;
	size_t n;

	if (!req_id(r, "group_id", &group_id))
		return;
	/* The group's state and its members in one statement: a row per member
	 * (oldest first), or one row with NULL member columns when it has none. */
	rows = db_query(w->db,
			"SELECT g.state, m.user_id, u.username FROM chat_groups g "
			"LEFT JOIN group_members m ON m.group_id = g.id "
			"LEFT JOIN users u ON u.id = m.user_id "
			"WHERE g.id = ? ORDER BY m.join_seq",
			"l", group_id);
	if (!rows) {
		groups_db_failed(r, "reading the members");
		return;
	}
	n = db_rows_count(rows);
	if (n == 0 || db_cell_i64(rows, 0, 0) != GROUP_STATE_LIVE) {
		reply_err(r, ST_NOT_FOUND, "no group %" PRId64, group_id);
		goto out_free;
	}
	if (db_cell_is_null(rows, 0, 1))
		n = 0;
	ids = malloc((n ? n : 1) * sizeof(*ids));
	nodes = malloc((n ? n : 1) * sizeof(*nodes));
	if (!ids || !nodes)
		goto out_no_memory;
	for (size_t i = 0; i < n; i++) {
		ids[i] = db_cell_i64(rows, i, 1);
		if (ids[i] == me)
			is_member = true;
	}
	if (!is_member) {
		reply_err(r, ST_FORBIDDEN, "you are not a member of group %" PRId64, group_id);
		goto out_free;
	}
	if (presence_lookup(w, ids, n, nodes)) {
		log_warn("groups: presence lookup for group %" PRId64 " failed", group_id);
		reply_err(r, ST_INTERNAL, "presence store unreachable; retry later");
		goto out_free;
	}

	out = cJSON_CreateObject();
	members = cJSON_AddArrayToObject(out, "members");
	if (!members)
		goto out_no_memory;
	for (size_t i = 0; i < n; i++) {
		cJSON *m = cJSON_CreateObject();

		if (!m)
			goto out_no_memory;
		cJSON_AddItemToArray(members, m);
		if (!json_add_int(m, "user_id", ids[i]) ||
		    !cJSON_AddStringToObject(m, "username", db_cell_str(rows, i, 2)) ||
		    !cJSON_AddBoolToObject(m, "online", nodes[i] >= 0))
			goto out_no_memory;
	}
	reply_ok(r, out);
	out = NULL;
	goto out_free;

out_no_memory:
	reply_err(r, ST_INTERNAL, "out of memory");
out_free:
	cJSON_Delete(out);
	free(nodes);
	free(ids);
	db_rows_free(rows);
}

void groups_list(struct req *r)
{
	struct worker *w = r->w;
	struct db_rows *rows;
	cJSON *out, *groups;
	int64_t limit, after = 0;
	bool has_limit, has_after;
	size_t n;

	if (!req_opt_int(r, "limit", 1, w->cfg->list_page_default, &limit, &has_limit) ||
	    !req_opt_id(r, "after", &after, &has_after))
		return;
	if (!has_limit)
		limit = w->cfg->list_page_default;
	if (!has_after)
		after = 0;
	/* one row more than the page tells whether another page follows */
	rows = db_query(w->db,
			"SELECT g.id, g.name, g.owner_id FROM group_members m "
			"JOIN chat_groups g ON g.id = m.group_id "
			"WHERE m.user_id = ? AND g.state = 0 AND g.id > ? ORDER BY g.id LIMIT ?",
			"lll", r->s->user_id, after, limit + 1);
	if (!rows) {
		groups_db_failed(r, "listing the groups");
		return;
	}
	n = db_rows_count(rows);
	if ((int64_t)n > limit)
		n = (size_t)limit;
	out = cJSON_CreateObject();
	groups = cJSON_AddArrayToObject(out, "groups");
	if (!groups)
		goto out_no_memory;
	for (size_t i = 0; i < n; i++) {
		cJSON *g = cJSON_CreateObject();

		if (!g)
			goto out_no_memory;
		cJSON_AddItemToArray(groups, g);
		if (!json_add_int(g, "group_id", db_cell_i64(rows, i, 0)) ||
		    !cJSON_AddStringToObject(g, "name", db_cell_str(rows, i, 1)) ||
		    !json_add_int(g, "owner", db_cell_i64(rows, i, 2)))
			goto out_no_memory;
	}
	if (db_rows_count(rows) > n && !json_add_int(out, "next", db_cell_i64(rows, n - 1, 0)))
		goto out_no_memory;
	db_rows_free(rows);
	reply_ok(r, out);
	return;

out_no_memory:
	cJSON_Delete(out);
	db_rows_free(rows);
	reply_err(r, ST_INTERNAL, "out of memory");
}
