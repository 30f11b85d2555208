/*
 * worker.c - worker threads: pop frames from the I/O thread, run the
 * handlers (which may block on MySQL/Redis: that is why they are here and
 * not on the ring), push replies back.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringchat/clock.h"
#include "ringchat/counters.h"
#include "ringchat/log.h"
#include "ringchat/worker.h"

#define WORKER_POLL_MS 200 /* upper bound on the periodic work's delay */
#define WORKER_STOP_GRACE_MS 10000 /* at stop, wait this long for deferred replies */

void worker_wake(struct worker *w)
{
	handoff_wake_worker(w->lane);
}

struct worker_task {
	struct worker_task *next;
	void (*fn)(struct worker *w, void *arg);
	void *arg;
};

int worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg)
{
	struct worker_task *t = malloc(sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->next = NULL;
	t->fn = fn;
	t->arg = arg;
	pthread_mutex_lock(&w->post_lock);
	if (w->post_tail)
		w->post_tail->next = t;
	else
		w->post_head = t;
	w->post_tail = t;
	/* release pairs with the acquire in run_posted: the list is there */
	atomic_store_explicit(&w->post_pending, true, memory_order_release);
	pthread_mutex_unlock(&w->post_lock);
	worker_wake(w);
	return 0;
}

/* Runs the tasks posted to w. Returns true if there were any. */
static bool run_posted(struct worker *w)
{
	struct worker_task *t;

	if (!atomic_load_explicit(&w->post_pending, memory_order_acquire))
		return false;
	pthread_mutex_lock(&w->post_lock);
	t = w->post_head;
	w->post_head = w->post_tail = NULL;
	atomic_store_explicit(&w->post_pending, false, memory_order_relaxed);
	pthread_mutex_unlock(&w->post_lock);
	while (t) {
		struct worker_task *next = t->next;

		t->fn(w, t->arg);
		free(t);
		t = next;
	}
	return true;
}

void worker_send_out(struct worker *w, struct out_msg *m)
{
	struct worker_pool *p = w->pool;

	/* While the ring runs it always drains the queue, so waiting ends.
	 * At stop it is gone (the workers' last sends are the offline
	 * presence of the sessions they end, to friends whose connections
	 * are closed anyway): waiting on a full queue would never end. */
	while (!spsc_push(&w->lane->out, m)) {
		if (atomic_load_explicit(&p->out_gone, memory_order_acquire)) {
			counter_inc(outs_dropped_at_stop);
			free(m);
			return;
		}
		handoff_wake_ring(&p->handoff);
		sched_yield();
	}
	/* pushed: wake the ring if it announced a sleep (it fences) */
	handoff_wake_ring(&p->handoff);
}

bool worker_pool_idle(struct worker_pool *p)
{
	return handoff_in_empty(&p->handoff) &&
	       atomic_load_explicit(&p->busy, memory_order_seq_cst) == 0 &&
	       p->ops->deferred() == 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct worker_pool *p = w->pool;

	char name[16];

	snprintf(name, sizeof(name), "worker-%d", w->id);
	pthread_setname_np(pthread_self(), name);
	if (p->ops->start(w))
		log_warn("worker %d: storage not ready at start; will retry on use", w->id);
	for (;;) {
		struct in_msg *m;
		bool did = false;

		/* busy is raised before looking at the queue so that the
		 * I/O thread's drain check never sees "queue empty, nobody
		 * busy" while a message is in our hands. */
		atomic_fetch_add_explicit(&p->busy, 1, memory_order_seq_cst);
		for (int k = 0; k < 64 && (m = spsc_pop(&w->lane->in)); k++) {
			p->ops->handle(w, m);
			did = true;
		}
		if (run_posted(w))
			did = true;
		if (p->ops->poll(w))
			did = true;
		atomic_fetch_sub_explicit(&p->busy, 1, memory_order_seq_cst);
		if (did)
			continue;
		if (atomic_load_explicit(&p->stopping, memory_order_acquire) &&
		    !spsc_size(&w->lane->in) && !p->ops->has_work(w) &&
		    !atomic_load_explicit(&w->post_pending, memory_order_acquire) &&
		    (!p->ops->deferred() ||
		     clock_mono_ms() > atomic_load_explicit(&p->stop_deadline_ms,
							    memory_order_relaxed)))
			break; /* deferred replies (a login on the hasher) get a
				* bounded time to complete on this thread */

		/* Dekker with handoff_wake_worker: set the flag, fence, re-check
		 * the queue; a producer pushes, fences, reads the flag. */
		atomic_store_explicit(&w->lane->sleeping, 1, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		if (spsc_size(&w->lane->in) || atomic_load_explicit(&w->post_pending, memory_order_seq_cst) ||
		    atomic_load_explicit(&p->stopping, memory_order_acquire)) {
			atomic_store_explicit(&w->lane->sleeping, 0, memory_order_relaxed);
			continue;
		}
		handoff_worker_wait(w->lane, p->ops->has_work(w) ? 5 : WORKER_POLL_MS);
		atomic_store_explicit(&w->lane->sleeping, 0, memory_order_relaxed);
	}
	p->ops->stop(w);
	return NULL;
}

int worker_pool_init(struct worker_pool *p, const struct config *cfg, int n,
		     const struct worker_ops *ops)
{
	memset(p, 0, sizeof(*p));
	p->cfg = cfg;
	p->ops = ops;
	p->n = n;
	p->workers = calloc((size_t)n, sizeof(*p->workers));
	if (!p->workers ||
	    handoff_init(&p->handoff, n, (uint32_t)cfg->queue_depth))
		goto out_free;
	for (int i = 0; i < n; i++) {
		struct worker *w = &p->workers[i];

		w->id = i;
		w->cfg = cfg;
		w->pool = p;
		w->lane = &p->handoff.lanes[i];
		pthread_mutex_init(&w->post_lock, NULL);
	}
	return 0;

out_free:
	worker_pool_destroy(p);
	return -ENOMEM;
}

int worker_pool_start(struct worker_pool *p)
{
	for (int i = 0; i < p->n; i++) {
		int ret = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);

		if (ret) {
			log_error("cannot start worker %d: %s", i, strerror(ret));
			return -ret;
		}
	}
	return 0;
}

void worker_pool_stop(struct worker_pool *p)
{
	/* the I/O thread has ended: nothing reads the out queues any more */
	atomic_store_explicit(&p->out_gone, true, memory_order_release);
	atomic_store_explicit(&p->stop_deadline_ms, clock_mono_ms() + WORKER_STOP_GRACE_MS,
			      memory_order_relaxed);
	atomic_store_explicit(&p->stopping, true, memory_order_release);
	for (int i = 0; i < p->n; i++)
		handoff_kick_worker(p->workers[i].lane);
	for (int i = 0; i < p->n; i++)
		if (p->workers[i].thread)
			pthread_join(p->workers[i].thread, NULL);
}

void worker_pool_destroy(struct worker_pool *p)
{
	if (p->workers) {
		for (int i = 0; i < p->n; i++) {
			struct worker *w = &p->workers[i];

			if (!w->pool)
				continue; /* init stopped before this one */
			while (w->post_head) {
				struct worker_task *t = w->post_head;

				w->post_head = t->next;
				free(t); /* its arg is the poster's; the node is exiting */
			}
			pthread_mutex_destroy(&w->post_lock);
		}
	}
	handoff_destroy(&p->handoff); /* with the messages still queued */
	free(p->workers);
	memset(p, 0, sizeof(*p));
}
