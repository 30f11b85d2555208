/*
 * sock.c - address parsing and the listening/bound sockets of the node.
 * See sock.h for the contracts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringchat/sock.h"

int sock_parse_hostport(const char *s, struct sockaddr_in *sa)
{
	const char *colon = strrchr(s, ':');
	char host[INET_ADDRSTRLEN];
	struct in_addr addr;
	size_t hlen, plen;
	unsigned long port = 0;

	if (!colon)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (!strcmp(host, "localhost"))
		addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &addr) != 1)
		return -EINVAL;
	/* digits only: strtol would take " 80", "+80" and "0x50" */
	plen = strlen(colon + 1);
	if (plen == 0 || plen > 5)
		return -EINVAL;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port > 65535)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	sa->sin_addr = addr;
	return 0;
}

void sock_format(const struct sockaddr_in *sa, char *buf, size_t bufsz)
{
	char ip[INET_ADDRSTRLEN] = "?";

	inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip));
	snprintf(buf, bufsz, "%s:%u", ip, ntohs(sa->sin_port));
}

/* Creates a socket of type bound to hostport; listens when backlog >= 0. */
static int sock_open_bound(const char *hostport, int type, int backlog, char *bound,
			   size_t boundsz)
{
	struct sockaddr_in sa;
	socklen_t salen = sizeof(sa);
	int fd, one = 1, ret;

	ret = sock_parse_hostport(hostport, &sa);
	if (ret)
		return ret;
	fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    (backlog >= 0 && listen(fd, backlog) == -1) ||
	    getsockname(fd, (struct sockaddr *)&sa, &salen) == -1) {
		ret = -errno;
		goto out_close_fd;
	}
	if (bound)
		sock_format(&sa, bound, boundsz);
	return fd;

out_close_fd:
	close(fd);
	return ret;
}

int sock_listen_tcp(const char *hostport, int backlog, char *bound, size_t boundsz)
{
	return sock_open_bound(hostport, SOCK_STREAM, backlog < 0 ? 0 : backlog, bound,
			       boundsz);
}

int sock_bind_udp(const char *hostport, char *bound, size_t boundsz)
{
	return sock_open_bound(hostport, SOCK_DGRAM | SOCK_NONBLOCK, -1, bound, boundsz);
}
