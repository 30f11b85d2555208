/*
 * friends.c - friend requests and friendships: FRIEND_REQUEST, _ACCEPT,
 * _DELETE, _LIST, _UPDATE, the pending-request pushes at login, and the
 * friendship check other modules use (social.h).
 *
 * Storage (sql/schema.sql): a friendship is two rows of `friends`, (a, b)
 * and (b, a), each side owning its remark and group; a request is one row
 * of `friend_requests` keyed (to_id, from_id).
 *
 * Concurrency. Requests of one pair of users may run at the same time on
 * different workers or nodes: A asks B while B asks A, B accepts while A
 * deletes. Every transaction that changes a pair's rows first locks both
 * users' rows (SELECT ... FOR UPDATE, ascending id), which makes the pair's
 * transactions run one after the other, and the lock order keeps two pairs
 * that share a user from deadlocking. The checks that follow are plain
 * reads: InnoDB takes a transaction's snapshot at its first non-locking
 * read, which comes after the lock is granted, so they see everything the
 * previous holder committed. Reading without locks also keeps gap locks
 * (on rows that do not exist) out of the picture.
 *
 * Refusals, where the contract leaves a choice:
 *   FRIEND_REQUEST to oneself            1 BAD_REQUEST
 *   FRIEND_REQUEST repeated while pending 0 OK: the request stays one row,
 *                                        its remark is replaced; the target
 *                                        is not pushed again (one push per
 *                                        request, or a repeat would be a
 *                                        free channel of pushes)
 *   FRIEND_REQUEST crossing one from the target: both become friends and
 *                                        both get PUSH_FRIEND_ACCEPTED
 *   FRIEND_ACCEPT/DELETE/UPDATE naming oneself: 5 NOT_FOUND (no such
 *                                        request or friendship can exist)
 *
 * Caps (config), each answered 6 FORBIDDEN with a reason that names it:
 *   friends_max          friendships per user: FRIEND_REQUEST by a user at
 *                        the cap, FRIEND_ACCEPT (or a crossing request) when
 *                        either side is at it
 *   friend_requests_max  requests waiting for one user's answer: a new
 *                        request past it (a repeat of a pending one is fine)
 * Counted inside the pair-locked transaction: every change of a user's
 * friendships or requests locks that user's row, so two requests cannot
 * both take the last place.
 *
 * FRIEND_LIST pages its friends by user_id: "limit" (1..list_page_default,
 * default list_page_default) and "after" (a user_id, exclusive); the reply
 * has "next" (pass it as "after") when more follow. "pending" comes with
 * the first page only (no "after"), at most friend_requests_max of them.
 * The pushes of pending requests at login are bounded too (encoded bytes,
 * a share of out_limit_bytes, login_push.h); the rest shows in
 * FRIEND_LIST and at later logins.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/handoff.h"
#include "ringchat/login_push.h"
#include "ringchat/db.h"
#include "ringchat/session.h"
#include "ringchat/log.h"
#include "ringchat/presence.h"
#include "ringchat/outbox.h"
#include "ringchat/protocol.h"
#include "ringchat/request.h"
#include "ringchat/router.h"
#include "ringchat/social.h"
#include "ringchat/worker.h"

/* Bytes of a remark: the request note and the stored remark alike. */
#define FRIEND_REMARK_MAX_BYTES 30
/* A username is at most 32 bytes (protocol SIGNUP), plus the NUL. */
#define FRIEND_NAME_BYTES 33

/* Requests TO a user, oldest first, at most ? of them: FRIEND_LIST's
 * "pending" and the pushes at login share the statement (and its cache
 * entry). */
static const char SQL_PENDING_TO[] =
    "SELECT r.from_id, u.username, r.remark FROM friend_requests r "
    "JOIN users u ON u.id = r.from_id WHERE r.to_id = ? "
    "ORDER BY r.created_at, r.from_id LIMIT ?";

/* Rows of `table` with `col` = uid (a primary-key prefix range). Returns
 * the count or a negative enum db_error. */
static int64_t friends_count(struct worker *w, const char *sql, int64_t uid)
{
	struct db_rows *rows = db_query(w->db, sql, "l", uid);
	int64_t n;

	if (!rows)
		return db_last_error(w->db);
	n = db_rows_count(rows) ? db_cell_i64(rows, 0, 0) : 0;
	db_rows_free(rows);
	return n;
}

#define SQL_COUNT_FRIENDS "SELECT COUNT(*) FROM friends WHERE user_id = ?"
#define SQL_COUNT_PENDING "SELECT COUNT(*) FROM friend_requests WHERE to_id = ?"

/*
 * Inside the pair-locked transaction: 0 when neither a nor b is at
 * friends_max (b may be 0: only a), 1 when a is, 2 when b is, or a
 * negative enum db_error.
 */
static int friends_at_cap(struct worker *w, int64_t a, int64_t b)
{
	int64_t n = friends_count(w, SQL_COUNT_FRIENDS, a);

	if (n < 0)
		return (int)n;
	if (n >= w->cfg->friends_max)
		return 1;
	if (!b)
		return 0;
	n = friends_count(w, SQL_COUNT_FRIENDS, b);
	if (n < 0)
		return (int)n;
	return n >= w->cfg->friends_max ? 2 : 0;
}

/* Answers 6 for friends_at_cap's verdict (1 or 2) about me and other. */
static void friends_cap_refused(struct req *r, int who, int64_t other)
{
	db_rollback(r->w->db);
	if (who == 1)
		reply_err(r, ST_FORBIDDEN, "friend limit reached: you have %d friends",
			  r->w->cfg->friends_max);
	else
		reply_err(r, ST_FORBIDDEN, "friend limit reached: user %" PRId64 " has %d friends",
			  other, r->w->cfg->friends_max);
}

/* Logs a storage failure and answers 12 INTERNAL. Reads the reason before
 * the rollback, which would replace it. */
static void friends_db_failed(struct req *r, const char *what)
{
	reply_db_failed(r, "friends", what);
}

/*
 * Usernames of users a and b (a != b), read outside any transaction (users
 * are never deleted, so an answer stays true). Returns 1 when both exist,
 * 0 when either does not, or a negative enum db_error.
 */
static int friends_pair_names(struct worker *w, int64_t a, int64_t b,
			      char a_name[FRIEND_NAME_BYTES], char b_name[FRIEND_NAME_BYTES])
{
	struct db_rows *rows;
	size_t found = 0;

	rows = db_query(w->db, "SELECT id, username FROM users WHERE id IN (?, ?)", "ll", a, b);
	if (!rows)
		return db_last_error(w->db);
	for (size_t i = 0; i < db_rows_count(rows); i++) {
		int64_t id = db_cell_i64(rows, i, 0);
		char *dst = id == a ? a_name : id == b ? b_name : NULL;

		if (!dst)
			continue;
		snprintf(dst, FRIEND_NAME_BYTES, "%s", db_cell_str(rows, i, 1));
		found++;
	}
	db_rows_free(rows);
	return found == 2;
}

/* Inside a transaction: locks the rows of users a and b, lower id first
 * (see the top comment). Returns 0 or a negative enum db_error. */
static int friends_pair_lock(struct worker *w, int64_t a, int64_t b)
{
	int64_t n = db_exec(w->db, "SELECT id FROM users WHERE id IN (?, ?) ORDER BY id FOR UPDATE",
			    "ll", a, b);

	return n < 0 ? (int)n : 0;
}

/*
 * Inside a transaction holding the pair lock: turns the pending request
 * asker → accepter into a friendship (the request row goes, both friends
 * rows come). A friends row that somehow exists already is left as is, so
 * the outcome is the same friendship either way. Returns 0 or a negative
 * enum db_error.
 */
static int friends_make(struct worker *w, int64_t asker, int64_t accepter)
{
	int64_t n;

	n = db_exec(w->db, "DELETE FROM friend_requests WHERE to_id = ? AND from_id = ?", "ll",
		    accepter, asker);
	if (n < 0)
		return (int)n;
	n = db_exec(w->db,
		    "INSERT INTO friends (user_id, friend_id) VALUES (?, ?), (?, ?) "
		    "ON DUPLICATE KEY UPDATE state = state",
		    "llll", asker, accepter, accepter, asker);
	return n < 0 ? (int)n : 0;
}

/* PUSH_FRIEND_ACCEPTED to `to`, naming the user who is now its friend. */
static void friends_push_accepted(struct worker *w, int64_t to, int64_t friend_id,
				  const char *friend_name)
{
	cJSON *o = cJSON_CreateObject();

	json_add_int(o, "user_id", friend_id);
	cJSON_AddStringToObject(o, "username", friend_name);
	router_push_user(w, to, CMD_PUSH_FRIEND_ACCEPTED, o);
}

static cJSON *friends_request_payload(int64_t from, const char *username, const char *remark)
{
	cJSON *o = cJSON_CreateObject();

	json_add_int(o, "from", from);
	cJSON_AddStringToObject(o, "username", username);
	cJSON_AddStringToObject(o, "remark", remark);
	return o;
}

void friends_request(struct req *r)
{
	struct worker *w = r->w;
	struct db *db = w->db;
	int64_t me = r->s->user_id, to, n;
	char my_name[FRIEND_NAME_BYTES] = "", to_name[FRIEND_NAME_BYTES] = "";
	const char *remark = "";
	bool has_remark;
	int ret;

	if (!req_id(r, "user_id", &to))
		return;
	if (!req_opt_str(r, "remark", 0, FRIEND_REMARK_MAX_BYTES, &remark, &has_remark))
		return;
	if (!has_remark)
		remark = "";
	if (to == me) {
		reply_err(r, ST_BAD_REQUEST, "cannot send a friend request to yourself");
		return;
	}
	ret = friends_pair_names(w, me, to, my_name, to_name);
	if (ret < 0)
		goto out_db_failed;
	if (ret == 0) {
		reply_err(r, ST_NOT_FOUND, "no user %" PRId64, to);
		return;
	}

	if (db_begin(db) || friends_pair_lock(w, me, to))
		goto out_db_failed;
	n = db_exec(db, "SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", "ll", me, to);
	if (n < 0)
		goto out_db_failed;
	if (n > 0) {
		db_rollback(db);
		reply_err(r, ST_ALREADY_EXISTS, "user %" PRId64 " is already your friend", to);
		return;
	}
	n = db_exec(db, "SELECT 1 FROM friend_requests WHERE to_id = ? AND from_id = ?", "ll", me,
		    to);
	if (n < 0)
		goto out_db_failed;
	if (n > 0) {
		/* The target asked us first: this request answers it. */
		ret = friends_at_cap(w, me, to);
		if (ret < 0)
			goto out_db_failed;
		if (ret > 0) {
			friends_cap_refused(r, ret, to);
			return;
		}
		if (friends_make(w, to, me) || db_commit(db))
			goto out_db_failed;
		social_changed();
		reply_ok(r, NULL);
		friends_push_accepted(w, to, me, my_name);
		friends_push_accepted(w, me, to, to_name);
		return;
	}
	n = db_exec(db, "SELECT 1 FROM friend_requests WHERE to_id = ? AND from_id = ?", "ll", to,
		    me);
	if (n < 0)
		goto out_db_failed;
	if (n > 0) {
		/* A repeat: the remark is replaced, the target was told once. */
		if (db_exec(db,
			    "UPDATE friend_requests SET remark = ? WHERE to_id = ? AND from_id = ?",
			    "sll", remark, to, me) < 0 ||
		    db_commit(db))
			goto out_db_failed;
		reply_ok(r, NULL);
		return;
	}
	ret = friends_at_cap(w, me, 0);
	if (ret < 0)
		goto out_db_failed;
	if (ret > 0) {
		friends_cap_refused(r, ret, to);
		return;
	}
	n = friends_count(w, SQL_COUNT_PENDING, to);
	if (n < 0)
		goto out_db_failed;
	if (n >= w->cfg->friend_requests_max) {
		db_rollback(db);
		reply_err(r, ST_FORBIDDEN,
			  "user %" PRId64 " has too many friend requests waiting (%d)", to,
			  w->cfg->friend_requests_max);
		return;
	}
	n = db_exec(db, "INSERT INTO friend_requests (from_id, to_id, remark) VALUES (?, ?, ?)",
		    "lls", me, to, remark);
	if (n < 0 || db_commit(db))
		goto out_db_failed;
	reply_ok(r, NULL);
	/* Offline (or gone since): the request is pushed at its next login. */
	router_push_user(w, to, CMD_PUSH_FRIEND_REQUEST,
			 friends_request_payload(me, my_name, remark));
	return;

out_db_failed:
	friends_db_failed(r, "storing the friend request");
}

void friends_accept(struct req *r)
{
	struct worker *w = r->w;
	struct db *db = w->db;
	int64_t me = r->s->user_id, asker, n;
	char my_name[FRIEND_NAME_BYTES] = "", asker_name[FRIEND_NAME_BYTES] = "";
	int ret;

	if (!req_id(r, "user_id", &asker))
		return;
	if (asker == me)
		goto out_no_request;
	ret = friends_pair_names(w, me, asker, my_name, asker_name);
	if (ret < 0)
		goto out_db_failed;
	if (ret == 0)
		goto out_no_request;

	if (db_begin(db) || friends_pair_lock(w, me, asker))
		goto out_db_failed;
	n = db_exec(db, "SELECT 1 FROM friend_requests WHERE to_id = ? AND from_id = ?", "ll", me,
		    asker);
	if (n < 0)
		goto out_db_failed;
	if (n == 0) {
		db_rollback(db);
		goto out_no_request;
	}
	ret = friends_at_cap(w, me, asker);
	if (ret < 0)
		goto out_db_failed;
	if (ret > 0) {
		friends_cap_refused(r, ret, asker);
		return;
	}
	if (friends_make(w, asker, me) || db_commit(db))
		goto out_db_failed;
	social_changed();
	reply_ok(r, NULL);
	friends_push_accepted(w, asker, me, my_name);
	return;

out_no_request:
	reply_err(r, ST_NOT_FOUND, "no pending friend request from user %" PRId64, asker);
	return;
out_db_failed:
	friends_db_failed(r, "accepting the friend request");
}

void friends_delete(struct req *r)
{
	struct worker *w = r->w;
	struct db *db = w->db;
	int64_t me = r->s->user_id, other, n;

	if (!req_id(r, "user_id", &other))
		return;
	if (other == me)
		goto out_not_friend;
	/* Most deletes name a friend; a cheap read spares the locks when not. */
	n = db_exec(db, "SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", "ll", me,
		    other);
	if (n < 0)
		goto out_db_failed;
	if (n == 0)
		goto out_not_friend;

	if (db_begin(db) || friends_pair_lock(w, me, other))
		goto out_db_failed;
	n = db_exec(db, "DELETE FROM friends WHERE user_id = ? AND friend_id = ?", "ll", me, other);
	if (n < 0)
		goto out_db_failed;
	if (n == 0) {
		/* Deleted by the other side in the meantime. */
		db_rollback(db);
		goto out_not_friend;
	}
	n = db_exec(db, "DELETE FROM friends WHERE user_id = ? AND friend_id = ?", "ll", other, me);
	if (n < 0 || db_commit(db))
		goto out_db_failed;
	social_changed();
	reply_ok(r, NULL);
	return;

out_not_friend:
	reply_err(r, ST_NOT_FOUND, "user %" PRId64 " is not your friend", other);
	return;
out_db_failed:
	friends_db_failed(r, "deleting the friendship");
}

void friends_update(struct req *r)
{
	struct db *db = r->w->db;
	int64_t me = r->s->user_id, other, group = 0, n;
	const char *remark = "";
	bool has_remark, has_group;

	if (!req_id(r, "user_id", &other))
		return;
	if (!req_opt_str(r, "remark", 0, FRIEND_REMARK_MAX_BYTES, &remark, &has_remark))
		return;
	if (!req_opt_int(r, "group", INT32_MIN, INT32_MAX, &group, &has_group))
		return;
	if (!has_remark)
		remark = "";
	/* One statement: only this side's row, only the fields given. The
	 * connection counts matched rows, so 0 means "not a friend". */
	n = db_exec(db,
		    "UPDATE friends SET remark = IF(?, ?, remark), "
		    "friend_group = IF(?, ?, friend_group) "
		    "WHERE user_id = ? AND friend_id = ?",
		    "isiill", (int)has_remark, remark, (int)has_group, (int)group, me, other);
	if (n < 0) {
		friends_db_failed(r, "updating the friend");
		return;
	}
	if (n == 0) {
		reply_err(r, ST_NOT_FOUND, "user %" PRId64 " is not your friend", other);
		return;
	}
	reply_ok(r, NULL);
}

void friends_list(struct req *r)
{
	struct worker *w = r->w;
	struct db_rows *rows = NULL, *pend = NULL;
	cJSON *out = NULL, *friends, *pending;
	int64_t me = r->s->user_id, *ids = NULL, limit, after = 0;
	int *nodes = NULL;
	bool has_limit, has_after;
	size_t n;

	if (!req_opt_int(r, "limit", 1, w->cfg->list_page_default, &limit, &has_limit) ||
	    !req_opt_id(r, "after", &after, &has_after))
		return;
	if (!has_limit)
		limit = w->cfg->list_page_default;
	if (!has_after)
		after = 0;
	/* One range of the friends primary key, each joined to its users row;
	 * one row more than the page tells whether another page follows. */
	rows = db_query(w->db,
			"SELECT f.friend_id, u.username, f.remark, f.friend_group "
			"FROM friends f JOIN users u ON u.id = f.friend_id "
			"WHERE f.user_id = ? AND f.friend_id > ? ORDER BY f.friend_id LIMIT ?",
			"lll", me, after, limit + 1);
	if (!rows)
		goto out_db_failed;
	if (!has_after) {
		pend = db_query(w->db, SQL_PENDING_TO, "ll", me,
				(int64_t)w->cfg->friend_requests_max);
		if (!pend)
			goto out_db_failed;
	}

	n = db_rows_count(rows);
	if ((int64_t)n > limit)
		n = (size_t)limit;
	ids = malloc((n ? n : 1) * sizeof(*ids));
	nodes = malloc((n ? n : 1) * sizeof(*nodes));
	if (!ids || !nodes) {
		reply_err(r, ST_INTERNAL, "out of memory");
		goto out_free;
	}
	for (size_t i = 0; i < n; i++)
		ids[i] = db_cell_i64(rows, i, 0);
	/* Every online flag in one Redis round trip. */
	if (presence_lookup(w, ids, n, nodes)) {
		log_warn("friends: presence lookup for user %" PRId64 " failed", me);
		reply_err(r, ST_INTERNAL, "presence store unreachable; retry later");
		goto out_free;
	}

	out = cJSON_CreateObject();
	friends = cJSON_AddArrayToObject(out, "friends");
	pending = cJSON_AddArrayToObject(out, "pending");
	if (!friends || !pending)
		goto out_no_memory;
	for (size_t i = 0; i < n; i++) {
		cJSON *f = cJSON_CreateObject();

		if (!f)
			goto out_no_memory;
		cJSON_AddItemToArray(friends, f);
		if (!json_add_int(f, "user_id", ids[i]) ||
		    !cJSON_AddStringToObject(f, "username", db_cell_str(rows, i, 1)) ||
		    !cJSON_AddStringToObject(f, "remark", db_cell_str(rows, i, 2)) ||
		    !json_add_int(f, "group", db_cell_i64(rows, i, 3)) ||
		    !cJSON_AddBoolToObject(f, "online", nodes[i] >= 0))
			goto out_no_memory;
	}
	for (size_t i = 0; pend && i < db_rows_count(pend); i++) {
		cJSON *p = cJSON_CreateObject();

		if (!p)
			goto out_no_memory;
		cJSON_AddItemToArray(pending, p);
		if (!json_add_int(p, "user_id", db_cell_i64(pend, i, 0)) ||
		    !cJSON_AddStringToObject(p, "username", db_cell_str(pend, i, 1)))
			goto out_no_memory;
	}
	if (db_rows_count(rows) > n && !json_add_int(out, "next", ids[n - 1]))
		goto out_no_memory;
	reply_ok(r, out);
	out = NULL;
	goto out_free;

out_no_memory:
	reply_err(r, ST_INTERNAL, "out of memory");
	goto out_free;
out_db_failed:
	friends_db_failed(r, "reading the friend list");
out_free:
	cJSON_Delete(out);
	free(nodes);
	free(ids);
	db_rows_free(pend);
	db_rows_free(rows);
}

void friends_push_pending(struct worker *w, struct session *s)
{
	struct db_rows *rows;

	/* Counted as encoded frames (a remark of control characters is six
	 * times its length in JSON), within a share of the output limit that
	 * leaves the message pushes theirs. */
	size_t budget = (size_t)w->cfg->out_limit_bytes / LOGIN_PUSH_REQ_DIV, sent = 0, i;

	rows = db_query(w->db, SQL_PENDING_TO, "ll", s->user_id,
			(int64_t)w->cfg->friend_requests_max);
	if (!rows) {
		/* They stay stored: the next login or FRIEND_LIST shows them. */
		counter_inc(mysql_errors);
		log_warn("friends: pending requests of user %" PRId64 " not pushed: %s", s->user_id,
			 db_errmsg(w->db));
		return;
	}
	for (i = 0; i < db_rows_count(rows); i++) {
		struct out_msg *f = outbox_frame_json(
		    s->conn, CMD_PUSH_FRIEND_REQUEST, ST_OK, 0,
		    friends_request_payload(db_cell_i64(rows, i, 0), db_cell_str(rows, i, 1),
					    db_cell_str(rows, i, 2)));

		if (!f)
			break;
		if (sent + f->len > budget) {
			free(f);
			break;
		}
		sent += f->len;
		outbox_send(w, f);
	}
	if (i < db_rows_count(rows))
		log_info("friends: user %" PRId64 " has more pending requests than one login "
			 "pushes (%zu sent); FRIEND_LIST shows them all", s->user_id, i);
	db_rows_free(rows);
}
