/*
 * inbox.h - messages between nodes through Redis streams.
 *
 * Every node N has an inbox stream rc:inbox:<N> with one consumer group
 * "g" in which N is the only consumer (named "<N>"). Senders XADD to it,
 * N reads with XREADGROUP, delivers, then XACKs and trims what it has
 * handled (XTRIM MINID ~), so the stream holds little more than what is
 * unread. docs/protocol.md ("Cluster inbox entries") describes an entry:
 *
 *   f  sender node id, decimal ASCII
 *   n  number of messages in m, decimal ASCII
 *   m  the messages, each a 4-byte big-endian length then that many bytes
 *
 * Batching: cluster threads flush per destination; everything queued for
 * node N since the last flush goes into ONE entry (split only when it
 * would pass INBOX_ENTRY_MAX_BYTES), and the entries of all destinations
 * of one flush are pipelined, so a flush costs one round trip.
 *
 * Delivery is in order per sender and at least once: an entry is acked
 * after its messages were delivered, so a crash between the two delivers
 * them again at the next start (pending entries are read first, from id
 * 0); a send whose connection broke after the XADD was written is sent
 * again. Receivers that must not see a message twice deduplicate by a key
 * of their payload.
 *
 * Bounds: a message is at most INBOX_MSG_MAX_BYTES; the bytes queued for
 * all destinations together are at most cfg->cluster_queue_bytes (4 bytes
 * of length prefix count per message); beyond it inbox_enqueue refuses
 * (-ENOBUFS) and counts. In Redis each stream is capped at about
 * cfg->inbox_maxlen entries (XADD MAXLEN ~): a node that stays away longer
 * than that loses the oldest entries queued for it.
 *
 * Threads: inbox_enqueue from any thread; everything else but
 * inbox_stats from the one thread that drives the inbox (the cluster
 * thread), which owns the reader's Redis connection and the struct kv
 * used for XADDs.
 */
#ifndef RINGCHAT_INBOX_H
#define RINGCHAT_INBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringchat/membership.h"

struct config;
struct kv;
struct inbox;

#define INBOX_MSG_MAX_BYTES (16u << 20)
/* An entry is cut at a message boundary once it passes this size. */
#define INBOX_ENTRY_MAX_BYTES (1u << 20)
/* Entries per XREADGROUP. */
#define INBOX_READ_COUNT 128
/* XREADGROUP BLOCK; the read waits on its own connection, see inbox.c. */
#define INBOX_BLOCK_MS 1000

/*
 * Called on the driving thread for each message of each entry, in stream
 * order. from: the sender's node id; sent_ms: epoch ms at which Redis
 * added the entry (from its stream id), to recognise stale messages after
 * a long absence; msg/len: valid during the call only. The entry is acked
 * once the calls for all its messages returned.
 */
typedef void (*inbox_deliver_fn)(void *ctx, int from, uint64_t sent_ms, const uint8_t *msg,
				 size_t len);

/*
 * Counters, all totals since inbox_create unless said otherwise.
 * peer[i]: traffic to (sent) and from (recv) node i.
 */
struct inbox_peer_stats {
	uint64_t entries_sent, msgs_sent, bytes_sent;
	uint64_t entries_recv, msgs_recv, bytes_recv;
};

struct inbox_stats {
	struct inbox_peer_stats peer[MEMBERSHIP_MAX_NODES];
	uint64_t queued_msgs, queued_bytes; /* gauges: waiting to be XADDed */
	uint64_t enobufs;		    /* sends refused: queue bound reached */
	uint64_t dropped;		    /* messages of entries Redis refused (error reply) */
	uint64_t batch_max;		    /* most messages in one entry sent */
	uint64_t bad_entries;		    /* entries read that did not parse; acked, skipped */
	uint64_t lag_ms_last;		    /* age of the oldest entry of the last read */
	uint64_t lag_ms_max;
};

/*
 * Creates the inbox of node cfg->node_id (copies what it needs from cfg).
 * Does not connect. Returns NULL when out of memory.
 */
struct inbox *inbox_create(const struct config *cfg, inbox_deliver_fn deliver, void *ctx);
/* Closes the reader connection and frees everything still queued. */
void inbox_destroy(struct inbox *ib);

/*
 * Any thread. Copies msg[0, len) into the queue for node (0..31; our own
 * id is allowed and loops back through Redis). Returns 0, -EINVAL (bad
 * node), -EMSGSIZE (len > INBOX_MSG_MAX_BYTES), -ENOBUFS (bound reached)
 * or -ENOMEM. On 0, *wake tells whether the driving thread must be woken:
 * true only when no flush was already due (sleeping -> notified), so a
 * burst of sends costs one wake-up.
 */
int inbox_enqueue(struct inbox *ib, int node, const void *msg, size_t len, bool *wake);

/*
 * Driving thread. XADDs what is queued (one pipelined round trip on kv).
 * Returns 0 when the queues were empty at some point, -ENOTCONN when
 * Redis was unreachable (everything unsent stays queued, in order, for
 * the next call).
 */
int inbox_flush(struct inbox *ib, struct kv *kv);
/* Driving thread. True when messages wait to be XADDed. */
bool inbox_has_queued(const struct inbox *ib);

/*
 * Driving thread. Advances the reader: with readable (its fd polled
 * POLLIN) it reads the reply of the XREADGROUP in flight and delivers;
 * it (re)connects with back-off, creates the group when missing, and
 * issues the next XREADGROUP. enabled=false closes the reader (use it
 * while our lease is not confirmed: the inbox may belong to another
 * instance). *next_ms gets the monotonic ms by which it must be called
 * again even if nothing is readable. Returns 0 when the reader works,
 * -ENOTCONN when it just failed to reach Redis, -EAGAIN when it learnt
 * nothing new (disabled, or waiting out its back-off).
 */
int inbox_rx_step(struct inbox *ib, bool enabled, bool readable, uint64_t *next_ms);
/* Driving thread. The fd to poll for POLLIN, or -1 when no read is in
 * flight. */
int inbox_rx_fd(const struct inbox *ib);

/* Any thread: a snapshot of the counters (relaxed, each exact, not all
 * from one instant). */
void inbox_stats(const struct inbox *ib, struct inbox_stats *out);

#endif
