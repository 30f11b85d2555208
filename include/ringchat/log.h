/*
 * log.h - leveled log lines to stderr: "2026-11-28T18:40:01.123Z info msg".
 * The macro tests the level before evaluating its arguments. Structured
 * lines use key=value pairs in the message ("conn=12 event=connect").
 * Thread-safe: each line is one write(2).
 */
#ifndef RINGCHAT_LOG_H
#define RINGCHAT_LOG_H

#include <stdatomic.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int log_level_parse(const char *s);

void log_write(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_at(lvl, ...)                                                       \
	do {                                                                   \
		if ((lvl) >= log_min_level)                                    \
			log_write((lvl), __VA_ARGS__);                         \
	} while (0)
/*
 * Rate-limited lines, for errors every request of an outage would repeat:
 * at most one line per LOG_GATE_EVERY_MS per gate, saying how many were
 * held back. A gate is a static struct log_gate shared by every thread;
 * relaxed atomics: it orders nothing but log lines.
 */
#define LOG_GATE_EVERY_MS 10000

struct log_gate {
	_Atomic unsigned long long at_ms; /* mono ms of the last line, 0 = never */
	_Atomic unsigned long long held;  /* lines held back since */
};

/* True when the caller may write its line now; *held gets how many lines
 * were held back before it. */
_Bool log_gate_pass(struct log_gate *g, unsigned long long *held);

#define log_limited(gate, lvl, fmt, ...)                                       \
	do {                                                                   \
		unsigned long long held_;                                      \
		if ((lvl) >= log_min_level && log_gate_pass((gate), &held_))   \
			log_write((lvl), fmt " (%llu more like it held back)", \
				  __VA_ARGS__, held_);                         \
	} while (0)

#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

#endif
