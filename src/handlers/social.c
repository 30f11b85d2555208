/*
 * social.c - friendships, group memberships and conversation ids, with the
 * per-worker caches described in social.h.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/clock.h"
#include "ringchat/cluster.h"
#include "ringchat/db.h"
#include "ringchat/kmap.h"
#include "ringchat/social.h"
#include "ringchat/worker.h"

#define SOCIAL_CONV_CACHE_MAX 65536 /* entries per worker, each cache */
#define SOCIAL_FRIEND_CACHE_MAX 65536
#define SOCIAL_GROUP_CACHE_MAX 4096

struct social_worker {
	struct kmap conv;    /* (min user, max user) or (group, 0) → conversation id */
	struct kmap friends; /* (min, max) → mono ms when found to be friends */
	struct kmap groups;  /* (group, 0) → struct social_group * */
	uint64_t epoch_seen;
};

static struct social_worker *social_workers;
static int social_nworkers;

static struct social_worker *social_worker_of(struct worker *w)
{
	return &social_workers[w->id];
}

/* True when a has b as a friend. Friendships are stored once per
 * direction and always created and removed in pairs, so one row answers.
 * *err is 0 or a negative enum db_error. */
static bool social_query_friends(struct worker *w, int64_t a, int64_t b, int *err)
{
	int64_t n =
	    db_exec(w->db, "SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", "ll", a, b);

	if (n < 0) {
		*err = (int)n;
		return false;
	}
	*err = 0;
	return n > 0;
}

int social_group_members(struct worker *w, int64_t group_id, int64_t **ids, size_t *n)
{
	struct db_rows *rows;
	size_t count;

	*ids = NULL;
	*n = 0;
	rows = db_query(w->db,
			"SELECT user_id FROM group_members WHERE group_id = ? ORDER BY join_seq",
			"l", group_id);
	if (!rows)
		return db_last_error(w->db);
	count = db_rows_count(rows);
	if (count) {
		*ids = malloc(count * sizeof(**ids));
		if (!*ids) {
			db_rows_free(rows);
			return -ENOMEM;
		}
		for (size_t i = 0; i < count; i++)
			(*ids)[i] = db_cell_i64(rows, i, 0);
	}
	*n = count;
	db_rows_free(rows);
	return 0;
}

static _Atomic uint64_t social_epoch;

void social_changed(void)
{
	social_changed_here();
	cluster_social_changed();
}

void social_changed_here(void)
{
	/* release pairs with the acquire in social_refresh_caches: a worker that sees
	 * the new epoch also sees the committed change behind it */
	atomic_fetch_add_explicit(&social_epoch, 1, memory_order_release);
}

void social_group_put(struct social_group *g)
{
	if (g && --g->refs == 0)
		free(g);
}

static void social_groups_clear(struct social_worker *mw)
{
	for (uint32_t i = 0; i <= mw->groups.mask; i++)
		if (mw->groups.slots[i].k1)
			social_group_put((struct social_group *)(uintptr_t)mw->groups.slots[i].v);
	kmap_clear(&mw->groups);
}

/* Drops the social caches when someone changed the graph. */
static void social_refresh_caches(struct social_worker *mw)
{
	uint64_t e = atomic_load_explicit(&social_epoch, memory_order_acquire);

	if (e != mw->epoch_seen) {
		mw->epoch_seen = e;
		kmap_clear(&mw->friends);
		social_groups_clear(mw);
	}
}

/* ---- social checks (cached) ------------------------------------------------- */

/* 1 friends, 0 not, or a negative enum db_error. */
int social_are_friends(struct worker *w, int64_t a, int64_t b)
{
	struct social_worker *mw = social_worker_of(w);
	uint64_t lo = (uint64_t)(a < b ? a : b), hi = (uint64_t)(a < b ? b : a);
	uint64_t now = clock_mono_ms();
	struct kmap_slot *s = kmap_get(&mw->friends, lo, hi);
	bool yes;
	int err;

	if (s && now - s->v < SOCIAL_CACHE_TTL_MS)
		return 1;
	yes = social_query_friends(w, a, b, &err);
	if (err)
		return err;
	if (!yes) {
		if (s)
			kmap_del(&mw->friends, s);
		return 0;
	}
	s = kmap_put(&mw->friends, lo, hi);
	if (!s) {
		kmap_clear(&mw->friends);
		s = kmap_put(&mw->friends, lo, hi);
	}
	if (s)
		s->v = now;
	return 1;
}

static int social_cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;

	return (a > b) - (a < b);
}

bool social_group_has(const struct social_group *g, int64_t uid)
{
	return bsearch(&uid, g->ids, g->n, sizeof(int64_t), social_cmp_i64) != NULL;
}

/* Reads the member list of gid from the database into the cache. */
static int social_group_load(struct worker *w, int64_t gid, struct social_group **out)
{
	struct social_worker *mw = social_worker_of(w);
	struct kmap_slot *s;
	struct social_group *g;
	int64_t *ids;
	size_t n;
	int rc;

	*out = NULL;
	rc = social_group_members(w, gid, &ids, &n);
	if (rc)
		return rc;
	s = kmap_get(&mw->groups, (uint64_t)gid, 0);
	if (s) {
		social_group_put((struct social_group *)(uintptr_t)s->v);
		kmap_del(&mw->groups, s);
	}
	if (n == 0)
		return 0; /* missing or dissolved: not cached, it may not stay so */
	g = malloc(sizeof(*g) + n * sizeof(int64_t));
	if (!g) {
		free(ids);
		return -ENOMEM;
	}
	g->refs = 1; /* the caller's */
	g->loaded_ms = clock_mono_ms();
	g->n = n;
	memcpy(g->ids, ids, n * sizeof(int64_t));
	free(ids);
	qsort(g->ids, n, sizeof(int64_t), social_cmp_i64);
	s = kmap_put(&mw->groups, (uint64_t)gid, 0);
	if (!s) {
		social_groups_clear(mw);
		s = kmap_put(&mw->groups, (uint64_t)gid, 0);
	}
	if (s) {
		g->refs++; /* the cache's */
		s->v = (uint64_t)(uintptr_t)g;
	}
	*out = g;
	return 0;
}

/*
 * The members of gid as seen by user uid: *out is a new reference (the
 * caller puts it) or NULL for a missing or dissolved group. A list that
 * lacks uid is re-read once, so a member who just joined is found.
 * Returns 0 or a negative error.
 */
int social_group_get(struct worker *w, int64_t gid, int64_t uid, struct social_group **out)
{
	struct social_worker *mw = social_worker_of(w);
	struct kmap_slot *s = kmap_get(&mw->groups, (uint64_t)gid, 0);
	struct social_group *g = s ? (struct social_group *)(uintptr_t)s->v : NULL;

	if (g && clock_mono_ms() - g->loaded_ms < SOCIAL_CACHE_TTL_MS && social_group_has(g, uid)) {
		g->refs++;
		*out = g;
		return 0;
	}
	return social_group_load(w, gid, out);
}

/* 1 the user exists, 0 not, or a negative enum db_error. */
int social_user_exists(struct worker *w, int64_t uid)
{
	int64_t n = db_exec(w->db, "SELECT 1 FROM users WHERE id = ?", "l", uid);

	return n < 0 ? (int)n : n > 0;
}

/* ---- conversations ----------------------------------------------------------- */

/*
 * The conversation id of (kind, a, b): > 0, or 0 when it does not exist
 * and create is false, or a negative enum db_error. Made on first use
 * with INSERT IGNORE, so two workers (or nodes) racing agree on one row.
 */
static int64_t social_conv(struct worker *w, int kind, int64_t a, int64_t b, bool create)
{
	struct social_worker *mw = social_worker_of(w);
	struct kmap_slot *s = kmap_get(&mw->conv, (uint64_t)a, (uint64_t)b);
	struct db_rows *rows;
	int64_t id = 0, n;

	if (s)
		return (int64_t)s->v;
	for (int pass = 0; pass < 2 && !id; pass++) {
		rows = db_query(w->db,
				"SELECT id FROM conversations WHERE kind = ? AND a = ? AND b = ?",
				"ill", kind, a, b);
		if (!rows)
			return db_last_error(w->db);
		if (db_rows_count(rows))
			id = db_cell_i64(rows, 0, 0);
		db_rows_free(rows);
		if (id || !create || pass)
			break;
		n = db_exec(w->db, "INSERT IGNORE INTO conversations (kind, a, b) VALUES (?, ?, ?)",
			    "ill", kind, a, b);
		if (n < 0)
			return n;
		if (n == 1)
			id = (int64_t)db_insert_id(w->db);
		/* else another writer made it first: read it again */
	}
	if (!id)
		return create ? DB_ERR_OTHER : 0;
	s = kmap_put(&mw->conv, (uint64_t)a, (uint64_t)b);
	if (!s) {
		kmap_clear(&mw->conv);
		s = kmap_put(&mw->conv, (uint64_t)a, (uint64_t)b);
	}
	if (s)
		s->v = (uint64_t)id;
	return id;
}

int64_t social_pair_conv(struct worker *w, int64_t x, int64_t y, bool create)
{
	return social_conv(w, SOCIAL_CONV_PAIR, x < y ? x : y, x < y ? y : x, create);
}

int64_t social_group_conv(struct worker *w, int64_t gid, bool create)
{
	return social_conv(w, SOCIAL_CONV_GROUP, gid, 0, create);
}


void social_refresh(struct worker *w)
{
	social_refresh_caches(social_worker_of(w));
}

static void social_worker_destroy(struct social_worker *sw)
{
	if (sw->groups.slots)
		social_groups_clear(sw);
	kmap_destroy(&sw->conv);
	kmap_destroy(&sw->friends);
	kmap_destroy(&sw->groups);
}

int social_init(int nworkers)
{
	social_workers = calloc((size_t)nworkers, sizeof(*social_workers));
	if (!social_workers)
		return -ENOMEM;
	social_nworkers = nworkers;
	for (int i = 0; i < nworkers; i++) {
		struct social_worker *sw = &social_workers[i];

		if (kmap_init(&sw->conv, 1024, SOCIAL_CONV_CACHE_MAX) ||
		    kmap_init(&sw->friends, 1024, SOCIAL_FRIEND_CACHE_MAX) ||
		    kmap_init(&sw->groups, 256, SOCIAL_GROUP_CACHE_MAX)) {
			social_destroy();
			return -ENOMEM;
		}
	}
	return 0;
}

void social_destroy(void)
{
	if (!social_workers)
		return;
	for (int i = 0; i < social_nworkers; i++)
		social_worker_destroy(&social_workers[i]);
	free(social_workers);
	social_workers = NULL;
	social_nworkers = 0;
}
