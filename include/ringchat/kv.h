/*
 * kv.h - Redis access for worker threads (hiredis, blocking, RESP2).
 *
 * Each worker thread owns one struct kv: a connection used by that thread
 * only, so no locks. Commands use hiredis's printf-like formats: "%s" is
 * a C string, "%b" a (const void *, size_t) pair; values are always sent
 * as separate bulk strings, never spliced into the command text.
 *
 * Connection loss. kv_open does not connect; the first command does. A
 * lost connection is dropped and re-made by the next command. After a
 * failure that is not the loss of a working connection (connect refused
 * or timed out, a new connection that breaks or times out before its
 * first reply), commands fail at once (NULL) for a back-off window of
 * 50 ms doubling to 5 s, so a dead or hung server cannot stall every
 * command for a timeout; a reply resets it. A connection the server
 * closed while idle (CLIENT KILL, restart, timeout) is detected before
 * use and replaced transparently. A command
 * is re-sent once on a fresh connection only when none of its bytes were
 * accepted by the old one, so a command never runs twice; if the link
 * breaks after that, the call fails (NULL). Connect timeout 1 s, command
 * timeout 2 s.
 *
 * Writing to a closed socket raises SIGPIPE: the process must ignore it
 * (signal(SIGPIPE, SIG_IGN)), as the node does at start-up.
 */
#ifndef RINGCHAT_KV_H
#define RINGCHAT_KV_H

#include <stddef.h>

#include <hiredis/hiredis.h>

struct config;
struct kv;

/*
 * Creates a handle for redis_socket when not empty, else
 * redis_host:redis_port (copied; c may go away). Does not connect, so a
 * server that is down is no error. Returns NULL only when out of memory.
 */
struct kv *kv_open(const struct config *c);
/* Closes the connection; pending pipelined replies are discarded. NULL is
 * a no-op. */
void kv_close(struct kv *kv);

/*
 * Sends one command and waits for its reply. Returns the reply, owned by
 * the caller (freeReplyObject), or NULL when the server cannot be reached
 * or the connection broke (see kv_errmsg). An error reply from Redis
 * (REDIS_REPLY_ERROR, e.g. WRONGTYPE) is a reply, returned as-is. Must not
 * be called while pipelined replies are pending (returns NULL).
 */
redisReply *kv_cmd(struct kv *kv, const char *fmt, ...);
/* As kv_cmd with argv-style arguments; argvlen may be NULL (strlen). */
redisReply *kv_argv(struct kv *kv, int argc, const char **argv, const size_t *argvlen);

/*
 * Pipelining: queue commands with kv_append, then collect their replies in
 * the same order with kv_reply; everything is written on the first
 * kv_reply, so N commands cost one round trip.
 *
 * Every kv_append, even a failed one, must be matched by exactly one
 * kv_reply. A command that could not be queued or whose connection broke
 * gets NULL from its kv_reply, so callers can loop without bookkeeping.
 * kv_append returns 0, -ENOTCONN (server unreachable), -EINVAL (bad
 * format) or -ENOMEM; kv_reply returns as kv_cmd.
 */
int kv_append(struct kv *kv, const char *fmt, ...);
redisReply *kv_reply(struct kv *kv);
/* Number of kv_reply calls still owed for appended commands. */
unsigned kv_pending(const struct kv *kv);

/* Reason of the last failure, for logs. Valid until the next call. */
const char *kv_errmsg(const struct kv *kv);

#endif
