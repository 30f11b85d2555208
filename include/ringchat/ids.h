/*
 * ids.h - msg_id: unique across the cluster, time-ordered, made without a
 * database round trip, and at most 2^53 - 1 so every JSON client (even
 * one that reads numbers as doubles) reads it exactly.
 *
 *    52                                   13 12       8 7          0
 *   +---------------------------------------+-----------+------------+
 *   | ms since 2026-01-01T00:00:00Z (40 b)  | node (5 b) |  seq (8 b) |
 *   +---------------------------------------+-----------+------------+
 *
 * 40 bits of milliseconds last until 2060. All threads of a node share
 * one atomic (ms, seq) pair: an id takes max(now_ms:0, last + 1), so a
 * 257th id in one millisecond borrows the next millisecond (ids stay
 * unique and increasing above 256 ids/ms; the clock catches up when load
 * drops), and a clock stepping backwards keeps the last millisecond.
 *
 * What ids do not cover: a node restarted within the milliseconds it had
 * borrowed ahead, or whose clock was stepped back across a restart, may
 * repeat an id of its previous run; the messages table's primary key
 * catches that (the writer reports such a row as failed, never as sent).
 */
#ifndef RINGCHAT_IDS_H
#define RINGCHAT_IDS_H

#include <stdint.h>

#define IDS_EPOCH_MS 1767225600000ull /* 2026-01-01T00:00:00Z */
#define IDS_SEQ_BITS 8
#define IDS_NODE_BITS 5
#define IDS_TIME_BITS 40
#define IDS_NODE_MAX ((1 << IDS_NODE_BITS) - 1) /* 31 */
#define IDS_MAX ((INT64_C(1) << 53) - 1)

_Static_assert(IDS_SEQ_BITS + IDS_NODE_BITS + IDS_TIME_BITS == 53, "ids must fit 53 bits");

/*
 * Sets this node's id, 0..IDS_NODE_MAX, and resets the generator. Call
 * once before any thread makes ids. Returns 0, or -EINVAL (and logs) for
 * a node id out of range.
 */
int ids_init(int node_id);

/*
 * A new id, from any thread: greater than every id this process made
 * before. Returns 0 only when the 40-bit clock field is exhausted (2060).
 */
int64_t ids_next(void);

/* As ids_next with the wall clock reading epoch_ms (tests drive time). */
int64_t ids_next_at(uint64_t epoch_ms);

/* Parts of an id. */
static inline uint64_t ids_epoch_ms(int64_t id)
{
	return ((uint64_t)id >> (IDS_SEQ_BITS + IDS_NODE_BITS)) + IDS_EPOCH_MS;
}

static inline int ids_node(int64_t id)
{
	return (int)(((uint64_t)id >> IDS_SEQ_BITS) & IDS_NODE_MAX);
}

static inline int ids_seq(int64_t id)
{
	return (int)((uint64_t)id & ((1u << IDS_SEQ_BITS) - 1));
}

#endif
