/*
 * kmap.c - the pair-keyed hash map of kmap.h: linear probing, power-of-two
 * tables, backward-shift deletion.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/kmap.h"

static uint32_t kmap_hash(uint64_t k1, uint64_t k2)
{
	uint64_t x =
	    k1 * 0x9e3779b97f4a7c15ull ^ (k2 + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;

	x ^= x >> 31;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 29;
	return (uint32_t)(x >> 32);
}

int kmap_init(struct kmap *m, uint32_t slots, uint32_t limit)
{
	m->slots = calloc(slots, sizeof(*m->slots));
	if (!m->slots)
		return -ENOMEM;
	m->mask = slots - 1;
	m->n = 0;
	m->limit = limit;
	return 0;
}

void kmap_destroy(struct kmap *m)
{
	free(m->slots);
	m->slots = NULL;
}

struct kmap_slot *kmap_get(const struct kmap *m, uint64_t k1, uint64_t k2)
{
	for (uint32_t i = kmap_hash(k1, k2) & m->mask;; i = (i + 1) & m->mask) {
		struct kmap_slot *s = &m->slots[i];

		if (s->k1 == 0)
			return NULL;
		if (s->k1 == k1 && s->k2 == k2)
			return s;
	}
}

static void kmap_insert_slot(struct kmap *m, struct kmap_slot src)
{
	uint32_t i = kmap_hash(src.k1, src.k2) & m->mask;

	while (m->slots[i].k1)
		i = (i + 1) & m->mask;
	m->slots[i] = src;
}

/* Doubles the table; false when out of memory (the map is unchanged). */
static bool kmap_grow(struct kmap *m)
{
	struct kmap_slot *old = m->slots;
	uint32_t old_n = m->mask + 1;
	struct kmap_slot *slots = calloc((size_t)old_n * 2, sizeof(*slots));

	if (!slots)
		return false;
	m->slots = slots;
	m->mask = old_n * 2 - 1;
	for (uint32_t i = 0; i < old_n; i++)
		if (old[i].k1)
			kmap_insert_slot(m, old[i]);
	free(old);
	return true;
}

/* The slot of (k1, k2), made with v = 0 when new; NULL when the map holds
 * limit entries already or memory ran out. */
struct kmap_slot *kmap_put(struct kmap *m, uint64_t k1, uint64_t k2)
{
	struct kmap_slot *s = kmap_get(m, k1, k2);

	if (s)
		return s;
	if (m->n >= m->limit)
		return NULL;
	/* load factor at most 1/2: probes stay short */
	if ((m->n + 1) * 2 > m->mask + 1 && !kmap_grow(m))
		return NULL;
	kmap_insert_slot(m, (struct kmap_slot){.k1 = k1, .k2 = k2});
	m->n++;
	return kmap_get(m, k1, k2);
}

/* Removes s (from kmap_get/kmap_put) by shifting back the entries of its
 * probe run, so lookups need no tombstones. */
void kmap_del(struct kmap *m, struct kmap_slot *s)
{
	uint32_t i = (uint32_t)(s - m->slots), j = i;

	for (;;) {
		j = (j + 1) & m->mask;
		if (!m->slots[j].k1)
			break;
		uint32_t home = kmap_hash(m->slots[j].k1, m->slots[j].k2) & m->mask;

		/* move j into the hole at i unless its home lies in (i, j] */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i] = (struct kmap_slot){0};
	m->n--;
}

void kmap_clear(struct kmap *m)
{
	memset(m->slots, 0, ((size_t)m->mask + 1) * sizeof(*m->slots));
	m->n = 0;
}

