/*
 * ring.c - the I/O thread's loop. One io_uring ring owns every socket of
 * the node; this file owns the ring itself and knows none of the modules
 * that put work on it (ring.h says what they get).
 *
 *   ┌─ flush: every client turns queued work into SQEs ──────────────┐
 *   │  (conn.c: worker replies → sends, paused frames → workers)     │
 *   │  provided buffers given back this iteration are republished    │
 *   │  draining? ask hooks->idle, then every client's drain          │
 *   │  wait = min(clients' wait_ms, earliest timer, 1 ms if draining)│
 *   │  no client has work? announce the sleep (handoff Dekker)       │
 *   │  submit + wait (one io_uring_enter; the wait's timeout is the  │
 *   │  earliest timer deadline, so timers cost no SQE)               │
 *   │  every CQE → the handler registered for its op kind            │
 *   └─ due timers fire (the 1 s idle sweep is one of them) ──────────┘
 *
 * user_data, one encoding for every op (ring.h):
 *   op kind (8 bits) | generation (24 bits) | slot or index (32 bits)
 * The kind indexes ops[], the table of handlers modules registered.
 *
 * Timers: a min-heap (timer.c) keyed by monotonic ms. Instead of a
 * timeout SQE that would have to be removed or updated whenever the
 * earliest deadline moves (the node link re-arms a retransmission timer
 * for nearly every datagram), the deadline rides on the wait itself
 * (io_uring_submit_and_wait_timeout passes it to the same
 * io_uring_enter through IORING_ENTER_EXT_ARG): arming or cancelling a
 * timer costs no syscall and no SQE.
 *
 * The ring also owns the signalfd (SIGINT/SIGTERM start the drain,
 * SIGUSR1 dumps the counters) and the provided-buffer ring the client
 * recvs select their buffers from, plus the groups modules asked for
 * (ring_bufs_create: the node link's datagram buffers).
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "ringchat/clock.h"
#include "ringchat/counters.h"
#include "ringchat/log.h"
#include "ringchat/ring.h"

#define RING_SQ_ENTRIES 4096
#define RING_CQ_ENTRIES 65536
#define RECV_BUF_BYTES 2048
#define RECV_BUF_COUNT 2048 /* power of two; 4 MiB of receive buffers */
#define RECV_BGID 0
#define DRAIN_TIMEOUT_MS 5000
#define DRAIN_POLL_MS 1 /* the workers' idleness sends no CQE: poll it */
#define RING_POLL_WAIT_MS 2 /* longest sleep of RINGCHAT_RING_WAIT=poll */

/* A module's own buffer group (ring.h). */
struct ring_bufs {
	struct io_uring_buf_ring *br;
	uint8_t *mem;
	size_t bytes;	/* of one buffer */
	unsigned count; /* buffers and ring entries, a power of two */
	uint16_t bgid;
	uint32_t provided; /* added this iteration, not yet advanced */
};

struct ring_op_entry {
	ring_cqe_fn fn;
	void *ctx;
};

struct ring {
	struct io_uring uring;
	const struct config *cfg;
	struct ring_op_entry ops[RING_OP_MAX];
	struct ring_client *clients;
	unsigned nclients;
	bool *slept; /* per client: its sleep() returned true this iteration */
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	uint32_t bufs_returned; /* returned this iteration, not yet advanced */
	struct ring_bufs *groups[RING_BUFS_MAX];
	unsigned ngroups;
	int signal_fd;
	struct timer_heap timers;
	uint64_t now_ms;
	bool draining;
	bool drain_started; /* the clients' drain(first = true) was called */
	bool drained;       /* the loop is over */
	uint64_t drain_deadline_ms;
	/*
	 * RINGCHAT_RING_WAIT=poll in the environment: wait in poll(2) on the
	 * ring fd, then reap without blocking. For valgrind (3.19), which runs
	 * io_uring_enter as a syscall that never blocks, holding its global
	 * lock while it sleeps in the kernel: no other thread of the node ran
	 * while the I/O thread waited, so no request was answered. poll(2) it
	 * knows to block. The loop then wakes every RING_POLL_WAIT_MS, so
	 * this is for such tools only, never the default.
	 */
	bool poll_wait;
};

/* ---- what modules use ---------------------------------------------------- */

int ring_register_op(struct ring *r, unsigned kind, ring_cqe_fn fn, void *ctx)
{
	if (kind == RING_OP_NONE || kind >= RING_OP_MAX || !fn)
		return -EINVAL;
	if (r->ops[kind].fn)
		return -EBUSY;
	r->ops[kind].fn = fn;
	r->ops[kind].ctx = ctx;
	return 0;
}

int ring_add_client(struct ring *r, const struct ring_client *c)
{
	struct ring_client *v = realloc(r->clients, (r->nclients + 1) * sizeof(*v));
	bool *slept;

	if (!v)
		return -ENOMEM;
	r->clients = v;
	slept = realloc(r->slept, (r->nclients + 1) * sizeof(*slept));
	if (!slept)
		return -ENOMEM;
	r->slept = slept;
	r->clients[r->nclients] = *c;
	r->slept[r->nclients] = false;
	r->nclients++;
	return 0;
}

static void bufring_publish(struct ring *r)
{
	if (r->bufs_returned) {
		io_uring_buf_ring_advance(r->br, (int)r->bufs_returned);
		r->bufs_returned = 0;
	}
	for (unsigned i = 0; i < r->ngroups; i++) {
		struct ring_bufs *b = r->groups[i];

		if (b->provided) {
			io_uring_buf_ring_advance(b->br, (int)b->provided);
			b->provided = 0;
		}
	}
}

struct io_uring_sqe *ring_get_sqe(struct ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);

	if (!sqe) {
		/* SQ full: submit what we have and retry; the SQ drains at
		 * once since submission never waits here. A recv among them
		 * may need the buffers given back so far. */
		bufring_publish(r);
		io_uring_submit(&r->uring);
		sqe = io_uring_get_sqe(&r->uring);
	}
	return sqe;
}

uint16_t ring_buf_group(const struct ring *r)
{
	(void)r;
	return RECV_BGID;
}

const uint8_t *ring_buf(const struct ring *r, unsigned bid)
{
	return r->bufs + (size_t)bid * RECV_BUF_BYTES;
}

/* Gives buffer bid back; published to the kernel by bufring_publish. */
void ring_buf_return(struct ring *r, unsigned bid)
{
	io_uring_buf_ring_add(r->br, r->bufs + (size_t)bid * RECV_BUF_BYTES,
			      RECV_BUF_BYTES, (unsigned short)bid,
			      io_uring_buf_ring_mask(RECV_BUF_COUNT),
			      (int)r->bufs_returned);
	r->bufs_returned++;
}

uint64_t ring_now_ms(const struct ring *r)
{
	return r->now_ms;
}

int ring_timer_arm(struct ring *r, struct ring_timer *t, uint64_t due_ms, ring_timer_fn fn,
		   void *ctx)
{
	return timer_heap_arm(&r->timers, t, due_ms, fn, ctx);
}

void ring_timer_cancel(struct ring *r, struct ring_timer *t)
{
	timer_heap_cancel(&r->timers, t);
}

void ring_stop(struct ring *r)
{
	if (r->draining)
		return;
	r->draining = true;
	r->drain_deadline_ms = r->now_ms + DRAIN_TIMEOUT_MS;
}

bool ring_draining(const struct ring *r)
{
	return r->draining;
}

/* ---- provided buffers (liburing 2.3 has no io_uring_setup_buf_ring) --- */

static int bufring_setup(struct ring *r)
{
	size_t ring_bytes = RECV_BUF_COUNT * sizeof(struct io_uring_buf);
	struct io_uring_buf_reg reg = { 0 };
	void *mem;
	int ret;

	mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE,
		   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	r->br = mem;
	io_uring_buf_ring_init(r->br);
	reg.ring_addr = (unsigned long)mem;
	reg.ring_entries = RECV_BUF_COUNT;
	reg.bgid = RECV_BGID;
	ret = io_uring_register_buf_ring(&r->uring, &reg, 0);
	if (ret)
		goto out_unmap;
	/* zeroed: the kernel fills them, which memory checkers do not see
	 * (valgrind would call every received byte uninitialised) */
	r->bufs = calloc(RECV_BUF_COUNT, RECV_BUF_BYTES);
	if (!r->bufs) {
		ret = -ENOMEM;
		goto out_unmap;
	}
	for (uint32_t i = 0; i < RECV_BUF_COUNT; i++)
		io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * RECV_BUF_BYTES,
				      RECV_BUF_BYTES, (unsigned short)i,
				      io_uring_buf_ring_mask(RECV_BUF_COUNT), (int)i);
	io_uring_buf_ring_advance(r->br, RECV_BUF_COUNT);
	return 0;

out_unmap:
	munmap(mem, ring_bytes);
	r->br = NULL;
	return ret;
}

static void bufs_free(struct ring_bufs *b)
{
	if (b->br)
		munmap(b->br, b->count * sizeof(struct io_uring_buf));
	free(b->mem);
	free(b);
}

int ring_bufs_create(struct ring *r, unsigned count, size_t bytes, struct ring_bufs **out)
{
	struct io_uring_buf_reg reg = { 0 };
	struct ring_bufs *b;
	void *mem;
	int ret;

	/* the kernel's limits: 2^15 ring entries, a u32 buffer length */
	if (!count || count > 32768 || (count & (count - 1)) || !bytes || bytes > UINT32_MAX)
		return -EINVAL;
	if (r->ngroups == RING_BUFS_MAX)
		return -ENOSPC;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->count = count;
	b->bytes = bytes;
	/* group 0 is the client recvs' (RECV_BGID) */
	b->bgid = (uint16_t)(RECV_BGID + 1 + r->ngroups);
	mem = mmap(NULL, count * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
		   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED) {
		ret = -errno;
		goto out_free;
	}
	b->br = mem;
	io_uring_buf_ring_init(b->br);
	b->mem = malloc((size_t)count * bytes);
	if (!b->mem) {
		ret = -ENOMEM;
		goto out_free;
	}
	reg.ring_addr = (unsigned long)mem;
	reg.ring_entries = count;
	reg.bgid = b->bgid;
	ret = io_uring_register_buf_ring(&r->uring, &reg, 0);
	if (ret)
		goto out_free;
	r->groups[r->ngroups++] = b;
	*out = b;
	return 0;

out_free:
	bufs_free(b);
	return ret;
}

uint16_t ring_bufs_group(const struct ring_bufs *b)
{
	return b->bgid;
}

uint8_t *ring_bufs_buf(const struct ring_bufs *b, unsigned bid)
{
	return b->mem + (size_t)bid * b->bytes;
}

void ring_bufs_provide(struct ring_bufs *b, unsigned bid)
{
	io_uring_buf_ring_add(b->br, b->mem + (size_t)bid * b->bytes, (unsigned)b->bytes,
			      (unsigned short)bid, io_uring_buf_ring_mask(b->count),
			      (int)b->provided);
	b->provided++;
}

/* ---- the signalfd ------------------------------------------------------ */

static void arm_signal_poll(struct ring *r)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	if (!sqe)
		return;
	io_uring_prep_poll_multishot(sqe, r->signal_fd, POLLIN);
	ring_sqe_tag(sqe, RING_OP_SIGNAL, 0, 0);
}

static void on_signal(void *ctx, struct io_uring_cqe *cqe)
{
	struct ring *r = ctx;
	struct signalfd_siginfo si;

	while (read(r->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR1) {
			counters_dump(stderr);
			continue;
		}
		if (!r->draining)
			log_info("event=shutdown signal=%u: draining", si.ssi_signo);
		ring_stop(r);
	}
	if (!(cqe->flags & IORING_CQE_F_MORE))
		arm_signal_poll(r);
}

/* ---- set-up ------------------------------------------------------------ */

struct ring *ring_create(const struct config *cfg)
{
	struct io_uring_params p = { 0 };
	struct ring *r = calloc(1, sizeof(*r));
	sigset_t mask;
	int ret;

	if (!r) {
		log_error("cannot allocate the ring");
		return NULL;
	}
	r->cfg = cfg;
	r->signal_fd = -1;
	r->poll_wait = getenv("RINGCHAT_RING_WAIT") && !strcmp(getenv("RINGCHAT_RING_WAIT"), "poll");
	timer_heap_init(&r->timers);
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL |
		  IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
	p.cq_entries = RING_CQ_ENTRIES;
	ret = io_uring_queue_init_params(RING_SQ_ENTRIES, &r->uring, &p);
	if (ret) {
		log_error("io_uring set-up failed: %s (kernel 6.1+ with io_uring enabled is required)",
			  strerror(-ret));
		free(r);
		return NULL;
	}
	if (!(p.features & IORING_FEAT_NODROP))
		log_warn("kernel lacks IORING_FEAT_NODROP: CQ overflow would drop completions");
	io_uring_register_ring_fd(&r->uring);
	log_info("io_uring ready: sq=%u cq=%u features=0x%x%s", p.sq_entries, p.cq_entries,
		 p.features, r->poll_wait ? " (waits in poll: RINGCHAT_RING_WAIT=poll)" : "");
	ret = bufring_setup(r);
	if (ret) {
		log_error("provided buffer ring set-up failed: %s", strerror(-ret));
		goto out_destroy;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGUSR1);
	r->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (r->signal_fd == -1) {
		log_error("signalfd failed: %s", strerror(errno));
		goto out_destroy;
	}
	ring_register_op(r, RING_OP_SIGNAL, on_signal, r);
	arm_signal_poll(r);
	r->now_ms = clock_mono_ms();
	return r;

out_destroy:
	ring_destroy(r);
	return NULL;
}

void ring_destroy(struct ring *r)
{
	/* exiting the ring cancels what is in flight; the buffers those
	 * operations point to are freed only afterwards */
	io_uring_queue_exit(&r->uring);
	if (r->br)
		munmap(r->br, RECV_BUF_COUNT * sizeof(struct io_uring_buf));
	free(r->bufs);
	for (unsigned i = 0; i < r->ngroups; i++)
		bufs_free(r->groups[i]);
	if (r->signal_fd >= 0)
		close(r->signal_fd);
	timer_heap_destroy(&r->timers);
	free(r->clients);
	free(r->slept);
	free(r);
}

/* ---- the loop ---------------------------------------------------------- */

/* Combines two waits (-1 = unbounded) into the shorter one. */
static int wait_min(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* Orderly shutdown step: true once everything is flushed. The workers'
 * idleness is read first: a worker pushes its reply before it stops
 * being busy, so "idle, then no queued reply" cannot miss one. */
static bool drain_step(struct ring *r, const struct ring_hooks *hooks)
{
	bool first = !r->drain_started;
	bool done = !hooks || !hooks->idle || hooks->idle(hooks->ctx);

	r->drain_started = true;
	for (unsigned i = 0; i < r->nclients; i++)
		if (r->clients[i].drain && !r->clients[i].drain(r->clients[i].ctx, first))
			done = false;
	return done;
}

void ring_dispatch_cqe(struct ring *r, struct io_uring_cqe *cqe)
{
	unsigned kind = ring_ud_kind(io_uring_cqe_get_data64(cqe));
	struct ring_op_entry *e = &r->ops[kind];

	if (e->fn)
		e->fn(e->ctx, cqe);
	else
		log_error("CQE of unregistered op kind %u (res %d)", kind, cqe->res);
}

bool ring_poll(struct ring *r, int max_wait_ms, const struct ring_hooks *hooks)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0, nslept = 0;
	int wait = -1;
	uint64_t due;

	if (r->drained)
		return false;
	for (unsigned i = 0; i < r->nclients; i++)
		if (r->clients[i].flush)
			r->clients[i].flush(r->clients[i].ctx);
	bufring_publish(r);

	if (r->draining) {
		if (drain_step(r, hooks) || r->now_ms >= r->drain_deadline_ms) {
			r->drained = true;
			return false;
		}
		wait = DRAIN_POLL_MS;
	} else {
		for (unsigned i = 0; i < r->nclients && wait != 0; i++)
			if (r->clients[i].wait_ms)
				wait = wait_min(wait, r->clients[i].wait_ms(r->clients[i].ctx));
		/* Sleep announcements only when no client expects to poll: a
		 * client that polls (paused connections) is back within 1 ms
		 * anyway and needs no eventfd write from the workers. */
		for (unsigned i = 0; i < r->nclients && wait < 0; i++) {
			if (!r->clients[i].sleep)
				continue;
			if (!r->clients[i].sleep(r->clients[i].ctx)) {
				wait = 0;
				break;
			}
			r->slept[i] = true;
			nslept++;
		}
	}
	due = timer_heap_next(&r->timers);
	if (due != TIMER_NONE) {
		uint64_t left = due > r->now_ms ? due - r->now_ms : 0;

		wait = wait_min(wait, left > INT32_MAX ? INT32_MAX : (int)left);
	}
	wait = wait_min(wait, max_wait_ms);

	if (wait == 0) {
		io_uring_submit_and_get_events(&r->uring);
	} else if (r->poll_wait) {
		struct pollfd pfd = { .fd = r->uring.ring_fd, .events = POLLIN };

		/* With DEFER_TASKRUN the ring fd does not turn readable for
		 * completions still to be run by this task: the poll is a
		 * short sleep, and the loop reaps every RING_POLL_WAIT_MS. */
		io_uring_submit(&r->uring);
		if (!io_uring_cq_ready(&r->uring))
			poll(&pfd, 1, wait_min(wait, RING_POLL_WAIT_MS));
		io_uring_submit_and_get_events(&r->uring);
	} else if (wait < 0) {
		io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1, NULL, NULL);
	} else {
		struct __kernel_timespec ts = { wait / 1000, (long long)(wait % 1000) * 1000000 };

		io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1, &ts, NULL);
	}
	for (unsigned i = 0; nslept && i < r->nclients; i++) {
		if (r->slept[i]) {
			r->slept[i] = false;
			nslept--;
			r->clients[i].awake(r->clients[i].ctx);
		}
	}
	r->now_ms = clock_mono_ms();
	if (io_uring_cq_has_overflow(&r->uring))
		counter_inc(cq_overflow);
	io_uring_for_each_cqe(&r->uring, head, cqe) {
		ring_dispatch_cqe(r, cqe);
		seen++;
	}
	io_uring_cq_advance(&r->uring, seen);
	timer_heap_run(&r->timers, r->now_ms);
	return true;
}

int ring_run(struct ring *r, const struct ring_hooks *hooks)
{
	/* names the I/O thread in top, perf and gdb */
	pthread_setname_np(pthread_self(), "ring");
	while (ring_poll(r, -1, hooks))
		;
	log_info("event=drained open_connections=%llu",
		 (unsigned long long)atomic_load_explicit(&counters.conn_open,
							  memory_order_relaxed));
	return 0;
}
