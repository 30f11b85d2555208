/*
 * engine_epoll.c - the epoll engine of the message load: non-blocking
 * sockets in one epoll per load thread, recv(2) on EPOLLIN, send(2) as
 * soon as there is something to send and EPOLLOUT armed only for a rest
 * the socket did not take (see engine.h for the contract).
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"

static int ee_setup(struct load_thread *t)
{
	t->ep = epoll_create1(EPOLL_CLOEXEC);
	return t->ep == -1 ? -errno : 0;
}

static int ee_attach(struct load_thread *t, struct bconn *c)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

	c->want_out = false;
	return epoll_ctl(t->ep, EPOLL_CTL_ADD, c->fd, &ev) == -1 ? -errno : 0;
}

static int ee_start(struct load_thread *t)
{
	(void)t;
	return 0;
}

static void ee_flush(struct load_thread *t, struct bconn *c)
{
	int err;

	if (c->dead)
		return;
	err = bconn_flush(c, t->ep);
	if (err)
		load_kill(t, c, strerror(-err));
}

static void ee_read(struct load_thread *t, struct bconn *c, uint64_t now)
{
	int r = bconn_fill(c);

	if (r < 0) {
		load_kill(t, c, r == -ENOTCONN ? "closed by the server" : strerror(-r));
		return;
	}
	if (r > 0)
		load_parse(t, c, now);
}

static void ee_wait(struct load_thread *t, const struct timespec *ts, uint64_t *now)
{
	struct epoll_event evs[BENCH_EPOLL_EVENTS];
	int i, n;

	/* epoll_pwait2: a due time to the microsecond. */
	n = epoll_pwait2(t->ep, evs, BENCH_EPOLL_EVENTS, ts, NULL);
	*now = bench_now_ns();
	for (i = 0; i < n; i++) {
		struct bconn *c = evs[i].data.ptr;

		if (c->dead)
			continue;
		if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			ee_read(t, c, *now);
		if (!c->dead && (evs[i].events & EPOLLOUT))
			ee_flush(t, c);
	}
}

static void ee_forget(struct load_thread *t, struct bconn *c)
{
	epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
}

static void ee_finish(struct load_thread *t)
{
	(void)t;
}

static void ee_teardown(struct load_thread *t)
{
	if (t->ep >= 0)
		close(t->ep);
	t->ep = -1;
}

const struct load_engine load_engine_epoll = {
    .name = "epoll",
    .setup = ee_setup,
    .attach = ee_attach,
    .start = ee_start,
    .wait = ee_wait,
    .flush = ee_flush,
    .forget = ee_forget,
    .finish = ee_finish,
    .teardown = ee_teardown,
};
