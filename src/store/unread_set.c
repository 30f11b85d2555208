/*
 * unread_set.c - 1:1 messages whose unread row is held back (contract in
 * unread_set.h).
 *
 * Entries live in one array allocated up front, linked three ways by
 * index: a FIFO in add order (= due order), a list per recipient, and a
 * free list. Two open-addressing tables with linear probing find them:
 * (to_id, msg_id) → entry, to_id → head of its list. Deletion shifts the
 * following slots back, so no tombstones build up under churn.
 *
 * Groups: the entries a stage adds form one group, a ring slot with the
 * smallest msg_id added and a count of live entries. The ring's oldest
 * slot moves on as groups empty; the floor is the minimum over the slots
 * from there on that keep an entry once the stage commits.
 */
#include <stdlib.h>
#include <string.h>

#include "ringchat/unread_set.h"

#define NIL UINT32_MAX

enum {
	E_USED = 1,	  /* holds an entry (else on the free list) */
	E_TENTATIVE = 2,  /* added in the current stage */
	E_DROP = 4,	  /* removal staged */
	E_STAGED = 8,	  /* on the staged list */
};

struct unread_entry {
	int64_t to_id;
	int64_t msg_id;
	uint64_t due_ms;
	void *row; /* unread_set_add_row's, else NULL */
	uint32_t fifo_prev, fifo_next;
	uint32_t user_prev, user_next; /* free list: user_next */
	uint16_t group;
	uint8_t flags;
};

struct unread_group {
	int64_t min_id;
	uint32_t live;	   /* entries in the group */
	uint32_t dropping; /* of those, with a staged removal */
};

struct user_slot {
	int64_t to_id; /* 0 = empty */
	uint32_t head;
};

struct unread_set {
	struct unread_entry *e;
	uint32_t max, count, free_head;
	uint32_t fifo_head, fifo_tail;

	uint32_t *pair_slots; /* entry index + 1; 0 = empty */
	uint32_t pair_mask;
	struct user_slot *users;
	uint32_t user_mask;

	uint32_t *staged; /* entries touched in this stage */
	uint32_t nstaged;

	struct unread_group groups[UNREAD_SET_GROUPS];
	uint32_t g_first, g_cur; /* oldest slot that may be live; this stage's */
	uint32_t g_used;	 /* slots from g_first to g_cur, inclusive */
	bool stage_has_group;
};

static uint32_t hash64(uint64_t a, uint64_t b)
{
	uint64_t x = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;

	x ^= x >> 31;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 29;
	return (uint32_t)(x >> 32);
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t p = 16;

	while (p < n)
		p <<= 1;
	return p;
}

struct unread_set *unread_set_new(uint32_t max_entries)
{
	struct unread_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (max_entries == 0)
		max_entries = 1;
	if (max_entries > (1u << 28))
		max_entries = 1u << 28;
	s->max = max_entries;
	s->pair_mask = pow2_at_least((uint64_t)max_entries * 2) - 1;
	s->user_mask = s->pair_mask;
	s->e = calloc(max_entries, sizeof(*s->e));
	s->pair_slots = calloc((size_t)s->pair_mask + 1, sizeof(*s->pair_slots));
	s->users = calloc((size_t)s->user_mask + 1, sizeof(*s->users));
	s->staged = calloc(max_entries, sizeof(*s->staged));
	if (!s->e || !s->pair_slots || !s->users || !s->staged) {
		unread_set_free(s);
		return NULL;
	}
	for (uint32_t i = 0; i < max_entries; i++)
		s->e[i].user_next = i + 1 < max_entries ? i + 1 : NIL;
	s->free_head = 0;
	s->fifo_head = s->fifo_tail = NIL;
	return s;
}

void unread_set_free(struct unread_set *s)
{
	if (!s)
		return;
	free(s->e);
	free(s->pair_slots);
	free(s->users);
	free(s->staged);
	free(s);
}

/* ---- (to_id, msg_id) → entry ------------------------------------------- */

static uint32_t *pair_find(const struct unread_set *s, int64_t to_id, int64_t msg_id)
{
	for (uint32_t i = hash64((uint64_t)to_id, (uint64_t)msg_id) & s->pair_mask;;
	     i = (i + 1) & s->pair_mask) {
		uint32_t v = s->pair_slots[i];

		if (!v)
			return &s->pair_slots[i];
		if (s->e[v - 1].to_id == to_id && s->e[v - 1].msg_id == msg_id)
			return &s->pair_slots[i];
	}
}

/* Backward-shift deletion of slot i of a linear-probing table. */
static void pair_delete(struct unread_set *s, uint32_t i)
{
	uint32_t j = i;

	for (;;) {
		j = (j + 1) & s->pair_mask;
		uint32_t v = s->pair_slots[j];

		if (!v)
			break;
		const struct unread_entry *x = &s->e[v - 1];
		uint32_t home = hash64((uint64_t)x->to_id, (uint64_t)x->msg_id) & s->pair_mask;

		/* move v back to i unless its home lies cyclically in (i, j] */
		if (((j - home) & s->pair_mask) >= ((j - i) & s->pair_mask)) {
			s->pair_slots[i] = v;
			i = j;
		}
	}
	s->pair_slots[i] = 0;
}

/* ---- to_id → list head ------------------------------------------------- */

static struct user_slot *user_find(const struct unread_set *s, int64_t to_id)
{
	for (uint32_t i = hash64((uint64_t)to_id, 0) & s->user_mask;; i = (i + 1) & s->user_mask) {
		struct user_slot *u = &s->users[i];

		if (!u->to_id || u->to_id == to_id)
			return u;
	}
}

static void user_delete(struct unread_set *s, struct user_slot *u)
{
	uint32_t i = (uint32_t)(u - s->users), j = i;

	for (;;) {
		j = (j + 1) & s->user_mask;
		if (!s->users[j].to_id)
			break;
		uint32_t home = hash64((uint64_t)s->users[j].to_id, 0) & s->user_mask;

		if (((j - home) & s->user_mask) >= ((j - i) & s->user_mask)) {
			s->users[i] = s->users[j];
			i = j;
		}
	}
	s->users[i].to_id = 0;
	s->users[i].head = NIL;
}

/* ---- groups -------------------------------------------------------------- */

/* Lets g_first pass the groups that emptied. */
static void groups_trim(struct unread_set *s)
{
	while (s->g_used > 0 && s->groups[s->g_first].live == 0 &&
	       !(s->stage_has_group && s->g_first == s->g_cur)) {
		s->g_first = (s->g_first + 1) % UNREAD_SET_GROUPS;
		s->g_used--;
	}
}

/* This stage's group, opened on its first add; NIL when the ring is full. */
static uint32_t group_for_stage(struct unread_set *s, int64_t msg_id)
{
	if (!s->stage_has_group) {
		groups_trim(s);
		if (s->g_used == UNREAD_SET_GROUPS)
			return NIL;
		s->g_cur = s->g_used ? (s->g_first + s->g_used) % UNREAD_SET_GROUPS : s->g_first;
		s->g_used++;
		s->groups[s->g_cur] = (struct unread_group){.min_id = msg_id};
		s->stage_has_group = true;
	}
	if (msg_id < s->groups[s->g_cur].min_id)
		s->groups[s->g_cur].min_id = msg_id;
	return s->g_cur;
}

/* ---- entries --------------------------------------------------------------- */

static void stage(struct unread_set *s, uint32_t idx)
{
	if (s->e[idx].flags & E_STAGED)
		return;
	s->e[idx].flags |= E_STAGED;
	s->staged[s->nstaged++] = idx;
}

/* Stages the removal of entry idx. */
static void drop(struct unread_set *s, uint32_t idx)
{
	s->e[idx].flags |= E_DROP;
	s->groups[s->e[idx].group].dropping++;
	stage(s, idx);
}

/* Unlinks entry idx from everything and frees it. */
static void entry_remove(struct unread_set *s, uint32_t idx)
{
	struct unread_entry *x = &s->e[idx];
	struct user_slot *u;

	pair_delete(s, (uint32_t)(pair_find(s, x->to_id, x->msg_id) - s->pair_slots));

	if (x->fifo_prev != NIL)
		s->e[x->fifo_prev].fifo_next = x->fifo_next;
	else
		s->fifo_head = x->fifo_next;
	if (x->fifo_next != NIL)
		s->e[x->fifo_next].fifo_prev = x->fifo_prev;
	else
		s->fifo_tail = x->fifo_prev;

	u = user_find(s, x->to_id);
	if (x->user_prev != NIL)
		s->e[x->user_prev].user_next = x->user_next;
	else
		u->head = x->user_next;
	if (x->user_next != NIL)
		s->e[x->user_next].user_prev = x->user_prev;
	if (u->head == NIL)
		user_delete(s, u);

	s->groups[x->group].live--;
	x->flags = 0;
	x->user_next = s->free_head;
	s->free_head = idx;
	s->count--;
}

bool unread_set_add(struct unread_set *s, int64_t to_id, int64_t msg_id, uint64_t due_ms)
{
	return unread_set_add_row(s, to_id, msg_id, due_ms, NULL);
}

bool unread_set_add_row(struct unread_set *s, int64_t to_id, int64_t msg_id, uint64_t due_ms,
			void *row)
{
	uint32_t *slot, idx, g;
	struct user_slot *u;
	struct unread_entry *x;

	if (to_id <= 0 || msg_id <= 0 || s->free_head == NIL)
		return false;
	slot = pair_find(s, to_id, msg_id);
	if (*slot)
		return false;
	g = group_for_stage(s, msg_id);
	if (g == NIL)
		return false;
	idx = s->free_head;
	x = &s->e[idx];
	s->free_head = x->user_next;
	*x = (struct unread_entry){
	    .to_id = to_id,
	    .msg_id = msg_id,
	    .due_ms = due_ms,
	    .row = row,
	    .fifo_prev = s->fifo_tail,
	    .fifo_next = NIL,
	    .user_prev = NIL,
	    .group = (uint16_t)g,
	    .flags = E_USED | E_TENTATIVE,
	};
	*slot = idx + 1;
	if (s->fifo_tail != NIL)
		s->e[s->fifo_tail].fifo_next = idx;
	else
		s->fifo_head = idx;
	s->fifo_tail = idx;
	u = user_find(s, to_id);
	if (!u->to_id) {
		u->to_id = to_id;
		u->head = NIL;
	}
	x->user_next = u->head;
	if (u->head != NIL)
		s->e[u->head].user_prev = idx;
	u->head = idx;
	s->groups[g].live++;
	s->count++;
	stage(s, idx);
	return true;
}

void *unread_set_row(const struct unread_set *s, int64_t to_id, int64_t msg_id)
{
	uint32_t v = *pair_find(s, to_id, msg_id);

	return v ? s->e[v - 1].row : NULL;
}

void *unread_set_cancel_row(struct unread_set *s, int64_t to_id, int64_t msg_id)
{
	uint32_t v = *pair_find(s, to_id, msg_id);

	if (!v || !s->e[v - 1].row || (s->e[v - 1].flags & E_DROP))
		return NULL;
	drop(s, v - 1);
	return s->e[v - 1].row;
}

bool unread_set_cancel(struct unread_set *s, int64_t to_id, int64_t msg_id)
{
	uint32_t v = *pair_find(s, to_id, msg_id);

	if (!v || (s->e[v - 1].flags & E_DROP))
		return false;
	drop(s, v - 1);
	return true;
}

uint32_t unread_set_take_due(struct unread_set *s, uint64_t now_ms, struct unread_pair *out,
			     uint32_t max)
{
	uint32_t n = 0;

	for (uint32_t i = s->fifo_head; i != NIL && n < max; i = s->e[i].fifo_next) {
		struct unread_entry *x = &s->e[i];

		if (x->flags & E_DROP)
			continue;
		if (x->due_ms > now_ms)
			break;
		drop(s, i);
		out[n++] = (struct unread_pair){x->to_id, x->msg_id, x->row};
	}
	return n;
}

uint32_t unread_set_take_user(struct unread_set *s, int64_t to_id, struct unread_pair *out,
			      uint32_t max)
{
	const struct user_slot *u = user_find(s, to_id);
	uint32_t n = 0;

	if (!u->to_id)
		return 0;
	for (uint32_t i = u->head; i != NIL && n < max; i = s->e[i].user_next) {
		struct unread_entry *x = &s->e[i];

		if (x->flags & E_DROP)
			continue;
		drop(s, i);
		out[n++] = (struct unread_pair){x->to_id, x->msg_id, x->row};
	}
	return n;
}

static void stage_end(struct unread_set *s, bool commit)
{
	for (uint32_t k = 0; k < s->nstaged; k++) {
		uint32_t idx = s->staged[k];
		uint8_t f = s->e[idx].flags;

		if (f & E_DROP)
			s->groups[s->e[idx].group].dropping--;
		/* commit: what was dropped goes; abort: what was added goes,
		 * and a removal staged on an entry that stays is forgotten */
		if (commit ? (f & E_DROP) : (f & E_TENTATIVE))
			entry_remove(s, idx);
		else
			s->e[idx].flags = E_USED;
	}
	s->nstaged = 0;
	s->stage_has_group = false;
	/* the newest groups that hold nothing (a stage aborted or cancelled,
	 * the last one's entries taken) give their slots back, so retries
	 * during an outage use up none */
	while (s->g_used > 0 && s->groups[(s->g_first + s->g_used - 1) % UNREAD_SET_GROUPS].live == 0)
		s->g_used--;
	groups_trim(s);
}

void unread_set_commit(struct unread_set *s)
{
	stage_end(s, true);
}

void unread_set_abort(struct unread_set *s)
{
	stage_end(s, false);
}

int64_t unread_set_min_id(const struct unread_set *s)
{
	int64_t min = 0;

	if (!s->count)
		return 0;
	for (uint32_t k = 0, g = s->g_first; k < s->g_used; k++, g = (g + 1) % UNREAD_SET_GROUPS)
		if (s->groups[g].live > s->groups[g].dropping &&
		    (!min || s->groups[g].min_id < min))
			min = s->groups[g].min_id;
	return min;
}

uint64_t unread_set_next_due(const struct unread_set *s)
{
	for (uint32_t i = s->fifo_head; i != NIL; i = s->e[i].fifo_next)
		if (!(s->e[i].flags & E_DROP))
			return s->e[i].due_ms;
	return UINT64_MAX;
}

uint32_t unread_set_count(const struct unread_set *s)
{
	return s->count;
}
