/*
 * unread_set.h - 1:1 messages whose unread row is held back in memory.
 *
 * The group-commit writer stores a 1:1 message at once, but may hold back
 * the message's row in the `unread` table (the mark "not acknowledged
 * yet") for unread_defer_ms: a recipient that is online gets the push and
 * acknowledges it within that time, and then neither the row nor its
 * deletion ever reaches MariaDB. This set holds those marks. An entry
 * leaves it through one of:
 *
 *   - an ack by its recipient (unread_set_cancel): nothing is written;
 *   - its due time (unread_set_take_due): its row is written;
 *   - a flush of its recipient (unread_set_take_user), which the node
 *     runs at LOGIN/RESUME before pushing the unacknowledged messages.
 *
 * Staging. Every change is staged so that it takes effect together with
 * the transaction that makes it durable: unread_set_add stages a new
 * entry, cancel and take_* stage removals (the rows taken are the
 * caller's to write in that transaction). unread_set_commit applies
 * every staged change, unread_set_abort undoes them all. Staged entries
 * are visible to the other calls: an entry added and cancelled in the
 * same stage disappears without a trace.
 *
 * Floor. unread_set_min_id is a lower bound of every msg_id the set
 * holds once the stage commits, kept per stage ("group") so that it costs
 * a scan of the live groups, not of the entries. The writer stores
 * min_id - 1 with each transaction: after a crash, every 1:1 message
 * above it gets its unread row back (see commit.c).
 *
 * Bounds: at most max_entries entries, and at most UNREAD_SET_GROUPS
 * groups from the oldest one that still holds an entry to the newest
 * one that does (a group that empties between two such counts until the
 * groups before it are empty too). Entries leave
 * within unread_defer_ms, so this spans the stages of that time. An add
 * beyond either bound fails and the caller writes the row at once.
 *
 * Rows (durability relay). An entry may carry a row: a message that was
 * pushed to its recipient and is not stored at all yet (commit.h). The
 * set only keeps the pointer and gives it back with the entry
 * (unread_set_row, the take_* calls); the caller owns what it points to.
 * Several entries may carry the same row (a group message: one entry per
 * member owing an ack); the set does not know, the caller counts them.
 *
 * Single-threaded: the writer's.
 */
#ifndef RINGCHAT_UNREAD_SET_H
#define RINGCHAT_UNREAD_SET_H

#include <stdbool.h>
#include <stdint.h>

#define UNREAD_SET_GROUPS 4096 /* stages from the oldest live one, at most */

struct unread_set;

struct unread_pair {
	int64_t to_id;
	int64_t msg_id;
	void *row; /* take_*: the entry's row (unread_set_add_row), else NULL */
};

/* A set for up to max_entries (at least 1) entries, all memory allocated
 * here and now. NULL when out of memory. */
struct unread_set *unread_set_new(uint32_t max_entries);
/* NULL is a no-op. */
void unread_set_free(struct unread_set *s);

/*
 * Stages the entry (to_id, msg_id), both > 0, due at due_ms. Returns
 * false, staging nothing, when the set or its groups are full or the
 * entry is there already. Entries should be added in due order (a
 * constant delay after a monotonic clock): take_due stops at the first
 * entry not yet due.
 */
bool unread_set_add(struct unread_set *s, int64_t to_id, int64_t msg_id, uint64_t due_ms);

/* unread_set_add of an entry that carries row (not NULL; still the
 * caller's: the set never dereferences or frees it). */
bool unread_set_add_row(struct unread_set *s, int64_t to_id, int64_t msg_id, uint64_t due_ms,
			void *row);

/* The row of entry (to_id, msg_id), staged or not; NULL when the set does
 * not hold the entry or the entry carries no row. */
void *unread_set_row(const struct unread_set *s, int64_t to_id, int64_t msg_id);

/* unread_set_cancel of an entry that carries a row, in one lookup: its
 * row when the removal is now staged, else NULL (nothing staged). */
void *unread_set_cancel_row(struct unread_set *s, int64_t to_id, int64_t msg_id);

/*
 * The recipient acknowledged msg_id: stages the removal of (to_id,
 * msg_id) and returns true when the set holds it and no removal is
 * staged for it yet. false means the caller must delete the stored row
 * (it may be one that take_* gave out in this stage, to be written by the
 * same transaction before the deletion).
 */
bool unread_set_cancel(struct unread_set *s, int64_t to_id, int64_t msg_id);

/* Stages the removal of the entries due by now_ms, oldest first, at most
 * max, and copies them to out. Returns how many. */
uint32_t unread_set_take_due(struct unread_set *s, uint64_t now_ms, struct unread_pair *out,
			     uint32_t max);

/* Stages the removal of to_id's entries, at most max, and copies them to
 * out. Returns how many. */
uint32_t unread_set_take_user(struct unread_set *s, int64_t to_id, struct unread_pair *out,
			      uint32_t max);

/* Applies / undoes every change staged since the last commit or abort. */
void unread_set_commit(struct unread_set *s);
void unread_set_abort(struct unread_set *s);

/* A lower bound of every msg_id the set holds when the staged changes
 * commit (entries added in this stage count, entries whose removal is
 * staged do not); 0 when that leaves nothing. */
int64_t unread_set_min_id(const struct unread_set *s);

/* Due time of the oldest entry without a staged removal; UINT64_MAX when
 * there is none. */
uint64_t unread_set_next_due(const struct unread_set *s);

/* Entries held, staged ones included. */
uint32_t unread_set_count(const struct unread_set *s);

#endif
