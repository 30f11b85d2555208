/*
 * spsc.h - bounded single-producer single-consumer queue of pointers.
 *
 * The I/O thread and each worker talk through a pair of these (one per
 * direction), so no CAS is ever needed and a connection's frames keep
 * their order. Counters run freely and are compared by difference only,
 * so wrap-around at 2^32 is harmless. Each side caches the other side's
 * index and re-reads it only when the queue looks full (producer) or
 * empty (consumer), which keeps the shared cache lines quiet.
 *
 * Thread rules: exactly one thread calls spsc_push and exactly one calls
 * spsc_pop/spsc_peek for a given queue. spsc_size may be called by either.
 */
#ifndef RINGCHAT_SPSC_H
#define RINGCHAT_SPSC_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define SPSC_CACHELINE 64

struct spsc {
	/* consumer side */
	alignas(SPSC_CACHELINE) _Atomic uint32_t head;
	uint32_t tail_cache; /* consumer's last view of tail */
	/* producer side */
	alignas(SPSC_CACHELINE) _Atomic uint32_t tail;
	uint32_t head_cache; /* producer's last view of head */
	/* read-only after init */
	alignas(SPSC_CACHELINE) uint32_t mask;
	void **slots;
};

/* cap is rounded up to a power of two (at least 2). Returns 0 or -ENOMEM. */
int spsc_init(struct spsc *q, uint32_t cap);
void spsc_destroy(struct spsc *q);

/* Producer only. Returns false (and keeps ownership of item) when full. */
static inline bool spsc_push(struct spsc *q, void *item)
{
	uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);

	if (t - q->head_cache > q->mask) {
		/* acquire pairs with the consumer's release store of head:
		 * its reads of the slot are done before we overwrite it. */
		q->head_cache = atomic_load_explicit(&q->head, memory_order_acquire);
		if (t - q->head_cache > q->mask)
			return false;
	}
	q->slots[t & q->mask] = item;
	/* release pairs with the consumer's acquire load of tail: the slot
	 * write above is visible before the new tail is. */
	atomic_store_explicit(&q->tail, t + 1, memory_order_release);
	return true;
}

/* Consumer only. Returns the oldest item without removing it, or NULL. */
static inline void *spsc_peek(struct spsc *q)
{
	uint32_t h = atomic_load_explicit(&q->head, memory_order_relaxed);

	if (h == q->tail_cache) {
		/* acquire pairs with the producer's release store of tail. */
		q->tail_cache = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (h == q->tail_cache)
			return NULL;
	}
	return q->slots[h & q->mask];
}

/* Consumer only. Removes and returns the oldest item, or NULL if empty. */
static inline void *spsc_pop(struct spsc *q)
{
	void *item = spsc_peek(q);

	if (item) {
		uint32_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
		/* release pairs with the producer's acquire load of head: our
		 * read of the slot completes before the slot may be reused. */
		atomic_store_explicit(&q->head, h + 1, memory_order_release);
	}
	return item;
}

/* Approximate number of queued items (exact when both sides are idle). */
static inline uint32_t spsc_size(struct spsc *q)
{
	return atomic_load_explicit(&q->tail, memory_order_acquire) -
	       atomic_load_explicit(&q->head, memory_order_acquire);
}

#endif
