/*
 * fake_worker.h - a worker for unit tests of the request layer: a real
 * worker pool that is never started (its queues and wake-ups exist; no
 * thread, no storage), and helpers to read what a module sent to the I/O
 * thread. Include once per test program.
 */
#ifndef RINGCHAT_TEST_FAKE_WORKER_H
#define RINGCHAT_TEST_FAKE_WORKER_H

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ringchat/config.h"
#include "ringchat/frame.h"
#include "ringchat/handoff.h"
#include "ringchat/worker.h"

static struct config fake_cfg;
static struct worker_pool fake_pool;

static int fake_start(struct worker *w)
{
	(void)w;
	return 0;
}

static void fake_stop(struct worker *w)
{
	(void)w;
}

static void fake_handle(struct worker *w, struct in_msg *m)
{
	(void)w;
	free(m);
}

static bool fake_false(struct worker *w)
{
	(void)w;
	return false;
}

static uint32_t fake_deferred(void)
{
	return 0;
}

static const struct worker_ops fake_ops = {
	.start = fake_start, .stop = fake_stop, .handle = fake_handle,
	.poll = fake_false, .has_work = fake_false, .deferred = fake_deferred,
};

/* A worker (id 0 of n) with the default configuration; ops may be NULL
 * for the fake ones. */
static inline struct worker *fake_worker_new(int n, const struct worker_ops *ops)
{
	config_defaults(&fake_cfg);
	if (worker_pool_init(&fake_pool, &fake_cfg, n, ops ? ops : &fake_ops))
		abort();
	return &fake_pool.workers[0];
}

static inline void fake_worker_free(void)
{
	worker_pool_destroy(&fake_pool);
}

/* One frame the workers sent, decoded. */
struct fake_frame {
	uint64_t conn;
	uint32_t flags;
	struct frame_hdr hdr;
	cJSON *json; /* NULL when no payload */
	char text[4096];
};

/* The next frame any worker sent (in order per worker, worker 0 first):
 * true and *f filled, or false when nothing is queued. */
static inline bool fake_take(struct fake_frame *f)
{
	for (int i = 0; i < fake_pool.n; i++) {
		struct out_msg *m = spsc_pop(&fake_pool.workers[i].lane->out);

		if (!m)
			continue;
		memset(f, 0, sizeof(*f));
		f->conn = m->conn;
		f->flags = m->flags;
		if (m->len >= FRAME_HDR_BYTES) {
			size_t n;

			frame_hdr_decode(m->data, &f->hdr);
			n = f->hdr.len < sizeof(f->text) - 1 ? f->hdr.len : sizeof(f->text) - 1;
			memcpy(f->text, m->data + FRAME_HDR_BYTES, n);
			f->json = cJSON_ParseWithLength(f->text, n);
		}
		free(m);
		return true;
	}
	return false;
}

static inline void fake_frame_free(struct fake_frame *f)
{
	cJSON_Delete(f->json);
	f->json = NULL;
}

/* An in_msg as the I/O thread makes it. */
static inline struct in_msg *fake_in(uint64_t conn, uint8_t kind, uint16_t cmd, uint32_t seq,
			      const char *json)
{
	size_t len = json ? strlen(json) : 0;
	struct in_msg *m = calloc(1, sizeof(*m) + len);

	if (!m)
		abort();
	m->conn = conn;
	m->kind = kind;
	m->hdr.magic = FRAME_MAGIC;
	m->hdr.version = FRAME_VERSION;
	m->hdr.cmd = cmd;
	m->hdr.seq = seq;
	m->hdr.len = (uint32_t)len;
	if (len)
		memcpy(m->payload, json, len);
	return m;
}

#endif
