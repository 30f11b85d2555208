/*
 * engine_uring.c - the io_uring engine of the message load (see engine.h
 * for the contract).
 *
 * One ring per load thread; every connection keeps one receive and at
 * most one send in the kernel, and a loop turn submits all of them with
 * the wait in one io_uring_enter: the sends of a tick cost one system
 * call instead of one each. Sockets are blocking: io_uring waits for
 * them itself, where a non-blocking receive would end in -EAGAIN.
 * user_data is the connection's address with the operation in its low
 * bits (struct bconn is 8-aligned).
 *
 * A send in flight owns c->sbuf; load core appends to c->wbuf meanwhile,
 * and the two swap when the send is done.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "engine.h"

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
	if (c->rcap - c->rlen < 4096 && bconn_grow(&c->rbuf, &c->rcap, c->rlen + 16384)) {
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
static void lu_wait(struct load_thread *t, const struct timespec *ts, uint64_t *now)
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

static int lu_setup(struct load_thread *t)
{
	t->ep = -1;
	return 0;
}

static int lu_attach(struct load_thread *t, struct bconn *c)
{
	int fl = fcntl(c->fd, F_GETFL);

	(void)t;
	c->want_out = false;
	if (fl == -1 || fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) == -1)
		return -errno;
	return 0;
}

static int lu_start(struct load_thread *t)
{
	struct io_uring_params p = {
	    .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE,
	};
	unsigned entries = 64;
	int i, err;

	while (entries < 2u * (unsigned)t->nconns + 16u)
		entries *= 2;
	p.cq_entries = entries * 2;
	err = io_uring_queue_init_params(entries, &t->ring, &p);
	if (err < 0) {
		/* before 6.1 the kernel knows neither flag: plain ring */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 2;
		err = io_uring_queue_init_params(entries, &t->ring, &p);
	}
	if (err < 0) {
		fprintf(stderr, "ringchat-bench: io_uring set-up failed; try --engine epoll\n");
		return -1;
	}
	for (i = 0; i < t->nconns; i++)
		lu_arm_recv(t, t->conns[i]);
	return 0;
}

static void lu_flush(struct load_thread *t, struct bconn *c)
{
	lu_arm_send(t, c);
}

static void lu_forget(struct load_thread *t, struct bconn *c)
{
	/* Its operations complete (or are cancelled at finish) and are
	 * only counted: lu_complete skips dead connections. */
	(void)t;
	(void)c;
}

/* Sends what is queued (the final acks), then takes every receive back
 * from the kernel before the buffers are freed, and closes the ring.
 * Bounded: 2 s, and 1 s more for the cancellations. */
static void lu_finish(struct load_thread *t)
{
	uint64_t deadline = bench_now_ns() + 2000000000ull, now;
	struct timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
	struct io_uring_sqe *sqe;
	bool sending = true;
	int i;

	while (sending && bench_now_ns() < deadline) {
		sending = false;
		for (i = 0; i < t->nconns; i++)
			sending = sending || (!t->conns[i]->dead && t->conns[i]->send_armed);
		if (sending)
			lu_wait(t, &ts, &now);
	}
	t->stopping = true;
	sqe = lu_sqe(t);
	if (sqe) {
		io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, LU_CANCEL);
	}
	while (t->ring_inflight > 0 && bench_now_ns() < deadline + 1000000000ull)
		lu_wait(t, &ts, &now);
	io_uring_queue_exit(&t->ring);
}

static void lu_teardown(struct load_thread *t)
{
	(void)t;
}

const struct load_engine load_engine_uring = {
    .name = "uring",
    .setup = lu_setup,
    .attach = lu_attach,
    .start = lu_start,
    .wait = lu_wait,
    .flush = lu_flush,
    .forget = lu_forget,
    .finish = lu_finish,
    .teardown = lu_teardown,
};
