/*
 * clock.h - ringchat-bench's one clock and its progress line.
 *
 * Every time in the bench is CLOCK_MONOTONIC nanoseconds from
 * bench_now_ns(): senders stamp messages with it and recipients (in the
 * same process) subtract from it, so one clock serves both ends.
 * All functions may be called from any thread.
 */
#ifndef RINGCHAT_BENCH_CLOCK_H
#define RINGCHAT_BENCH_CLOCK_H

#include <stdint.h>

/* A progress line on stderr this often, on runs longer than that. */
#define BENCH_PROGRESS_NS (5 * 1000000000ull)

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* Sleeps until bench_now_ns() >= when_ns (returns at once if past). */
void bench_sleep_until(uint64_t when_ns);

/* Sleeps ms milliseconds. */
void bench_sleep_ms(int ms);

/* Progress line on stderr: "[  5.0s] what", seconds since t0. */
void bench_progress(uint64_t t0, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
