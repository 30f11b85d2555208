/*
 * ring.h - the I/O thread: one io_uring ring that owns every socket.
 */
#ifndef RINGCHAT_RING_H
#define RINGCHAT_RING_H

#include <stddef.h>

#include "ringchat/config.h"
#include "ringchat/worker.h"

/*
 * Runs the I/O loop on the calling thread (which must be the thread that
 * created no other ring: the ring is SINGLE_ISSUER) until SIGINT/SIGTERM,
 * then drains: stops accepting and reading, lets the workers finish what
 * is queued, flushes replies, closes every connection. Workers must have
 * been started; the caller stops them afterwards. Signals SIGINT, SIGTERM,
 * SIGUSR1 must be blocked in every thread before the call.
 * Returns 0 after an orderly shutdown, or -errno if set-up failed.
 */
int ring_run(const struct config *cfg, struct worker_pool *pool);



struct sockaddr_in;
/* Parses "a.b.c.d:port" or "localhost:port". Returns 0 or -EINVAL. */
int ring_parse_hostport(const char *s, struct sockaddr_in *sa);
/* Creates a listening TCP socket; writes the bound "ip:port" into bound.
 * Returns the fd or -errno. */
int ring_listen_tcp(const char *hostport, int backlog, char *bound, size_t boundsz);
#endif
