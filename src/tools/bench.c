/*
 * bench.c - ringchat-bench: load scenarios against a node.
 *
 *   ringchat-bench ping --host 127.0.0.1 --port P --connections 1000
 *                       --window 16 --duration 10 [--threads 2]
 *                       [--warmup 1] [--server-pid PID] [--json]
 *
 * Shape: the options are parsed once into struct bench_opts; a scenario
 * is a function in bench_scenarios[] that runs the load and prints its
 * result. Shared pieces, each in its own section below: the latency
 * histogram, connection set-up, the epoll load threads, server CPU
 * accounting and the report.
 *
 * ping: every connection keeps `window` PINGs in flight. Responses come
 * back in request order, so each connection remembers the send time of
 * its outstanding requests in a FIFO; a response pops the oldest entry,
 * its latency goes into the thread's histogram (only after the warm-up),
 * and a new PING refills the window. Threads own disjoint sets of
 * connections, each with its own epoll, so nothing is shared while the
 * load runs; histograms are merged at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringchat/frame.h"
#include "ringchat/protocol.h"

#define BENCH_MAX_CONNECTIONS 100000
#define BENCH_MAX_WINDOW 4096
#define BENCH_MAX_THREADS 64
/* Connections opened at once while setting up; the rest wait their turn. */
#define BENCH_CONNECT_BATCH 256
#define BENCH_CONNECT_TIMEOUT_MS 10000
/* fds the process needs besides the connections (epolls, stdio, ...). */
#define BENCH_SPARE_FDS (BENCH_MAX_THREADS + 16)
/* Initial per-connection read buffer; grows for a larger frame. */
#define BENCH_RBUF_BYTES 2048u
#define BENCH_EPOLL_EVENTS 256

/* ---------------------------------------------------------------------
 * Latency histogram, log-linear (the idea of HdrHistogram): values below
 * 32 ns are exact; above, each power of two [2^k, 2^(k+1)) is cut into 32
 * equal sub-buckets, so any recorded value is known within 1/32 (3 %).
 * Values are nanoseconds, clamped to HIST_MAX_NS (60 s): 1024 counters.
 * ------------------------------------------------------------------- */

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_NS 60000000000ull
/* 60 s < 2^36, so the top magnitude is k = 35. */
#define HIST_BUCKETS (HIST_SUB + (36 - HIST_SUB_BITS) * HIST_SUB)

struct hist {
	uint64_t counts[HIST_BUCKETS];
	uint64_t total;
	uint64_t max_ns;
};

static unsigned hist_index(uint64_t v)
{
	unsigned k;

	if (v < HIST_SUB)
		return (unsigned)v;
	k = 63u - (unsigned)__builtin_clzll(v);
	return HIST_SUB + (k - HIST_SUB_BITS) * HIST_SUB +
	       (unsigned)((v >> (k - HIST_SUB_BITS)) - HIST_SUB);
}

/* Highest value that falls into bucket i. */
static uint64_t hist_bucket_top(unsigned i)
{
	unsigned k, sub;

	if (i < HIST_SUB)
		return i;
	k = (i - HIST_SUB) / HIST_SUB + HIST_SUB_BITS;
	sub = (i - HIST_SUB) % HIST_SUB;
	return (((uint64_t)HIST_SUB + sub) << (k - HIST_SUB_BITS)) +
	       ((uint64_t)1 << (k - HIST_SUB_BITS)) - 1;
}

static void hist_record(struct hist *h, uint64_t ns)
{
	if (ns > HIST_MAX_NS)
		ns = HIST_MAX_NS;
	h->counts[hist_index(ns)]++;
	h->total++;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

static void hist_merge(struct hist *into, const struct hist *from)
{
	unsigned i;

	for (i = 0; i < HIST_BUCKETS; i++)
		into->counts[i] += from->counts[i];
	into->total += from->total;
	if (from->max_ns > into->max_ns)
		into->max_ns = from->max_ns;
}

/* Value at percentile p (0 < p <= 100), in ns; 0 when empty. */
static uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t want, seen = 0, top;
	unsigned i;

	if (h->total == 0)
		return 0;
	want = (uint64_t)((p / 100.0) * (double)h->total + 0.999999);
	if (want < 1)
		want = 1;
	if (want > h->total)
		want = h->total;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= want) {
			top = hist_bucket_top(i);
			return top < h->max_ns ? top : h->max_ns;
		}
	}
	return h->max_ns;
}

/* ---------------------------------------------------------------------
 * Options and helpers.
 * ------------------------------------------------------------------- */

struct bench_opts {
	const char *scenario;
	const char *host;
	uint16_t port;
	int connections;
	int window;
	int duration_s;
	int warmup_s;
	int threads;
	long server_pid; /* 0 = not given */
	bool json;
};

static uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void bench_sleep_until(uint64_t when_ns)
{
	uint64_t now;
	struct timespec ts;

	while ((now = bench_now_ns()) < when_ns) {
		ts.tv_sec = (time_t)((when_ns - now) / 1000000000ull);
		ts.tv_nsec = (long)((when_ns - now) % 1000000000ull);
		nanosleep(&ts, NULL);
	}
}

/* ---------------------------------------------------------------------
 * Server CPU: utime + stime of /proc/PID/stat, in seconds.
 * ------------------------------------------------------------------- */

static int bench_proc_cpu_s(long pid, double *cpu_s)
{
	char path[64], buf[4096], *p;
	unsigned long utime, stime;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	/* comm (field 2) may hold spaces and ')': fields restart after the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return -EIO;
	/* After ')': state(3) ... utime(14) stime(15), i.e. the 12th and 13th. */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
	    2)
		return -EIO;
	*cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

/* ---------------------------------------------------------------------
 * Connection set-up: non-blocking connects, BENCH_CONNECT_BATCH at a
 * time, so a large count neither overruns the node's accept backlog nor
 * waits on SYN retries one by one.
 * ------------------------------------------------------------------- */

static int bench_raise_fd_limit(int need)
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

static int bench_resolve(const struct bench_opts *o, struct sockaddr_storage *sa, socklen_t *len)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	char service[8];
	int rc;

	snprintf(service, sizeof(service), "%u", (unsigned)o->port);
	rc = getaddrinfo(o->host, service, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "ringchat-bench: %s: %s\n", o->host, gai_strerror(rc));
		return -ENOENT;
	}
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/*
 * Opens n connected, non-blocking TCP_NODELAY sockets into fds[]. Returns
 * 0, or -errno after closing whatever it opened.
 */
static int bench_connect_all(const struct bench_opts *o, int *fds, int n)
{
	struct epoll_event evs[BENCH_CONNECT_BATCH];
	struct sockaddr_storage sa;
	socklen_t salen;
	int ep, done = 0, i, rc;

	rc = bench_resolve(o, &sa, &salen);
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

/* ---------------------------------------------------------------------
 * The ping load: threads, connections, frames.
 * ------------------------------------------------------------------- */

struct bench_conn {
	int fd;
	bool dead;
	bool want_out; /* EPOLLOUT armed: wbuf has unsent bytes */
	uint32_t next_seq;
	uint32_t inflight;
	uint32_t fifo_head; /* oldest outstanding request */
	uint64_t *sent_ns;  /* window entries, FIFO by fifo_head */
	uint32_t *sent_seq;
	uint8_t *rbuf;
	size_t rlen, rcap;
	uint8_t *wbuf; /* window * FRAME_HDR_BYTES */
	size_t woff, wlen;
};

struct bench_thread {
	pthread_t tid;
	const struct bench_opts *o;
	int ep;
	struct bench_conn *conns;
	int nconns;
	uint64_t measure_start_ns, measure_end_ns;
	/* Results, read by main after the join. */
	struct hist hist;
	uint64_t errors;   /* responses with a non-OK code */
	uint64_t lost;	   /* connections the node closed */
	uint64_t bad;	   /* protocol surprises: bad magic, wrong seq */
	uint64_t ended_ns; /* when the thread stopped (early when all were lost) */
};

static void bench_conn_kill(struct bench_thread *t, struct bench_conn *c, const char *why)
{
	if (c->dead)
		return;
	if (t->lost + t->bad < 5)
		fprintf(stderr, "ringchat-bench: connection lost: %s\n", why);
	c->dead = true;
	epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	t->lost++;
}

static void bench_conn_arm(struct bench_thread *t, struct bench_conn *c, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};

	if (c->want_out == out)
		return;
	c->want_out = out;
	epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void bench_conn_flush(struct bench_thread *t, struct bench_conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);

		if (w > 0) {
			c->woff += (size_t)w;
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			bench_conn_arm(t, c, true);
			return;
		}
		bench_conn_kill(t, c, strerror(errno));
		return;
	}
	c->woff = c->wlen = 0;
	bench_conn_arm(t, c, false);
}

/* Tops the window up with new PINGs, all stamped now. */
static void bench_conn_refill(struct bench_thread *t, struct bench_conn *c, uint64_t now)
{
	uint32_t window = (uint32_t)t->o->window;
	struct frame_hdr h = {.magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = CMD_PING};

	if (c->dead)
		return;
	if (c->woff > 0 && c->woff == c->wlen)
		c->woff = c->wlen = 0;
	/* wbuf holds at most `window` frames: compact before appending. */
	if (c->woff > 0) {
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
	}
	while (c->inflight < window) {
		uint32_t slot = (c->fifo_head + c->inflight) % window;

		h.seq = c->next_seq;
		c->next_seq = c->next_seq == UINT32_MAX ? 1 : c->next_seq + 1;
		frame_hdr_encode(c->wbuf + c->wlen, &h);
		c->wlen += FRAME_HDR_BYTES;
		c->sent_seq[slot] = h.seq;
		c->sent_ns[slot] = now;
		c->inflight++;
	}
	bench_conn_flush(t, c);
}

static void bench_conn_on_frame(struct bench_thread *t, struct bench_conn *c,
				const struct frame_hdr *h, uint64_t now)
{
	uint32_t window = (uint32_t)t->o->window;
	uint32_t slot = c->fifo_head;

	if (c->inflight == 0 || h->seq != c->sent_seq[slot]) {
		t->bad++;
		bench_conn_kill(t, c, "response out of order or unrequested");
		return;
	}
	if (now >= t->measure_start_ns && now < t->measure_end_ns) {
		hist_record(&t->hist, now - c->sent_ns[slot]);
		if (h->code != ST_OK)
			t->errors++;
	}
	c->fifo_head = (c->fifo_head + 1) % window;
	c->inflight--;
}

static void bench_conn_read(struct bench_thread *t, struct bench_conn *c, uint64_t now)
{
	struct frame_hdr h;
	size_t off = 0;
	ssize_t r;

	r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	if (r == 0) {
		bench_conn_kill(t, c, "closed by the node");
		return;
	}
	if (r == -1) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			bench_conn_kill(t, c, strerror(errno));
		return;
	}
	c->rlen += (size_t)r;
	while (!c->dead && c->rlen - off >= FRAME_HDR_BYTES) {
		frame_hdr_decode(c->rbuf + off, &h);
		if (h.magic != FRAME_MAGIC || h.len > FRAME_MAX_OUT_BYTES) {
			t->bad++;
			bench_conn_kill(t, c, "bad frame from the node");
			return;
		}
		if (c->rlen - off < FRAME_HDR_BYTES + (size_t)h.len) {
			size_t need = FRAME_HDR_BYTES + (size_t)h.len;

			if (need > c->rcap) {
				uint8_t *nb = realloc(c->rbuf, need);

				if (!nb) {
					bench_conn_kill(t, c, "out of memory");
					return;
				}
				c->rbuf = nb;
				c->rcap = need;
			}
			break;
		}
		bench_conn_on_frame(t, c, &h, now);
		off += FRAME_HDR_BYTES + h.len;
	}
	if (c->dead)
		return;
	if (off > 0) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	bench_conn_refill(t, c, now);
}

static void *bench_ping_thread(void *arg)
{
	struct bench_thread *t = arg;
	struct epoll_event evs[BENCH_EPOLL_EVENTS];
	uint64_t now = bench_now_ns();
	int i, n;

	for (i = 0; i < t->nconns; i++)
		bench_conn_refill(t, &t->conns[i], now);
	while (now < t->measure_end_ns && t->lost < (uint64_t)t->nconns) {
		n = epoll_wait(t->ep, evs, BENCH_EPOLL_EVENTS, 10);
		now = bench_now_ns();
		for (i = 0; i < n; i++) {
			struct bench_conn *c = evs[i].data.ptr;

			if (c->dead)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				bench_conn_read(t, c, now);
			if (!c->dead && (evs[i].events & EPOLLOUT))
				bench_conn_flush(t, c);
		}
	}
	t->ended_ns = now < t->measure_end_ns ? now : t->measure_end_ns;
	return NULL;
}

static void bench_conns_free(struct bench_conn *conns, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (conns[i].fd >= 0)
			close(conns[i].fd);
		free(conns[i].sent_ns);
		free(conns[i].sent_seq);
		free(conns[i].rbuf);
		free(conns[i].wbuf);
	}
	free(conns);
}

/* Printed results of one run. */
struct bench_result {
	uint64_t requests, errors, lost, bad;
	double seconds;
	struct hist *hist;
	bool have_cpu;
	double server_cpu_s;
};

static void bench_report(const struct bench_opts *o, const struct bench_result *r)
{
	double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
	double p50 = hist_percentile(r->hist, 50) / 1e3, p90 = hist_percentile(r->hist, 90) / 1e3;
	double p99 = hist_percentile(r->hist, 99) / 1e3;
	double p999 = hist_percentile(r->hist, 99.9) / 1e3, max = r->hist->max_ns / 1e3;

	if (o->json) {
		printf("{\"scenario\":\"%s\",\"connections\":%d,\"window\":%d,\"duration_s\":%d,"
		       "\"requests\":%" PRIu64 ",\"rps\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
		       "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"errors\":%" PRIu64
		       ",\"lost_connections\":%" PRIu64 ",\"threads\":%d",
		       o->scenario, o->connections, o->window, o->duration_s, r->requests, rps, p50,
		       p90, p99, p999, max, r->errors, r->lost, o->threads);
		if (r->have_cpu)
			printf(",\"server_cpu_s\":%.2f,\"requests_per_cpu_s\":%.1f",
			       r->server_cpu_s,
			       r->server_cpu_s > 0 ? (double)r->requests / r->server_cpu_s : 0);
		printf("}\n");
		fflush(stdout);
		return;
	}
	printf("%s: %d connections, window %d, %d thread%s, %.2f s measured after %d s warm-up\n",
	       o->scenario, o->connections, o->window, o->threads, o->threads == 1 ? "" : "s",
	       r->seconds, o->warmup_s);
	printf("  requests %" PRIu64 "  rps %.1f  errors %" PRIu64 "  lost connections %" PRIu64
	       "\n",
	       r->requests, rps, r->errors, r->lost);
	printf("  latency us  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", p50, p90, p99,
	       p999, max);
	if (r->have_cpu)
		printf("  server cpu %.2f s  %.1f requests per cpu-second\n", r->server_cpu_s,
		       r->server_cpu_s > 0 ? (double)r->requests / r->server_cpu_s : 0);
	fflush(stdout);
}

static int bench_scenario_ping(const struct bench_opts *o)
{
	struct bench_thread *threads = calloc((size_t)o->threads, sizeof(*threads));
	struct bench_conn *conns = calloc((size_t)o->connections, sizeof(*conns));
	int *fds = malloc((size_t)o->connections * sizeof(*fds));
	struct bench_result res = {0};
	double cpu0 = 0, cpu1 = 0;
	uint64_t t0, start, end;
	int i, rc = 1, started = 0, err;

	if (!threads || !conns || !fds) {
		fprintf(stderr, "ringchat-bench: out of memory\n");
		goto out_free;
	}
	for (i = 0; i < o->connections; i++)
		conns[i].fd = -1;
	if (bench_raise_fd_limit(o->connections + BENCH_SPARE_FDS))
		goto out_free;
	for (i = 0; i < o->threads; i++)
		threads[i].ep = -1;
	err = bench_connect_all(o, fds, o->connections);
	if (err) {
		fprintf(stderr, "ringchat-bench: cannot open %d connections to %s:%u: %s\n",
			o->connections, o->host, o->port, strerror(-err));
		goto out_free;
	}
	for (i = 0; i < o->connections; i++)
		conns[i].fd = fds[i];
	for (i = 0; i < o->connections; i++) {
		struct bench_conn *c = &conns[i];

		c->next_seq = 1;
		c->sent_ns = calloc((size_t)o->window, sizeof(*c->sent_ns));
		c->sent_seq = calloc((size_t)o->window, sizeof(*c->sent_seq));
		c->rbuf = malloc(BENCH_RBUF_BYTES);
		c->rcap = BENCH_RBUF_BYTES;
		c->wbuf = malloc((size_t)o->window * FRAME_HDR_BYTES);
		if (!c->sent_ns || !c->sent_seq || !c->rbuf || !c->wbuf) {
			fprintf(stderr, "ringchat-bench: out of memory\n");
			goto out_free;
		}
	}

	t0 = bench_now_ns();
	start = t0 + (uint64_t)o->warmup_s * 1000000000ull;
	end = start + (uint64_t)o->duration_s * 1000000000ull;
	/* Connection i goes to thread i % threads. */
	for (i = 0; i < o->threads; i++) {
		struct bench_thread *t = &threads[i];
		int k;

		t->o = o;
		t->measure_start_ns = start;
		t->measure_end_ns = end;
		t->ep = epoll_create1(EPOLL_CLOEXEC);
		if (t->ep == -1) {
			perror("ringchat-bench: epoll_create1");
			goto out_stop;
		}
		t->nconns = 0;
		t->conns = NULL;
		for (k = i; k < o->connections; k += o->threads)
			t->nconns++;
		/* The thread's share, contiguous: conns is reordered by thread. */
		t->conns = calloc((size_t)t->nconns, sizeof(*t->conns));
		if (!t->conns) {
			fprintf(stderr, "ringchat-bench: out of memory\n");
			goto out_stop;
		}
		t->nconns = 0;
		for (k = i; k < o->connections; k += o->threads) {
			struct bench_conn *c = &t->conns[t->nconns++];
			struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

			*c = conns[k];
			conns[k].fd = -1; /* ownership moved to the thread */
			conns[k].sent_ns = NULL;
			conns[k].sent_seq = NULL;
			conns[k].rbuf = NULL;
			conns[k].wbuf = NULL;
			if (epoll_ctl(t->ep, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
				perror("ringchat-bench: epoll_ctl");
				goto out_stop;
			}
		}
	}
	for (i = 0; i < o->threads; i++) {
		if (pthread_create(&threads[i].tid, NULL, bench_ping_thread, &threads[i]) != 0) {
			fprintf(stderr, "ringchat-bench: cannot start thread %d\n", i);
			break;
		}
		started++;
	}
	if (started == o->threads && o->server_pid) {
		bench_sleep_until(start);
		if (bench_proc_cpu_s(o->server_pid, &cpu0) == 0) {
			bench_sleep_until(end);
			res.have_cpu = bench_proc_cpu_s(o->server_pid, &cpu1) == 0;
		} else {
			fprintf(stderr, "ringchat-bench: cannot read /proc/%ld/stat\n",
				o->server_pid);
		}
	}
	for (i = 0; i < started; i++)
		pthread_join(threads[i].tid, NULL);
	if (started < o->threads)
		goto out_stop;

	res.hist = calloc(1, sizeof(*res.hist));
	if (!res.hist)
		goto out_stop;
	for (i = 0; i < o->threads; i++) {
		hist_merge(res.hist, &threads[i].hist);
		res.errors += threads[i].errors;
		res.lost += threads[i].lost;
		res.bad += threads[i].bad;
	}
	res.requests = res.hist->total;
	/* Threads whose connections all died stopped early: count real time. */
	for (i = 0; i < o->threads; i++)
		if (threads[i].ended_ns > start &&
		    (double)(threads[i].ended_ns - start) / 1e9 > res.seconds)
			res.seconds = (double)(threads[i].ended_ns - start) / 1e9;
	res.server_cpu_s = cpu1 - cpu0;
	bench_report(o, &res);
	if (res.errors)
		fprintf(stderr,
			"ringchat-bench: %" PRIu64 " responses were errors "
			"(RATE_LIMITED? see rate_msgs_per_s)\n",
			res.errors);
	rc = res.requests > 0 && res.lost == 0 && res.bad == 0 ? 0 : 1;
	free(res.hist);

out_stop:
	for (i = 0; i < o->threads; i++) {
		if (threads[i].conns)
			bench_conns_free(threads[i].conns, threads[i].nconns);
		if (threads[i].ep >= 0)
			close(threads[i].ep);
	}
out_free:
	if (conns)
		bench_conns_free(conns, o->connections);
	free(fds);
	free(threads);
	return rc;
}

/* ---------------------------------------------------------------------
 * Scenarios and command line.
 * ------------------------------------------------------------------- */

struct bench_scenario {
	const char *name;
	const char *help;
	int (*run)(const struct bench_opts *o);
};

static const struct bench_scenario bench_scenarios[] = {
    {"ping", "PINGs pipelined on every connection (window in flight)", bench_scenario_ping},
};

static void bench_usage(FILE *out)
{
	size_t i;

	fprintf(out, "usage: ringchat-bench SCENARIO [options]\n"
		     "scenarios:\n");
	for (i = 0; i < sizeof(bench_scenarios) / sizeof(bench_scenarios[0]); i++)
		fprintf(out, "  %-10s %s\n", bench_scenarios[i].name, bench_scenarios[i].help);
	fprintf(out, "options:\n"
		     "  --host H          node address (127.0.0.1)\n"
		     "  --port P          node client port (required)\n"
		     "  --connections N   connections (1000)\n"
		     "  --window W        requests in flight per connection (16)\n"
		     "  --duration S      measured seconds (10)\n"
		     "  --warmup S        seconds before measuring (1)\n"
		     "  --threads T       load threads (1)\n"
		     "  --server-pid PID  report the node's CPU time while measuring\n"
		     "  --json            one JSON line instead of text\n");
}

/* Parses an integer option in [min, max]; exits 2 naming it otherwise. */
static long bench_int_arg(const char *name, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "ringchat-bench: --%s: '%s' is not an integer in %ld..%ld\n", name,
			s, min, max);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"host", required_argument, NULL, 'h'},
	    {"port", required_argument, NULL, 'p'},
	    {"connections", required_argument, NULL, 'c'},
	    {"window", required_argument, NULL, 'w'},
	    {"duration", required_argument, NULL, 'd'},
	    {"warmup", required_argument, NULL, 'W'},
	    {"threads", required_argument, NULL, 't'},
	    {"server-pid", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, '?'},
	    {NULL, 0, NULL, 0},
	};
	struct bench_opts o = {
	    .host = "127.0.0.1",
	    .connections = 1000,
	    .window = 16,
	    .duration_s = 10,
	    .warmup_s = 1,
	    .threads = 1,
	};
	const struct bench_scenario *sc = NULL;
	size_t i;
	int opt;

	if (argc < 2 || argv[1][0] == '-') {
		bench_usage(argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
		return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
	}
	o.scenario = argv[1];
	for (i = 0; i < sizeof(bench_scenarios) / sizeof(bench_scenarios[0]); i++)
		if (!strcmp(bench_scenarios[i].name, o.scenario))
			sc = &bench_scenarios[i];
	if (!sc) {
		fprintf(stderr, "ringchat-bench: unknown scenario '%s'\n", o.scenario);
		bench_usage(stderr);
		return 2;
	}
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			o.host = optarg;
			break;
		case 'p':
			o.port = (uint16_t)bench_int_arg("port", optarg, 1, 65535);
			break;
		case 'c':
			o.connections =
			    (int)bench_int_arg("connections", optarg, 1, BENCH_MAX_CONNECTIONS);
			break;
		case 'w':
			o.window = (int)bench_int_arg("window", optarg, 1, BENCH_MAX_WINDOW);
			break;
		case 'd':
			o.duration_s = (int)bench_int_arg("duration", optarg, 1, 86400);
			break;
		case 'W':
			o.warmup_s = (int)bench_int_arg("warmup", optarg, 0, 3600);
			break;
		case 't':
			o.threads = (int)bench_int_arg("threads", optarg, 1, BENCH_MAX_THREADS);
			break;
		case 's':
			o.server_pid = bench_int_arg("server-pid", optarg, 1, 1L << 30);
			break;
		case 'j':
			o.json = true;
			break;
		default:
			bench_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ringchat-bench: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (o.port == 0) {
		fprintf(stderr, "ringchat-bench: --port is required\n");
		return 2;
	}
	if (o.threads > o.connections)
		o.threads = o.connections;
	return sc->run(&o);
}
