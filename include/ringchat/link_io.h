/*
 * link_io.h - the node link (link.h) on the I/O thread's ring: its UDP
 * socket (recvmsg/sendmsg through io_uring), its timers (the ring's ms
 * timers), and the hand-off of messages from worker threads.
 *
 * The link itself is pure (no sockets, no clock); this module gives it
 * both and owns the one link of the node. Workers queue messages for a
 * node with link_io_send (a mutex-protected buffer, woken like the other
 * worker → ring queues); the ring turns them into datagrams once per loop
 * iteration, so messages queued together share datagrams. Messages from
 * other nodes are handed to ops->deliver on the I/O thread.
 *
 * Datagrams come in through one multishot recvmsg into a provided-buffer
 * group of the link's own (ring_bufs_create), or, on a kernel that
 * refuses it, through single-shot recvmsg; the metric
 * ringchat_link_recv_multishot says which.
 *
 * Life: link_io_new on the main thread (it takes the bound socket),
 * link_io_attach on the I/O thread once its ring exists, link_io_free
 * after the ring was destroyed. Peers are set from any thread
 * (link_io_set_peer: the membership's view of node addresses).
 */
#ifndef RINGCHAT_LINK_IO_H
#define RINGCHAT_LINK_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config;
struct handoff;
struct link_io;
struct ring;

/* Called on the I/O thread. */
struct link_io_ops {
	/* one message from node from, in that node's order */
	void (*deliver)(void *ctx, int from, const uint8_t *msg, size_t len);
	/* a message the link gave up on (the peer went down or restarted) */
	void (*undelivered)(void *ctx, int node, const uint8_t *msg, size_t len);
	/* the link to node came up or went down */
	void (*peer_state)(void *ctx, int node, bool up);
};

/*
 * Makes the node's link on the UDP socket fd (bound; taken over, closed
 * by link_io_free), for node cfg->node_id with the cluster secret
 * secret[0, secret_len) (copied). Returns NULL after logging why.
 */
struct link_io *link_io_new(const struct config *cfg, int fd, const uint8_t *secret,
			    size_t secret_len, const struct link_io_ops *ops, void *ctx);
/* I/O thread: plugs the link into the ring (op RING_OP_LINK, a client,
 * a timer); h is the worker lanes' handoff, whose ring wake-up the
 * senders use. Returns 0 or -errno. */
int link_io_attach(struct link_io *lio, struct ring *r, struct handoff *h);
/* After the ring is destroyed (or was never attached). NULL is a no-op. */
void link_io_free(struct link_io *lio);

/*
 * Any thread: queues a copy of msg[0, len) for node. Returns 0, -ENOBUFS
 * (LINK_IO_QUEUE_BYTES queued and not yet taken by the link), -EMSGSIZE
 * or -ENOMEM. A message queued for a node the link cannot reach comes
 * back through ops->undelivered.
 *
 * Flow control: when the bytes queued for node and not yet acknowledged
 * by it would pass LINK_IO_FLOW_BYTES, a caller other than the I/O thread
 * first waits until the node's acks bring them under (the wait is what
 * paces a saturated sender to the link: the message then reaches the
 * node a few ms later, not seconds). A wait that sees no ack for 200 ms
 * gives up, and nobody waits for that node until its acks resume (a
 * dead or silent node costs one such wait); no wait lasts over 500 ms (a
 * message larger than the bound waits for the queue to empty, which
 * other senders may keep from happening). The I/O thread never waits.
 */
#define LINK_IO_QUEUE_BYTES (32u << 20)
#define LINK_IO_FLOW_BYTES (256u << 10)
int link_io_send(struct link_io *lio, int node, const void *msg, size_t len);

/* Any thread: node's link address is addr ("ip:port"), or "" / NULL when
 * the node left. Applied by the I/O thread at its next iteration. */
void link_io_set_peer(struct link_io *lio, int node, const char *addr);

/* I/O thread (metrics.c renders there): the ringchat_link_* metrics,
 * among them ringchat_link_recv_multishot (the receive mode in use). */
void link_io_metrics(struct link_io *lio, FILE *out);

/* Tests only: when not 0, link_io_attach gives the multishot receive
 * only this many of its buffers (fault injection: they run out sooner;
 * 0 in production). */
extern unsigned link_io_fault_recv_bufs;

#endif
