/*
 * ping.c - the ping scenario: PINGs pipelined on every connection, a
 * window of them in flight, answers checked for order.
 *
 * The load has its own small connection type and epoll loop: a PING is
 * a bare header both ways, so a connection is a ring of send stamps and
 * two byte buffers, nothing of the message machinery (bconn.h). Connection
 * i goes to thread i % --threads; each thread owns its connections and an
 * epoll, and records into its own histogram, merged after the join.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "hist.h"
#include "net.h"
#include "procstat.h"
#include "ringchat/frame.h"
#include "ringchat/protocol.h"
#include "scenario.h"

/* Initial per-connection read buffer; grows for a larger frame. */
#define PING_RBUF_BYTES 2048u

struct ping_conn {
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

struct ping_thread {
	pthread_t tid;
	const struct bench_opts *o;
	int ep;
	struct ping_conn *conns;
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

static void ping_conn_kill(struct ping_thread *t, struct ping_conn *c, const char *why)
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

static void ping_conn_arm(struct ping_thread *t, struct ping_conn *c, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};

	if (c->want_out == out)
		return;
	c->want_out = out;
	epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void ping_conn_flush(struct ping_thread *t, struct ping_conn *c)
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
			ping_conn_arm(t, c, true);
			return;
		}
		ping_conn_kill(t, c, strerror(errno));
		return;
	}
	c->woff = c->wlen = 0;
	ping_conn_arm(t, c, false);
}

/* Tops the window up with new PINGs, all stamped now. */
static void ping_conn_refill(struct ping_thread *t, struct ping_conn *c, uint64_t now)
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
	ping_conn_flush(t, c);
}

static void ping_conn_on_frame(struct ping_thread *t, struct ping_conn *c,
			       const struct frame_hdr *h, uint64_t now)
{
	uint32_t window = (uint32_t)t->o->window;
	uint32_t slot = c->fifo_head;

	if (c->inflight == 0 || h->seq != c->sent_seq[slot]) {
		t->bad++;
		ping_conn_kill(t, c, "response out of order or unrequested");
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

static void ping_conn_read(struct ping_thread *t, struct ping_conn *c, uint64_t now)
{
	struct frame_hdr h;
	size_t off = 0;
	ssize_t r;

	r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	if (r == 0) {
		ping_conn_kill(t, c, "closed by the node");
		return;
	}
	if (r == -1) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			ping_conn_kill(t, c, strerror(errno));
		return;
	}
	c->rlen += (size_t)r;
	while (!c->dead && c->rlen - off >= FRAME_HDR_BYTES) {
		frame_hdr_decode(c->rbuf + off, &h);
		if (h.magic != FRAME_MAGIC || h.len > FRAME_MAX_OUT_BYTES) {
			t->bad++;
			ping_conn_kill(t, c, "bad frame from the node");
			return;
		}
		if (c->rlen - off < FRAME_HDR_BYTES + (size_t)h.len) {
			size_t need = FRAME_HDR_BYTES + (size_t)h.len;

			if (need > c->rcap) {
				uint8_t *nb = realloc(c->rbuf, need);

				if (!nb) {
					ping_conn_kill(t, c, "out of memory");
					return;
				}
				c->rbuf = nb;
				c->rcap = need;
			}
			break;
		}
		ping_conn_on_frame(t, c, &h, now);
		off += FRAME_HDR_BYTES + h.len;
	}
	if (c->dead)
		return;
	if (off > 0) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	ping_conn_refill(t, c, now);
}

static void *ping_thread_main(void *arg)
{
	struct ping_thread *t = arg;
	struct epoll_event evs[BENCH_EPOLL_EVENTS];
	uint64_t now = bench_now_ns();
	int i, n;

	for (i = 0; i < t->nconns; i++)
		ping_conn_refill(t, &t->conns[i], now);
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
			struct ping_conn *c = evs[i].data.ptr;

			if (c->dead)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				ping_conn_read(t, c, now);
			if (!c->dead && (evs[i].events & EPOLLOUT))
				ping_conn_flush(t, c);
		}
	}
	t->ended_ns = now < t->measure_end_ns ? now : t->measure_end_ns;
	atomic_store_explicit(&t->done, true, memory_order_release);
	return NULL;
}

static void ping_conns_free(struct ping_conn *conns, int n)
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
struct ping_result {
	uint64_t requests, errors, lost, bad;
	double seconds;
	struct hist *hist;
	struct procstat_span cpu;
};

static void ping_report(const struct bench_opts *o, const struct ping_result *r)
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
	procstat_span_text(out, &r->cpu, (double)r->requests, "requests", "request");
	fflush(out);
	if (!o->json)
		return;
	printf("{\"scenario\":\"%s\",\"connections\":%d,\"window\":%d,\"duration_s\":%d,"
	       "\"seconds\":%.3f,\"requests\":%" PRIu64 ",\"rps\":%.1f",
	       o->scenario, o->connections, o->window, o->duration_s, r->seconds, r->requests, rps);
	hist_json(stdout, "", r->hist);
	printf(",\"errors\":%" PRIu64 ",\"lost_connections\":%" PRIu64 ",\"threads\":%d", r->errors,
	       r->lost, o->threads);
	procstat_span_json(stdout, &r->cpu, (double)r->requests, "requests");
	printf("}\n");
	fflush(stdout);
}

int scenario_ping(const struct bench_opts *o)
{
	struct ping_thread *threads = calloc((size_t)o->threads, sizeof(*threads));
	struct ping_conn *conns = calloc((size_t)o->connections, sizeof(*conns));
	int *fds = malloc((size_t)o->connections * sizeof(*fds));
	struct ping_result res = {0};
	uint64_t t0, start, end;
	int i, rc = 1, started = 0, err;

	if (!threads || !conns || !fds) {
		fprintf(stderr, "ringchat-bench: out of memory\n");
		goto out_free;
	}
	for (i = 0; i < o->connections; i++)
		conns[i].fd = -1;
	if (net_raise_fd_limit(o->connections + BENCH_SPARE_FDS))
		goto out_free;
	for (i = 0; i < o->threads; i++)
		threads[i].ep = -1;
	err = net_connect_all(o->host, o->port, NULL, fds, o->connections);
	if (err) {
		fprintf(stderr, "ringchat-bench: cannot open %d connections to %s:%u: %s\n",
			o->connections, o->host, o->port, strerror(-err));
		goto out_free;
	}
	for (i = 0; i < o->connections; i++)
		conns[i].fd = fds[i];
	for (i = 0; i < o->connections; i++) {
		struct ping_conn *c = &conns[i];

		c->next_seq = 1;
		c->sent_ns = calloc((size_t)o->window, sizeof(*c->sent_ns));
		c->sent_seq = calloc((size_t)o->window, sizeof(*c->sent_seq));
		c->rbuf = malloc(PING_RBUF_BYTES);
		c->rcap = PING_RBUF_BYTES;
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
		struct ping_thread *t = &threads[i];
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
			struct ping_conn *c = &t->conns[t->nconns++];
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
		if (pthread_create(&threads[i].tid, NULL, ping_thread_main, &threads[i]) != 0) {
			fprintf(stderr, "ringchat-bench: cannot start thread %d\n", i);
			break;
		}
		started++;
	}
	if (started == o->threads) {
		uint64_t next_progress = t0 + BENCH_PROGRESS_NS, last = 0, last_t = start;
		bool all = false;

		bench_sleep_until(start);
		procstat_span_begin(&res.cpu, o->server_pids, o->nserver_pids);
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
	procstat_span_end(&res.cpu);
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
	ping_report(o, &res);
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
			ping_conns_free(threads[i].conns, threads[i].nconns);
		if (threads[i].ep >= 0)
			close(threads[i].ep);
	}
out_free:
	if (conns)
		ping_conns_free(conns, o->connections);
	free(fds);
	free(threads);
	return rc;
}
