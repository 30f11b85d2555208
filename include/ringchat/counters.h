/*
 * counters.h - process-wide event counters, dumped on SIGUSR1 and at exit
 * and exported by GET /metrics. Updates are relaxed atomic adds: they are
 * statistics, nothing synchronises through them.
 */
#ifndef RINGCHAT_COUNTERS_H
#define RINGCHAT_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "ringchat/protocol.h"

#define COUNTERS(X)                                                            \
	X(conn_accepted, "connections accepted")                               \
	X(conn_closed, "connections closed")                                   \
	X(conn_refused_max, "connections refused at max_connections")          \
	X(conn_idle_closed, "connections closed by the idle timeout")          \
	X(conn_out_limit_closed, "connections closed at out_limit_bytes")      \
	X(conn_bad_frame_closed, "connections closed for a bad frame")         \
	X(conn_frame_timeout_closed, "connections closed: a frame not finished within frame_timeout_ms") \
	X(conn_login_timeout_closed, "connections closed: not logged in within login_timeout_ms") \
	X(conn_refused_addr, "connections refused at max_conns_per_addr")   \
	X(conn_refused_unauth, "connections refused at max_unauth_per_addr") \
	X(conn_nomem_closed, "connections closed because the I/O thread ran out of memory") \
	X(accept_backoffs, "client accepts paused after EMFILE/ENFILE or another error") \
	X(pending_pauses, "times a connection paused at max_pending_frames/bytes") \
	X(admin_accept_errors, "failed accepts of the admin listener")          \
	X(admin_timeouts, "admin clients closed by admin_timeout_ms")           \
	X(frames_in, "frames received")                                        \
	X(frames_out, "frames sent")                                           \
	X(bytes_in, "bytes received")                                          \
	X(bytes_out, "bytes sent")                                             \
	X(backpressure_events, "times a connection paused on a full queue")    \
	X(recv_enobufs, "multishot recvs ended for lack of buffers")           \
	X(stale_outs, "replies dropped because their connection had closed")   \
	X(outs_dropped_at_stop, "frames dropped at stop: the I/O thread had ended") \
	X(cq_overflow, "loop iterations that saw a CQ overflow")               \
	X(ring_wakeups, "eventfd wake-ups of the I/O thread")                  \
	X(worker_wakeups, "eventfd wake-ups of worker threads")                \
	X(rate_limited, "requests refused by the per-connection rate limit")   \
	X(logins, "successful logins and resumes")                             \
	X(login_failures, "failed logins")                                     \
	X(kicks, "sessions kicked by a newer login")                           \
	X(login_shed, "logins refused because the node was busy with logins")  \
	X(login_locked, "logins refused by the failed-login limit")            \
	X(hash_jobs, "passwords hashed or verified by the hasher threads")     \
	X(hash_busy, "logins and signups refused: hasher queue full")          \
	X(msgs_accepted, "messages accepted (1:1 and group)")                  \
	X(msgs_pushed, "PUSH_MSG frames queued to recipients")                 \
	X(commit_batches, "group-commit batches written")                      \
	X(commit_rows, "rows written by group commit")                         \
	X(commit_errors, "group-commit batches that failed and were retried")  \
	X(unread_deferred, "unread marks of 1:1 messages held back in memory")  \
	X(unread_absorbed, "acks settled in memory: no unread row ever written") \
	X(unread_written, "unread rows of 1:1 messages written")                \
	X(unread_recovered, "unread rows restored after an unclean stop")       \
	X(mysql_errors, "MySQL errors")                                        \
	X(redis_errors, "Redis errors")

struct counters {
#define COUNTER_FIELD(name, help) _Atomic uint64_t name;
	COUNTERS(COUNTER_FIELD)
#undef COUNTER_FIELD
	_Atomic uint64_t conn_open; /* gauge */
	_Atomic uint64_t req_by_cmd[CMD_MAX];
	_Atomic uint64_t resp_by_status[ST_COUNT];
};

extern struct counters counters;

#define counter_add(name, n)                                                   \
	atomic_fetch_add_explicit(&counters.name, (n), memory_order_relaxed)
#define counter_inc(name) counter_add(name, 1)

/* One "name value" line per counter, for logs (SIGUSR1, exit). */
void counters_dump(FILE *out);

#endif
