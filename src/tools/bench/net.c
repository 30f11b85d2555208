/*
 * net.c - batched non-blocking connects (see net.h).
 */
#include "net.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"

int net_raise_fd_limit(int need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)need > rl.rlim_cur) {
		fprintf(stderr, "ringchat-bench: %d file descriptors needed, the limit is %llu\n",
			need, (unsigned long long)rl.rlim_cur);
		return -EMFILE;
	}
	return 0;
}

int net_resolve(const char *host, uint16_t port, struct sockaddr_storage *sa, socklen_t *len)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	char service[8];
	int rc;

	snprintf(service, sizeof(service), "%u", (unsigned)port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "ringchat-bench: %s: %s\n", host, gai_strerror(rc));
		return -ENOENT;
	}
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int net_connect_all(const char *host, uint16_t port, const struct sockaddr_in *src, int *fds, int n)
{
	struct epoll_event evs[BENCH_CONNECT_BATCH];
	struct sockaddr_storage sa;
	socklen_t salen;
	int ep, done = 0, i = 0, rc;

	rc = net_resolve(host, port, &sa, &salen);
	if (rc)
		return rc;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep == -1)
		return -errno;
	while (done < n) {
		int batch = n - done < BENCH_CONNECT_BATCH ? n - done : BENCH_CONNECT_BATCH;
		int pending = 0;
		uint64_t deadline = bench_now_ns() + BENCH_CONNECT_TIMEOUT_MS * 1000000ull;

		for (i = done; i < done + batch; i++) {
			struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
			int one = 1;

			fds[i] =
			    socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fds[i] == -1) {
				rc = -errno;
				goto out_close_fds;
			}
			setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			if (src) {
				/* The port is chosen at connect(), per destination. */
				setsockopt(fds[i], IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
					   sizeof(one));
				if (bind(fds[i], (const struct sockaddr *)src, sizeof(*src)) ==
				    -1) {
					rc = -errno;
					i++;
					goto out_close_fds;
				}
			}
			if (connect(fds[i], (struct sockaddr *)&sa, salen) == -1 &&
			    errno != EINPROGRESS) {
				rc = -errno;
				i++;
				goto out_close_fds;
			}
			if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) == -1) {
				rc = -errno;
				i++;
				goto out_close_fds;
			}
			pending++;
		}
		while (pending > 0) {
			int64_t left_ms = (int64_t)(deadline - bench_now_ns()) / 1000000;
			int k, got;

			if ((int64_t)(deadline - bench_now_ns()) <= 0) {
				rc = -ETIMEDOUT;
				goto out_close_fds;
			}
			got = epoll_wait(ep, evs, BENCH_CONNECT_BATCH, (int)left_ms + 1);
			if (got == -1 && errno != EINTR) {
				rc = -errno;
				goto out_close_fds;
			}
			for (k = 0; k < got; k++) {
				int fd = fds[evs[k].data.u32], err = 0;
				socklen_t elen = sizeof(err);

				getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
				if (err) {
					rc = -err;
					goto out_close_fds;
				}
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				pending--;
			}
		}
		done += batch;
	}
	close(ep);
	return 0;

out_close_fds:
	/* fds[0..i) were opened (the batch's tail never was). */
	while (i-- > 0)
		close(fds[i]);
	close(ep);
	return rc;
}
