/*
 * test_conn.c - the life cycle of client connections (conn.h) on a real
 * ring, with real TCP clients on loopback and the test playing the worker
 * (it pops the lane's in queue and pushes to its out queue; it runs on
 * the ring's thread, which is the single producer of the in queue).
 *
 * Every wait is a bounded loop of ring iterations (each at most 10 ms)
 * until the condition holds; nothing sleeps to synchronise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/config.h"
#include "ringchat/conn.h"
#include "ringchat/counters.h"
#include "ringchat/frame.h"
#include "ringchat/handoff.h"
#include "ringchat/ring.h"
#include "ringchat/sock.h"

#define SPIN_MAX 300 /* ring iterations of at most 10 ms: 3 s at most */

struct fx {
	struct config cfg;
	struct handoff h;
	struct ring *r;
	struct conn_table *t;
	struct sockaddr_in addr;
};

static struct fx *fx_new(uint32_t depth, int out_limit)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	config_defaults(&f->cfg);
	strcpy(f->cfg.listen, "127.0.0.1:0");
	f->cfg.max_connections = 4;
	f->cfg.out_limit_bytes = out_limit;
	assert_int_equal(handoff_init(&f->h, 1, depth), 0);
	f->r = ring_create(&f->cfg);
	if (!f->r) {
		handoff_destroy(&f->h);
		free(f);
		skip(); /* no io_uring here */
		return NULL;
	}
	f->t = conn_table_create(f->r, &f->cfg, &f->h);
	assert_non_null(f->t);
	assert_int_equal(sock_parse_hostport(f->t->bound, &f->addr), 0);
	return f;
}

static void fx_free(struct fx *f)
{
	ring_destroy(f->r);
	conn_table_destroy(f->t);
	handoff_destroy(&f->h);
	free(f);
}

static uint64_t counter(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* Runs the ring until cond(arg) holds; fails the test after SPIN_MAX. */
#define SPIN_UNTIL(f, cond)                                                    \
	do {                                                                   \
		int spin_;                                                     \
		for (spin_ = 0; spin_ < SPIN_MAX && !(cond); spin_++)          \
			assert_true(ring_poll((f)->r, 10, NULL));              \
		if (!(cond))                                                   \
			fail_msg("still not true after %d iterations: %s",     \
				 SPIN_MAX, #cond);                             \
	} while (0)

/* Runs n iterations without waiting for anything in particular. */
static void spin(struct fx *f, int n)
{
	for (int i = 0; i < n; i++)
		assert_true(ring_poll(f->r, 5, NULL));
}

static int client_connect(struct fx *f)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	return fd;
}

/* Connects a client and returns the connection the table made for it. */
static struct conn *accept_one(struct fx *f, int *fd)
{
	uint32_t before = f->t->nopen;
	struct conn *c = NULL;

	*fd = client_connect(f);
	SPIN_UNTIL(f, f->t->nopen == before + 1);
	for (uint32_t s = 0; s < f->t->high_water; s++)
		if (f->t->conns[s].state == CONN_OPEN && f->t->conns[s].fd >= 0 &&
		    f->t->conns[s].recv_armed)
			c = &f->t->conns[s];
	assert_non_null(c);
	return c;
}

static void send_frame(int fd, uint32_t seq)
{
	size_t len;
	uint8_t *frame = frame_build(1 /* PING */, 0, seq, "{}", 2, &len);

	assert_non_null(frame);
	assert_int_equal(write(fd, frame, len), (ssize_t)len);
	free(frame);
}

static struct in_msg *pop_in(struct fx *f)
{
	return spsc_pop(&f->h.lanes[0].in);
}

static void push_out(struct fx *f, uint64_t ref, const char *data, uint32_t len, uint32_t flags)
{
	struct out_msg *m = malloc(sizeof(*m) + len);

	assert_non_null(m);
	m->conn = ref;
	m->flags = flags;
	m->len = len;
	memcpy(m->data, data, len);
	assert_true(spsc_push(&f->h.lanes[0].out, m));
}

/* Reads what the client has within ms: bytes (>0), 0 at EOF, -errno,
 * or -EAGAIN when nothing came. */
static ssize_t client_read(int fd, void *buf, size_t n, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t got;

	if (poll(&p, 1, ms) != 1)
		return -EAGAIN;
	got = read(fd, buf, n);
	return got == -1 ? -errno : got;
}

/* Reads exactly n bytes, driving the ring meanwhile (bounded). */
static void client_read_all(struct fx *f, int fd, char *buf, size_t n)
{
	size_t have = 0;

	for (int i = 0; i < SPIN_MAX && have < n; i++) {
		ssize_t got = client_read(fd, buf + have, n - have, 0);

		if (got > 0)
			have += (size_t)got;
		else if (got != -EAGAIN)
			fail_msg("read ended after %zu of %zu bytes: %zd", have, n, got);
		else
			assert_true(ring_poll(f->r, 10, NULL));
	}
	assert_int_equal(have, n);
}

/* OPEN → CLOSING → DEAD → FREE, with IN_CLOSED held back by a full queue. */
static void test_open_closing_dead_free(void **state)
{
	struct fx *f = fx_new(2, 1 << 20);
	uint64_t closed = counter(&counters.conn_closed);
	struct in_msg *m, *filler[2];
	struct conn *c;
	uint64_t ref;
	char b;
	int fd;

	(void)state;
	c = accept_one(f, &fd);
	ref = conn_ref(f->t, c);
	assert_int_equal(c->state, CONN_OPEN);

	send_frame(fd, 7);
	SPIN_UNTIL(f, spsc_size(&f->h.lanes[0].in) == 1);
	m = pop_in(f);
	assert_int_equal(m->kind, IN_FRAME);
	assert_int_equal(m->conn, ref);
	assert_int_equal(m->hdr.seq, 7);
	free(m);

	/* the worker has seen the connection: it must be told it is gone,
	 * and its queue is full for now */
	for (int i = 0; i < 2; i++) {
		filler[i] = calloc(1, sizeof(*filler[i]));
		assert_true(spsc_push(&f->h.lanes[0].in, filler[i]));
	}
	conn_close(f->t, c, "test");
	assert_int_equal(c->state, CONN_CLOSING); /* its recv is being cancelled */
	assert_true(c->inflight > 0);
	SPIN_UNTIL(f, c->state == CONN_DEAD);
	assert_int_equal(c->fd, -1);
	assert_int_equal(counter(&counters.conn_closed), closed + 1);
	assert_true(client_read(fd, &b, 1, 1000) <= 0); /* the socket is closed */
	spin(f, 5);
	assert_int_equal(c->state, CONN_DEAD); /* the slot waits for the worker */
	assert_int_equal(f->t->dead.n, 1);

	for (int i = 0; i < 2; i++)
		free(pop_in(f));
	SPIN_UNTIL(f, c->state == CONN_FREE);
	m = pop_in(f);
	assert_non_null(m);
	assert_int_equal(m->kind, IN_CLOSED);
	assert_int_equal(m->conn, ref);
	free(m);
	assert_null(pop_in(f));
	assert_int_equal(f->t->nopen, 0);
	close(fd);
	fx_free(f);
}

/* OUT_CLOSE: the reply is delivered, then FIN; input is discarded while
 * the node waits for the client's EOF; then the slot is freed. */
static void test_linger_after_out_close(void **state)
{
	struct fx *f = fx_new(8, 1 << 20);
	const char reply[] = "the final reply";
	char buf[64];
	struct in_msg *m;
	struct conn *c;
	uint64_t ref;
	int fd;

	(void)state;
	c = accept_one(f, &fd);
	ref = conn_ref(f->t, c);
	send_frame(fd, 1);
	SPIN_UNTIL(f, spsc_size(&f->h.lanes[0].in) == 1);
	free(pop_in(f));

	push_out(f, ref, reply, sizeof(reply), OUT_CLOSE);
	SPIN_UNTIL(f, c->state == CONN_LINGER);
	client_read_all(f, fd, buf, sizeof(reply));
	assert_memory_equal(buf, reply, sizeof(reply));
	assert_int_equal(client_read(fd, buf, sizeof(buf), 1000), 0); /* FIN after it */

	/* lingering: still waiting for our EOF, and our input goes nowhere */
	send_frame(fd, 2);
	spin(f, 5);
	assert_int_equal(c->state, CONN_LINGER);
	assert_null(pop_in(f));

	close(fd);
	SPIN_UNTIL(f, c->state == CONN_FREE);
	m = pop_in(f);
	assert_non_null(m);
	assert_int_equal(m->kind, IN_CLOSED);
	assert_int_equal(m->conn, ref);
	free(m);
	fx_free(f);
}

/* Unsent output past out_limit_bytes closes the connection; at the limit
 * everything is delivered. */
static void test_output_limit_closes(void **state)
{
	struct fx *f = fx_new(8, 1000);
	uint64_t limited = counter(&counters.conn_out_limit_closed);
	char big[600], buf[1000];
	struct conn *a, *b;
	int fda, fdb;

	(void)state;
	memset(big, 'x', sizeof(big));
	a = accept_one(f, &fda);
	/* two replies queued in one iteration: 1200 unsent bytes > 1000 */
	push_out(f, conn_ref(f->t, a), big, sizeof(big), 0);
	push_out(f, conn_ref(f->t, a), big, sizeof(big), 0);
	SPIN_UNTIL(f, a->state == CONN_FREE);
	assert_int_equal(counter(&counters.conn_out_limit_closed), limited + 1);
	assert_true(client_read(fda, buf, sizeof(buf), 1000) <= 0); /* nothing, then closed */
	close(fda);

	b = accept_one(f, &fdb);
	push_out(f, conn_ref(f->t, b), big, 400, 0);
	push_out(f, conn_ref(f->t, b), big, sizeof(big), 0); /* exactly 1000 */
	client_read_all(f, fdb, buf, 1000);
	assert_int_equal(b->state, CONN_OPEN);
	assert_int_equal(counter(&counters.conn_out_limit_closed), limited + 1);
	close(fdb);
	fx_free(f);
}

/* A freed slot is reused with the next generation; replies and CQEs
 * carrying the old generation are dropped. */
static void test_slot_reuse_rejects_stale(void **state)
{
	struct fx *f = fx_new(8, 1 << 20);
	uint64_t stale = counter(&counters.stale_outs);
	struct io_uring_cqe cqe = { 0 };
	struct conn *a, *b;
	uint64_t ref_a, ref_b;
	uint32_t inflight;
	char buf[16];
	int fda, fdb;

	(void)state;
	a = accept_one(f, &fda);
	ref_a = conn_ref(f->t, a);
	close(fda);
	SPIN_UNTIL(f, a->state == CONN_FREE); /* no frame: no IN_CLOSED needed */
	assert_null(pop_in(f));

	b = accept_one(f, &fdb);
	ref_b = conn_ref(f->t, b);
	assert_ptr_equal(a, b); /* same slot ... */
	assert_int_equal(CONN_SLOT(ref_b), CONN_SLOT(ref_a));
	assert_int_equal(CONN_GEN(ref_b), CONN_GEN(ref_a) + 1); /* ... next generation */
	assert_null(conn_lookup(f->t, CONN_SLOT(ref_a), CONN_GEN(ref_a)));
	assert_ptr_equal(conn_lookup(f->t, CONN_SLOT(ref_b), CONN_GEN(ref_b)), b);

	/* a reply for the old connection does not reach the new one */
	push_out(f, ref_a, "old", 3, OUT_CLOSE);
	spin(f, 3);
	assert_int_equal(counter(&counters.stale_outs), stale + 1);
	assert_int_equal(b->state, CONN_OPEN);
	assert_int_equal(client_read(fdb, buf, sizeof(buf), 50), -EAGAIN);

	/* a late send completion of the old generation changes nothing */
	inflight = b->inflight;
	cqe.user_data = ring_ud(RING_OP_SEND, CONN_GEN(ref_a), CONN_SLOT(ref_a));
	cqe.res = 3;
	ring_dispatch_cqe(f->r, &cqe);
	assert_int_equal(b->inflight, inflight);
	assert_false(b->send_inflight);
	assert_int_equal(b->state, CONN_OPEN);

	push_out(f, ref_b, "new", 3, 0);
	client_read_all(f, fdb, buf, 3);
	assert_memory_equal(buf, "new", 3);
	close(fdb);
	fx_free(f);
}

/* A full in queue pauses the connection (recv cancelled, frames kept in
 * order); handing the frames over resumes it. */
static void test_pause_and_resume(void **state)
{
	struct fx *f = fx_new(2, 1 << 20);
	uint64_t pauses = counter(&counters.backpressure_events);
	uint32_t next = 1;
	struct conn *c;
	int fd;

	(void)state;
	c = accept_one(f, &fd);
	for (uint32_t seq = 1; seq <= 5; seq++)
		send_frame(fd, seq);
	SPIN_UNTIL(f, c->paused && !c->recv_armed);
	assert_int_equal(spsc_size(&f->h.lanes[0].in), 2);
	assert_true(counter(&counters.backpressure_events) > pauses);
	spin(f, 3);
	assert_true(c->paused); /* stays paused while nobody consumes */

	/* the worker takes frames; the rest follow in order */
	for (int i = 0; i < SPIN_MAX && next <= 5; i++) {
		struct in_msg *m = pop_in(f);

		if (!m) {
			assert_true(ring_poll(f->r, 10, NULL));
			continue;
		}
		assert_int_equal(m->kind, IN_FRAME);
		assert_int_equal(m->hdr.seq, next++);
		free(m);
	}
	assert_int_equal(next, 6);
	SPIN_UNTIL(f, !c->paused && c->recv_armed);
	assert_int_equal(c->state, CONN_OPEN);

	send_frame(fd, 6); /* reading again */
	SPIN_UNTIL(f, spsc_size(&f->h.lanes[0].in) == 1);
	struct in_msg *m = pop_in(f);

	assert_int_equal(m->hdr.seq, 6);
	free(m);
	close(fd);
	fx_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open_closing_dead_free),
	    cmocka_unit_test(test_linger_after_out_close),
	    cmocka_unit_test(test_output_limit_closes),
	    cmocka_unit_test(test_slot_reuse_rejects_stale),
	    cmocka_unit_test(test_pause_and_resume),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
