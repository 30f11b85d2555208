/*
 * hasher.h - password hashing off the request workers.
 *
 * A yescrypt hash costs tens of milliseconds of CPU on purpose. Run on a
 * worker, it would stall every other request of the connections pinned to
 * that worker; during a reconnect storm that is everyone's. The hasher is
 * a small pool of threads (hash_threads) that take hash jobs from one
 * bounded FIFO queue, run them, and hand each job back through the post
 * function given to hasher_start, which takes it to the thread that
 * submitted it (the worker pool's worker_post, for a login).
 *
 * Jobs are owned by the submitter: the hasher only reads the inputs,
 * writes the result fields and then gives the job back to post(job). The password is wiped (explicit_bzero) before that,
 * whatever the outcome; so is the stored hash of a VERIFY job.
 */
#ifndef RINGCHAT_HASHER_H
#define RINGCHAT_HASHER_H

#include <stdbool.h>
#include <stdint.h>

#include "ringchat/passwd.h"

struct config;

/* Jobs queued (not yet started) per hasher thread before hasher_submit
 * refuses more. */
#define HASHER_QUEUE_PER_THREAD 64

enum hash_kind {
	HASH_VERIFY, /* does password match hash? -> match */
	HASH_MAKE,   /* hash password at cost -> hash, err */
};

struct hash_job {
	/* Set by the submitter. */
	enum hash_kind kind;
	int cost;                           /* HASH_MAKE */
	char password[PASSWD_MAX_BYTES + 1];
	char hash[PASSWD_HASH_SIZE];        /* VERIFY: stored hash; MAKE: the result */
	/* Set by the hasher before done runs. */
	bool match;                         /* VERIFY: password matches */
	int err;                            /* MAKE: 0 or the -errno of passwd_hash */
	/* The hasher's. */
	struct hash_job *next;
};

/*
 * Starts cfg->hash_threads hasher threads, after timing one hash at
 * cfg->hash_cost to seed the mean that hasher_wait_ms uses. Each finished
 * job is given to post(job) on a hasher thread; post takes it to where
 * its completion runs and returns 0, or -ENOMEM (the hasher retries, so a
 * completion always runs). Call before the workers start. Returns 0 or
 * -errno (no thread left running).
 */
int hasher_start(const struct config *cfg, int (*post)(struct hash_job *job));

/*
 * Runs every job still queued (their completions are posted to their
 * workers as usual), then joins the threads. Call after the workers
 * stopped submitting. Safe when hasher_start failed or never ran.
 */
void hasher_stop(void);

/*
 * Any thread: queues job (kind, cost and password filled in) and returns
 * 0; the job will be given to post exactly once.
 * Returns -EBUSY when HASHER_QUEUE_PER_THREAD jobs per thread are already
 * waiting, or -ESHUTDOWN when the hasher is not running: then the job is
 * untouched and the caller still owns it.
 */
int hasher_submit(struct hash_job *job);

/*
 * Any thread: the expected wait, in ms, for a job submitted now to be
 * finished: (jobs waiting + 1) x the mean time of a job / threads. For
 * retry hints when hasher_submit refused one; at least 1.
 */
uint64_t hasher_wait_ms(void);

#endif
