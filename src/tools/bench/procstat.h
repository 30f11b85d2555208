/*
 * procstat.h - what /proc says about the server processes (--server-pid):
 * CPU time, context switches and memory, and a measurement span that
 * turns two samples into the cost of the measured interval.
 *
 * CPU is utime + stime of /proc/PID/stat (every thread, exited ones
 * included). Context switches are voluntary + nonvoluntary of every
 * thread, from /proc/PID/task/TID/status: /proc/PID/status alone counts
 * the main thread only. A thread that exits inside the span takes its
 * switches with it (the count errs low, never high); one started inside
 * it counts whole.
 *
 * Plain functions of the calling thread; a span is owned by its caller
 * and holds no resource (nothing to free).
 */
#ifndef RINGCHAT_BENCH_PROCSTAT_H
#define RINGCHAT_BENCH_PROCSTAT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench.h"

/* Threads of all server pids together that a span can follow. */
#define PROCSTAT_MAX_TASKS 1024

/* utime + stime of pid in seconds. 0 or -errno (-EIO: unparsable). */
int procstat_cpu_s(long pid, double *cpu_s);

/* VmRSS of pid in bytes, or -errno. */
long long procstat_rss(long pid);

struct procstat_task {
	long tid;
	uint64_t cs; /* voluntary + nonvoluntary context switches */
};

/* The interval [begin, end) of a measurement and what it cost. */
struct procstat_span {
	long pids[BENCH_MAX_PIDS];
	int npids;
	bool have; /* server CPU known: pids given and readable at both ends */
	double cpu0, cpu_s;
	bool have_cs;	      /* server context switches known */
	uint64_t cs;	      /* context switches of all pids' threads in the span */
	double self0, self_s; /* this process: the load generator's own cost */
	struct procstat_task tasks[PROCSTAT_MAX_TASKS]; /* at begin */
	int ntasks;
};

/*
 * Starts a span over pids[0..npids) (none: only the generator's own CPU
 * is measured). Prints a line on stderr for a pid it cannot read.
 */
void procstat_span_begin(struct procstat_span *s, const long *pids, int npids);

/* Ends the span begun on s: fills cpu_s, cs and self_s. */
void procstat_span_end(struct procstat_span *s);

/*
 * The span's report lines, for events of the scenario (what: plural for
 * "N what per cpu-second", unit: singular for "per unit"):
 *
 *   server cpu 1.23 s  4567.8 deliveries per cpu-second  (load generator cpu 0.98 s)
 *   server per delivery: 218.9 us cpu, 0.412 context switches
 *
 * or "  load generator cpu 0.98 s" alone without server pids. The second
 * line needs events > 0 (and the context switches readable for its
 * second half).
 */
void procstat_span_text(FILE *out, const struct procstat_span *s, double events, const char *what,
			const char *unit);

/*
 * The span as JSON members (no braces): generator_cpu_s always; with
 * server pids server_cpu_s, <what>_per_cpu_s and, for events > 0,
 * server_cpu_us_per_msg; with context switches server_context_switches
 * and, for events > 0, server_cs_per_msg. "msg" is the scenario's event.
 */
void procstat_span_json(FILE *out, const struct procstat_span *s, double events, const char *what);

#endif
