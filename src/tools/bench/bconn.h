/*
 * bconn.h - the connections of the message scenarios (set-up steps, chat,
 * group, offline; Ringchat or Redis): a growable read buffer, a growable
 * write buffer flushed as far as the socket takes it (EPOLLOUT armed for
 * the rest), and frames cut out of the read buffer in place. Redis
 * connections use the same buffers and a hiredis reader.
 *
 * A struct bconn carries the state of every layer that drives it (the
 * step engine, the sender window, the recipient's acks, the io_uring
 * engine's send buffer); each layer's fields are marked. One thread owns
 * a connection at a time: set-up runs on the main thread, then a load
 * thread takes it for the run and hands it back at its join.
 */
#ifndef RINGCHAT_BENCH_BCONN_H
#define RINGCHAT_BENCH_BCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/read.h>

#include "bench.h"
#include "ringchat/frame.h"

enum bconn_role { ROLE_IDLE = 0, ROLE_SENDER, ROLE_RECIPIENT };

struct bconn {
	int fd;
	uint8_t role;
	bool dead;
	bool want_out; /* EPOLLOUT armed */
	uint32_t next_seq;
	uint8_t *rbuf;
	size_t rlen, rcap;
	uint8_t *wbuf;
	size_t woff, wlen, wcap;
	redisReader *rr; /* Redis connections only */
	/* io_uring engine: the bytes of the send in flight live in sbuf, so
	 * appending to wbuf (which may move it) never touches them. */
	uint8_t *sbuf;
	size_t soff, slen, scap;
	bool recv_armed, send_armed;

	/* Who this is. */
	int index;
	int64_t user_id;
	int64_t peer; /* sender: the recipient's user_id or the group_id; Redis: channel */

	/* Sender: the window of requests in flight, FIFO by fifo_head. */
	uint32_t inflight, fifo_head;
	uint64_t *sent_ns;
	uint64_t next_due_ns, interval_ns; /* open loop */
	long quota;			   /* messages left to send; -1 = no limit */
	uint64_t paused_until_ns;	   /* after RATE_LIMITED: retry_after_ms */

	/* Recipient: msg_ids to acknowledge. */
	int64_t acks[BENCH_ACK_BATCH];
	uint32_t nacks;
	uint64_t ack_first_ns;
	/* Every msg_id pushed so far (open addressing, 0 = empty slot): a
	 * push whose id is in it is a duplicate. Order alone cannot tell: a
	 * push the node stored and sent again after its commit arrives after
	 * later ones of the conversation, once. */
	int64_t *seen;
	size_t seen_n, seen_cap; /* cap: 0 or a power of two */
	/* Highest msg_id pushed so far: a new id below it arrived out of
	 * order (1:1: one conversation, whose ids increase with send order). */
	int64_t last_msg_id;

	/* Step engine. */
	uint32_t step;
	uint32_t wait_seq;
	bool busy, finished, retrying;
	uint64_t retry_at_ns, step_t0_ns;
};

/* Grows *buf (capacity *cap) to hold need bytes. 0 or -ENOMEM (buf intact). */
int bconn_grow(uint8_t **buf, size_t *cap, size_t need);

/* Appends n bytes to the write buffer. 0 or -ENOMEM. */
int bconn_append(struct bconn *c, const void *p, size_t n);

/* Appends one request frame; returns its seq (0 when out of memory). */
uint32_t bconn_put_frame(struct bconn *c, uint16_t cmd, const char *payload, size_t len);

/*
 * Sends what wbuf holds with send(2) on a non-blocking socket registered
 * in epoll ep. 0 (EPOLLOUT armed for any rest, disarmed when all went),
 * or -errno.
 */
int bconn_flush(struct bconn *c, int ep);

/* Reads once. >0 bytes read, 0 nothing there, -ENOTCONN at EOF, -errno. */
int bconn_fill(struct bconn *c);

/*
 * The complete frame at *off in rbuf, if any: 1 with h and payload (not
 * NUL-terminated; valid until bconn_consume), *off moved past it; 0 when
 * incomplete; -EPROTO for a stream that is not protocol v1.
 */
int bconn_frame(const struct bconn *c, size_t *off, struct frame_hdr *h, const char **payload);

/* Drops rbuf[0..off): the frames handled. */
void bconn_consume(struct bconn *c, size_t off);

/* Closes the socket and frees every buffer; c itself stays (fd -1). */
void bconn_free(struct bconn *c);

/* bconn_free on conns[0..n), then free(conns). NULL is fine. */
void bconns_free(struct bconn *conns, int n);

/*
 * n connections to host:port in a new array (fd set, seq 1, index i,
 * quota -1, a hiredis reader when redis), or NULL after printing why.
 * The caller owns the array (bconns_free).
 */
struct bconn *bconns_open(const char *host, uint16_t port, int n, bool redis);

/*
 * As bconns_open, connection i to eps[ep_of[i]] (0 <= ep_of[i] < neps):
 * the connections of one cluster spread over its nodes.
 */
struct bconn *bconns_open_spread(const struct bench_endpoint *eps, int neps, const int *ep_of,
				 int n, bool redis);

#endif
