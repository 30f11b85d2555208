/*
 * bench.h - what every module of ringchat-bench shares: the parsed options
 * and the limits and constants more than one module depends on.
 *
 * The options are parsed once by main.c into struct bench_opts and are
 * read-only afterwards: every scenario and load thread takes them as a
 * const pointer, so any thread may read them at any time.
 */
#ifndef RINGCHAT_BENCH_BENCH_H
#define RINGCHAT_BENCH_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_CONNECTIONS 100000
#define BENCH_MAX_WINDOW 4096
#define BENCH_MAX_THREADS 64
#define BENCH_MAX_PIDS 8
/* --nodes: endpoints of one cluster. */
#define BENCH_MAX_NODES 16
#define BENCH_HOST_MAX 256
/* Events taken from one epoll_wait. */
#define BENCH_EPOLL_EVENTS 256
/* Requests of the set-up steps in flight at once (signups are shed above). */
#define BENCH_SETUP_BUSY 128
/* Recipients ack every BENCH_ACK_BATCH messages or BENCH_ACK_NS. */
#define BENCH_ACK_BATCH 64
#define BENCH_ACK_NS (100 * 1000000ull)
/* Message text: "t=<20 digits>;" then padding. */
#define BENCH_STAMP_BYTES 23
#define BENCH_TEXT_MAX 4000
#define BENCH_PASSWORD "bench-password-1"

enum bench_target { TARGET_RINGCHAT, TARGET_REDIS, TARGET_BOTH };

/* One node of --nodes. */
struct bench_endpoint {
	char host[BENCH_HOST_MAX];
	uint16_t port;
};

struct bench_opts {
	const char *scenario;
	const char *host;
	uint16_t port;
	int connections;
	int window;
	int duration_s;
	int warmup_s;
	int threads;
	long server_pids[BENCH_MAX_PIDS]; /* CPU and context switches are summed over them */
	int nserver_pids;
	bool json;
	/* ping */
	long requests; /* 0 = run for the duration */
	/* chat, group, login, signup, offline */
	int users;
	int groups;
	int members;
	int messages;
	int size;
	double rate;  /* msgs/s over all senders; 0 = closed loop */
	long tick_us; /* open loop: wake at most once per tick; 0 = at each due time */
	bool uring;   /* chat/group: the io_uring engine (--engine) */
	enum bench_target target;
	const char *redis_host;
	uint16_t redis_port;
	long redis_pid;	 /* CPU of the Redis runs; 0 = none */
	char prefix[16]; /* usernames are prefix_<n>: unique per run */
	/* chat/group --nodes: the cluster's nodes; 0 = host:port alone. When
	 * set, host and port name nodes[0]. */
	struct bench_endpoint nodes[BENCH_MAX_NODES];
	int nnodes;
	/* Which options were given, for per-scenario defaults. */
	bool set_window, set_connections, set_duration, set_warmup;
};

/* With --json the human summary goes to stderr: stdout is the JSON line. */
static inline FILE *bench_text_out(const struct bench_opts *o)
{
	return o->json ? stderr : stdout;
}

#endif
