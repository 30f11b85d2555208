/*
 * steps.h - the step engine: every connection runs a short script of
 * requests (sign up, log in, send a friend request, ...), one request at
 * a time, all connections at once, at most `busy_max` of them in the
 * middle of their script. RATE_LIMITED answers (signups and logins are
 * shed when the node is busy) wait their retry_after_ms and go again; any
 * other failure stops the run. Pushes that arrive meanwhile are skipped.
 *
 *   idle ──start──► busy ──answer──► busy (next step) ... ──► finished
 *                    │  ▲
 *          RATE_LIMITED └── retry_at passed
 *
 * Runs on the calling thread with an epoll of its own; the connections
 * (struct bconn, non-blocking) stay the caller's.
 */
#ifndef RINGCHAT_BENCH_STEPS_H
#define RINGCHAT_BENCH_STEPS_H

#include <stddef.h>
#include <stdint.h>

#include "bconn.h"
#include "hist.h"

/* Set-up gives up after this long. */
#define BENCH_SETUP_TIMEOUT_S 600

struct bsteps;
/*
 * Builds step c->step of connection c: the command into *cmd, the payload
 * into buf (cap bytes). Returns the payload length, or -1 when c has no
 * more steps.
 */
typedef int (*bsteps_build_fn)(struct bsteps *s, struct bconn *c, uint16_t *cmd, char *buf,
			       size_t cap);
/* Takes a non-RATE_LIMITED answer. 0 goes on, -1 stops the run. */
typedef int (*bsteps_reply_fn)(struct bsteps *s, struct bconn *c, const struct frame_hdr *h,
			       const char *payload);

struct bsteps {
	const char *what; /* for progress and errors */
	struct bconn *conns;
	int n;
	int busy_max; /* 0: all at once */
	bsteps_build_fn build;
	bsteps_reply_fn reply;
	void *ctx;
	struct hist *hist; /* time of each step from its first try; may be NULL */
	/* Results. */
	uint64_t steps_done, rate_limited;
	double seconds;
};

/* Default answer check: OK goes on; anything else stops, printing the node's error. */
int bsteps_expect_ok(struct bsteps *s, struct bconn *c, const struct frame_hdr *h,
		     const char *payload);

/*
 * Runs every connection's script to its end. 0, or -1 after printing why
 * (an answer the reply callback refused, a lost connection, a protocol
 * surprise, BENCH_SETUP_TIMEOUT_S). Fills steps_done, rate_limited and
 * seconds either way.
 */
int bsteps_run(struct bsteps *s);

#endif
