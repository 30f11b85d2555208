/*
 * engine.h - the contract between the message load (load.c) and its I/O
 * engines: epoll (engine_epoll.c, a system call per send and receive) and
 * io_uring (engine_uring.c, one io_uring_enter per loop turn).
 *
 * The load core decides what to send and what an incoming frame means; an
 * engine moves bytes: it waits for I/O, fills c->rbuf and calls
 * load_parse(), and sends what c->wbuf holds when load core asks
 * (flush). Which functions run on which thread is stated per member;
 * everything on the load thread touches only that thread's connections.
 */
#ifndef RINGCHAT_BENCH_ENGINE_H
#define RINGCHAT_BENCH_ENGINE_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "bconn.h"
#include "hist.h"
#include "load.h"

struct load_engine;

/* One load thread: its connections, its engine state, its results. */
struct load_thread {
	pthread_t tid;
	const struct load_spec *spec;
	const struct load_engine *eng;
	int ep;			/* epoll engine; -1 otherwise */
	struct io_uring ring;	/* io_uring engine */
	uint32_t ring_inflight; /* receives and sends the kernel holds */
	bool stopping;		/* io_uring: cancelling, completions are only counted */
	struct bconn **conns;
	int nconns;
	uint64_t start_ns, end_ns;
	bool open_loop;
	bool quota_mode; /* stop once every sender has used its quota */
	/* Results, read by main after the join. */
	struct hist ok_hist, dlv_hist;
	uint64_t sent, ok, errors, rate_limited, delivered, ack_errors, lost, bad;
	uint64_t ok_all, delivered_all, duplicates, out_of_order;
	uint64_t ended_ns;
	/* Progress, read by main while the thread runs (relaxed: statistics). */
	_Atomic uint64_t prog_ok, prog_dlv;
	/* The drain: the thread's whole-run counts (relaxed), then the
	 * messages its senders have in flight, UINT64_MAX until the thread
	 * is past end_ns (release, pairs with the acquire in load_run: a
	 * value read there comes with counts at least that recent). */
	_Atomic uint64_t prog_ok_all, prog_dlv_all, drain_inflight;
	/* Set by main when the drain is over (relaxed: no data rides on it). */
	_Atomic bool stop;
	/* Release, pairs with main's acquire: the results are complete. */
	_Atomic bool done;
};

struct load_engine {
	const char *name;
	/* Main thread, before any attach. 0 or -errno. */
	int (*setup)(struct load_thread *t);
	/* Main thread: c joins t (registered, or made blocking). 0 or -errno. */
	int (*attach)(struct load_thread *t, struct bconn *c);
	/* Load thread, first thing. 0, or -1 after printing why (then neither
	 * wait, flush nor finish is called). */
	int (*start)(struct load_thread *t);
	/* Load thread: waits up to *ts for I/O, handles all of it, and sets
	 * *now to the time after the wait. */
	void (*wait)(struct load_thread *t, const struct timespec *ts, uint64_t *now);
	/* Load thread: sends what c->wbuf holds (a dead c is skipped). */
	void (*flush)(struct load_thread *t, struct bconn *c);
	/* Load thread: c died; stop watching it (its fd stays open). */
	void (*forget)(struct load_thread *t, struct bconn *c);
	/* Load thread, last: queued sends out (bounded), and the kernel's
	 * hold on every buffer released before the connections are freed. */
	void (*finish)(struct load_thread *t);
	/* Main thread after the join or a failed setup/attach. */
	void (*teardown)(struct load_thread *t);
};

extern const struct load_engine load_engine_epoll;
extern const struct load_engine load_engine_uring;

/* Load core, for the engines (load thread only). */

/* Marks c dead (once), says why on stderr for the first few, counts it lost. */
void load_kill(struct load_thread *t, struct bconn *c, const char *why);

/* c->rbuf holds new bytes: handles every answer, push or Redis reply in
 * it, then tops the sender up or flushes what the handling queued. */
void load_parse(struct load_thread *t, struct bconn *c, uint64_t now);

#endif
