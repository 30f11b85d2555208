/*
 * handoff.c - the I/O thread ↔ worker lanes and their Dekker wake-ups
 * (see handoff.h for the protocol).
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ringchat/counters.h"
#include "ringchat/handoff.h"

static void eventfd_kick(int fd)
{
	uint64_t one = 1;

	while (write(fd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

/* The futex word is the lane's sleeping flag itself: _Atomic int has the
 * size and alignment of int on every target. */
static void futex_wake_one(_Atomic int *word)
{
	syscall(SYS_futex, (int *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Wakes a sleeper whose flag is `sleeping`. The caller has already
 * published its work; the fence orders that publication before reading
 * the flag (pairs with the fence the sleeper runs after setting it). */
static bool claim_wake(_Atomic int *sleeping)
{
	atomic_thread_fence(memory_order_seq_cst);
	return atomic_load_explicit(sleeping, memory_order_relaxed) &&
	       atomic_exchange_explicit(sleeping, 0, memory_order_acq_rel);
}

static void wake_ring_if_sleeping(struct handoff *h)
{
	if (claim_wake(&h->ring_sleeping)) {
		counter_inc(ring_wakeups);
		eventfd_kick(h->ring_wake_fd);
	}
}

static void wake_worker_if_sleeping(struct handoff_lane *l)
{
	if (claim_wake(&l->sleeping)) {
		counter_inc(worker_wakeups);
		futex_wake_one(&l->sleeping);
	}
}

int handoff_init(struct handoff *h, int n, uint32_t depth)
{
	memset(h, 0, sizeof(*h));
	h->ring_wake_fd = -1;
	if (n < 1)
		return -EINVAL;
	/* struct handoff_lane holds cache-line aligned queue indices */
	h->lanes = aligned_alloc(SPSC_CACHELINE, (size_t)n * sizeof(*h->lanes));
	if (!h->lanes)
		return -ENOMEM;
	memset(h->lanes, 0, (size_t)n * sizeof(*h->lanes));
	h->n = n;
	h->ring_wake_fd = eventfd(0, EFD_CLOEXEC);
	if (h->ring_wake_fd == -1)
		goto out_destroy;
	for (int i = 0; i < n; i++) {
		struct handoff_lane *l = &h->lanes[i];

		if (spsc_init(&l->in, depth) || spsc_init(&l->out, depth))
			goto out_destroy;
	}
	return 0;

out_destroy:
	handoff_destroy(h);
	return -ENOMEM;
}

void handoff_destroy(struct handoff *h)
{
	for (int i = 0; h->lanes && i < h->n; i++) {
		struct handoff_lane *l = &h->lanes[i];
		void *m;

		if (l->in.slots)
			while ((m = spsc_pop(&l->in)))
				free(m);
		if (l->out.slots)
			while ((m = spsc_pop(&l->out)))
				free(m);
		spsc_destroy(&l->in);
		spsc_destroy(&l->out);
	}
	free(h->lanes);
	if (h->ring_wake_fd >= 0)
		close(h->ring_wake_fd);
	memset(h, 0, sizeof(*h));
	h->ring_wake_fd = -1;
}

bool handoff_submit(struct handoff_lane *l, struct in_msg *m)
{
	if (!spsc_push(&l->in, m))
		return false;
	l->wake_pending = true;
	return true;
}

void handoff_flush_wakes(struct handoff *h)
{
	for (int i = 0; i < h->n; i++) {
		struct handoff_lane *l = &h->lanes[i];

		if (l->wake_pending) {
			l->wake_pending = false;
			wake_worker_if_sleeping(l);
		}
	}
}

void handoff_wake_worker(struct handoff_lane *l)
{
	wake_worker_if_sleeping(l);
}

void handoff_kick_worker(struct handoff_lane *l)
{
	/* clearing the flag also stops a worker that is about to wait:
	 * its futex wait sees 0, not the 1 it expects, and returns */
	atomic_store_explicit(&l->sleeping, 0, memory_order_seq_cst);
	futex_wake_one(&l->sleeping);
}

void handoff_worker_wait(struct handoff_lane *l, int timeout_ms)
{
	struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };

	/* returns at a wake, at the timeout, at a signal, or at once when
	 * the flag is no longer 1 (a producer claimed the wake-up first) */
	syscall(SYS_futex, (int *)&l->sleeping, FUTEX_WAIT_PRIVATE, 1, &ts, NULL, 0);
}

void handoff_send_out(struct handoff *h, struct handoff_lane *l, struct out_msg *m)
{
	/* A full out queue means the I/O thread is behind: wait for it
	 * rather than drop a reply. It always drains, so this ends. */
	while (!spsc_push(&l->out, m)) {
		wake_ring_if_sleeping(h);
		sched_yield();
	}
	wake_ring_if_sleeping(h);
}

void handoff_wake_ring(struct handoff *h)
{
	wake_ring_if_sleeping(h);
}

bool handoff_out_pending(struct handoff *h)
{
	for (int i = 0; i < h->n; i++)
		if (spsc_size(&h->lanes[i].out))
			return true;
	return false;
}

bool handoff_in_empty(struct handoff *h)
{
	for (int i = 0; i < h->n; i++)
		if (spsc_size(&h->lanes[i].in))
			return false;
	return true;
}

bool handoff_ring_sleep(struct handoff *h)
{
	/* Dekker with handoff_send_out: announce the sleep, then re-check
	 * the queues; a worker pushes, fences, then checks the flag. One of
	 * the two sees the other. */
	atomic_store_explicit(&h->ring_sleeping, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (handoff_out_pending(h)) {
		atomic_store_explicit(&h->ring_sleeping, 0, memory_order_relaxed);
		return false;
	}
	return true;
}

void handoff_ring_awake(struct handoff *h)
{
	atomic_store_explicit(&h->ring_sleeping, 0, memory_order_relaxed);
}

void handoff_ring_drain_wake(struct handoff *h)
{
	uint64_t v;

	while (read(h->ring_wake_fd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
}
