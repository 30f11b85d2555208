/*
 * net.h - opening many TCP connections at once: the file limit, name
 * resolution, and non-blocking connects BENCH_CONNECT_BATCH at a time, so
 * a large count neither overruns the node's accept backlog nor waits on
 * SYN retries one by one.
 *
 * Errors are printed here (the caller adds what it was doing); functions
 * return 0 or -errno. Any thread may call them.
 */
#ifndef RINGCHAT_BENCH_NET_H
#define RINGCHAT_BENCH_NET_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench.h"

/* Connections opened at once while setting up; the rest wait their turn. */
#define BENCH_CONNECT_BATCH 256
#define BENCH_CONNECT_TIMEOUT_MS 10000
/* fds the process needs besides the connections (epolls, stdio, ...). */
#define BENCH_SPARE_FDS (BENCH_MAX_THREADS + 16)

/*
 * Raises RLIMIT_NOFILE to its hard limit; -EMFILE (printed) when that is
 * still below need.
 */
int net_raise_fd_limit(int need);

/* host:port into *sa (first address found). 0, or -ENOENT (printed). */
int net_resolve(const char *host, uint16_t port, struct sockaddr_storage *sa, socklen_t *len);

/*
 * Opens n connected, non-blocking TCP_NODELAY sockets to host:port into
 * fds[], each bound to source address src first when src is not NULL (a
 * loopback address of its own gives a process its own range of source
 * ports). Returns 0 with the caller owning fds[0..n), or -errno after
 * closing whatever it opened.
 */
int net_connect_all(const char *host, uint16_t port, const struct sockaddr_in *src, int *fds,
		    int n);

#endif
