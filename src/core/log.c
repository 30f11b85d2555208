/*
 * log.c - leveled log lines on stderr.
 *
 * A line is formatted whole into a stack buffer and written with one
 * write(2): lines from different threads never interleave, and no lock
 * or allocation is taken on the way. The buffer is LOG_LINE_MAX bytes,
 * no more than PIPE_BUF, so a line written to a pipe is also atomic; a
 * longer message is cut and ends in "...".
 */

#include "ringchat/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

enum log_level log_min_level = LOG_INFO;

static const char *const log_names[] = {"debug", "info", "warn", "error"};

#define LOG_LEVELS ((int)(sizeof(log_names) / sizeof(log_names[0])))

int log_level_parse(const char *s)
{
	int i;

	if (!s)
		return -1;
	for (i = 0; i < LOG_LEVELS; i++)
		if (strcmp(s, log_names[i]) == 0)
			return i;
	return -1;
}

void log_write(enum log_level lvl, const char *fmt, ...)
{
	static const char cut[] = "...\n";
	char line[LOG_LINE_MAX];
	int saved_errno = errno; /* callers log, then look at errno */
	struct timespec ts;
	struct tm tm;
	size_t len, off;
	va_list ap;
	ssize_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + len, sizeof(line) - len, ".%03ldZ %s ", ts.tv_nsec / 1000000L,
		     (int)lvl >= 0 && (int)lvl < LOG_LEVELS ? log_names[lvl] : "?");
	if (r > 0)
		len += (size_t)r;

	va_start(ap, fmt);
	r = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	va_end(ap);
	if (r < 0)
		r = 0;
	if ((size_t)r < sizeof(line) - len) {
		/* The newline may take the NUL's place: write(2) needs none. */
		len += (size_t)r;
		line[len++] = '\n';
	} else {
		/* Truncated: end with "...\n" in place of the last bytes. */
		len = sizeof(line);
		memcpy(line + len - (sizeof(cut) - 1), cut, sizeof(cut) - 1);
	}

	/*
	 * One write in practice; a short one (signal, full pipe) goes on
	 * with the rest rather than losing the end of the line.
	 */
	for (off = 0; off < len;) {
		n = write(STDERR_FILENO, line + off, len - off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			break; /* nowhere left to report it */
		}
		off += (size_t)n;
	}
	errno = saved_errno;
}

_Bool log_gate_pass(struct log_gate *g, unsigned long long *held)
{
	struct timespec ts;
	unsigned long long now, last;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (unsigned long long)ts.tv_sec * 1000ull + (unsigned long long)ts.tv_nsec / 1000000ull;
	last = atomic_load_explicit(&g->at_ms, memory_order_relaxed);
	if ((last && now - last < LOG_GATE_EVERY_MS) ||
	    !atomic_compare_exchange_strong_explicit(&g->at_ms, &last, now ? now : 1,
						     memory_order_relaxed, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&g->held, 1, memory_order_relaxed);
		return 0;
	}
	*held = atomic_exchange_explicit(&g->held, 0, memory_order_relaxed);
	return 1;
}
