/*
 * ring.h - the I/O thread's loop: one io_uring ring that owns every
 * socket of the node, and the plumbing modules use to put work on it.
 *
 * What the ring offers a module (conn.c for clients, metrics.c for the
 * admin endpoint, the node link for UDP):
 *  - SQEs (ring_get_sqe) and ONE user_data encoding for them,
 *      op kind (8 bits) | generation (24 bits) | slot or index (32 bits),
 *    where the kind comes from the one table below: a module registers a
 *    handler for its kind, and every CQE of that kind goes to it;
 *  - millisecond timers (ring_timer_arm): the loop's single wait ends at
 *    the earliest deadline;
 *  - a share of each loop iteration (struct ring_client): flush queued
 *    work before the ring waits, say how long it may wait, take part in
 *    the orderly shutdown;
 *  - the provided receive buffers (multishot recv with buffer select),
 *    and buffer groups of a module's own (ring_bufs_create).
 *
 * The ring itself knows none of these modules. The upper layer (main)
 * creates the ring, creates the modules on it, and passes ring_run the
 * one thing the ring must ask it: whether the workers are idle.
 *
 * Thread rules: everything here is for the I/O thread, the thread that
 * called ring_create (the ring is IORING_SETUP_SINGLE_ISSUER), unless a
 * function says otherwise.
 */
#ifndef RINGCHAT_RING_H
#define RINGCHAT_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringchat/config.h"
#include "ringchat/timer.h"

struct ring;

/*
 * The op kinds: one per kind of operation a module puts on the ring.
 * Add a kind here (not a private number in a module) so that two modules
 * can never decode each other's completions.
 */
enum ring_op {
	RING_OP_NONE = 0, /* never used: a zero user_data is a bug */
	RING_OP_ACCEPT,   /* conn.c: client listener (multishot accept) */
	RING_OP_RECV,     /* conn.c: client multishot recv; gen|slot */
	RING_OP_SEND,     /* conn.c: client send; gen|slot */
	RING_OP_CANCEL,   /* conn.c: cancellations; gen|slot */
	RING_OP_WAKE,     /* conn.c: poll on the workers' eventfd */
	RING_OP_SIGNAL,   /* ring.c: poll on the signalfd */
	RING_OP_ADMIN,    /* metrics.c: admin sockets; gen = sub-op, index = client */
	RING_OP_LINK,     /* node link (UDP recvmsg/sendmsg) */
	RING_OP_USER,     /* first kind free for tests and new modules */
	RING_OP_MAX = 256,
};

#define RING_UD_GEN_MASK 0xffffffu /* generations are kept modulo 2^24 */

static inline uint64_t ring_ud(unsigned kind, uint32_t gen, uint32_t idx)
{
	return ((uint64_t)kind << 56) | ((uint64_t)(gen & RING_UD_GEN_MASK) << 32) | idx;
}
static inline unsigned ring_ud_kind(uint64_t ud)
{
	return (unsigned)(ud >> 56);
}
static inline uint32_t ring_ud_gen(uint64_t ud)
{
	return (uint32_t)(ud >> 32) & RING_UD_GEN_MASK;
}
static inline uint32_t ring_ud_idx(uint64_t ud)
{
	return (uint32_t)ud;
}
static inline void ring_sqe_tag(struct io_uring_sqe *sqe, unsigned kind, uint32_t gen,
				uint32_t idx)
{
	io_uring_sqe_set_data64(sqe, ring_ud(kind, gen, idx));
}

/* Receives every CQE of the kind it was registered for. */
typedef void (*ring_cqe_fn)(void *ctx, struct io_uring_cqe *cqe);

/*
 * A module's share of each loop iteration. Every member may be NULL.
 *  flush(ctx)      before the ring submits and waits: turn queued work
 *                  into SQEs.
 *  wait_ms(ctx)    after flush: how long the ring may block for this
 *                  module: -1 no limit (a CQE or a timer will come),
 *                  0 not at all (work is ready), > 0 at most that long
 *                  (work waits on something that posts no CQE).
 *  sleep(ctx)      the ring is about to block: a module fed by other
 *                  threads announces it (sleeping → notified, handoff.h)
 *                  and returns false if work came in meanwhile; then the
 *                  ring does not block. awake(ctx) follows every true.
 *  drain(ctx, first) orderly shutdown, called every iteration once it
 *                  began (first = true the first time): stop taking new
 *                  work; return true when nothing is left to flush.
 */
struct ring_client {
	void (*flush)(void *ctx);
	int (*wait_ms)(void *ctx);
	bool (*sleep)(void *ctx);
	void (*awake)(void *ctx);
	bool (*drain)(void *ctx, bool first);
	void *ctx;
};

/* What ring_run asks the upper layer. idle: true when no worker holds,
 * queues or defers work (the drain waits for it). Any member may be NULL. */
struct ring_hooks {
	bool (*idle)(void *ctx);
	void *ctx;
};

/*
 * Sets up the ring, the provided receive buffers and the signalfd for
 * SIGINT/SIGTERM (drain) and SIGUSR1 (counters dump), which must be
 * blocked in every thread for the signalfd to see them. cfg must outlive
 * the ring. Returns the ring (owned by the caller: ring_destroy) or NULL
 * after logging why.
 */
struct ring *ring_create(const struct config *cfg);
/*
 * Tears the ring down: pending operations are cancelled, the buffers
 * freed. The modules created on it are destroyed by their owners
 * afterwards (no CQE reaches them any more once this returned).
 */
void ring_destroy(struct ring *r);

/*
 * Registers fn(ctx, cqe) for every CQE whose kind is kind. Returns 0,
 * -EINVAL (kind out of range or RING_OP_NONE) or -EBUSY (taken).
 */
int ring_register_op(struct ring *r, unsigned kind, ring_cqe_fn fn, void *ctx);
/* Adds a module's iteration hooks (copied). Returns 0 or -ENOMEM. */
int ring_add_client(struct ring *r, const struct ring_client *c);

/*
 * Returns an SQE to fill and tag with ring_sqe_tag; it is submitted at
 * the end of the iteration. When the SQ is full the queued SQEs are
 * submitted first. NULL only if the SQ stays full (the caller treats the
 * operation as not armed and retries later).
 */
struct io_uring_sqe *ring_get_sqe(struct ring *r);

/* The provided-buffer group for IOSQE_BUFFER_SELECT recvs, and access to
 * a selected buffer; every buffer id a CQE carries must be given back
 * with ring_buf_return (it is republished at the end of the iteration). */
uint16_t ring_buf_group(const struct ring *r);
const uint8_t *ring_buf(const struct ring *r, unsigned bid);
void ring_buf_return(struct ring *r, unsigned bid);

/*
 * A provided-buffer group of a module's own, apart from the client recvs'
 * group above (the node link's datagrams need buffers of another size,
 * and its receive must not run out because client connections took every
 * buffer). ring_bufs_create registers count buffers (a power of two,
 * 1..32768) of bytes each under a group id of their own and hands none to
 * the kernel yet: the module provides each one with ring_bufs_provide,
 * at first and again after every CQE that carried it. Provided buffers
 * are published to the kernel before the ring submits (after the
 * clients' flush, or when ring_get_sqe submits early), so a recv armed
 * during this iteration sees the buffers given back during it.
 * The group belongs to the ring and is freed by ring_destroy (after the
 * kernel let go of it). Returns 0 with *out set, or -errno (-ENOSPC
 * when the ring has RING_BUFS_MAX groups already, -EINVAL for a bad
 * count or size, or the kernel's refusal of the registration).
 */
#define RING_BUFS_MAX 4
struct ring_bufs;
int ring_bufs_create(struct ring *r, unsigned count, size_t bytes, struct ring_bufs **out);
/* The group id for sqe->buf_group (with IOSQE_BUFFER_SELECT). */
uint16_t ring_bufs_group(const struct ring_bufs *b);
/* Buffer bid (< count): ring_bufs_create's bytes of memory. */
uint8_t *ring_bufs_buf(const struct ring_bufs *b, unsigned bid);
/* Gives buffer bid to the kernel (published before the next submit). A
 * buffer must not be provided twice without a CQE having taken it. */
void ring_bufs_provide(struct ring_bufs *b, unsigned bid);

/* Monotonic milliseconds as of the start of this iteration's CQEs. */
uint64_t ring_now_ms(const struct ring *r);

/*
 * Arms t to call fn(ctx, t) on the I/O thread at due_ms (monotonic ms,
 * ring_now_ms's clock); re-arming moves it. Resolution is 1 ms: the
 * callback runs in the first iteration whose clock is >= due_ms. Returns
 * 0 or -ENOMEM (then fn is never called for this request). t stays owned
 * by the caller and must be cancelled before it is freed.
 */
int ring_timer_arm(struct ring *r, struct ring_timer *t, uint64_t due_ms, ring_timer_fn fn,
		   void *ctx);
/* Disarms t (no-op when not armed). */
void ring_timer_cancel(struct ring *r, struct ring_timer *t);

/*
 * Runs the loop on the calling thread until a drain completes: after
 * SIGINT/SIGTERM or ring_stop, every client stops taking work, and the
 * loop ends once every client's drain returned true and hooks->idle
 * (polled every 1 ms meanwhile) returned true, or after 5 s. The ring
 * stays usable for ring_destroy only. hooks may be NULL.
 * Returns 0 after an orderly shutdown.
 */
int ring_run(struct ring *r, const struct ring_hooks *hooks);

/*
 * Runs one iteration: flush, submit, wait at most max_wait_ms (less if
 * a client or timer asks; 0 = do not block), handle CQEs and due timers.
 * For tests that drive a ring step by step. Returns true while no drain
 * has completed.
 */
bool ring_poll(struct ring *r, int max_wait_ms, const struct ring_hooks *hooks);

/* Routes one CQE to the handler registered for its kind (what the loop
 * does with each CQE; tests feed forged ones, e.g. stale generations). */
void ring_dispatch_cqe(struct ring *r, struct io_uring_cqe *cqe);

/* Begins the orderly drain, as SIGTERM does. */
void ring_stop(struct ring *r);
/* True once the drain began. */
bool ring_draining(const struct ring *r);

#endif
