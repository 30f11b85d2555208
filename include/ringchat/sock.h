/*
 * sock.h - IPv4 socket addresses and the sockets the node opens itself:
 * TCP listeners (clients, admin) and UDP sockets (the node link).
 *
 * One parser for "host:port" so that what config.c accepts is exactly
 * what the listeners can bind. Plain syscalls only: these run at start-up,
 * before the ring owns the descriptors. Any thread.
 */
#ifndef RINGCHAT_SOCK_H
#define RINGCHAT_SOCK_H

#include <stddef.h>

struct sockaddr_in;

/* Longest "a.b.c.d:port" text sock_format writes, with its NUL. */
#define SOCK_ADDR_STRLEN 22

/*
 * Parses "a.b.c.d:port" or "localhost:port" (port: 1 to 5 digits, 0 to
 * 65535; 0 asks the kernel for a free port). Host names other than
 * localhost are refused: the node never resolves names.
 * Returns 0 and fills *sa, or -EINVAL (sa untouched).
 */
int sock_parse_hostport(const char *s, struct sockaddr_in *sa);

/* Writes sa as "a.b.c.d:port" into buf (always NUL-terminated). */
void sock_format(const struct sockaddr_in *sa, char *buf, size_t bufsz);

/*
 * Creates a TCP socket listening on hostport (SO_REUSEADDR, close-on-exec,
 * blocking: the ring accepts through io_uring). When bound is not NULL the
 * address actually bound ("ip:port", the port the kernel chose for :0) is
 * written there. Returns the fd (owned by the caller) or -errno
 * (-EINVAL for an unparsable address).
 */
int sock_listen_tcp(const char *hostport, int backlog, char *bound, size_t boundsz);

/*
 * Creates a UDP socket bound to hostport (close-on-exec, non-blocking so a
 * stray plain read never stalls the I/O thread; io_uring recvmsg/sendmsg
 * do not care). bound as for sock_listen_tcp. Returns the fd (owned by
 * the caller) or -errno.
 */
int sock_bind_udp(const char *hostport, char *bound, size_t boundsz);

#endif
