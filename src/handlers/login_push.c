/*
 * login_push.c - what a user missed, pushed when it logs in: every message
 * it has not acknowledged, 1:1 (the unread table) and group (messages
 * above its read cursor in each group), merged oldest first.
 *
 * The rows are read in pages, one stream per source, and merged by msg_id.
 * A login pushes at most half of out_limit_bytes: the rest follows at the
 * next login, after the client has acknowledged what it got, so a user
 * with a large backlog is never closed for output it did not ask for.
 * The budget counts the encoded frames, not the stored text: JSON escaping
 * makes a control character six bytes (\u0001), so text counted raw could
 * pass the connection's output limit six times over and close every login.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/db.h"
#include "ringchat/log.h"
#include "ringchat/login_push.h"
#include "ringchat/msgrow.h"
#include "ringchat/outbox.h"
#include "ringchat/protocol.h"
#include "ringchat/handoff.h"
#include "ringchat/session.h"
#include "ringchat/social.h"
#include "ringchat/worker.h"

#define LOGIN_PUSH_PAGE 500	 /* rows per query */
#define LOGIN_PUSH_ROWS 4000	 /* rows held at once over all streams */
#define LOGIN_PUSH_PAGE_MIN 16
/* Pushes of a login, messages and friend requests together, stay below
 * this share of out_limit_bytes (the OK, presence and live pushes need
 * the rest). Messages get 1 / LOGIN_PUSH_MSG_DIV, friend requests
 * 1 / LOGIN_PUSH_REQ_DIV (login_push.h). */
#define LOGIN_PUSH_MSG_DIV 2

/* One source of unacked messages, read in pages oldest first. */
struct login_stream {
	int64_t conv;  /* the group's conversation; 0 for the user's 1:1 rows */
	int64_t after; /* msg_id of the last row read */
	int64_t below; /* ids from here on were pushed live (see messages_push_unacked) */
	struct db_rows *rows;
	size_t pos;
	bool done; /* no rows after `after` */
};

static int login_stream_fill(struct worker *w, struct login_stream *st, int64_t uid, int64_t page)
{
	db_rows_free(st->rows);
	st->pos = 0;
	if (st->conv)
		/* the member's own messages were never pushed to it */
		st->rows = db_query(w->db,
				    "SELECT " MSGROW_COLS " FROM messages WHERE conversation_id = ? "
				    "AND msg_id > ? AND msg_id < ? AND from_id <> ? ORDER BY msg_id LIMIT ?",
				    "lllll", st->conv, st->after, st->below, uid, page);
	else
		st->rows =
		    db_query(w->db,
			     "SELECT m.msg_id, m.conversation_id, m.from_id, m.to_id, m.group_id, "
			     "m.type, m.text, m.send_time FROM (SELECT msg_id FROM unread "
			     "WHERE to_id = ? AND msg_id > ? AND msg_id < ? ORDER BY msg_id LIMIT ?) u "
			     "JOIN messages m ON m.msg_id = u.msg_id ORDER BY m.msg_id",
			     "llll", uid, st->after, st->below, page);
	if (!st->rows)
		return db_last_error(w->db);
	st->done = (int64_t)db_rows_count(st->rows) < page;
	return 0;
}

/* The stream's current row, reading the next page when needed; false at
 * its end (or on error, *err set). */
static bool login_stream_peek(struct worker *w, struct login_stream *st, int64_t uid, int64_t page,
			    int *err)
{
	if (st->rows && st->pos < db_rows_count(st->rows))
		return true;
	if (st->done)
		return false;
	*err = login_stream_fill(w, st, uid, page);
	if (*err)
		return false;
	return db_rows_count(st->rows) > 0;
}

void login_push_unacked(struct worker *w, struct session *s, int64_t below)
{
	int64_t uid = s->user_id, page;
	/* stop well below the connection's output cap: the rest waits for
	 * the next login (after the client has acked what it got) */
	size_t budget = (size_t)w->cfg->out_limit_bytes / LOGIN_PUSH_MSG_DIV, sent_bytes = 0,
	       pushed = 0;
	bool full = false;
	struct login_stream *st = NULL;
	struct db_rows *groups;
	size_t nst = 0;
	int err = 0;

	groups = db_query(w->db,
			  "SELECT c.id, gm.read_msg_id FROM group_members gm "
			  "JOIN conversations c ON c.kind = ? AND c.a = gm.group_id AND c.b = 0 "
			  "WHERE gm.user_id = ?",
			  "il", SOCIAL_CONV_GROUP, uid);
	if (!groups) {
		err = db_last_error(w->db);
		goto out_failed;
	}
	st = calloc(db_rows_count(groups) + 1, sizeof(*st));
	if (!st) {
		err = -ENOMEM;
		goto out_failed;
	}
	st[nst++] = (struct login_stream){.below = below};
	for (size_t i = 0; i < db_rows_count(groups); i++)
		st[nst++] = (struct login_stream){.conv = db_cell_i64(groups, i, 0),
						.after = db_cell_i64(groups, i, 1),
						.below = below};
	db_rows_free(groups);
	page = LOGIN_PUSH_ROWS / (int64_t)nst;
	if (page > LOGIN_PUSH_PAGE)
		page = LOGIN_PUSH_PAGE;
	if (page < LOGIN_PUSH_PAGE_MIN)
		page = LOGIN_PUSH_PAGE_MIN;

	/* merge the streams by msg_id: oldest first across all of them */
	while (sent_bytes < budget) {
		struct login_stream *best = NULL;
		int64_t best_id = 0;

		for (size_t i = 0; i < nst; i++) {
			int64_t id;

			if (!login_stream_peek(w, &st[i], uid, page, &err)) {
				if (err)
					goto out_failed;
				continue;
			}
			id = db_cell_i64(st[i].rows, st[i].pos, 0);
			if (!best || id < best_id) {
				best = &st[i];
				best_id = id;
			}
		}
		if (!best)
			break;
		cJSON *m = msgrow_json(best->rows, best->pos);
		struct out_msg *f;

		if (!m) {
			err = -ENOMEM;
			goto out_failed;
		}
		/* the frame as it will be sent: its length is what counts */
		f = outbox_frame_json(s->conn, CMD_PUSH_MSG, ST_OK, 0, m);
		if (!f) {
			err = -ENOMEM;
			goto out_failed;
		}
		if (sent_bytes + f->len > budget) {
			/* the first one goes alone if it can: a message larger
			 * than the budget would otherwise block all behind it */
			if (pushed || f->len > budget + budget / 2) {
				free(f);
				full = true;
				break;
			}
		}
		sent_bytes += f->len;
		best->after = best_id;
		best->pos++;
		outbox_send(w, f);
		counter_inc(msgs_pushed);
		pushed++;
	}
	if (full)
		log_info("messages: user %" PRId64 " has more unacked messages than one login "
			 "pushes (%zu sent); the rest follows at its next login",
			 uid, pushed);
	goto out_free;

out_failed:
	if (err != -ENOMEM)
		counter_inc(mysql_errors);
	log_warn("messages: pushing unacked messages to user %" PRId64 " stopped after %zu: %s",
		 uid, pushed, err == -ENOMEM ? "out of memory" : db_errmsg(w->db));
out_free:
	for (size_t i = 0; i < nst; i++)
		db_rows_free(st[i].rows);
	free(st);
}
