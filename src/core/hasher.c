/*
 * hasher.c - hasher threads (hasher.h): one FIFO of hash jobs under a
 * mutex and a condition variable, served by cfg->hash_threads threads.
 *
 * A lock-free queue would buy nothing here: a job is a login or a signup,
 * each costing tens of milliseconds of hashing, so the lock is taken a few
 * hundred times a second at most.
 *
 * The queue is bounded (HASHER_QUEUE_PER_THREAD per thread) so that a
 * storm cannot pile up unbounded memory or waits; callers above the bound
 * are told to come back after about the time the queue takes to drain,
 * which the threads measure as they go (a moving mean of the job times).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringchat/clock.h"
#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/hasher.h"
#include "ringchat/log.h"

/* Weight of the newest job time in the moving mean: 1/8. Smooths one slow
 * job (a preempted thread) yet follows a hash_cost change within tens of
 * jobs. */
#define HASHER_MEAN_SHIFT 3
/* post can only fail for want of memory: wait this long and retry
 * (a completion must run, or its reply and held frames wait forever). */
#define HASHER_POST_RETRY_MS 10
#define HASHER_THREADS_MAX 64 /* as the config key's range */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;      /* jobs queued, or stopping */
	struct hash_job *head, *tail;
	uint32_t queued;          /* jobs in the queue (not yet started) */
	uint32_t queued_max;
	bool running;             /* hasher_submit accepts jobs */
	bool stopping;            /* threads exit once the queue is empty */
	uint64_t mean_ns;         /* moving mean of a job's time */
	int nthreads;
	int (*post)(struct hash_job *job);
	pthread_t threads[HASHER_THREADS_MAX];
} hasher = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

static struct log_gate hasher_gate_post;

static void hasher_sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void hasher_run(struct hash_job *job)
{
	switch (job->kind) {
	case HASH_VERIFY:
		job->match = passwd_verify(job->password, job->hash);
		explicit_bzero(job->hash, sizeof(job->hash));
		break;
	case HASH_MAKE:
		job->err = passwd_hash(job->password, job->cost, job->hash, sizeof(job->hash));
		break;
	default:
		job->match = false;
		job->err = -EINVAL;
		break;
	}
	explicit_bzero(job->password, sizeof(job->password));
}

static void hasher_post(struct hash_job *job)
{
	while (hasher.post(job)) {
		log_limited(&hasher_gate_post, LOG_WARN, "hasher: %s",
			    "out of memory handing a job back to its worker; retrying");
		hasher_sleep_ms(HASHER_POST_RETRY_MS);
	}
}

static void *hasher_main(void *arg)
{
	char name[16];

	snprintf(name, sizeof(name), "hasher-%d", (int)(intptr_t)arg);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&hasher.lock);
	for (;;) {
		struct hash_job *job;
		uint64_t t0, ns;

		while (!hasher.head && !hasher.stopping)
			pthread_cond_wait(&hasher.cond, &hasher.lock);
		job = hasher.head;
		if (!job)
			break; /* stopping, and nothing left */
		hasher.head = job->next;
		if (!hasher.head)
			hasher.tail = NULL;
		hasher.queued--;
		pthread_mutex_unlock(&hasher.lock);

		t0 = clock_mono_ns();
		hasher_run(job);
		ns = clock_mono_ns() - t0;
		counter_inc(hash_jobs);
		hasher_post(job);

		pthread_mutex_lock(&hasher.lock);
		hasher.mean_ns = hasher.mean_ns - (hasher.mean_ns >> HASHER_MEAN_SHIFT) +
				 (ns >> HASHER_MEAN_SHIFT);
	}
	pthread_mutex_unlock(&hasher.lock);
	return NULL;
}

int hasher_start(const struct config *cfg, int (*post)(struct hash_job *job))
{
	static const char probe[] = "hasher start-up timing";
	char hash[PASSWD_HASH_SIZE];
	uint64_t t0;
	int ret, n = cfg->hash_threads;

	if (n < 1 || n > HASHER_THREADS_MAX)
		return -EINVAL;
	t0 = clock_mono_ns();
	ret = passwd_hash(probe, cfg->hash_cost, hash, sizeof(hash));
	if (ret)
		return ret;

	pthread_mutex_lock(&hasher.lock);
	hasher.mean_ns = clock_mono_ns() - t0;
	hasher.head = hasher.tail = NULL;
	hasher.queued = 0;
	hasher.queued_max = (uint32_t)n * HASHER_QUEUE_PER_THREAD;
	hasher.stopping = false;
	hasher.nthreads = 0;
	hasher.post = post;
	pthread_mutex_unlock(&hasher.lock);
	for (int i = 0; i < n; i++) {
		ret = pthread_create(&hasher.threads[i], NULL, hasher_main, (void *)(intptr_t)i);
		if (ret) {
			log_error("hasher: cannot start thread %d: %s", i, strerror(ret));
			hasher_stop();
			return -ret;
		}
		hasher.nthreads++;
	}
	pthread_mutex_lock(&hasher.lock);
	hasher.running = true;
	pthread_mutex_unlock(&hasher.lock);
	log_info("hasher: %d thread%s, one hash takes %.1f ms at cost %d", n, n == 1 ? "" : "s",
		 (double)hasher.mean_ns / 1e6, cfg->hash_cost);
	return 0;
}

void hasher_stop(void)
{
	pthread_mutex_lock(&hasher.lock);
	hasher.running = false;
	hasher.stopping = true;
	pthread_cond_broadcast(&hasher.cond);
	pthread_mutex_unlock(&hasher.lock);
	for (int i = 0; i < hasher.nthreads; i++)
		pthread_join(hasher.threads[i], NULL);
	hasher.nthreads = 0;
}

int hasher_submit(struct hash_job *job)
{
	int ret = 0;

	pthread_mutex_lock(&hasher.lock);
	if (!hasher.running) {
		ret = -ESHUTDOWN;
	} else if (hasher.queued >= hasher.queued_max) {
		ret = -EBUSY;
	} else {
		job->next = NULL;
		job->match = false;
		job->err = 0;
		if (hasher.tail)
			hasher.tail->next = job;
		else
			hasher.head = job;
		hasher.tail = job;
		hasher.queued++;
		pthread_cond_signal(&hasher.cond);
	}
	pthread_mutex_unlock(&hasher.lock);
	return ret;
}

uint64_t hasher_wait_ms(void)
{
	uint64_t ms;

	pthread_mutex_lock(&hasher.lock);
	ms = (uint64_t)(hasher.queued + 1) * hasher.mean_ns /
	     (uint64_t)(hasher.nthreads > 0 ? hasher.nthreads : 1) / 1000000u;
	pthread_mutex_unlock(&hasher.lock);
	return ms ? ms : 1;
}
