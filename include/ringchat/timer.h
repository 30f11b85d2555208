/*
 * timer.h - a queue of millisecond timers ordered by deadline (binary
 * min-heap), with no clock of its own: the caller says what time it is.
 *
 * The ring keeps one of these and makes its single wait end at the
 * earliest deadline (ring.h: ring_timer_arm), which is what gives the
 * node millisecond timers; tests drive it with a fake clock.
 *
 * A struct ring_timer is embedded in its owner's object and owned by it;
 * the heap only points to armed timers. An armed timer must be cancelled
 * before its memory is freed. Not thread-safe: one thread owns a heap.
 */
#ifndef RINGCHAT_TIMER_H
#define RINGCHAT_TIMER_H

#include <stdbool.h>
#include <stdint.h>

struct ring_timer;

/* Called once when the timer is due; the timer is already disarmed, so
 * the callback may re-arm it, cancel others or arm new ones. */
typedef void (*ring_timer_fn)(void *ctx, struct ring_timer *t);

struct ring_timer {
	uint64_t due_ms;  /* deadline, on the caller's clock */
	uint64_t seq;     /* arming order: equal deadlines fire in that order */
	uint32_t pos;     /* heap index + 1; 0 = not armed */
	ring_timer_fn fn;
	void *ctx;
};

struct timer_heap {
	struct ring_timer **v;
	uint32_t n, cap;
	uint64_t seq; /* next arming number */
};

#define TIMER_NONE UINT64_MAX /* timer_heap_next of an empty heap */

/* A zeroed struct timer_heap is a valid empty heap; so is one after init. */
void timer_heap_init(struct timer_heap *h);
/* Frees the heap's array; the timers (owned elsewhere) are left disarmed. */
void timer_heap_destroy(struct timer_heap *h);

/* A zeroed struct ring_timer is a valid disarmed timer. */
static inline bool ring_timer_armed(const struct ring_timer *t)
{
	return t->pos != 0;
}

/*
 * Arms t to call fn(ctx, t) at due_ms; re-arming an armed timer moves it.
 * Returns 0, or -ENOMEM (the heap could not grow; t keeps its previous
 * state and fn is never called for this request).
 */
int timer_heap_arm(struct timer_heap *h, struct ring_timer *t, uint64_t due_ms,
		   ring_timer_fn fn, void *ctx);
/* Disarms t; a no-op when t is not armed. */
void timer_heap_cancel(struct timer_heap *h, struct ring_timer *t);
/* Earliest deadline, or TIMER_NONE when nothing is armed. */
uint64_t timer_heap_next(const struct timer_heap *h);

/*
 * Fires, earliest first, every timer with due_ms <= now_ms that was armed
 * before this call; a timer armed (or re-armed) by a callback fires at a
 * later call at the earliest, so a callback that re-arms itself for "now"
 * cannot make this loop forever. Returns the number of callbacks run.
 */
unsigned timer_heap_run(struct timer_heap *h, uint64_t now_ms);

#endif
