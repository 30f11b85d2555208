/*
 * bench.c - ringchat-bench: load scenarios against a node.
 *
 *   ringchat-bench SCENARIO [--host H] [--port P] [options] [--json]
 *
 *   ping         PINGs pipelined on every connection (window in flight)
 *   chat         users in pairs, senders keep a window of MSG_SEND in flight
 *                (or --rate msgs/s, open loop); delivery counted at the
 *                recipients; --target redis runs the same load on Redis
 *                pub/sub as a reference, --target both runs the two in turn
 *   group        G groups of N members, one sender per group (fan-out)
 *   login        a login storm: U users log in at once, C at a time, while a
 *                probe connection PINGs
 *   signup       signups per second
 *   connections  N idle connections (in several processes past 15000) and
 *                the node's memory per connection
 *   offline      M messages stored for an offline user, then the drain at
 *                its login
 *
 * Shape: the options are parsed once into struct bench_opts; a scenario
 * is a function in bench_scenarios[] that sets up, runs the load and
 * prints its result (text, or text on stderr and one JSON line on stdout
 * with --json). Shared pieces, each in its own section below: the latency
 * histogram, server CPU and memory from /proc, connection set-up, the ping
 * load, generic connections (struct bconn), the step engine that signs
 * users up and wires them together, and the message load threads.
 *
 * Latency: every scenario measures from the moment a request was meant to
 * go out. Closed loop (a window of requests in flight) sends at once; the
 * open loop of chat/group (--rate) stamps each message with its scheduled
 * time, so a stalled node shows as latency instead of silently slowing
 * the senders down (no coordinated omission). Message texts carry their
 * stamp ("t=<ns>;"), which is how a recipient knows the send→delivery
 * latency; sender and recipients share one process, so one monotonic
 * clock serves both.
 *
 * Threads own disjoint sets of connections, each with its own io_uring
 * (or epoll, --engine epoll), so nothing is shared while the load runs
 * but the progress counters (relaxed atomics, read by the main thread for
 * the progress line); histograms are merged at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <liburing.h>

#include "ringchat/client.h"
#include "ringchat/frame.h"
#include "ringchat/protocol.h"

#define BENCH_MAX_CONNECTIONS 100000
#define BENCH_MAX_WINDOW 4096
#define BENCH_MAX_THREADS 64
#define BENCH_MAX_PIDS 8
/* Connections opened at once while setting up; the rest wait their turn. */
#define BENCH_CONNECT_BATCH 256
#define BENCH_CONNECT_TIMEOUT_MS 10000
/* fds the process needs besides the connections (epolls, stdio, ...). */
#define BENCH_SPARE_FDS (BENCH_MAX_THREADS + 16)
/* Initial per-connection read buffer; grows for a larger frame. */
#define BENCH_RBUF_BYTES 2048u
#define BENCH_EPOLL_EVENTS 256
/* A progress line on stderr this often, on runs longer than that. */
#define BENCH_PROGRESS_NS (5 * 1000000000ull)
/* Requests of the set-up steps in flight at once (signups are shed above). */
#define BENCH_SETUP_BUSY 128
/* Set-up gives up after this long. */
#define BENCH_SETUP_TIMEOUT_S 600
/* Recipients ack every BENCH_ACK_BATCH messages or BENCH_ACK_NS. */
#define BENCH_ACK_BATCH 64
#define BENCH_ACK_NS (100 * 1000000ull)
/* Message text: "t=<20 digits>;" then padding. */
#define BENCH_STAMP_BYTES 23
#define BENCH_TEXT_MAX 4000
/* One process holds at most this many idle connections (fd limit 20000). */
#define BENCH_CONNS_PER_PROC 15000
#define BENCH_PASSWORD "bench-password-1"

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

/* Fixed-point text of a histogram's percentiles, for both report forms. */
static void hist_text(FILE *out, const char *label, const struct hist *h)
{
	fprintf(out,
		"  %-18s p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f us  (%" PRIu64
		" samples)\n",
		label, hist_percentile(h, 50) / 1e3, hist_percentile(h, 90) / 1e3,
		hist_percentile(h, 99) / 1e3, hist_percentile(h, 99.9) / 1e3, h->max_ns / 1e3,
		h->total);
}

static void hist_json(FILE *out, const char *prefix, const struct hist *h)
{
	fprintf(out,
		",\"%sp50_us\":%.1f,\"%sp90_us\":%.1f,\"%sp99_us\":%.1f,\"%sp999_us\":%.1f,"
		"\"%smax_us\":%.1f",
		prefix, hist_percentile(h, 50) / 1e3, prefix, hist_percentile(h, 90) / 1e3, prefix,
		hist_percentile(h, 99) / 1e3, prefix, hist_percentile(h, 99.9) / 1e3, prefix,
		h->max_ns / 1e3);
}

/* ---------------------------------------------------------------------
 * Options and helpers.
 * ------------------------------------------------------------------- */

enum bench_target { TARGET_RINGCHAT, TARGET_REDIS, TARGET_BOTH };

struct bench_opts {
	const char *scenario;
	const char *host;
	uint16_t port;
	int connections;
	int window;
	int duration_s;
	int warmup_s;
	int threads;
	long server_pids[BENCH_MAX_PIDS]; /* CPU is summed over them */
	int nserver_pids;
	bool json;
	/* ping */
	long requests; /* 0 = run for the duration */
	/* chat, group, login, signup, offline */
	int users;
	int groups;
	int members;
	int messages;
	int size;
	double rate; /* msgs/s over all senders; 0 = closed loop */
	long tick_us; /* open loop: wake at most once per tick; 0 = at each due time */
	bool uring;   /* chat/group: the io_uring engine (--engine) */
	enum bench_target target;
	const char *redis_host;
	uint16_t redis_port;
	long redis_pid;	 /* CPU of the Redis runs; 0 = none */
	char prefix[16]; /* usernames are prefix_<n>: unique per run */
	/* Which options were given, for per-scenario defaults. */
	bool set_window, set_connections, set_duration, set_warmup;
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

static void bench_sleep_ms(int ms)
{
	bench_sleep_until(bench_now_ns() + (uint64_t)ms * 1000000ull);
}

/* With --json the human summary goes to stderr: stdout is the JSON line. */
static FILE *bench_text_out(const struct bench_opts *o)
{
	return o->json ? stderr : stdout;
}

/* ---------------------------------------------------------------------
 * Server CPU: utime + stime of /proc/PID/stat, in seconds; memory: VmRSS.
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

/* CPU seconds of every --server-pid together; false if one is unreadable. */
static bool bench_cpu(const struct bench_opts *o, double *cpu_s)
{
	double sum = 0, one;
	int i;

	if (o->nserver_pids == 0)
		return false;
	for (i = 0; i < o->nserver_pids; i++) {
		if (bench_proc_cpu_s(o->server_pids[i], &one)) {
			fprintf(stderr, "ringchat-bench: cannot read /proc/%ld/stat\n",
				o->server_pids[i]);
			return false;
		}
		sum += one;
	}
	*cpu_s = sum;
	return true;
}

/* VmRSS of pid in bytes, or -errno. */
static long long bench_proc_rss(long pid)
{
	char path[64], line[256];
	long long kb = -EIO;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
			break;
	fclose(f);
	return kb < 0 ? kb : kb * 1024;
}

/* Window [t0, t1) of a measurement and the server CPU spent in it. */
struct bench_cpu_span {
	bool have;
	double cpu0, cpu_s;
	double self0, self_s; /* this process: the load generator's own cost */
};

static double bench_self_cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) == -1)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void bench_cpu_begin(const struct bench_opts *o, struct bench_cpu_span *s)
{
	s->have = bench_cpu(o, &s->cpu0);
	s->cpu_s = 0;
	s->self0 = bench_self_cpu_s();
	s->self_s = 0;
}

static void bench_cpu_end(const struct bench_opts *o, struct bench_cpu_span *s)
{
	double cpu1;

	s->self_s = bench_self_cpu_s() - s->self0;
	if (s->have && bench_cpu(o, &cpu1))
		s->cpu_s = cpu1 - s->cpu0;
	else
		s->have = false;
}

static void bench_cpu_text(FILE *out, const struct bench_cpu_span *s, double events,
			   const char *what)
{
	if (!s->have) {
		fprintf(out, "  load generator cpu %.2f s\n", s->self_s);
		return;
	}
	fprintf(out, "  server cpu %.2f s  %.1f %s per cpu-second  (load generator cpu %.2f s)\n",
		s->cpu_s, s->cpu_s > 0 ? events / s->cpu_s : 0, what, s->self_s);
}

static void bench_cpu_json(FILE *out, const struct bench_cpu_span *s, double events,
			   const char *what)
{
	fprintf(out, ",\"generator_cpu_s\":%.2f", s->self_s);
	if (!s->have)
		return;
	fprintf(out, ",\"server_cpu_s\":%.2f,\"%s_per_cpu_s\":%.1f", s->cpu_s, what,
		s->cpu_s > 0 ? events / s->cpu_s : 0);
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

static int bench_resolve(const char *host, uint16_t port, struct sockaddr_storage *sa,
			 socklen_t *len)
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

/*
 * Opens n connected, non-blocking TCP_NODELAY sockets to host:port into
 * fds[], each bound to source address src first when src is not NULL (a
 * loopback address of its own gives a process its own range of source
 * ports). Returns 0, or -errno after closing whatever it opened.
 */
static int bench_connect_all(const char *host, uint16_t port, const struct sockaddr_in *src,
			     int *fds, int n)
{
	struct epoll_event evs[BENCH_CONNECT_BATCH];
	struct sockaddr_storage sa;
	socklen_t salen;
	int ep, done = 0, i = 0, rc;

	rc = bench_resolve(host, port, &sa, &salen);
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

/* Progress line on stderr: "[  5.0s] what". */
static void bench_progress(uint64_t t0, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bench_progress(uint64_t t0, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "[%6.1fs] ", (double)(bench_now_ns() - t0) / 1e9);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
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
	long quota; /* PINGs this thread may still send; -1 = no limit */
	/* Results, read by main after the join. */
	struct hist hist;
	uint64_t errors;   /* responses with a non-OK code */
	uint64_t lost;	   /* connections the node closed */
	uint64_t bad;	   /* protocol surprises: bad magic, wrong seq */
	uint64_t ended_ns; /* when the thread stopped (early when all were lost) */
	/* Progress, read by main while the thread runs (relaxed: statistics). */
	_Atomic uint64_t prog;
	_Atomic bool done;
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
	while (c->inflight < window && t->quota != 0) {
		uint32_t slot = (c->fifo_head + c->inflight) % window;

		if (t->quota > 0)
			t->quota--;
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
		atomic_store_explicit(&t->prog, t->hist.total, memory_order_relaxed);
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
		if (t->quota == 0) {
			bool idle = true;

			/* --requests: done once the last answer is in. */
			for (i = 0; i < t->nconns && idle; i++)
				idle = t->conns[i].dead || t->conns[i].inflight == 0;
			if (idle)
				break;
		}
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
	atomic_store_explicit(&t->done, true, memory_order_release);
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
	struct bench_cpu_span cpu;
};

static void bench_report(const struct bench_opts *o, const struct bench_result *r)
{
	double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
	FILE *out = bench_text_out(o);

	fprintf(out,
		"%s: %d connections, window %d, %d thread%s, %.2f s measured after %d s warm-up\n",
		o->scenario, o->connections, o->window, o->threads, o->threads == 1 ? "" : "s",
		r->seconds, o->warmup_s);
	fprintf(out,
		"  requests %" PRIu64 "  rps %.1f  errors %" PRIu64 "  lost connections %" PRIu64
		"\n",
		r->requests, rps, r->errors, r->lost);
	hist_text(out, "latency", r->hist);
	bench_cpu_text(out, &r->cpu, (double)r->requests, "requests");
	fflush(out);
	if (!o->json)
		return;
	printf("{\"scenario\":\"%s\",\"connections\":%d,\"window\":%d,\"duration_s\":%d,"
	       "\"seconds\":%.3f,\"requests\":%" PRIu64 ",\"rps\":%.1f",
	       o->scenario, o->connections, o->window, o->duration_s, r->seconds, r->requests, rps);
	hist_json(stdout, "", r->hist);
	printf(",\"errors\":%" PRIu64 ",\"lost_connections\":%" PRIu64 ",\"threads\":%d", r->errors,
	       r->lost, o->threads);
	bench_cpu_json(stdout, &r->cpu, (double)r->requests, "requests");
	printf("}\n");
	fflush(stdout);
}

static int bench_scenario_ping(const struct bench_opts *o)
{
	struct bench_thread *threads = calloc((size_t)o->threads, sizeof(*threads));
	struct bench_conn *conns = calloc((size_t)o->connections, sizeof(*conns));
	int *fds = malloc((size_t)o->connections * sizeof(*fds));
	struct bench_result res = {0};
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
	err = bench_connect_all(o->host, o->port, NULL, fds, o->connections);
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
		/* --requests split evenly, the remainder to the first threads. */
		t->quota =
		    o->requests ? o->requests / o->threads + (i < o->requests % o->threads) : -1;
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
	if (started == o->threads) {
		uint64_t next_progress = t0 + BENCH_PROGRESS_NS, last = 0, last_t = start;
		bool all = false;

		bench_sleep_until(start);
		bench_cpu_begin(o, &res.cpu);
		while (!all) {
			uint64_t now = bench_now_ns(), sum = 0;

			all = true;
			for (i = 0; i < started; i++) {
				all = all &&
				      atomic_load_explicit(&threads[i].done, memory_order_acquire);
				sum += atomic_load_explicit(&threads[i].prog, memory_order_relaxed);
			}
			if (!all && now >= next_progress && now > last_t) {
				bench_progress(t0, "requests %" PRIu64 " (%.0f/s)", sum,
					       (double)(sum - last) * 1e9 / (double)(now - last_t));
				last = sum;
				last_t = now;
				next_progress += BENCH_PROGRESS_NS;
			}
			if (!all)
				bench_sleep_ms(20);
		}
	}
	for (i = 0; i < started; i++)
		pthread_join(threads[i].tid, NULL);
	bench_cpu_end(o, &res.cpu);
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
 * Generic connections of the message scenarios: a growable read buffer,
 * a growable write buffer flushed as far as the socket takes it (EPOLLOUT
 * armed for the rest), frames cut out of the read buffer in place.
 * Redis connections use the same buffers and a hiredis reader.
 * ------------------------------------------------------------------- */

enum bconn_role { ROLE_IDLE = 0, ROLE_SENDER, ROLE_RECIPIENT };

struct bconn {
	int fd;
	uint8_t role;
	bool dead;
	bool want_out; /* EPOLLOUT armed */
	uint32_t next_seq;
	uint8_t *rbuf;
	size_t rlen, rcap;
	uint8_t *wbuf;
	size_t woff, wlen, wcap;
	redisReader *rr; /* Redis connections only */
	/* io_uring engine: the bytes of the send in flight live in sbuf, so
	 * appending to wbuf (which may move it) never touches them. */
	uint8_t *sbuf;
	size_t soff, slen, scap;
	bool recv_armed, send_armed;

	/* Who this is. */
	int index;
	int64_t user_id;
	int64_t peer; /* sender: the recipient's user_id or the group_id; Redis: channel */

	/* Sender: the window of requests in flight, FIFO by fifo_head. */
	uint32_t inflight, fifo_head;
	uint64_t *sent_ns;
	uint64_t next_due_ns, interval_ns; /* open loop */
	long quota;			   /* messages left to send; -1 = no limit */
	uint64_t paused_until_ns;	   /* after RATE_LIMITED: retry_after_ms */

	/* Recipient: msg_ids to acknowledge. */
	int64_t acks[BENCH_ACK_BATCH];
	uint32_t nacks;
	uint64_t ack_first_ns;

	/* Step engine. */
	uint32_t step;
	uint32_t wait_seq;
	bool busy, finished, retrying;
	uint64_t retry_at_ns, step_t0_ns;
};

static int bench_grow(uint8_t **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 512;
	uint8_t *nb;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	nb = realloc(*buf, ncap);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = ncap;
	return 0;
}

static int bconn_append(struct bconn *c, const void *p, size_t n)
{
	if (c->woff > 0 && c->woff == c->wlen)
		c->woff = c->wlen = 0;
	if (c->wlen + n > c->wcap) {
		if (c->woff > 0) {
			memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
			c->wlen -= c->woff;
			c->woff = 0;
		}
		if (bench_grow(&c->wbuf, &c->wcap, c->wlen + n))
			return -ENOMEM;
	}
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
	return 0;
}

/* Appends one request frame; returns its seq (0 when out of memory). */
static uint32_t bconn_put_frame(struct bconn *c, uint16_t cmd, const char *payload, size_t len)
{
	struct frame_hdr h = {
	    .magic = FRAME_MAGIC,
	    .version = FRAME_VERSION,
	    .cmd = cmd,
	    .seq = c->next_seq,
	    .len = (uint32_t)len,
	};
	uint8_t hb[FRAME_HDR_BYTES];

	c->next_seq = c->next_seq == UINT32_MAX ? 1 : c->next_seq + 1;
	frame_hdr_encode(hb, &h);
	if (bconn_append(c, hb, sizeof(hb)) || (len && bconn_append(c, payload, len)))
		return 0;
	return h.seq;
}

static void bconn_arm(struct bconn *c, int ep, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};

	if (c->want_out == out)
		return;
	c->want_out = out;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends what wbuf holds. 0 (EPOLLOUT armed for any rest), or -errno. */
static int bconn_flush(struct bconn *c, int ep)
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
			bconn_arm(c, ep, true);
			return 0;
		}
		return w == -1 ? -errno : -EPIPE;
	}
	c->woff = c->wlen = 0;
	bconn_arm(c, ep, false);
	return 0;
}

/* Reads once. >0 bytes read, 0 nothing there, -ENOTCONN at EOF, -errno. */
static int bconn_fill(struct bconn *c)
{
	ssize_t r;

	if (c->rcap - c->rlen < 4096 && bench_grow(&c->rbuf, &c->rcap, c->rlen + 16384))
		return -ENOMEM;
	r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	if (r > 0) {
		c->rlen += (size_t)r;
		return (int)r;
	}
	if (r == 0)
		return -ENOTCONN;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return -errno;
}

/*
 * The complete frame at *off in rbuf, if any: 1 with h and payload (not
 * NUL-terminated; valid until bconn_consume), 0 when incomplete, -EPROTO
 * for a stream that is not protocol v1.
 */
static int bconn_frame(const struct bconn *c, size_t *off, struct frame_hdr *h,
		       const char **payload)
{
	if (c->rlen - *off < FRAME_HDR_BYTES)
		return 0;
	frame_hdr_decode(c->rbuf + *off, h);
	if (h->magic != FRAME_MAGIC || h->len > FRAME_MAX_OUT_BYTES)
		return -EPROTO;
	if (c->rlen - *off < FRAME_HDR_BYTES + (size_t)h->len)
		return 0;
	*payload = (const char *)c->rbuf + *off + FRAME_HDR_BYTES;
	*off += FRAME_HDR_BYTES + h->len;
	return 1;
}

/* Drops rbuf[0..off): the frames handled. */
static void bconn_consume(struct bconn *c, size_t off)
{
	if (off == 0)
		return;
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

static void bconn_free(struct bconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->rbuf);
	free(c->wbuf);
	free(c->sbuf);
	free(c->sent_ns);
	if (c->rr)
		redisReaderFree(c->rr);
	c->rbuf = c->wbuf = c->sbuf = NULL;
	c->sent_ns = NULL;
	c->rr = NULL;
}

static void bconns_free(struct bconn *conns, int n)
{
	int i;

	if (!conns)
		return;
	for (i = 0; i < n; i++)
		bconn_free(&conns[i]);
	free(conns);
}

/*
 * n connections to host:port in a new array (fd set, seq 1, index i), or
 * NULL after printing why.
 */
static struct bconn *bconns_open(const char *host, uint16_t port, int n, bool redis)
{
	struct bconn *conns = calloc((size_t)n, sizeof(*conns));
	int *fds = malloc((size_t)n * sizeof(*fds));
	int i, err;

	if (!conns || !fds) {
		fprintf(stderr, "ringchat-bench: out of memory\n");
		goto out_free;
	}
	if (bench_raise_fd_limit(n + BENCH_SPARE_FDS))
		goto out_free;
	err = bench_connect_all(host, port, NULL, fds, n);
	if (err) {
		fprintf(stderr, "ringchat-bench: cannot open %d connections to %s:%u: %s\n", n,
			host, port, strerror(-err));
		goto out_free;
	}
	for (i = 0; i < n; i++) {
		conns[i].fd = fds[i];
		conns[i].next_seq = 1;
		conns[i].index = i;
		conns[i].quota = -1;
		if (redis && !(conns[i].rr = redisReaderCreate())) {
			fprintf(stderr, "ringchat-bench: out of memory\n");
			free(fds);
			bconns_free(conns, n);
			return NULL;
		}
	}
	free(fds);
	return conns;

out_free:
	free(fds);
	free(conns);
	return NULL;
}

/* Integer value of "key" in a JSON object's text; 0 when absent. */
static int64_t bench_json_int(const char *p, size_t n, const char *key)
{
	char pat[48];
	int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
	const char *k = memmem(p, n, pat, (size_t)pl), *end = p + n;
	int64_t v = 0;

	if (!k)
		return 0;
	k += pl;
	while (k < end && (*k == ' ' || *k == ':'))
		k++;
	while (k < end && *k >= '0' && *k <= '9')
		v = v * 10 + (*k++ - '0');
	return v;
}

/* The send stamp of a message text "t=<ns>;..." inside p; 0 if none. */
static uint64_t bench_stamp(const char *p, size_t n)
{
	const char *k = memmem(p, n, "t=", 2), *end = p + n;
	uint64_t v = 0;

	if (!k)
		return 0;
	for (k += 2; k < end && *k >= '0' && *k <= '9'; k++)
		v = v * 10 + (uint64_t)(*k - '0');
	return v;
}

/* A message text of size bytes carrying stamp; returns its length. */
static int bench_text(char *out, int size, uint64_t stamp)
{
	int n = snprintf(out, BENCH_STAMP_BYTES + 1, "t=%020" PRIu64 ";", stamp);

	if (size > n)
		memset(out + n, 'x', (size_t)(size - n));
	out[size > n ? size : n] = '\0';
	return size > n ? size : n;
}

/* ---------------------------------------------------------------------
 * Step engine: every connection runs a short script of requests (sign
 * up, log in, send a friend request, ...), one request at a time, all
 * connections at once, at most `busy_max` of them in the middle of their
 * script. RATE_LIMITED answers (signups and logins are shed when the node
 * is busy) wait their retry_after_ms and go again; any other failure
 * stops the run. Pushes that arrive meanwhile are skipped.
 *
 *   idle ──start──► busy ──answer──► busy (next step) ... ──► finished
 *                    │  ▲
 *          RATE_LIMITED └── retry_at passed
 * ------------------------------------------------------------------- */

struct bsteps;
/*
 * Builds step c->step of connection c: the command into *cmd, the payload
 * into buf (cap bytes). Returns the payload length, or -1 when c has no
 * more steps.
 */
typedef int (*bsteps_build_fn)(struct bsteps *s, struct bconn *c, uint16_t *cmd, char *buf,
			       size_t cap);
/* Takes a non-RATE_LIMITED answer. 0 goes on, -1 stops the run. */
typedef int (*bsteps_reply_fn)(struct bsteps *s, struct bconn *c, const struct frame_hdr *h,
			       const char *payload);

struct bsteps {
	const char *what; /* for progress and errors */
	struct bconn *conns;
	int n;
	int busy_max; /* 0: all at once */
	bsteps_build_fn build;
	bsteps_reply_fn reply;
	void *ctx;
	struct hist *hist; /* time of each step from its first try; may be NULL */
	/* Results. */
	uint64_t steps_done, rate_limited;
	double seconds;
};

/* Default answer check: OK or stop, printing the node's error. */
static int bsteps_expect_ok(struct bsteps *s, struct bconn *c, const struct frame_hdr *h,
			    const char *payload)
{
	if (h->code == ST_OK)
		return 0;
	fprintf(stderr, "ringchat-bench: %s: connection %d step %u: %s: %.*s\n", s->what, c->index,
		c->step, rc_status_name(h->code), (int)h->len, payload);
	return -1;
}

/* Sends c's current step, or marks it finished. -1 when c cannot send. */
static int bsteps_send(struct bsteps *s, struct bconn *c, int ep)
{
	static char buf[BENCH_TEXT_MAX + 512];
	uint16_t cmd = 0;
	int len = s->build(s, c, &cmd, buf, sizeof(buf));

	if (len < 0) {
		c->finished = true;
		c->busy = false;
		return 0;
	}
	c->wait_seq = bconn_put_frame(c, cmd, buf, (size_t)len);
	c->busy = true;
	c->retrying = false;
	if (c->wait_seq == 0 || bconn_flush(c, ep)) {
		fprintf(stderr, "ringchat-bench: %s: connection %d: send failed\n", s->what,
			c->index);
		return -1;
	}
	return 0;
}

static int bsteps_run(struct bsteps *s)
{
	struct epoll_event evs[BENCH_EPOLL_EVENTS];
	uint64_t t0 = bench_now_ns(), next_progress = t0 + BENCH_PROGRESS_NS, now;
	uint64_t deadline = t0 + BENCH_SETUP_TIMEOUT_S * 1000000000ull;
	int ep, i, busy = 0, started = 0, finished = 0, retrying = 0, rc = -1;
	int busy_max = s->busy_max > 0 ? s->busy_max : s->n;

	s->steps_done = s->rate_limited = 0;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep == -1)
		return -1;
	for (i = 0; i < s->n; i++) {
		struct bconn *c = &s->conns[i];
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

		c->step = 0;
		c->busy = c->finished = c->retrying = false;
		c->want_out = false;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) == -1)
			goto out_close_ep;
	}
	for (;;) {
		int n, timeout = 100;

		/* Start idle connections while there is room. */
		while (busy < busy_max && started < s->n) {
			struct bconn *c = &s->conns[started++];

			c->step_t0_ns = bench_now_ns();
			if (bsteps_send(s, c, ep))
				goto out_close_ep;
			if (c->finished)
				finished++;
			else
				busy++;
		}
		if (finished == s->n)
			break;
		now = bench_now_ns();
		if (now > deadline) {
			fprintf(stderr,
				"ringchat-bench: %s: not done after %d s (%d of %d finished)\n",
				s->what, BENCH_SETUP_TIMEOUT_S, finished, s->n);
			goto out_close_ep;
		}
		if (now >= next_progress) {
			bench_progress(t0,
				       "%s: %d of %d connections done, %" PRIu64 " RATE_LIMITED",
				       s->what, finished, s->n, s->rate_limited);
			next_progress += BENCH_PROGRESS_NS;
		}
		if (retrying > 0)
			timeout = 10;
		n = epoll_wait(ep, evs, BENCH_EPOLL_EVENTS, timeout);
		if (n == -1 && errno != EINTR)
			goto out_close_ep;
		now = bench_now_ns();
		for (i = 0; i < n; i++) {
			struct bconn *c = evs[i].data.ptr;
			struct frame_hdr h;
			const char *p;
			size_t off = 0;
			int k, r;

			if (evs[i].events & EPOLLOUT && (r = bconn_flush(c, ep)) != 0)
				goto out_lost;
			if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				continue;
			r = bconn_fill(c);
			if (r < 0)
				goto out_lost;
			while ((k = bconn_frame(c, &off, &h, &p)) == 1) {
				if (h.seq == 0 && h.cmd != CMD_NONE)
					continue; /* a push */
				if (!c->busy || c->retrying || h.seq != c->wait_seq) {
					fprintf(stderr,
						"ringchat-bench: %s: connection %d: unexpected "
						"answer %s seq %u: %.*s\n",
						s->what, c->index, rc_status_name(h.code), h.seq,
						(int)h.len, p);
					goto out_close_ep;
				}
				if (h.code == ST_RATE_LIMITED) {
					int64_t ms = bench_json_int(p, h.len, "retry_after_ms");

					s->rate_limited++;
					c->retrying = true;
					c->retry_at_ns =
					    now + (uint64_t)(ms > 0 ? ms : 100) * 1000000ull;
					retrying++;
					continue;
				}
				if (s->reply(s, c, &h, p))
					goto out_close_ep;
				if (s->hist)
					hist_record(s->hist, now - c->step_t0_ns);
				s->steps_done++;
				c->step++;
				c->step_t0_ns = now;
				if (bsteps_send(s, c, ep))
					goto out_close_ep;
				if (c->finished) {
					finished++;
					busy--;
				}
			}
			if (k < 0) {
				fprintf(stderr, "ringchat-bench: %s: bad frame from the node\n",
					s->what);
				goto out_close_ep;
			}
			bconn_consume(c, off);
			continue;
		out_lost:
			fprintf(stderr, "ringchat-bench: %s: connection %d lost: %s\n", s->what,
				c->index, r == -ENOTCONN ? "closed by the node" : strerror(-r));
			goto out_close_ep;
		}
		if (retrying > 0) {
			retrying = 0;
			for (i = 0; i < started; i++) {
				struct bconn *c = &s->conns[i];

				if (!c->retrying)
					continue;
				if (c->retry_at_ns > now) {
					retrying++;
					continue;
				}
				if (bsteps_send(s, c, ep))
					goto out_close_ep;
			}
		}
	}
	rc = 0;
out_close_ep:
	for (i = 0; i < s->n; i++)
		s->conns[i].want_out = false;
	close(ep);
	s->seconds = (double)(bench_now_ns() - t0) / 1e9;
	return rc;
}

/* ---------------------------------------------------------------------
 * Users for the message scenarios: sign up and log in every connection,
 * then pair them (chat: FRIEND_REQUEST + FRIEND_ACCEPT) or group them
 * (group: GROUP_CREATE by the first of each group, GROUP_JOIN by the rest).
 * ------------------------------------------------------------------- */

enum users_phase { PH_LOGIN = 1, PH_SIGNUP_ONLY, PH_LOGIN_ONLY, PH_LINK, PH_ACCEPT };

struct users_ctx {
	const struct bench_opts *o;
	enum users_phase phase;
	bool group;    /* GROUP_CREATE/JOIN instead of friend requests */
	int members;   /* group: connections per group */
	int stride;    /* signup storm: user index = index + step * stride */
	int users;     /* signup storm: how many in all */
	int64_t *gids; /* group: group_id of each group */
};

static void users_name(const struct bench_opts *o, int i, char *out, size_t n)
{
	snprintf(out, n, "%s_%d", o->prefix, i);
}

/* The partner of chat connection i: senders are even, recipients odd. */
static int users_partner(int i)
{
	return i ^ 1;
}

static int users_build(struct bsteps *s, struct bconn *c, uint16_t *cmd, char *buf, size_t cap)
{
	struct users_ctx *x = s->ctx;
	char name[40];
	int user = c->index;

	switch (x->phase) {
	case PH_SIGNUP_ONLY:
		user = c->index + (int)c->step * x->stride;
		if (user >= x->users)
			return -1;
		users_name(x->o, user, name, sizeof(name));
		*cmd = CMD_SIGNUP;
		return snprintf(buf, cap, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
				BENCH_PASSWORD);
	case PH_LOGIN:
	case PH_LOGIN_ONLY:
		if (c->step > (x->phase == PH_LOGIN ? 1u : 0u))
			return -1;
		users_name(x->o, user, name, sizeof(name));
		*cmd = x->phase == PH_LOGIN && c->step == 0 ? CMD_SIGNUP : CMD_LOGIN;
		return snprintf(buf, cap, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
				BENCH_PASSWORD);
	case PH_LINK:
		if (c->step > 0)
			return -1;
		if (x->group) {
			if (c->index % x->members != 0)
				return -1;
			*cmd = CMD_GROUP_CREATE;
			return snprintf(buf, cap, "{\"name\":\"%s-g%d\"}", x->o->prefix,
					c->index / x->members);
		}
		if (c->role != ROLE_SENDER)
			return -1;
		*cmd = CMD_FRIEND_REQUEST;
		return snprintf(buf, cap, "{\"user_id\":%" PRId64 "}",
				s->conns[users_partner(c->index)].user_id);
	case PH_ACCEPT:
		if (c->step > 0)
			return -1;
		if (x->group) {
			if (c->index % x->members == 0)
				return -1;
			*cmd = CMD_GROUP_JOIN;
			return snprintf(buf, cap, "{\"group_id\":%" PRId64 "}",
					x->gids[c->index / x->members]);
		}
		if (c->role != ROLE_RECIPIENT)
			return -1;
		*cmd = CMD_FRIEND_ACCEPT;
		return snprintf(buf, cap, "{\"user_id\":%" PRId64 "}",
				s->conns[users_partner(c->index)].user_id);
	}
	return -1;
}

static int users_reply(struct bsteps *s, struct bconn *c, const struct frame_hdr *h,
		       const char *payload)
{
	struct users_ctx *x = s->ctx;

	if (bsteps_expect_ok(s, c, h, payload))
		return -1;
	if (h->cmd == CMD_LOGIN)
		c->user_id = bench_json_int(payload, h->len, "user_id");
	if (h->cmd == CMD_GROUP_CREATE)
		x->gids[c->index / x->members] = bench_json_int(payload, h->len, "group_id");
	return 0;
}

/* Runs one phase over conns; prints how long it took. 0 or -1. */
static int users_phase_run(struct users_ctx *x, enum users_phase ph, const char *what,
			   struct bconn *conns, int n, int busy_max, uint64_t *rate_limited)
{
	struct bsteps s = {
	    .what = what,
	    .conns = conns,
	    .n = n,
	    .busy_max = busy_max,
	    .build = users_build,
	    .reply = users_reply,
	    .ctx = x,
	};

	x->phase = ph;
	if (bsteps_run(&s))
		return -1;
	if (rate_limited)
		*rate_limited += s.rate_limited;
	fprintf(stderr,
		"ringchat-bench: %s: %" PRIu64 " requests in %.2f s (%" PRIu64
		" RATE_LIMITED retries)\n",
		what, s.steps_done, s.seconds, s.rate_limited);
	return 0;
}

/* ---------------------------------------------------------------------
 * Message load (chat, group, offline's sender), on Ringchat or Redis.
 *
 * Sender: keeps `window` messages in flight. Closed loop: a new one goes
 * out as soon as an answer comes back, stamped now. Open loop (--rate):
 * message k of a sender is due at first_due + k * interval and is stamped
 * with that time whenever it really leaves (a full window delays it; the
 * delay shows in the latency). Answers come back in order, so the FIFO of
 * stamps gives send→OK (Ringchat: MSG_SEND/GROUP_SEND OK, i.e. stored;
 * Redis: PUBLISH's reply).
 *
 * Recipient: every PUSH_MSG (Redis: every "message") gives send→delivery
 * from the stamp in its text; Ringchat recipients ack with MSG_ACK every
 * BENCH_ACK_BATCH messages or BENCH_ACK_NS, as a client would.
 *
 * Events count when they happen inside [start, end): the warm-up and the
 * tail are not measured.
 * ------------------------------------------------------------------- */

struct load_spec {
	bool redis;
	bool group; /* GROUP_SEND to peer as group_id */
	int window;
	int size;
	uint64_t tick_ns;	 /* open loop: see bench_opts.tick_us */
	bool uring;		 /* the io_uring engine instead of epoll */
	const char *chan_prefix; /* Redis channel names: prefix:<peer> */
};

struct load_thread {
	pthread_t tid;
	const struct load_spec *spec;
	int ep;			/* epoll engine */
	struct io_uring ring;	/* io_uring engine (spec->uring) */
	uint32_t ring_inflight; /* receives and sends the kernel holds */
	bool stopping;		/* cancelling: completions are only counted */
	struct bconn **conns;
	int nconns;
	uint64_t start_ns, end_ns;
	bool open_loop;
	bool quota_mode; /* stop once every sender has used its quota */
	/* Results, read by main after the join. */
	struct hist ok_hist, dlv_hist;
	uint64_t sent, ok, errors, rate_limited, delivered, ack_errors, lost, bad;
	uint64_t ended_ns;
	/* Progress, read by main while the thread runs (relaxed: statistics). */
	_Atomic uint64_t prog_ok, prog_dlv;
	_Atomic bool done;
};

static void load_kill(struct load_thread *t, struct bconn *c, const char *why)
{
	if (c->dead)
		return;
	if (t->lost + t->bad < 5)
		fprintf(stderr, "ringchat-bench: connection lost: %s\n", why);
	c->dead = true;
	if (!t->spec->uring)
		epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
	t->lost++;
}

/* ---- the io_uring engine --------------------------------------------------
 * One ring per load thread; every connection keeps one receive and at most
 * one send in the kernel, and a loop turn submits all of them with the wait
 * in one io_uring_enter: the sends of a tick cost one system call instead
 * of one each. user_data is the connection's address with the operation in
 * its low bits (struct bconn is 8-aligned). */
enum { LU_CANCEL = 0, LU_RECV = 1, LU_SEND = 2 };

static struct io_uring_sqe *lu_sqe(struct load_thread *t)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);

	if (!sqe && io_uring_submit(&t->ring) >= 0)
		sqe = io_uring_get_sqe(&t->ring);
	return sqe;
}

static void lu_arm_recv(struct load_thread *t, struct bconn *c)
{
	struct io_uring_sqe *sqe;

	if (c->dead || c->recv_armed || t->stopping)
		return;
	if (c->rcap - c->rlen < 4096 && bench_grow(&c->rbuf, &c->rcap, c->rlen + 16384)) {
		load_kill(t, c, "out of memory");
		return;
	}
	sqe = lu_sqe(t);
	if (!sqe) {
		load_kill(t, c, "io_uring submission queue stuck");
		return;
	}
	io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | LU_RECV);
	c->recv_armed = true;
	t->ring_inflight++;
}

static void lu_arm_send(struct load_thread *t, struct bconn *c)
{
	struct io_uring_sqe *sqe;

	if (c->dead || c->send_armed)
		return;
	if (c->soff == c->slen) {
		/* the last send is done: what wbuf holds becomes the next one */
		uint8_t *b = c->sbuf;
		size_t cap = c->scap;

		if (c->woff == c->wlen)
			return;
		c->sbuf = c->wbuf;
		c->scap = c->wcap;
		c->soff = c->woff;
		c->slen = c->wlen;
		c->wbuf = b;
		c->wcap = cap;
		c->woff = c->wlen = 0;
	}
	sqe = lu_sqe(t);
	if (!sqe) {
		load_kill(t, c, "io_uring submission queue stuck");
		return;
	}
	io_uring_prep_send(sqe, c->fd, c->sbuf + c->soff, c->slen - c->soff, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | LU_SEND);
	c->send_armed = true;
	t->ring_inflight++;
}

static void load_flush(struct load_thread *t, struct bconn *c)
{
	int err;

	if (t->spec->uring) {
		lu_arm_send(t, c);
		return;
	}
	err = bconn_flush(c, t->ep);
	if (err)
		load_kill(t, c, strerror(-err));
}

/* Appends one message stamped `stamp` to c's write buffer. */
static void load_put_msg(struct load_thread *t, struct bconn *c, uint64_t stamp)
{
	const struct load_spec *sp = t->spec;
	char text[BENCH_TEXT_MAX + 1], head[BENCH_TEXT_MAX + 160];
	int tl = bench_text(text, sp->size, stamp), n;
	uint32_t slot = (c->fifo_head + c->inflight) % (uint32_t)sp->window;

	if (sp->redis) {
		char ch[64];
		int chl = snprintf(ch, sizeof(ch), "%s:%" PRId64, sp->chan_prefix, c->peer);

		n = snprintf(head, sizeof(head), "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n", chl,
			     ch, tl);
		if (bconn_append(c, head, (size_t)n) || bconn_append(c, text, (size_t)tl) ||
		    bconn_append(c, "\r\n", 2)) {
			load_kill(t, c, "out of memory");
			return;
		}
	} else {
		n = snprintf(head, sizeof(head), "{\"%s\":%" PRId64 ",\"type\":0,\"text\":\"%s\"}",
			     sp->group ? "group_id" : "to", c->peer, text);
		if (!bconn_put_frame(c, sp->group ? CMD_GROUP_SEND : CMD_MSG_SEND, head,
				     (size_t)n)) {
			load_kill(t, c, "out of memory");
			return;
		}
	}
	c->sent_ns[slot] = stamp;
	c->inflight++;
	if (c->quota > 0)
		c->quota--;
	t->sent++;
}

/* Closed loop: tops the window up, stamped now. */
static void load_refill(struct load_thread *t, struct bconn *c, uint64_t now)
{
	while (!c->dead && c->inflight < (uint32_t)t->spec->window && c->quota != 0 &&
	       now < t->end_ns && now >= c->paused_until_ns)
		load_put_msg(t, c, now);
	load_flush(t, c);
}

/* Open loop: sends what is due, stamped with when it was due. */
static void load_due(struct load_thread *t, struct bconn *c, uint64_t now)
{
	bool any = false;

	while (!c->dead && c->inflight < (uint32_t)t->spec->window && c->next_due_ns <= now &&
	       c->next_due_ns < t->end_ns && c->quota != 0 && now >= c->paused_until_ns) {
		load_put_msg(t, c, c->next_due_ns);
		c->next_due_ns += c->interval_ns;
		any = true;
	}
	if (any)
		load_flush(t, c);
}

/*
 * An answer to the oldest message in flight. RATE_LIMITED pauses the
 * sender for retry_after_ms (retry_ms) and, when it sends a fixed number
 * of messages, gives the message back to its quota to be sent again.
 */
static void load_answer(struct load_thread *t, struct bconn *c, uint32_t code, int64_t retry_ms,
			uint64_t now)
{
	bool ok = code == ST_OK;
	uint64_t stamp;

	if (c->inflight == 0) {
		t->bad++;
		load_kill(t, c, "an answer nobody asked for");
		return;
	}
	stamp = c->sent_ns[c->fifo_head];
	c->fifo_head = (c->fifo_head + 1) % (uint32_t)t->spec->window;
	c->inflight--;
	if (code == ST_RATE_LIMITED) {
		c->paused_until_ns = now + (uint64_t)(retry_ms > 0 ? retry_ms : 10) * 1000000ull;
		if (c->quota >= 0)
			c->quota++;
		if (now >= t->start_ns && now < t->end_ns)
			t->rate_limited++;
		return;
	}
	if (now < t->start_ns || now >= t->end_ns)
		return;
	if (ok) {
		hist_record(&t->ok_hist, now - stamp);
		t->ok++;
	} else {
		t->errors++;
	}
}

static void load_delivered(struct load_thread *t, uint64_t stamp, uint64_t now)
{
	if (now < t->start_ns || now >= t->end_ns || stamp == 0 || stamp > now)
		return;
	hist_record(&t->dlv_hist, now - stamp);
	t->delivered++;
}

static void load_send_acks(struct load_thread *t, struct bconn *c)
{
	char buf[BENCH_ACK_BATCH * 24 + 32];
	size_t n = 0;
	uint32_t i;

	if (c->nacks == 0 || c->dead)
		return;
	n += (size_t)snprintf(buf, sizeof(buf), "{\"msg_ids\":[");
	for (i = 0; i < c->nacks; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%" PRId64, i ? "," : "",
				      c->acks[i]);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "]}");
	c->nacks = 0;
	if (!bconn_put_frame(c, CMD_MSG_ACK, buf, n))
		load_kill(t, c, "out of memory");
}

static void load_on_frame(struct load_thread *t, struct bconn *c, const struct frame_hdr *h,
			  const char *p, uint64_t now)
{
	if (h->seq == 0 && h->cmd == CMD_NONE) {
		t->bad++;
		load_kill(t, c, "the node refused a frame (BAD_FRAME / FRAME_TOO_LARGE)");
		return;
	}
	if (c->role == ROLE_SENDER) {
		if (h->seq != 0)
			load_answer(t, c, h->code,
				    h->code == ST_RATE_LIMITED
					? bench_json_int(p, h->len, "retry_after_ms")
					: 0,
				    now);
		return;
	}
	if (h->seq != 0) {
		/* The answer to an ack. */
		if (h->code != ST_OK)
			t->ack_errors++;
		return;
	}
	if (h->cmd != CMD_PUSH_MSG)
		return;
	load_delivered(t, bench_stamp(p, h->len), now);
	if (c->nacks == 0)
		c->ack_first_ns = now;
	c->acks[c->nacks++] = bench_json_int(p, h->len, "msg_id");
	if (c->nacks == BENCH_ACK_BATCH)
		load_send_acks(t, c);
}

static void load_on_redis(struct load_thread *t, struct bconn *c, redisReply *r, uint64_t now)
{
	if (c->role == ROLE_SENDER) {
		/* PUBLISH answers with the number of subscribers reached. */
		load_answer(t, c,
			    r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? ST_OK : ST_NOT_FOUND,
			    0, now);
		return;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
	    r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "message") &&
	    r->element[2]->type == REDIS_REPLY_STRING)
		load_delivered(t, bench_stamp(r->element[2]->str, r->element[2]->len), now);
}

/* Handles what rbuf holds: answers, pushes, Redis replies; then sends. */
static void load_parse(struct load_thread *t, struct bconn *c, uint64_t now)
{
	struct frame_hdr h;
	const char *p;
	size_t off = 0;
	int k;

	if (c->rr) {
		void *reply;

		/* hiredis keeps its own copy: rbuf is only a landing area. */
		redisReaderFeed(c->rr, (const char *)c->rbuf, c->rlen);
		c->rlen = 0;
		while (!c->dead) {
			if (redisReaderGetReply(c->rr, &reply) != REDIS_OK) {
				t->bad++;
				load_kill(t, c, "bad RESP from redis");
				return;
			}
			if (!reply)
				break;
			load_on_redis(t, c, reply, now);
			freeReplyObject(reply);
		}
	} else {
		while (!c->dead && (k = bconn_frame(c, &off, &h, &p)) == 1)
			load_on_frame(t, c, &h, p, now);
		if (c->dead)
			return;
		if (k < 0) {
			t->bad++;
			load_kill(t, c, "bad frame from the node");
			return;
		}
		bconn_consume(c, off);
	}
	if (c->role == ROLE_SENDER && !t->open_loop)
		load_refill(t, c, now);
	else
		load_flush(t, c);
}

static void load_read(struct load_thread *t, struct bconn *c, uint64_t now)
{
	int r = bconn_fill(c);

	if (r < 0) {
		load_kill(t, c, r == -ENOTCONN ? "closed by the server" : strerror(-r));
		return;
	}
	if (r > 0)
		load_parse(t, c, now);
}

static void lu_complete(struct load_thread *t, uint64_t ud, int res, uint64_t now)
{
	struct bconn *c = (struct bconn *)(uintptr_t)(ud & ~(uint64_t)3);
	unsigned op = (unsigned)(ud & 3);

	if (op == LU_CANCEL)
		return;
	t->ring_inflight--;
	if (op == LU_RECV)
		c->recv_armed = false;
	else
		c->send_armed = false;
	if (c->dead || t->stopping)
		return;
	if (res == -EAGAIN || res == -EINTR) {
		if (op == LU_RECV)
			lu_arm_recv(t, c);
		else
			lu_arm_send(t, c);
		return;
	}
	if (res < 0 || (op == LU_RECV && res == 0)) {
		load_kill(t, c, res == 0 ? "closed by the server" : strerror(-res));
		return;
	}
	if (op == LU_SEND) {
		c->soff += (size_t)res;
		lu_arm_send(t, c);
		return;
	}
	c->rlen += (size_t)res;
	load_parse(t, c, now);
	lu_arm_recv(t, c);
}

/* Waits for completions until *ts passes, submitting what the last turn
 * queued, and handles them all. */
static void lu_turn(struct load_thread *t, struct timespec *ts, uint64_t *now)
{
	struct __kernel_timespec kts = {.tv_sec = ts->tv_sec, .tv_nsec = ts->tv_nsec};
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, &kts, NULL);
	*now = bench_now_ns();
	io_uring_for_each_cqe(&t->ring, head, cqe)
	{
		lu_complete(t, cqe->user_data, cqe->res, *now);
		n++;
	}
	io_uring_cq_advance(&t->ring, n);
}

/* Sends what is queued (the final acks), then takes every receive back
 * from the kernel before the buffers are freed. Bounded: 2 s. */
static void lu_finish(struct load_thread *t)
{
	uint64_t deadline = bench_now_ns() + 2000000000ull, now;
	struct timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
	bool sending = true;
	int i;

	while (sending && bench_now_ns() < deadline) {
		sending = false;
		for (i = 0; i < t->nconns; i++)
			sending = sending || (!t->conns[i]->dead && t->conns[i]->send_armed);
		if (sending)
			lu_turn(t, &ts, &now);
	}
	t->stopping = true;
	struct io_uring_sqe *sqe = lu_sqe(t);

	if (sqe) {
		io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, LU_CANCEL);
	}
	while (t->ring_inflight > 0 && bench_now_ns() < deadline + 1000000000ull)
		lu_turn(t, &ts, &now);
}

/* True once every sender used its quota and has no answer pending. */
static bool load_quota_done(const struct load_thread *t)
{
	int i;

	for (i = 0; i < t->nconns; i++) {
		const struct bconn *c = t->conns[i];

		if (c->role == ROLE_SENDER && !c->dead && (c->quota != 0 || c->inflight > 0))
			return false;
	}
	return true;
}

static void *load_main(void *arg)
{
	struct load_thread *t = arg;
	struct epoll_event evs[BENCH_EPOLL_EVENTS];
	uint64_t now = bench_now_ns(), last_scan = now;
	int i, n;

	if (t->spec->uring) {
		struct io_uring_params p = {
		    .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			     IORING_SETUP_CQSIZE,
		};
		unsigned entries = 64;

		while (entries < 2u * (unsigned)t->nconns + 16u)
			entries *= 2;
		p.cq_entries = entries * 2;
		int err = io_uring_queue_init_params(entries, &t->ring, &p);

		if (err < 0) {
			/* before 6.1 the kernel knows neither flag: plain ring */
			memset(&p, 0, sizeof(p));
			p.flags = IORING_SETUP_CQSIZE;
			p.cq_entries = entries * 2;
			err = io_uring_queue_init_params(entries, &t->ring, &p);
		}
		if (err < 0) {
			fprintf(stderr, "ringchat-bench: io_uring set-up failed; try --engine epoll\n");
			t->lost = (uint64_t)t->nconns;
			atomic_store_explicit(&t->done, true, memory_order_release);
			return NULL;
		}
		for (i = 0; i < t->nconns; i++)
			lu_arm_recv(t, t->conns[i]);
	}
	for (i = 0; i < t->nconns; i++)
		if (t->conns[i]->role == ROLE_SENDER && !t->open_loop)
			load_refill(t, t->conns[i], now);
	while (now < t->end_ns && t->lost < (uint64_t)t->nconns) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};

		if (t->open_loop) {
			uint64_t first = now + 10000000ull;

			for (i = 0; i < t->nconns; i++) {
				struct bconn *c = t->conns[i];

				if (c->role == ROLE_SENDER && !c->dead &&
				    c->inflight < (uint32_t)t->spec->window &&
				    c->next_due_ns < first)
					first = c->next_due_ns;
			}
			/* Waking at every due time costs a timer interrupt and a
			 * system call per message; on a tick, one wake-up sends all
			 * that is due (still stamped with its due time, so the
			 * lateness counts against the server, not for it). */
			if (t->spec->tick_ns && first > now)
				first = (first + t->spec->tick_ns - 1) / t->spec->tick_ns *
					t->spec->tick_ns;
			ts.tv_nsec = first > now ? (long)(first - now) : 0;
		}
		if (t->spec->uring) {
			lu_turn(t, &ts, &now);
			n = 0;
		} else {
			/* epoll_pwait2: a due time to the microsecond. */
			n = epoll_pwait2(t->ep, evs, BENCH_EPOLL_EVENTS, &ts, NULL);
			now = bench_now_ns();
		}
		for (i = 0; i < n; i++) {
			struct bconn *c = evs[i].data.ptr;

			if (c->dead)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				load_read(t, c, now);
			if (!c->dead && (evs[i].events & EPOLLOUT))
				load_flush(t, c);
		}
		if (t->open_loop)
			for (i = 0; i < t->nconns; i++)
				if (t->conns[i]->role == ROLE_SENDER)
					load_due(t, t->conns[i], now);
		if (now - last_scan >= 10000000ull) {
			last_scan = now;
			for (i = 0; i < t->nconns; i++) {
				struct bconn *c = t->conns[i];

				/* A sender paused by RATE_LIMITED picks up again. */
				if (c->role == ROLE_SENDER && !t->open_loop && !c->dead &&
				    c->paused_until_ns && c->paused_until_ns <= now) {
					c->paused_until_ns = 0;
					load_refill(t, c, now);
				}
				if (c->role == ROLE_RECIPIENT && c->nacks > 0 &&
				    now - c->ack_first_ns >= BENCH_ACK_NS) {
					load_send_acks(t, c);
					load_flush(t, c);
				}
			}
			if (t->quota_mode && load_quota_done(t))
				break;
		}
		atomic_store_explicit(&t->prog_ok, t->ok, memory_order_relaxed);
		atomic_store_explicit(&t->prog_dlv, t->delivered, memory_order_relaxed);
	}
	/* What was received is acked, so the node does not keep it pending. */
	for (i = 0; i < t->nconns; i++) {
		struct bconn *c = t->conns[i];

		if (c->role == ROLE_RECIPIENT && c->nacks > 0) {
			load_send_acks(t, c);
			load_flush(t, c);
		}
	}
	if (t->spec->uring) {
		lu_finish(t);
		io_uring_queue_exit(&t->ring);
	}
	t->ended_ns = now < t->end_ns ? now : t->end_ns;
	atomic_store_explicit(&t->done, true, memory_order_release);
	return NULL;
}

/* The merged result of a load run. */
struct load_result {
	struct hist ok_hist, dlv_hist;
	uint64_t sent, ok, errors, rate_limited, delivered, ack_errors, lost, bad;
	double seconds;
	struct bench_cpu_span cpu;
};

/*
 * Runs the load on conns (senders and recipients, role and peer set):
 * threads get conns[i] for i % nthreads == k, warm-up, then `duration_s`
 * measured (or, quota_mode, until every sender has sent its quota).
 * rate (msgs/s over all senders, 0 = closed loop) spreads the senders'
 * first messages evenly over one interval. Returns 0 with *res filled.
 */
static int load_run(const struct bench_opts *o, const struct load_spec *sp, struct bconn *conns,
		    int n, double rate, bool quota_mode, struct load_result *res)
{
	int nthreads = o->threads < n ? o->threads : n, i, started = 0, senders = 0, si = 0;
	struct load_thread *threads = calloc((size_t)nthreads, sizeof(*threads));
	uint64_t t0, start, end, next_progress, last_ok = 0, last_dlv = 0, last_t;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	if (!threads)
		return -1;
	for (i = 0; i < n; i++) {
		if (conns[i].role != ROLE_SENDER)
			continue;
		senders++;
		conns[i].sent_ns = calloc((size_t)sp->window, sizeof(uint64_t));
		if (!conns[i].sent_ns)
			goto out_free;
		conns[i].inflight = conns[i].fifo_head = 0;
	}
	t0 = bench_now_ns();
	start = t0 + (quota_mode ? 0 : (uint64_t)o->warmup_s * 1000000000ull);
	end = quota_mode ? UINT64_MAX / 2 : start + (uint64_t)o->duration_s * 1000000000ull;
	for (i = 0; i < n; i++) {
		struct bconn *c = &conns[i];

		if (c->role != ROLE_SENDER || rate <= 0)
			continue;
		c->interval_ns = (uint64_t)((double)senders / rate * 1e9);
		if (c->interval_ns == 0)
			c->interval_ns = 1;
		/* Sender k starts k/senders of an interval in: an even total rate. */
		c->next_due_ns = t0 + c->interval_ns * (uint64_t)si++ / (uint64_t)senders;
	}
	for (i = 0; i < nthreads; i++)
		threads[i].ep = -1;
	for (i = 0; i < nthreads; i++) {
		struct load_thread *t = &threads[i];
		int k;

		t->spec = sp;
		t->start_ns = start;
		t->end_ns = end;
		t->open_loop = rate > 0;
		t->quota_mode = quota_mode;
		t->ep = sp->uring ? -1 : epoll_create1(EPOLL_CLOEXEC);
		t->conns = calloc((size_t)(n / nthreads + 1), sizeof(*t->conns));
		if ((!sp->uring && t->ep == -1) || !t->conns)
			goto out_stop;
		for (k = i; k < n; k += nthreads) {
			struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[k]};

			conns[k].want_out = false;
			if (sp->uring) {
				/* io_uring waits for a blocking socket itself; on a
				 * non-blocking one a receive would end in -EAGAIN */
				int fl = fcntl(conns[k].fd, F_GETFL);

				if (fl == -1 || fcntl(conns[k].fd, F_SETFL, fl & ~O_NONBLOCK) == -1)
					goto out_stop;
			} else if (epoll_ctl(t->ep, EPOLL_CTL_ADD, conns[k].fd, &ev) == -1) {
				goto out_stop;
			}
			t->conns[t->nconns++] = &conns[k];
		}
	}
	for (i = 0; i < nthreads; i++) {
		if (pthread_create(&threads[i].tid, NULL, load_main, &threads[i]) != 0) {
			fprintf(stderr, "ringchat-bench: cannot start thread %d\n", i);
			break;
		}
		started++;
	}
	/* Main: the CPU span and a progress line while the threads work. */
	next_progress = t0 + BENCH_PROGRESS_NS;
	last_t = t0;
	bench_sleep_until(start < t0 ? t0 : start);
	bench_cpu_begin(o, &res->cpu);
	for (;;) {
		bool all = true;
		uint64_t now = bench_now_ns();

		for (i = 0; i < started; i++)
			all = all && atomic_load_explicit(&threads[i].done, memory_order_acquire);
		if (all)
			break;
		if (now >= next_progress && (quota_mode || end - t0 > BENCH_PROGRESS_NS)) {
			uint64_t okc = 0, dlv = 0;
			double dt = (double)(now - last_t) / 1e9;

			for (i = 0; i < started; i++) {
				okc +=
				    atomic_load_explicit(&threads[i].prog_ok, memory_order_relaxed);
				dlv += atomic_load_explicit(&threads[i].prog_dlv,
							    memory_order_relaxed);
			}
			bench_progress(
			    t0, "sent OK %" PRIu64 " (%.0f/s)  delivered %" PRIu64 " (%.0f/s)", okc,
			    (double)(okc - last_ok) / dt, dlv, (double)(dlv - last_dlv) / dt);
			last_ok = okc;
			last_dlv = dlv;
			last_t = now;
			next_progress += BENCH_PROGRESS_NS;
		}
		bench_sleep_ms(20);
	}
	bench_cpu_end(o, &res->cpu);
	for (i = 0; i < started; i++)
		pthread_join(threads[i].tid, NULL);
	if (started < nthreads)
		goto out_stop;
	for (i = 0; i < nthreads; i++) {
		struct load_thread *t = &threads[i];
		double secs = t->ended_ns > start ? (double)(t->ended_ns - start) / 1e9 : 0;

		hist_merge(&res->ok_hist, &t->ok_hist);
		hist_merge(&res->dlv_hist, &t->dlv_hist);
		res->sent += t->sent;
		res->ok += t->ok;
		res->errors += t->errors;
		res->rate_limited += t->rate_limited;
		res->delivered += t->delivered;
		res->ack_errors += t->ack_errors;
		res->lost += t->lost;
		res->bad += t->bad;
		if (secs > res->seconds)
			res->seconds = secs;
	}
	rc = 0;
out_stop:
	for (i = 0; i < nthreads; i++) {
		if (threads[i].ep >= 0)
			close(threads[i].ep);
		free(threads[i].conns);
	}
out_free:
	free(threads);
	return rc;
}

/* ---------------------------------------------------------------------
 * chat and group, on Ringchat or on Redis pub/sub.
 * ------------------------------------------------------------------- */

/*
 * Redis: every recipient SUBSCRIBEs to its channel on its own connection;
 * returns once every subscription is confirmed. 0 or -1.
 */
static int redis_subscribe_all(struct bconn *conns, int n, const char *prefix)
{
	uint64_t deadline = bench_now_ns() + 60 * 1000000000ull;
	int i, pending = 0;
	struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));

	if (!pfd)
		return -1;
	for (i = 0; i < n; i++) {
		char cmd[160], ch[64];
		int chl, len;

		pfd[i].fd = -1;
		if (conns[i].role != ROLE_RECIPIENT)
			continue;
		chl = snprintf(ch, sizeof(ch), "%s:%" PRId64, prefix, conns[i].peer);
		len = snprintf(cmd, sizeof(cmd), "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", chl, ch);
		if (send(conns[i].fd, cmd, (size_t)len, MSG_NOSIGNAL) != len) {
			fprintf(stderr, "ringchat-bench: redis: SUBSCRIBE send failed\n");
			free(pfd);
			return -1;
		}
		pfd[i].fd = conns[i].fd;
		pfd[i].events = POLLIN;
		pending++;
	}
	while (pending > 0) {
		if (bench_now_ns() > deadline || poll(pfd, (nfds_t)n, 1000) < 0) {
			fprintf(stderr, "ringchat-bench: redis: %d subscriptions unconfirmed\n",
				pending);
			free(pfd);
			return -1;
		}
		for (i = 0; i < n; i++) {
			struct bconn *c = &conns[i];
			void *reply = NULL;
			int r;

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			r = bconn_fill(c);
			if (r < 0) {
				fprintf(stderr, "ringchat-bench: redis: connection lost\n");
				free(pfd);
				return -1;
			}
			redisReaderFeed(c->rr, (const char *)c->rbuf, c->rlen);
			c->rlen = 0;
			if (redisReaderGetReply(c->rr, &reply) != REDIS_OK) {
				fprintf(stderr, "ringchat-bench: redis: bad reply\n");
				free(pfd);
				return -1;
			}
			if (reply) {
				redisReply *rep = reply;

				if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
				    strcmp(rep->element[0]->str ? rep->element[0]->str : "",
					   "subscribe")) {
					fprintf(stderr,
						"ringchat-bench: redis: SUBSCRIBE refused\n");
					freeReplyObject(reply);
					free(pfd);
					return -1;
				}
				freeReplyObject(reply);
				pfd[i].fd = -1;
				pending--;
			}
		}
	}
	free(pfd);
	return 0;
}

struct msg_setup {
	int n;	     /* connections */
	int members; /* group: connections per group; chat: 2 */
	bool group;
};

/*
 * Connections for chat (pairs: even i sends to i+1) or group (the first of
 * every `members` sends to the group), signed up, logged in and linked on
 * Ringchat, or subscribed on Redis. Returns the array or NULL.
 */
static struct bconn *msg_setup(const struct bench_opts *o, const struct msg_setup *ms, bool redis,
			       const char *chan_prefix, double *setup_s, uint64_t *rate_limited)
{
	uint64_t t0 = bench_now_ns();
	struct users_ctx x = {.o = o, .group = ms->group, .members = ms->members};
	const char *host = redis ? o->redis_host : o->host;
	uint16_t port = redis ? o->redis_port : o->port;
	struct bconn *conns;
	int i, ngroups = ms->n / ms->members;

	fprintf(stderr, "ringchat-bench: %s: opening %d connections to %s:%u\n",
		redis ? "redis" : "ringchat", ms->n, host, port);
	conns = bconns_open(host, port, ms->n, redis);
	if (!conns)
		return NULL;
	for (i = 0; i < ms->n; i++) {
		struct bconn *c = &conns[i];

		if (ms->group)
			c->role = i % ms->members == 0 ? ROLE_SENDER : ROLE_RECIPIENT;
		else
			c->role = i % 2 == 0 ? ROLE_SENDER : ROLE_RECIPIENT;
		/* Redis channels: the group, or the pair. */
		if (redis)
			c->peer = ms->group ? i / ms->members : i / 2;
	}
	if (redis) {
		if (redis_subscribe_all(conns, ms->n, chan_prefix))
			goto out_free;
		*setup_s = (double)(bench_now_ns() - t0) / 1e9;
		return conns;
	}
	x.gids = calloc((size_t)ngroups + 1, sizeof(*x.gids));
	if (!x.gids)
		goto out_free;
	if (users_phase_run(&x, PH_LOGIN, "signup+login", conns, ms->n, BENCH_SETUP_BUSY,
			    rate_limited) ||
	    users_phase_run(&x, PH_LINK, ms->group ? "group create" : "friend requests", conns,
			    ms->n, 0, rate_limited) ||
	    users_phase_run(&x, PH_ACCEPT, ms->group ? "group join" : "friend accepts", conns,
			    ms->n, 0, rate_limited)) {
		free(x.gids);
		goto out_free;
	}
	for (i = 0; i < ms->n; i++) {
		struct bconn *c = &conns[i];

		if (c->role != ROLE_SENDER)
			continue;
		c->peer = ms->group ? x.gids[i / ms->members] : conns[users_partner(i)].user_id;
	}
	free(x.gids);
	*setup_s = (double)(bench_now_ns() - t0) / 1e9;
	return conns;

out_free:
	bconns_free(conns, ms->n);
	return NULL;
}

static void msg_report(const struct bench_opts *o, bool redis, const struct msg_setup *ms,
		       const struct load_result *r, double setup_s, uint64_t setup_rl)
{
	FILE *out = bench_text_out(o);
	double secs = r->seconds > 0 ? r->seconds : 1;
	int senders = ms->group ? ms->n / ms->members : ms->n / 2;

	fprintf(out, "%s on %s: ", o->scenario, redis ? "redis pub/sub" : "ringchat");
	if (ms->group)
		fprintf(out, "%d groups of %d members", ms->n / ms->members, ms->members);
	else
		fprintf(out, "%d users in %d pairs", ms->n, ms->n / 2);
	fprintf(out, ", %d senders, %s, %d-byte texts, %d threads, %.2f s measured\n", senders,
		o->rate > 0 ? "open loop" : "closed loop", o->size, o->threads, secs);
	if (o->rate > 0)
		fprintf(out, "  rate %.0f msgs/s scheduled (window %d per sender)\n", o->rate,
			o->window);
	else
		fprintf(out, "  window %d per sender\n", o->window);
	fprintf(out, "  setup %.2f s (%" PRIu64 " RATE_LIMITED retries)\n", setup_s, setup_rl);
	fprintf(out,
		"  sent OK %" PRIu64 " (%.1f msgs/s)  delivered %" PRIu64
		" (%.1f msgs/s)  errors %" PRIu64 "  RATE_LIMITED %" PRIu64
		"  lost connections %" PRIu64 "\n",
		r->ok, (double)r->ok / secs, r->delivered, (double)r->delivered / secs, r->errors,
		r->rate_limited, r->lost);
	hist_text(out, redis ? "send->reply" : "send->OK", &r->ok_hist);
	hist_text(out, "send->delivery", &r->dlv_hist);
	bench_cpu_text(out, &r->cpu, (double)r->delivered, "deliveries");
	fflush(out);
	if (!o->json)
		return;
	printf("{\"scenario\":\"%s\",\"target\":\"%s\",\"connections\":%d,\"senders\":%d",
	       o->scenario, redis ? "redis" : "ringchat", ms->n, senders);
	if (ms->group)
		printf(",\"groups\":%d,\"members\":%d", ms->n / ms->members, ms->members);
	printf(",\"window\":%d,\"rate\":%.0f,\"size\":%d,\"threads\":%d,\"duration_s\":%d,"
	       "\"seconds\":%.3f,\"setup_s\":%.2f,\"setup_rate_limited\":%" PRIu64
	       ",\"sent_ok\":%" PRIu64 ",\"sent_per_s\":%.1f,\"delivered\":%" PRIu64
	       ",\"delivered_per_s\":%.1f",
	       o->window, o->rate, o->size, o->threads, o->duration_s, secs, setup_s, setup_rl,
	       r->ok, (double)r->ok / secs, r->delivered, (double)r->delivered / secs);
	hist_json(stdout, "ok_", &r->ok_hist);
	hist_json(stdout, "dlv_", &r->dlv_hist);
	printf(",\"errors\":%" PRIu64 ",\"rate_limited\":%" PRIu64 ",\"ack_errors\":%" PRIu64
	       ",\"lost_connections\":%" PRIu64,
	       r->errors, r->rate_limited, r->ack_errors, r->lost);
	bench_cpu_json(stdout, &r->cpu, (double)r->delivered, "deliveries");
	printf("}\n");
	fflush(stdout);
}

static int msg_scenario_one(const struct bench_opts *o, const struct msg_setup *ms, bool redis)
{
	char chan[32];
	struct load_spec sp = {
	    .redis = redis,
	    .group = ms->group,
	    .window = o->window,
	    .size = o->size,
	    .tick_ns = (uint64_t)o->tick_us * 1000u,
	    .uring = o->uring,
	    .chan_prefix = chan,
	};
	struct load_result *res = calloc(1, sizeof(*res));
	struct bconn *conns;
	uint64_t setup_rl = 0;
	double setup_s = 0;
	int rc = 1;

	if (!res)
		return 1;
	snprintf(chan, sizeof(chan), "%s", o->prefix);
	conns = msg_setup(o, ms, redis, chan, &setup_s, &setup_rl);
	if (!conns)
		goto out_free;
	if (load_run(o, &sp, conns, ms->n, o->rate, false, res) == 0) {
		msg_report(o, redis, ms, res, setup_s, setup_rl);
		rc = res->delivered > 0 && res->lost == 0 ? 0 : 1;
		if (res->errors)
			fprintf(stderr,
				"ringchat-bench: %" PRIu64 " sends failed (RATE_LIMITED? see "
				"rate_msgs_per_s; FORBIDDEN? the pairs were not linked)\n",
				res->errors);
	}
	bconns_free(conns, ms->n);
out_free:
	free(res);
	return rc;
}

static int msg_scenario(const struct bench_opts *o, const struct msg_setup *ms)
{
	struct bench_opts ro = *o;
	int rc = 0;

	if (o->target != TARGET_REDIS)
		rc |= msg_scenario_one(o, ms, false);
	if (o->target != TARGET_RINGCHAT) {
		/* The Redis run's CPU is redis-server's (--redis-pid), not the node's. */
		ro.nserver_pids = o->redis_pid ? 1 : 0;
		ro.server_pids[0] = o->redis_pid;
		rc |= msg_scenario_one(&ro, ms, true);
	}
	return rc;
}

static int bench_scenario_chat(const struct bench_opts *o)
{
	struct msg_setup ms = {.n = o->users & ~1, .members = 2, .group = false};

	if (ms.n < 2) {
		fprintf(stderr, "ringchat-bench: chat needs --users 2 or more\n");
		return 2;
	}
	return msg_scenario(o, &ms);
}

static int bench_scenario_group(const struct bench_opts *o)
{
	struct msg_setup ms = {.n = o->groups * o->members, .members = o->members, .group = true};

	if (o->members < 2) {
		fprintf(stderr, "ringchat-bench: group needs --members 2 or more\n");
		return 2;
	}
	return msg_scenario(o, &ms);
}

/* ---------------------------------------------------------------------
 * login and signup storms.
 *
 * signup: C connections sign up U users between them, one request at a
 * time each. login: U users signed up beforehand log in on U fresh
 * connections (one connection carries one user), at most C logins in
 * flight; meanwhile a probe connection PINGs every PROBE_INTERVAL_MS,
 * which shows whether the node stays responsive while it hashes
 * passwords. Both count RATE_LIMITED answers (the node sheds logins
 * when busy) and retry them after retry_after_ms; their latency runs
 * from the first try to the OK.
 * ------------------------------------------------------------------- */

#define PROBE_INTERVAL_MS 10

struct probe {
	pthread_t tid;
	const struct bench_opts *o;
	/* 0: before the storm, 1: during it, 2: stop. Release/acquire: the
	 * main thread reads the histograms only after the join. */
	_Atomic int phase;
	struct hist hist[2];
	uint64_t failures;
};

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	struct rc_client *c = rc_connect(p->o->host, p->o->port, 5000);
	struct rc_frame f;
	int phase;

	if (!c) {
		p->failures++;
		return NULL;
	}
	while ((phase = atomic_load_explicit(&p->phase, memory_order_acquire)) < 2) {
		uint64_t t0 = bench_now_ns();
		int rc = rc_call(c, CMD_PING, NULL, &f, 5000);

		if (rc || f.hdr.code != ST_OK)
			p->failures++;
		else
			hist_record(&p->hist[phase], bench_now_ns() - t0);
		rc_frame_free(&f);
		if (rc && rc != -ETIMEDOUT)
			break;
		bench_sleep_ms(PROBE_INTERVAL_MS);
	}
	rc_close(c);
	return NULL;
}

/* Signs up users 0..users-1 over `conns` connections. 0 or -1. */
static int bench_signup_users(const struct bench_opts *o, int users, int nconns, struct bsteps *s,
			      struct users_ctx *x)
{
	struct bconn *conns;
	int rc;

	if (nconns > users)
		nconns = users;
	conns = bconns_open(o->host, o->port, nconns, false);
	if (!conns)
		return -1;
	x->o = o;
	x->phase = PH_SIGNUP_ONLY;
	x->stride = nconns;
	x->users = users;
	s->what = "signup";
	s->conns = conns;
	s->n = nconns;
	s->build = users_build;
	s->reply = users_reply;
	s->ctx = x;
	rc = bsteps_run(s);
	bconns_free(conns, nconns);
	return rc;
}

static int bench_scenario_signup(const struct bench_opts *o)
{
	struct users_ctx x = {0};
	struct bsteps s = {0};
	struct hist *h = calloc(1, sizeof(*h));
	struct bench_cpu_span cpu;
	FILE *out = bench_text_out(o);
	double rate;

	if (!h)
		return 1;
	s.hist = h;
	bench_cpu_begin(o, &cpu);
	if (bench_signup_users(o, o->users, o->connections, &s, &x)) {
		free(h);
		return 1;
	}
	bench_cpu_end(o, &cpu);
	rate = s.seconds > 0 ? (double)s.steps_done / s.seconds : 0;
	fprintf(out, "signup: %d users over %d connections in %.2f s\n", o->users,
		o->connections < o->users ? o->connections : o->users, s.seconds);
	fprintf(out, "  signups %" PRIu64 " (%.1f/s)  RATE_LIMITED %" PRIu64 "\n", s.steps_done,
		rate, s.rate_limited);
	hist_text(out, "signup latency", h);
	bench_cpu_text(out, &cpu, (double)s.steps_done, "signups");
	fflush(out);
	if (o->json) {
		printf("{\"scenario\":\"signup\",\"users\":%d,\"connections\":%d,\"seconds\":%.3f,"
		       "\"signups\":%" PRIu64 ",\"signups_per_s\":%.1f,\"rate_limited\":%" PRIu64,
		       o->users, o->connections < o->users ? o->connections : o->users, s.seconds,
		       s.steps_done, rate, s.rate_limited);
		hist_json(stdout, "", h);
		bench_cpu_json(stdout, &cpu, (double)s.steps_done, "signups");
		printf("}\n");
		fflush(stdout);
	}
	free(h);
	return 0;
}

static int bench_scenario_login(const struct bench_opts *o)
{
	struct users_ctx x = {0};
	struct bsteps pre = {0}, s = {0};
	struct probe *probe = calloc(1, sizeof(*probe));
	struct hist *h = calloc(1, sizeof(*h));
	FILE *out = bench_text_out(o);
	struct bench_cpu_span cpu;
	struct bconn *conns = NULL;
	bool probing = false;
	double rate;
	int rc = 1;

	if (!probe || !h)
		goto out_free;
	fprintf(stderr, "ringchat-bench: login: signing up %d users first\n", o->users);
	if (bench_signup_users(o, o->users, BENCH_SETUP_BUSY, &pre, &x))
		goto out_free;
	fprintf(stderr, "ringchat-bench: login: %d signups in %.2f s; opening %d connections\n",
		o->users, pre.seconds, o->users);
	conns = bconns_open(o->host, o->port, o->users, false);
	if (!conns)
		goto out_free;

	probe->o = o;
	if (pthread_create(&probe->tid, NULL, probe_main, probe) == 0)
		probing = true;
	/* A second of the probe alone: the baseline. */
	bench_sleep_ms(1000);
	atomic_store_explicit(&probe->phase, 1, memory_order_release);

	x.phase = PH_LOGIN_ONLY;
	s.what = "login storm";
	s.conns = conns;
	s.n = o->users;
	s.busy_max = o->connections;
	s.build = users_build;
	s.reply = users_reply;
	s.ctx = &x;
	s.hist = h;
	bench_cpu_begin(o, &cpu);
	rc = bsteps_run(&s) ? 1 : 0;
	bench_cpu_end(o, &cpu);
	if (probing) {
		atomic_store_explicit(&probe->phase, 2, memory_order_release);
		pthread_join(probe->tid, NULL);
	}
	if (rc)
		goto out_free;
	rate = s.seconds > 0 ? (double)s.steps_done / s.seconds : 0;
	fprintf(out, "login: %d users, at most %d logins in flight, %.2f s\n", o->users,
		o->connections, s.seconds);
	fprintf(out, "  logins %" PRIu64 " (%.1f/s)  RATE_LIMITED %" PRIu64 "\n", s.steps_done,
		rate, s.rate_limited);
	hist_text(out, "login latency", h);
	hist_text(out, "probe PING idle", &probe->hist[0]);
	hist_text(out, "probe PING storm", &probe->hist[1]);
	if (probe->failures)
		fprintf(out, "  probe failures %" PRIu64 "\n", probe->failures);
	bench_cpu_text(out, &cpu, (double)s.steps_done, "logins");
	fflush(out);
	if (o->json) {
		printf("{\"scenario\":\"login\",\"users\":%d,\"concurrency\":%d,\"seconds\":%.3f,"
		       "\"logins\":%" PRIu64 ",\"logins_per_s\":%.1f,\"rate_limited\":%" PRIu64,
		       o->users, o->connections, s.seconds, s.steps_done, rate, s.rate_limited);
		hist_json(stdout, "login_", h);
		hist_json(stdout, "probe_idle_", &probe->hist[0]);
		hist_json(stdout, "probe_", &probe->hist[1]);
		printf(",\"probe_failures\":%" PRIu64, probe->failures);
		bench_cpu_json(stdout, &cpu, (double)s.steps_done, "logins");
		printf("}\n");
		fflush(stdout);
	}
	rc = probe->failures == 0 ? 0 : 1;
out_free:
	bconns_free(conns, o->users);
	free(probe);
	free(h);
	return rc;
}

/* ---------------------------------------------------------------------
 * offline: A and B are friends; B goes offline; A stores M messages for
 * B (window W in flight); then B logs in on a new connection and the
 * clock runs until all M PUSH_MSG arrived (B acks as it goes, in batches,
 * as a client would).
 * ------------------------------------------------------------------- */

static void offline_ack(struct bconn *b, int64_t *ids, int *n)
{
	char buf[BENCH_ACK_BATCH * 24 + 32];
	size_t len = 0;
	int i;

	if (*n == 0)
		return;
	len += (size_t)snprintf(buf, sizeof(buf), "{\"msg_ids\":[");
	for (i = 0; i < *n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%" PRId64, i ? "," : "",
					ids[i]);
	len += (size_t)snprintf(buf + len, sizeof(buf) - len, "]}");
	bconn_put_frame(b, CMD_MSG_ACK, buf, len);
	*n = 0;
}

struct drain_result {
	double login_s, first_s, all_s;
	long got;
	uint64_t ack_errors;
};

/* B logs in on a fresh connection; waits for `want` PUSH_MSG. 0 or -1. */
static int offline_drain(const struct bench_opts *o, long want, struct drain_result *d)
{
	struct bconn b = {.fd = -1, .next_seq = 1};
	uint64_t t0, now, last_ack, deadline, next_progress;
	int64_t ids[BENCH_ACK_BATCH];
	char name[40], json[128];
	uint32_t login_seq;
	int nids = 0, ep = -1, rc = -1, len, err;

	memset(d, 0, sizeof(*d));
	err = bench_connect_all(o->host, o->port, NULL, &b.fd, 1);
	if (err) {
		fprintf(stderr, "ringchat-bench: offline: connect: %s\n", strerror(-err));
		return -1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &b};

		if (ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, b.fd, &ev) == -1)
			goto out_close;
	}
	users_name(o, 1, name, sizeof(name));
	len = snprintf(json, sizeof(json), "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		       BENCH_PASSWORD);
	t0 = last_ack = bench_now_ns();
	next_progress = t0 + BENCH_PROGRESS_NS;
	deadline = t0 + (60 + (uint64_t)want / 500) * 1000000000ull;
	login_seq = bconn_put_frame(&b, CMD_LOGIN, json, (size_t)len);
	if (bconn_flush(&b, ep))
		goto out_close;
	while (d->got < want) {
		struct epoll_event ev;
		struct frame_hdr h;
		const char *p;
		size_t off = 0;
		int n, k;

		n = epoll_wait(ep, &ev, 1, 10);
		now = bench_now_ns();
		if (now > deadline) {
			fprintf(stderr,
				"ringchat-bench: offline: %ld of %ld messages after %.0f s\n",
				d->got, want, (double)(now - t0) / 1e9);
			goto out_close;
		}
		if (now >= next_progress) {
			bench_progress(t0, "drain: %ld of %ld messages", d->got, want);
			next_progress += BENCH_PROGRESS_NS;
		}
		if (n == 1 && (ev.events & EPOLLOUT) && bconn_flush(&b, ep))
			goto out_close;
		if (n == 1 && (ev.events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
			k = bconn_fill(&b);
			if (k < 0) {
				fprintf(stderr, "ringchat-bench: offline: connection lost: %s\n",
					k == -ENOTCONN ? "closed by the node" : strerror(-k));
				goto out_close;
			}
			while ((k = bconn_frame(&b, &off, &h, &p)) == 1) {
				if (h.seq == login_seq) {
					if (h.code != ST_OK) {
						fprintf(
						    stderr,
						    "ringchat-bench: offline: LOGIN: %s: %.*s\n",
						    rc_status_name(h.code), (int)h.len, p);
						goto out_close;
					}
					d->login_s = (double)(now - t0) / 1e9;
				} else if (h.seq != 0) {
					if (h.code != ST_OK)
						d->ack_errors++;
				} else if (h.cmd == CMD_PUSH_MSG) {
					if (d->got++ == 0)
						d->first_s = (double)(now - t0) / 1e9;
					if (nids == 0)
						last_ack = now;
					ids[nids++] = bench_json_int(p, h.len, "msg_id");
					if (nids == BENCH_ACK_BATCH)
						offline_ack(&b, ids, &nids);
				}
			}
			if (k < 0)
				goto out_close;
			bconn_consume(&b, off);
		}
		if (nids > 0 && now - last_ack >= BENCH_ACK_NS)
			offline_ack(&b, ids, &nids);
		if (bconn_flush(&b, ep))
			goto out_close;
	}
	d->all_s = (double)(bench_now_ns() - t0) / 1e9;
	offline_ack(&b, ids, &nids);
	bconn_flush(&b, ep);
	rc = 0;
out_close:
	if (ep >= 0)
		close(ep);
	bconn_free(&b);
	return rc;
}

static int bench_scenario_offline(const struct bench_opts *o)
{
	struct msg_setup ms = {.n = 2, .members = 2, .group = false};
	struct load_spec sp = {.window = o->window, .size = o->size};
	struct load_result *res = calloc(1, sizeof(*res));
	FILE *out = bench_text_out(o);
	struct bench_cpu_span cpu;
	struct drain_result d;
	struct bconn *conns = NULL;
	uint64_t setup_rl = 0;
	double setup_s, store_rate, drain_rate;
	int rc = 1;

	if (!res)
		return 1;
	conns = msg_setup(o, &ms, false, NULL, &setup_s, &setup_rl);
	if (!conns)
		goto out_free;
	/* B goes offline: its connection closes and its session ends. */
	close(conns[1].fd);
	conns[1].fd = -1;
	conns[1].role = ROLE_IDLE;
	bench_sleep_ms(300);

	fprintf(stderr, "ringchat-bench: offline: storing %d messages, window %d\n", o->messages,
		o->window);
	conns[0].quota = o->messages;
	if (load_run(o, &sp, conns, 1, 0, true, res))
		goto out_free;
	if (res->ok != (uint64_t)o->messages) {
		fprintf(stderr,
			"ringchat-bench: offline: %" PRIu64 " of %d sends OK (%" PRIu64
			" errors)\n",
			res->ok, o->messages, res->errors);
		goto out_free;
	}
	bench_cpu_begin(o, &cpu);
	if (offline_drain(o, o->messages, &d))
		goto out_free;
	bench_cpu_end(o, &cpu);
	store_rate = res->seconds > 0 ? (double)res->ok / res->seconds : 0;
	drain_rate = d.all_s > 0 ? (double)d.got / d.all_s : 0;
	fprintf(out,
		"offline: %d messages of %d bytes stored for an offline user, then its login\n",
		o->messages, o->size);
	fprintf(out,
		"  store %.2f s (%.1f msgs/s, window %d, %" PRIu64 " RATE_LIMITED and resent)\n",
		res->seconds, store_rate, o->window, res->rate_limited);
	hist_text(out, "send->OK", &res->ok_hist);
	fprintf(out,
		"  drain: LOGIN answered %.1f ms, first push %.1f ms, all %ld pushes %.3f s "
		"(%.1f msgs/s)\n",
		d.login_s * 1e3, d.first_s * 1e3, d.got, d.all_s, drain_rate);
	bench_cpu_text(out, &cpu, (double)d.got, "drained msgs");
	fflush(out);
	if (o->json) {
		printf("{\"scenario\":\"offline\",\"messages\":%d,\"size\":%d,\"window\":%d,"
		       "\"store_s\":%.3f,\"store_per_s\":%.1f",
		       o->messages, o->size, o->window, res->seconds, store_rate);
		hist_json(stdout, "ok_", &res->ok_hist);
		printf(",\"login_ms\":%.2f,\"first_push_ms\":%.2f,\"drain_s\":%.3f,"
		       "\"drain_per_s\":%.1f,\"ack_errors\":%" PRIu64,
		       d.login_s * 1e3, d.first_s * 1e3, d.all_s, drain_rate, d.ack_errors);
		bench_cpu_json(stdout, &cpu, (double)d.got, "drained");
		printf("}\n");
		fflush(stdout);
	}
	rc = 0;
out_free:
	bconns_free(conns, 2);
	free(res);
	return rc;
}

/* ---------------------------------------------------------------------
 * connections: N idle connections, each answered one PING, held for the
 * duration. The process file limit (20000 here) caps one process, so the
 * connections are spread over child processes of at most
 * BENCH_CONNS_PER_PROC each; on loopback each child also binds its own
 * source address (127.0.0.2, .3, ...) so N is not bounded by one
 * address's ephemeral ports.
 *
 *   parent ── fork ──► child k: connect, PING each, wait for every answer
 *     │                  │ writes "ok failed seconds\n" on its report pipe
 *     │ ◄────────────────┘ then blocks reading its release pipe
 *     │ reads the node's VmRSS (before / after), holds, closes the
 *     │ release pipes: the children close everything and exit
 * ------------------------------------------------------------------- */

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

	if (!fds || !got || !have || bench_raise_fd_limit(n + BENCH_SPARE_FDS))
		_exit(1);
	if (bench_resolve(o->host, o->port, &dst, &dlen) == 0 && dst.ss_family == AF_INET &&
	    (ntohl(((struct sockaddr_in *)&dst)->sin_addr.s_addr) >> 24) == 127) {
		src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)k);
		srcp = &src;
	}
	err = bench_connect_all(o->host, o->port, srcp, fds, n);
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

static int bench_scenario_connections(const struct bench_opts *o)
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
		rss0 = bench_proc_rss(pid);
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
		rss1 = bench_proc_rss(pid);
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

/* ---------------------------------------------------------------------
 * Scenarios and command line.
 * ------------------------------------------------------------------- */

struct bench_scenario {
	const char *name;
	const char *help;
	int (*run)(const struct bench_opts *o);
	/* Defaults where the global ones do not fit (0: keep the global). */
	int window, connections, duration_s;
};

static const struct bench_scenario bench_scenarios[] = {
    {"ping", "PINGs pipelined on every connection (window in flight)", bench_scenario_ping, 0, 0,
     0},
    {"chat", "users in pairs sending 1:1 messages (--target redis: the same on pub/sub)",
     bench_scenario_chat, 4, 0, 0},
    {"group", "groups of members, one sender per group (fan-out)", bench_scenario_group, 4, 0, 0},
    {"login", "login storm of --users over --connections in flight, with a PING probe",
     bench_scenario_login, 0, 200, 0},
    {"signup", "--users signups over --connections connections", bench_scenario_signup, 0, 64, 0},
    {"connections", "--connections idle connections, the node's memory per connection",
     bench_scenario_connections, 0, 10000, 5},
    {"offline", "--messages stored for an offline user, then the drain at its login",
     bench_scenario_offline, 64, 0, 0},
};

static void bench_usage(FILE *out)
{
	size_t i;

	fprintf(out, "usage: ringchat-bench SCENARIO [options]\n"
		     "scenarios:\n");
	for (i = 0; i < sizeof(bench_scenarios) / sizeof(bench_scenarios[0]); i++)
		fprintf(out, "  %-12s %s\n", bench_scenarios[i].name, bench_scenarios[i].help);
	fprintf(
	    out,
	    "options:\n"
	    "  --host H            node address (127.0.0.1)\n"
	    "  --port P            node client port (required but for --target redis)\n"
	    "  --connections N     ping: connections (1000); login: logins in flight (200);\n"
	    "                      signup: connections (64); connections: how many (10000)\n"
	    "  --window W          requests in flight per connection (ping 16, chat/group 4,\n"
	    "                      offline 64)\n"
	    "  --duration S        measured seconds (10; connections: seconds held, 5)\n"
	    "  --warmup S          seconds before measuring (1)\n"
	    "  --threads T         load threads (2)\n"
	    "  --requests N        ping: stop after N PINGs in all (--duration still caps)\n"
	    "  --users U           chat: users, in pairs (1000); login, signup: users (1000)\n"
	    "  --groups G          group: groups (10)\n"
	    "  --members N         group: members per group, the sender included (50)\n"
	    "  --messages M        offline: messages stored (10000)\n"
	    "  --size B            message text bytes, %d..%d (64)\n"
	    "  --rate R            chat/group: R msgs/s in all, open loop (default closed loop)\n"
	    "  --tick-us U         with --rate: wake every U us and send what is due, stamped\n"
	    "                      with its due time (0: wake at each due time)\n"
	    "  --engine E          chat/group: epoll (a system call per send and receive) or\n"
	    "                      uring (one io_uring_enter per loop turn) (uring)\n"
	    "  --target T          chat/group: ringchat, redis or both (ringchat)\n"
	    "  --redis-host H      --target redis: Redis address (127.0.0.1)\n"
	    "  --redis-port P      --target redis: Redis port (16379)\n"
	    "  --redis-pid PID     --target redis/both: redis-server's CPU for the Redis run\n"
	    "  --prefix S          usernames are S_<n> (default: unique per run)\n"
	    "  --server-pid P[,P]  report the CPU time of these processes while measuring\n"
	    "                      (connections: the first one's RSS)\n"
	    "  --json              the summary on stderr, one JSON line on stdout\n",
	    BENCH_STAMP_BYTES + 1, BENCH_TEXT_MAX);
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

static void bench_pids_arg(struct bench_opts *o, const char *s)
{
	char buf[256], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", s);
	o->nserver_pids = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->nserver_pids == BENCH_MAX_PIDS) {
			fprintf(stderr, "ringchat-bench: --server-pid: at most %d pids\n",
				BENCH_MAX_PIDS);
			exit(2);
		}
		o->server_pids[o->nserver_pids++] = bench_int_arg("server-pid", tok, 1, 1L << 30);
	}
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
	    {"requests", required_argument, NULL, 'n'},
	    {"users", required_argument, NULL, 'u'},
	    {"groups", required_argument, NULL, 'g'},
	    {"members", required_argument, NULL, 'm'},
	    {"messages", required_argument, NULL, 'M'},
	    {"size", required_argument, NULL, 'S'},
	    {"rate", required_argument, NULL, 'r'},
	    {"tick-us", required_argument, NULL, 'k'},
	    {"engine", required_argument, NULL, 'e'},
	    {"target", required_argument, NULL, 'T'},
	    {"redis-host", required_argument, NULL, 'H'},
	    {"redis-port", required_argument, NULL, 'P'},
	    {"redis-pid", required_argument, NULL, 'R'},
	    {"prefix", required_argument, NULL, 'x'},
	    {"help", no_argument, NULL, '?'},
	    {NULL, 0, NULL, 0},
	};
	struct bench_opts o = {
	    .host = "127.0.0.1",
	    .connections = 1000,
	    .window = 16,
	    .duration_s = 10,
	    .warmup_s = 1,
	    .threads = 2,
	    .users = 1000,
	    .groups = 10,
	    .members = 50,
	    .messages = 10000,
	    .size = 64,
	    .uring = true,
	    .redis_host = "127.0.0.1",
	    .redis_port = 16379,
	};
	const struct bench_scenario *sc = NULL;
	char *end;
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
			o.set_connections = true;
			break;
		case 'w':
			o.window = (int)bench_int_arg("window", optarg, 1, BENCH_MAX_WINDOW);
			o.set_window = true;
			break;
		case 'd':
			o.duration_s = (int)bench_int_arg("duration", optarg, 1, 86400);
			o.set_duration = true;
			break;
		case 'W':
			o.warmup_s = (int)bench_int_arg("warmup", optarg, 0, 3600);
			o.set_warmup = true;
			break;
		case 't':
			o.threads = (int)bench_int_arg("threads", optarg, 1, BENCH_MAX_THREADS);
			break;
		case 's':
			bench_pids_arg(&o, optarg);
			break;
		case 'j':
			o.json = true;
			break;
		case 'n':
			o.requests = bench_int_arg("requests", optarg, 1, 1L << 40);
			break;
		case 'u':
			o.users = (int)bench_int_arg("users", optarg, 1, BENCH_MAX_CONNECTIONS);
			break;
		case 'g':
			o.groups = (int)bench_int_arg("groups", optarg, 1, 10000);
			break;
		case 'm':
			o.members = (int)bench_int_arg("members", optarg, 1, 10000);
			break;
		case 'M':
			o.messages = (int)bench_int_arg("messages", optarg, 1, 10000000);
			break;
		case 'S':
			o.size = (int)bench_int_arg("size", optarg, BENCH_STAMP_BYTES + 1,
						    BENCH_TEXT_MAX);
			break;
		case 'r':
			errno = 0;
			o.rate = strtod(optarg, &end);
			if (errno || end == optarg || *end || o.rate <= 0 || o.rate > 1e8) {
				fprintf(stderr,
					"ringchat-bench: --rate: '%s' is not a rate in "
					"msgs/s\n",
					optarg);
				return 2;
			}
			break;
		case 'k':
			o.tick_us = bench_int_arg("tick-us", optarg, 0, 100000);
			break;
		case 'e':
			if (!strcmp(optarg, "uring") || !strcmp(optarg, "epoll")) {
				o.uring = optarg[0] == 'u';
			} else {
				fprintf(stderr, "ringchat-bench: --engine: '%s' is not uring or epoll\n",
					optarg);
				return 2;
			}
			break;
		case 'T':
			if (!strcmp(optarg, "ringchat"))
				o.target = TARGET_RINGCHAT;
			else if (!strcmp(optarg, "redis"))
				o.target = TARGET_REDIS;
			else if (!strcmp(optarg, "both"))
				o.target = TARGET_BOTH;
			else {
				fprintf(stderr,
					"ringchat-bench: --target: ringchat, redis or both\n");
				return 2;
			}
			break;
		case 'H':
			o.redis_host = optarg;
			break;
		case 'P':
			o.redis_port = (uint16_t)bench_int_arg("redis-port", optarg, 1, 65535);
			break;
		case 'R':
			o.redis_pid = bench_int_arg("redis-pid", optarg, 1, 1L << 30);
			break;
		case 'x':
			if (strlen(optarg) < 1 || strlen(optarg) > 12 ||
			    strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					   "0123456789_.-") != strlen(optarg)) {
				fprintf(stderr,
					"ringchat-bench: --prefix: 1..12 of A-Z a-z 0-9 _ . -\n");
				return 2;
			}
			snprintf(o.prefix, sizeof(o.prefix), "%s", optarg);
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
	if (o.port == 0 && !(o.target == TARGET_REDIS &&
			     (!strcmp(o.scenario, "chat") || !strcmp(o.scenario, "group")))) {
		fprintf(stderr, "ringchat-bench: --port is required\n");
		return 2;
	}
	if (!o.set_window && sc->window)
		o.window = sc->window;
	if (!o.set_connections && sc->connections)
		o.connections = sc->connections;
	if (!o.set_duration && sc->duration_s)
		o.duration_s = sc->duration_s;
	if (o.requests && !o.set_warmup)
		o.warmup_s = 0; /* a fixed count: measure every one of them */
	if (!o.prefix[0])
		/* Unique per run: names never collide with an earlier run's users. */
		snprintf(o.prefix, sizeof(o.prefix), "b%08lx",
			 ((unsigned long)time(NULL) * 2654435761ul ^ (unsigned long)getpid()) &
			     0xfffffffful);
	if (o.threads > o.connections && !strcmp(o.scenario, "ping"))
		o.threads = o.connections;
	signal(SIGPIPE, SIG_IGN);
	return sc->run(&o);
}
