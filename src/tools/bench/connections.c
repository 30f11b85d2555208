/*
 * connections.c - the connections scenario: N idle connections, each
 * answered one PING, held for --duration. The process file limit (20000
 * here) caps one process, so the connections are spread over child
 * processes of at most BENCH_CONNS_PER_PROC each; on loopback each child
 * also binds its own source address (127.0.0.2, .3, ...) so N is not
 * bounded by one address's ephemeral ports.
 *
 *   parent ── fork ──► child k: connect, PING each, wait for every answer
 *     │                  │ writes "ok failed seconds\n" on its report pipe
 *     │ ◄────────────────┘ then blocks reading its release pipe
 *     │ reads the node's VmRSS (before / after), holds, closes the
 *     │ release pipes: the children close everything and exit
 *
 * No CPU span: the node's cost here is memory, not work per message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "net.h"
#include "procstat.h"
#include "ringchat/frame.h"
#include "ringchat/protocol.h"
#include "scenario.h"

/* One process holds at most this many idle connections (fd limit 20000). */
#define BENCH_CONNS_PER_PROC 15000

/* A child's share: connect, PING, report, wait for release. Never returns. */
static void conns_child(const struct bench_opts *o, int n, int k, int report_fd, int release_fd)
{
	struct sockaddr_storage dst;
	struct sockaddr_in src = {.sin_family = AF_INET};
	const struct sockaddr_in *srcp = NULL;
	socklen_t dlen;
	uint64_t t0 = bench_now_ns();
	int *fds = malloc((size_t)n * sizeof(*fds));
	uint8_t(*got)[64] = calloc((size_t)n, 64);
	uint8_t *have = calloc((size_t)n, 1);
	int ok = 0, failed = 0, pending, i, ep, err;
	char line[128];
	uint8_t req[FRAME_HDR_BYTES];
	struct frame_hdr h = {
	    .magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = CMD_PING, .seq = 1};

	if (!fds || !got || !have || net_raise_fd_limit(n + BENCH_SPARE_FDS))
		_exit(1);
	if (net_resolve(o->host, o->port, &dst, &dlen) == 0 && dst.ss_family == AF_INET &&
	    (ntohl(((struct sockaddr_in *)&dst)->sin_addr.s_addr) >> 24) == 127) {
		src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)k);
		srcp = &src;
	}
	err = net_connect_all(o->host, o->port, srcp, fds, n);
	if (err) {
		fprintf(stderr, "ringchat-bench: connections: child %d: %s\n", k, strerror(-err));
		_exit(1);
	}
	frame_hdr_encode(req, &h);
	ep = epoll_create1(EPOLL_CLOEXEC);
	for (i = 0; i < n; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

		if (send(fds[i], req, sizeof(req), MSG_NOSIGNAL) != (ssize_t)sizeof(req) ||
		    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) == -1) {
			failed++;
		}
	}
	/* Answers: a 20-byte header and a small {"time_ms":...}. */
	pending = n - failed;
	while (pending > 0 && bench_now_ns() - t0 < 120 * 1000000000ull) {
		struct epoll_event evs[BENCH_EPOLL_EVENTS];
		int e = epoll_wait(ep, evs, BENCH_EPOLL_EVENTS, 1000);

		for (i = 0; i < e; i++) {
			int c = (int)evs[i].data.u32;
			ssize_t r = recv(fds[c], got[c] + have[c], (size_t)(64 - have[c]), 0);
			struct frame_hdr rh;

			if (r <= 0) {
				if (r == -1 && (errno == EAGAIN || errno == EINTR))
					continue;
				failed++;
				pending--;
				epoll_ctl(ep, EPOLL_CTL_DEL, fds[c], NULL);
				continue;
			}
			have[c] += (uint8_t)r;
			if (have[c] < FRAME_HDR_BYTES)
				continue;
			frame_hdr_decode(got[c], &rh);
			if (rh.len > 64 - FRAME_HDR_BYTES || rh.code != ST_OK) {
				failed++;
				pending--;
				epoll_ctl(ep, EPOLL_CTL_DEL, fds[c], NULL);
				continue;
			}
			if (have[c] < FRAME_HDR_BYTES + rh.len)
				continue;
			ok++;
			pending--;
			epoll_ctl(ep, EPOLL_CTL_DEL, fds[c], NULL);
		}
	}
	failed += pending;
	free(got);
	snprintf(line, sizeof(line), "%d %d %.3f\n", ok, failed,
		 (double)(bench_now_ns() - t0) / 1e9);
	if (write(report_fd, line, strlen(line)) < 0)
		_exit(1);
	/* Hold until the parent closes the release pipe (or dies). */
	while (read(release_fd, line, sizeof(line)) > 0)
		;
	for (i = 0; i < n; i++)
		close(fds[i]);
	_exit(0);
}

int scenario_connections(const struct bench_opts *o)
{
	int n = o->connections, nchild = (n + BENCH_CONNS_PER_PROC - 1) / BENCH_CONNS_PER_PROC;
	int report[BENCH_MAX_CONNECTIONS / BENCH_CONNS_PER_PROC + 1];
	int release[BENCH_MAX_CONNECTIONS / BENCH_CONNS_PER_PROC + 1];
	pid_t pids[BENCH_MAX_CONNECTIONS / BENCH_CONNS_PER_PROC + 1];
	long pid = o->nserver_pids ? o->server_pids[0] : 0;
	long long rss0 = -1, rss1 = -1;
	FILE *out = bench_text_out(o);
	uint64_t t0 = bench_now_ns(), hold_end;
	double open_s = 0;
	int k, ok = 0, failed = 0, rc = 1, forked = 0;

	if (pid)
		rss0 = procstat_rss(pid);
	for (k = 0; k < nchild; k++) {
		int share = n / nchild + (k < n % nchild), rp[2], lp[2];

		if (pipe2(rp, O_CLOEXEC) == -1 || pipe2(lp, O_CLOEXEC) == -1) {
			perror("ringchat-bench: pipe");
			goto out_release;
		}
		fflush(NULL);
		pids[k] = fork();
		if (pids[k] == -1) {
			perror("ringchat-bench: fork");
			goto out_release;
		}
		if (pids[k] == 0) {
			close(rp[0]);
			close(lp[1]);
			/* The parent's other pipes: a child must not hold them open. */
			for (int j = 0; j < k; j++) {
				close(report[j]);
				close(release[j]);
			}
			conns_child(o, share, k, rp[1], lp[0]);
		}
		close(rp[1]);
		close(lp[0]);
		report[k] = rp[0];
		release[k] = lp[1];
		forked++;
	}
	for (k = 0; k < forked; k++) {
		char line[128];
		int a = 0, b = 0;
		double s = 0;
		ssize_t r;
		struct pollfd p = {.fd = report[k], .events = POLLIN};

		if (poll(&p, 1, 180000) != 1 ||
		    (r = read(report[k], line, sizeof(line) - 1)) <= 0) {
			fprintf(stderr, "ringchat-bench: connections: child %d gave no report\n",
				k);
			goto out_release;
		}
		line[r] = '\0';
		if (sscanf(line, "%d %d %lf", &a, &b, &s) != 3)
			goto out_release;
		ok += a;
		failed += b;
		if (s > open_s)
			open_s = s;
	}
	open_s = (double)(bench_now_ns() - t0) / 1e9;
	fprintf(stderr, "ringchat-bench: connections: %d open and answered, %d failed, in %.2f s\n",
		ok, failed, open_s);
	/* Let the node finish what the connects set in motion before measuring. */
	bench_sleep_ms(1000);
	if (pid)
		rss1 = procstat_rss(pid);
	hold_end = bench_now_ns() + (uint64_t)o->duration_s * 1000000000ull;
	while (bench_now_ns() < hold_end) {
		uint64_t left = hold_end - bench_now_ns();

		bench_sleep_until(bench_now_ns() +
				  (left < BENCH_PROGRESS_NS ? left : BENCH_PROGRESS_NS));
		if (bench_now_ns() < hold_end)
			bench_progress(t0, "holding %d connections", ok);
	}
	fprintf(out,
		"connections: %d requested over %d process%s, %d open and answered a PING, "
		"%d failed\n",
		n, nchild, nchild == 1 ? "" : "es", ok, failed);
	fprintf(out, "  opened in %.2f s (%.0f connections/s), held %d s\n", open_s,
		open_s > 0 ? ok / open_s : 0, o->duration_s);
	if (rss0 > 0 && rss1 > 0)
		fprintf(out,
			"  server RSS %.1f MiB before, %.1f MiB after: %.0f bytes per connection\n",
			rss0 / 1048576.0, rss1 / 1048576.0, ok ? (double)(rss1 - rss0) / ok : 0);
	fflush(out);
	if (o->json) {
		printf(
		    "{\"scenario\":\"connections\",\"connections\":%d,\"processes\":%d,\"open\":%d,"
		    "\"failed\":%d,\"open_s\":%.3f,\"held_s\":%d",
		    n, nchild, ok, failed, open_s, o->duration_s);
		if (rss0 > 0 && rss1 > 0)
			printf(
			    ",\"rss_before\":%lld,\"rss_after\":%lld,\"bytes_per_connection\":%.0f",
			    rss0, rss1, ok ? (double)(rss1 - rss0) / ok : 0);
		printf("}\n");
		fflush(stdout);
	}
	rc = failed == 0 && ok == n ? 0 : 1;
out_release:
	for (k = 0; k < forked; k++) {
		close(release[k]);
		close(report[k]);
	}
	for (k = 0; k < forked; k++)
		waitpid(pids[k], NULL, 0);
	return rc;
}
