/*
 * timer.c - binary min-heap of struct ring_timer keyed by (due_ms, seq).
 *
 * Each timer records its heap position, so cancel and re-arm are
 * O(log n) without a search: the node link re-arms a retransmission
 * timer for nearly every datagram it sends.
 */
#include <errno.h>
#include <stdlib.h>

#include "ringchat/timer.h"

static bool timer_before(const struct ring_timer *a, const struct ring_timer *b)
{
	return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void heap_set(struct timer_heap *h, uint32_t i, struct ring_timer *t)
{
	h->v[i] = t;
	t->pos = i + 1;
}

static void sift_up(struct timer_heap *h, uint32_t i)
{
	struct ring_timer *t = h->v[i];

	while (i > 0) {
		uint32_t parent = (i - 1) / 2;

		if (!timer_before(t, h->v[parent]))
			break;
		heap_set(h, i, h->v[parent]);
		i = parent;
	}
	heap_set(h, i, t);
}

static void sift_down(struct timer_heap *h, uint32_t i)
{
	struct ring_timer *t = h->v[i];

	for (;;) {
		uint32_t l = 2 * i + 1, m = i;
		struct ring_timer *best = t;

		if (l < h->n && timer_before(h->v[l], best)) {
			m = l;
			best = h->v[l];
		}
		if (l + 1 < h->n && timer_before(h->v[l + 1], best))
			m = l + 1;
		if (m == i)
			break;
		heap_set(h, i, h->v[m]);
		i = m;
	}
	heap_set(h, i, t);
}

void timer_heap_init(struct timer_heap *h)
{
	h->v = NULL;
	h->n = h->cap = 0;
	h->seq = 0;
}

void timer_heap_destroy(struct timer_heap *h)
{
	for (uint32_t i = 0; i < h->n; i++)
		h->v[i]->pos = 0;
	free(h->v);
	timer_heap_init(h);
}

void timer_heap_cancel(struct timer_heap *h, struct ring_timer *t)
{
	uint32_t i;
	struct ring_timer *last;

	if (!t->pos)
		return;
	i = t->pos - 1;
	t->pos = 0;
	last = h->v[--h->n];
	if (last == t)
		return;
	/* the last element fills the hole and moves whichever way it must */
	h->v[i] = last;
	if (i > 0 && timer_before(last, h->v[(i - 1) / 2]))
		sift_up(h, i);
	else
		sift_down(h, i);
}

int timer_heap_arm(struct timer_heap *h, struct ring_timer *t, uint64_t due_ms,
		   ring_timer_fn fn, void *ctx)
{
	if (!t->pos && h->n == h->cap) {
		uint32_t cap = h->cap ? h->cap * 2 : 16;
		struct ring_timer **v = realloc(h->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	timer_heap_cancel(h, t);
	t->due_ms = due_ms;
	t->seq = h->seq++;
	t->fn = fn;
	t->ctx = ctx;
	h->v[h->n] = t;
	t->pos = ++h->n;
	sift_up(h, h->n - 1);
	return 0;
}

uint64_t timer_heap_next(const struct timer_heap *h)
{
	return h->n ? h->v[0]->due_ms : TIMER_NONE;
}

unsigned timer_heap_run(struct timer_heap *h, uint64_t now_ms)
{
	uint64_t seq_end = h->seq; /* timers armed from here on wait */
	unsigned fired = 0;

	while (h->n && h->v[0]->due_ms <= now_ms && h->v[0]->seq < seq_end) {
		struct ring_timer *t = h->v[0];

		timer_heap_cancel(h, t);
		fired++;
		t->fn(t->ctx, t);
	}
	return fired;
}
