#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/registry.h"

#define SHARDS 64
#define SHARD_MIN_CAP 64

struct entry {
	int64_t user; /* 0 = empty, -1 = deleted */
	uint64_t conn;
};

struct shard {
	pthread_mutex_t lock;
	struct entry *tab;
	uint32_t cap;  /* power of two */
	uint32_t used; /* live + deleted */
	uint32_t live;
	char pad[64 - sizeof(pthread_mutex_t) % 64];
};

static struct shard shards[SHARDS];

static inline uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

int registry_init(void)
{
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_init(&shards[i].lock, NULL);
		shards[i].tab = calloc(SHARD_MIN_CAP, sizeof(struct entry));
		if (!shards[i].tab)
			return -ENOMEM;
		shards[i].cap = SHARD_MIN_CAP;
		shards[i].used = shards[i].live = 0;
	}
	return 0;
}

void registry_destroy(void)
{
	for (int i = 0; i < SHARDS; i++) {
		free(shards[i].tab);
		shards[i].tab = NULL;
		pthread_mutex_destroy(&shards[i].lock);
	}
}

static struct entry *find(struct shard *s, int64_t user, uint64_t h, bool for_insert)
{
	uint32_t mask = s->cap - 1, i = (uint32_t)(h >> 6) & mask;
	struct entry *tomb = NULL;

	for (;;) {
		struct entry *e = &s->tab[i];

		if (e->user == user)
			return e;
		if (e->user == 0)
			return for_insert ? (tomb ? tomb : e) : NULL;
		if (e->user == -1 && !tomb)
			tomb = e;
		i = (i + 1) & mask;
	}
}

static int grow(struct shard *s)
{
	uint32_t cap = s->live * 4 > s->cap ? s->cap * 2 : s->cap;
	struct entry *old = s->tab, *tab = calloc(cap, sizeof(*tab));
	uint32_t oldcap = s->cap;

	if (!tab)
		return -ENOMEM;
	s->tab = tab;
	s->cap = cap;
	s->used = s->live = 0;
	for (uint32_t i = 0; i < oldcap; i++) {
		if (old[i].user > 0) {
			struct entry *e = find(s, old[i].user, mix((uint64_t)old[i].user), true);

			*e = old[i];
			s->used++;
			s->live++;
		}
	}
	free(old);
	return 0;
}

int registry_set(int64_t user, uint64_t conn, uint64_t *replaced)
{
	uint64_t h = mix((uint64_t)user), prev = 0;
	struct shard *s = &shards[h % SHARDS];
	struct entry *e;

	pthread_mutex_lock(&s->lock);
	/* keep the table at most half full, tombstones included */
	if ((s->used + 1) * 2 > s->cap && grow(s)) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	e = find(s, user, h, true);
	if (e->user == user) {
		prev = e->conn;
	} else {
		if (e->user == 0)
			s->used++;
		s->live++;
		e->user = user;
	}
	e->conn = conn;
	pthread_mutex_unlock(&s->lock);
	*replaced = prev;
	return 0;
}

bool registry_remove(int64_t user, uint64_t conn)
{
	uint64_t h = mix((uint64_t)user);
	struct shard *s = &shards[h % SHARDS];
	struct entry *e;
	bool removed = false;

	pthread_mutex_lock(&s->lock);
	e = find(s, user, h, false);
	if (e && e->conn == conn) {
		e->user = -1;
		e->conn = 0;
		s->live--;
		removed = true;
	}
	pthread_mutex_unlock(&s->lock);
	return removed;
}

uint64_t registry_get(int64_t user)
{
	uint64_t h = mix((uint64_t)user), conn = 0;
	struct shard *s = &shards[h % SHARDS];
	struct entry *e;

	pthread_mutex_lock(&s->lock);
	e = find(s, user, h, false);
	if (e)
		conn = e->conn;
	pthread_mutex_unlock(&s->lock);
	return conn;
}

size_t registry_count(void)
{
	size_t n = 0;

	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_lock(&shards[i].lock);
		n += shards[i].live;
		pthread_mutex_unlock(&shards[i].lock);
	}
	return n;
}
