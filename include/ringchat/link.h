/*
 * link.h - reliable, authenticated message link between cluster nodes over
 * UDP (wire format: link_codec.h and docs/protocol.md, "Node link").
 *
 * The module is pure: no sockets, no threads, no clock. The caller passes
 * now_ms (a monotonic clock) to every call, hands it every datagram that
 * arrives (link_input), and gets datagrams to send through ops->send_dgram.
 * One struct link serves all peers of this node.
 *
 * Loop shape the caller follows (the node's I/O thread, or a test):
 *
 *   for each datagram received:   link_input(l, from, buf, len, now)
 *   messages to send:             link_send(l, node, msg, len, now)  (queues only)
 *   once per loop iteration:      link_flush(l, now)                 (packs + sends)
 *   timer:                        deadline = link_poll(l, now); arm a timer for it
 *
 * What it guarantees per peer: messages handed to link_send are delivered
 * to the peer's deliver callback exactly once and in order, or, if the link
 * gives up on them (peer down, peer restarted while they were on the wire,
 * peer removed), they are handed back to the sender's undelivered callback.
 * A message handed back may still have been delivered (its ack was lost):
 * callers that resend must tolerate duplicates (Ringchat messages carry
 * unique ids). No message is dropped silently.
 *
 * Thread rules: a struct link belongs to one thread; nothing here locks.
 * Callbacks run on that thread from inside link_* calls. A callback may
 * call link_send and the getters; it must not call link_free,
 * link_peer_remove, link_input, link_flush or link_poll.
 */
#ifndef RINGCHAT_LINK_H
#define RINGCHAT_LINK_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct link;

struct link_config {
	uint32_t node_id;      /* this node */
	uint64_t epoch;	       /* this incarnation, != 0, must grow across restarts (start ms) */
	const uint8_t *secret; /* cluster secret (HMAC key); copied */
	size_t secret_len;     /* >= 16 */
	/* 0 in any field below = the default in brackets. */
	uint32_t dgram_bytes; /* max datagram size [1200], 256..65535+80 */
	/* datagrams in flight per peer [64], a power of 2 <= 1024; same on all nodes */
	uint32_t window;
	uint32_t max_msg_bytes;	 /* largest message [1 MiB] */
	uint32_t sndbuf_bytes;	 /* queued+in-flight message bytes per peer [2 MiB], >= max_msg */
	uint32_t rto_initial_ms; /* RTO before the first RTT sample [200] */
	uint32_t rto_min_ms;	 /* [10] */
	uint32_t rto_max_ms;	 /* [2000] */
	uint32_t ack_delay_ms;	 /* delayed ack [2]; use LINK_ACK_IMMEDIATE for none */
	uint32_t heartbeat_ms;	 /* ping an idle or unanswering peer this often [500], < dead_ms */
	uint32_t dead_ms;	 /* silence (or no ack progress) before down [3000] */
	uint32_t dupthresh;	 /* SACKed datagrams past a hole before fast retransmit [3] */
	/* true when a proxy or NAT sits in front of this node (link_advertise):
	 * datagrams of a registered peer are then taken from any address if
	 * they pass its MAC and replay checks; false: only from its address */
	bool accept_relayed;
	uint32_t first_seq;	 /* seq each send stream starts at [1]; all nodes must agree
				  * (tests set it near 2^32 to cross the wrap) */
};
#define LINK_ACK_IMMEDIATE UINT32_MAX

struct link_ops {
	/* Sends one datagram; buf is valid only during the call. */
	void (*send_dgram)(void *ctx, const struct sockaddr_in *to, const uint8_t *buf, size_t len);
	/* One complete message from node_id, in order; msg valid during the call. */
	void (*deliver)(void *ctx, uint32_t node_id, const uint8_t *msg, size_t len);
	/* The peer became reachable (up = true) or was declared down. */
	void (*peer_state)(void *ctx, uint32_t node_id, bool up);
	/* A message given to link_send that the link gives up on, in send order. */
	void (*undelivered)(void *ctx, uint32_t node_id, const uint8_t *msg, size_t len);
};

/* Per-peer counters and RTT state (a snapshot; link_peer_stats). */
struct link_peer_stats {
	uint32_t node_id;
	bool up;
	uint64_t peer_epoch;	     /* 0 = not heard yet */
	uint32_t srtt_us, rttvar_us; /* 0 before the first sample */
	uint32_t rto_ms;
	uint32_t inflight_dgrams;
	uint32_t queued_msgs; /* in flight + waiting */
	uint64_t queued_bytes;
	uint64_t retransmits;	   /* datagrams sent again, timer or fast */
	uint64_t fast_retransmits; /* of which on SACK evidence */
	uint64_t timeouts;	   /* RTO expiries */
	uint64_t dgrams_sent, bytes_sent;
	uint64_t dgrams_recv, bytes_recv; /* accepted (authentic, fresh) only */
	uint64_t data_dgrams_sent;	  /* first transmissions of DATA datagrams */
	uint64_t msgs_sent;		  /* accepted by link_send */
	uint64_t msgs_packed;		  /* records started (one per message) in DATA datagrams */
	/* coalescing ratio = msgs_packed / data_dgrams_sent (below 1 with fragments) */
	uint64_t msgs_acked;
	uint64_t msgs_delivered;
	uint64_t msgs_undelivered;
	uint64_t mac_failures;
	uint64_t relayed;	/* authentic, from another address than the peer's (a proxy) */
	uint64_t replays;	/* packet number already seen or below the replay window */
	uint64_t duplicates;	/* DATA seq already received (a retransmission's twin) */
	uint64_t malformed;	/* from this peer's address but not well formed */
	uint64_t stale;		/* older epoch/stream, or addressed to our previous incarnation */
	uint64_t out_of_window; /* DATA seq beyond the receive window */
	uint64_t ups, downs, restarts;
};

/* Node-wide counters. */
struct link_stats {
	uint64_t unknown_source; /* not from a registered peer address (or wrong node id) */
	uint64_t malformed;	 /* summed over peers */
	uint64_t mac_failures;	 /* summed over peers */
	uint64_t replays;	 /* summed over peers */
	uint32_t peers, peers_up;
};

/*
 * Creates a link. cfg is copied (the secret too); ops and ctx are kept and
 * must outlive the link. Returns NULL on allocation failure, a bad config
 * (epoch 0, short secret, fields out of range, heartbeat_ms >= dead_ms,
 * window not a power of two) or an HMAC setup failure.
 */
struct link *link_new(const struct link_config *cfg, const struct link_ops *ops, void *ctx);

/* Frees everything without calling any callback (the process is going away). */
void link_free(struct link *l);

/*
 * Registers a peer (node id != ours) at addr. It starts "connecting": it
 * is pinged until it answers, and link_send already queues for it.
 * Returns 0, -EEXIST (node id or address taken), -EINVAL or -ENOMEM.
 */
int link_peer_add(struct link *l, uint32_t node_id, const struct sockaddr_in *addr,
		  uint64_t now_ms);

/* Hands every pending message back (undelivered) and forgets the peer.
 * Returns 0 or -ENOENT. */
int link_peer_remove(struct link *l, uint32_t node_id);

/* Changes the peer's address (state is kept). Returns 0, -ENOENT, -EEXIST. */
int link_peer_set_addr(struct link *l, uint32_t node_id, const struct sockaddr_in *addr);

/*
 * Queues one message (copied) for node_id; it leaves at the next
 * link_flush or link_poll. Returns 0, -ENOENT (no such peer), -EINVAL (len
 * 0), -EMSGSIZE (len > max_msg_bytes), -EHOSTDOWN (peer declared down:
 * keep the message, resend after peer_state(up)), or -ENOBUFS (the peer's
 * send buffer is full: retry after a later flush/poll frees room). On error
 * nothing is queued and no callback runs.
 */
int link_send(struct link *l, uint32_t node_id, const void *msg, size_t len, uint64_t now_ms);

/* True when link_send(node_id, len bytes) would not return -ENOBUFS now. */
bool link_can_send(const struct link *l, uint32_t node_id, size_t len);

/* Bytes of the messages queued for node_id that are not acknowledged yet
 * (waiting or in flight); 0 for an unknown peer. It only falls when the
 * peer acknowledges or the link gives messages back (undelivered): a
 * caller that bounds it paces its senders to what the peer takes in. */
uint64_t link_queued_bytes(const struct link *l, uint32_t node_id);

/*
 * Processes one received datagram. Anything not authentic, malformed,
 * replayed, stale or from an unregistered address is counted and dropped.
 * May call deliver, peer_state and undelivered; acks go out at the next
 * flush (immediate ones) or at their deadline (delayed ones).
 */
void link_input(struct link *l, const struct sockaddr_in *from, const uint8_t *dgram, size_t len,
		uint64_t now_ms);

/* Packs queued messages into datagrams (as far as the window allows) and
 * sends them with any ack that is due. Call once per loop iteration. */
void link_flush(struct link *l, uint64_t now_ms);

/*
 * Runs every timer due at now_ms (retransmissions, delayed acks,
 * heartbeats, down detection; it flushes too) and returns the next
 * deadline in ms (UINT64_MAX when no peer exists).
 */
uint64_t link_poll(struct link *l, uint64_t now_ms);

/* Snapshot of one peer's counters. Returns 0 or -ENOENT. */
int link_peer_stats(const struct link *l, uint32_t node_id, struct link_peer_stats *out);
/* Node-wide counters. */
void link_stats(const struct link *l, struct link_stats *out);
/* True when the peer exists and is up. */
bool link_peer_up(const struct link *l, uint32_t node_id);

#endif
