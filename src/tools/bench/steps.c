/*
 * steps.c - the step engine (see steps.h for its state diagram).
 */
#include "steps.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "clock.h"
#include "ringchat/protocol.h"
#include "text.h"

int bsteps_expect_ok(struct bsteps *s, struct bconn *c, const struct frame_hdr *h,
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

int bsteps_run(struct bsteps *s)
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
					int64_t ms = text_json_int(p, h.len, "retry_after_ms");

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
