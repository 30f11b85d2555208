/*
 * clock.c - monotonic time, sleeping and the progress line (see clock.h).
 */
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_sleep_until(uint64_t when_ns)
{
	uint64_t now;
	struct timespec ts;

	while ((now = bench_now_ns()) < when_ns) {
		ts.tv_sec = (time_t)((when_ns - now) / 1000000000ull);
		ts.tv_nsec = (long)((when_ns - now) % 1000000000ull);
		nanosleep(&ts, NULL);
	}
}

void bench_sleep_ms(int ms)
{
	bench_sleep_until(bench_now_ns() + (uint64_t)ms * 1000000ull);
}

void bench_progress(uint64_t t0, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "[%6.1fs] ", (double)(bench_now_ns() - t0) / 1e9);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
