/*
 * kmap.h - a small open-addressing hash map from a pair of 64-bit keys to
 * a 64-bit value, for per-thread caches (no locks: one owner thread).
 *
 * k1 must not be 0 (0 marks an empty slot). The table grows by doubling
 * up to a load factor of 1/2 and never holds more than `limit` entries:
 * kmap_put fails beyond, so a cache bounded by it decides what to drop
 * (usually kmap_clear). Deletion shifts entries back (no tombstones), so
 * lookups stay short under churn.
 */
#ifndef RINGCHAT_KMAP_H
#define RINGCHAT_KMAP_H

#include <stdbool.h>
#include <stdint.h>

struct kmap_slot {
	uint64_t k1, k2, v;
};

struct kmap {
	struct kmap_slot *slots;
	uint32_t mask; /* slots - 1, slots a power of two */
	uint32_t n;
	uint32_t limit; /* most entries; kmap_put fails beyond */
};

/* slots: initial size, a power of two. Returns 0 or -ENOMEM. */
int kmap_init(struct kmap *m, uint32_t slots, uint32_t limit);
void kmap_destroy(struct kmap *m);
/* The slot of (k1, k2), or NULL. Valid until the next put or del. */
struct kmap_slot *kmap_get(const struct kmap *m, uint64_t k1, uint64_t k2);
/* The slot of (k1, k2), made with v = 0 when new; NULL when the map holds
 * limit entries already or memory ran out (the map is unchanged). */
struct kmap_slot *kmap_put(struct kmap *m, uint64_t k1, uint64_t k2);
/* Removes s (from kmap_get/kmap_put). */
void kmap_del(struct kmap *m, struct kmap_slot *s);
void kmap_clear(struct kmap *m);

#endif
