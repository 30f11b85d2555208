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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/config.h"
#include "ringchat/conn.h"
#include "ringchat/counters.h"
#include "ringchat/frame.h"
#include "ringchat/handoff.h"
#include "ringchat/metrics.h"
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

/* tweak (may be NULL) adjusts the configuration before the table exists. */
static struct fx *fx_new_cfg(uint32_t depth, int out_limit, void (*tweak)(struct config *))
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	config_defaults(&f->cfg);
	strcpy(f->cfg.listen, "127.0.0.1:0");
	f->cfg.max_connections = 4;
	f->cfg.out_limit_bytes = out_limit;
	if (tweak)
		tweak(&f->cfg);
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

static struct fx *fx_new(uint32_t depth, int out_limit)
{
	return fx_new_cfg(depth, out_limit, NULL);
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

/* ---- deadlines, admission, pending frames, fd limits ------------------- */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* True once the client sees its connection closed (EOF or reset). */
static bool client_closed(int fd)
{
	char b[256];
	ssize_t got;

	do
		got = client_read(fd, b, sizeof(b), 0);
	while (got > 0);
	return got != -EAGAIN;
}

static void short_frame_timeout(struct config *c)
{
	c->frame_timeout_ms = 150;
	c->login_timeout_ms = 60000;
}

/* A started frame must be complete within frame_timeout_ms, however
 * steadily its bytes trickle in; whole frames and silence between frames
 * are not this deadline's business. */
static void test_frame_timeout(void **state)
{
	struct fx *f = fx_new_cfg(8, 1 << 20, short_frame_timeout);
	uint64_t closed = counter(&counters.conn_frame_timeout_closed);
	uint8_t *frame;
	size_t len;
	struct conn *b;
	uint64_t start;
	int fda, fdb;

	(void)state;
	accept_one(f, &fda);
	b = accept_one(f, &fdb);
	frame = frame_build(1, 0, 1, "{}", 2, &len);
	assert_non_null(frame);
	/* a: one byte every 20 ms, never the whole frame in time */
	start = mono_ms();
	for (size_t i = 0; i < len && !client_closed(fda); i++) {
		assert_int_equal(write(fda, frame + i, 1), 1);
		for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 20;)
			assert_true(ring_poll(f->r, 5, NULL));
	}
	SPIN_UNTIL(f, client_closed(fda));
	assert_true(mono_ms() - start < 1000);
	assert_int_equal(counter(&counters.conn_frame_timeout_closed), closed + 1);
	/* b sent nothing at all, then a whole frame: still open */
	assert_int_equal(b->state, CONN_OPEN);
	send_frame(fdb, 5);
	SPIN_UNTIL(f, spsc_size(&f->h.lanes[0].in) == 1);
	free(pop_in(f));
	for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 300;)
		assert_true(ring_poll(f->r, 10, NULL));
	assert_int_equal(b->state, CONN_OPEN);
	assert_false(client_closed(fdb));
	assert_int_equal(counter(&counters.conn_frame_timeout_closed), closed + 1);
	free(frame);
	close(fda);
	close(fdb);
	fx_free(f);
}

static void short_login_timeout(struct config *c)
{
	c->login_timeout_ms = 150;
}

/* A connection that does not log in within login_timeout_ms is closed,
 * PINGs or not; the LOGIN/RESUME OK reply (OUT_LOGGED_IN) clears it. */
static void test_login_timeout(void **state)
{
	struct fx *f = fx_new_cfg(8, 1 << 20, short_login_timeout);
	uint64_t closed = counter(&counters.conn_login_timeout_closed);
	struct conn *b;
	uint64_t start = mono_ms();
	int fda, fdb;

	(void)state;
	accept_one(f, &fda);
	b = accept_one(f, &fdb);
	push_out(f, conn_ref(f->t, b), "ok", 2, OUT_REPLY | OUT_LOGGED_IN);
	while (!client_closed(fda) && mono_ms() - start < 2000) {
		send_frame(fda, 1); /* busy, but not logged in */
		assert_true(ring_poll(f->r, 10, NULL));
		free(pop_in(f));
	}
	assert_true(client_closed(fda));
	assert_int_equal(counter(&counters.conn_login_timeout_closed), closed + 1);
	for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 300;)
		assert_true(ring_poll(f->r, 10, NULL));
	assert_int_equal(b->state, CONN_OPEN);
	assert_true(b->logged_in);
	close(fda);
	close(fdb);
	fx_free(f);
}

static void short_idle(struct config *c)
{
	c->idle_timeout_ms = 200;
	c->frame_timeout_ms = 60000;
	c->login_timeout_ms = 60000;
}

/* The idle timeout counts from the last whole frame: a byte now and then
 * does not keep a connection alive. */
static void test_idle_counts_frames(void **state)
{
	struct fx *f = fx_new_cfg(8, 1 << 20, short_idle);
	uint64_t idle = counter(&counters.conn_idle_closed);
	uint8_t *frame;
	size_t len, i = 0;
	struct conn *c;
	int fd;

	(void)state;
	c = accept_one(f, &fd);
	(void)c;
	frame = frame_build(1, 0, 1, "{}", 2, &len);
	assert_non_null(frame);
	for (uint64_t t0 = mono_ms(); !client_closed(fd) && mono_ms() - t0 < 3000;) {
		if (i < len)
			assert_int_equal(write(fd, frame + i++, 1), 1);
		for (uint64_t t1 = mono_ms(); mono_ms() - t1 < 50;)
			assert_true(ring_poll(f->r, 5, NULL));
	}
	assert_true(client_closed(fd));
	assert_true(i < len);
	assert_int_equal(counter(&counters.conn_idle_closed), idle + 1);
	free(frame);
	close(fd);
	fx_free(f);
}

static void addr_caps(struct config *c)
{
	c->max_connections = 16;
	c->max_conns_per_addr = 3;
	c->max_unauth_per_addr = 2;
}

static int client_connect_from(struct fx *f, const char *src)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(inet_pton(AF_INET, src, &sa.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	return fd;
}

static bool metrics_show(const char *line)
{
	char *text = NULL;
	size_t n = 0;
	FILE *out = open_memstream(&text, &n);
	bool found;

	assert_non_null(out);
	metrics_render(out, NULL);
	fclose(out);
	found = strstr(text, line) != NULL;
	if (!found)
		print_message("not in /metrics: %s", line);
	free(text);
	return found;
}

/* max_unauth_per_addr and max_conns_per_addr refuse at accept, per peer
 * address; logging in frees an unauthenticated place; the refusals show
 * in /metrics. */
static void test_per_addr_caps(void **state)
{
	struct fx *f = fx_new_cfg(8, 1 << 20, addr_caps);
	uint64_t unauth0 = counter(&counters.conn_refused_unauth);
	uint64_t addr0 = counter(&counters.conn_refused_addr);
	char line[128];
	struct conn *a, *b, *c;
	int fda, fdb, fdc, fdx, fdy, fdz;

	(void)state;
	a = accept_one(f, &fda);
	b = accept_one(f, &fdb);
	(void)b;
	/* a third connection not logged in is one too many for 127.0.0.1 */
	fdx = client_connect(f);
	SPIN_UNTIL(f, counter(&counters.conn_refused_unauth) == unauth0 + 1);
	SPIN_UNTIL(f, client_closed(fdx));
	assert_int_equal(f->t->nopen, 2);
	/* another address has places of its own */
	fdz = client_connect_from(f, "127.0.0.2");
	SPIN_UNTIL(f, f->t->nopen == 3);
	/* a logs in: 127.0.0.1 has an unauthenticated place again */
	push_out(f, conn_ref(f->t, a), "ok", 2, OUT_REPLY | OUT_LOGGED_IN);
	SPIN_UNTIL(f, a->logged_in);
	c = accept_one(f, &fdc);
	assert_int_equal(c->state, CONN_OPEN);
	/* three connections from 127.0.0.1: the fourth is refused */
	fdy = client_connect(f);
	SPIN_UNTIL(f, counter(&counters.conn_refused_addr) == addr0 + 1);
	SPIN_UNTIL(f, client_closed(fdy));
	assert_int_equal(f->t->nopen, 4);
	snprintf(line, sizeof(line), "ringchat_conn_refused_addr_total %llu\n",
		 (unsigned long long)(addr0 + 1));
	assert_true(metrics_show(line));
	snprintf(line, sizeof(line), "ringchat_conn_refused_unauth_total %llu\n",
		 (unsigned long long)(unauth0 + 1));
	assert_true(metrics_show(line));
	/* closing gives the places back (b: one of each) */
	close(fdb);
	SPIN_UNTIL(f, f->t->nopen == 3);
	fdx = client_connect(f);
	SPIN_UNTIL(f, f->t->nopen == 4);
	assert_int_equal(counter(&counters.conn_refused_addr), addr0 + 1);
	assert_int_equal(counter(&counters.conn_refused_unauth), unauth0 + 1);
	close(fda);
	close(fdc);
	close(fdx);
	close(fdy);
	close(fdz);
	SPIN_UNTIL(f, f->t->nopen == 0);
	/* every address entry is gone with its connections */
	for (uint32_t i = 0; i <= f->t->addr_mask; i++)
		assert_int_equal(f->t->addrs[i].conns, 0);
	fx_free(f);
}

static void pending_four(struct config *c)
{
	c->max_pending_frames = 4;
}

static void pending_bytes(struct config *c)
{
	c->max_pending_bytes = 100; /* 4 PINGs of 22 bytes, not 5 */
}

/* At most max_pending_frames (or _bytes) frames of a connection are
 * handed to its worker without an answer; then reading pauses (no error)
 * until replies come, and the rest follows in order. */
static void run_pending_bound(void (*tweak)(struct config *))
{
	struct fx *f = fx_new_cfg(64, 1 << 20, tweak);
	uint64_t pauses = counter(&counters.pending_pauses);
	uint32_t next = 1, handed = 0;
	struct conn *c;
	int fd;

	c = accept_one(f, &fd);
	for (uint32_t seq = 1; seq <= 10; seq++)
		send_frame(fd, seq);
	SPIN_UNTIL(f, c->pend_blocked && !c->recv_armed);
	spin(f, 10);
	assert_int_equal(spsc_size(&f->h.lanes[0].in), 4);
	assert_int_equal(counter(&counters.pending_pauses), pauses + 1);
	/* the worker takes them but answers none: still four */
	for (struct in_msg *m; (m = pop_in(f)); handed++) {
		assert_int_equal(m->hdr.seq, next++);
		free(m);
	}
	spin(f, 10);
	assert_null(pop_in(f));
	assert_int_equal(c->state, CONN_OPEN);
	/* each answer lets one more through, in order */
	for (int i = 0; i < SPIN_MAX && next <= 10; i++) {
		struct in_msg *m = pop_in(f);

		if (m) {
			assert_int_equal(m->hdr.seq, next++);
			free(m);
			handed++;
			continue;
		}
		if (c->pend_frames == 4)
			push_out(f, conn_ref(f->t, c), "r", 1, OUT_REPLY);
		assert_true(ring_poll(f->r, 10, NULL));
		assert_true(c->pend_frames <= 4);
	}
	assert_int_equal(next, 11);
	while (c->pend_frames)
		push_out(f, conn_ref(f->t, c), "r", 1, OUT_REPLY), spin(f, 1);
	SPIN_UNTIL(f, !c->pend_blocked && c->recv_armed);
	send_frame(fd, 11); /* reading again */
	SPIN_UNTIL(f, spsc_size(&f->h.lanes[0].in) == 1);
	free(pop_in(f));
	close(fd);
	fx_free(f);
}

static void test_pending_frames_bound(void **state)
{
	(void)state;
	run_pending_bound(pending_four);
}

static void test_pending_bytes_bound(void **state)
{
	(void)state;
	run_pending_bound(pending_bytes);
}

/* Child: creates a table with max_connections 1000 under the given file
 * limits; exits 0 when it allows expect connections and the soft limit is
 * then expect_soft, 1 otherwise. */
static void fd_limit_child(rlim_t soft, rlim_t hard, uint32_t expect, rlim_t expect_soft)
{
	struct rlimit rl = { soft, hard };
	struct config cfg;
	struct handoff h = { 0 };
	struct conn_table *t;
	struct ring *r;
	int ok;

	config_defaults(&cfg);
	strcpy(cfg.listen, "127.0.0.1:0");
	cfg.max_connections = 1000;
	cfg.workers = 1;
	cfg.hash_threads = 1;
	cfg.admin_max_clients = 16; /* reserve: 32 + 4 + 2 + 16 = 54 */
	if (setrlimit(RLIMIT_NOFILE, &rl) || handoff_init(&h, 1, 8))
		_exit(3);
	r = ring_create(&cfg);
	if (!r)
		_exit(77);
	t = conn_table_create(r, &cfg, &h);
	if (!t)
		_exit(2);
	getrlimit(RLIMIT_NOFILE, &rl);
	ok = t->max_conns == expect && t->fd_reserve == 54 && rl.rlim_cur == expect_soft;
	if (!ok)
		fprintf(stderr, "max_conns %u reserve %u soft %llu\n", t->max_conns, t->fd_reserve,
			(unsigned long long)rl.rlim_cur);
	_exit(ok ? 0 : 1);
}

static int run_child(rlim_t soft, rlim_t hard, uint32_t expect, rlim_t expect_soft)
{
	int st;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (!pid)
		fd_limit_child(soft, hard, expect, expect_soft);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* max_connections is fitted to RLIMIT_NOFILE at start: the soft limit is
 * raised when the hard one allows; else max_connections is lowered to
 * what fits beside the descriptors kept back. */
static void test_fd_limit(void **state)
{
	struct rlimit rl;
	int rc;

	(void)state;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 1100)
		skip();
	rc = run_child(300, 300, 300 - 54, 300); /* lowered */
	if (rc == 77)
		skip();
	assert_int_equal(rc, 0);
	assert_int_equal(run_child(100, 1100, 1000, 1054), 0); /* soft raised */
	assert_int_equal(run_child(100, 600, 600 - 54, 600), 0); /* raised, still lowered */
	assert_int_equal(run_child(40, 40, 0, 40), 2);           /* nothing fits: fails */
}

/* EMFILE on accept pauses the accept and retries on a short ring timer
 * (not the 1 s sweep): the client waiting in the backlog is accepted
 * soon after a descriptor frees up. */
static void test_accept_emfile_backoff(void **state)
{
	struct fx *f = fx_new(8, 1 << 20);
	uint64_t backoffs = counter(&counters.accept_backoffs);
	struct rlimit old, low;
	int spare, probe, fd;
	uint64_t freed;

	(void)state;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0 && spare >= 0);
	probe = dup(spare); /* the lowest free number: every one below is used */
	assert_true(probe >= 0);
	close(probe);
	low = old;
	low.rlim_cur = (rlim_t)probe;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

	assert_int_equal(connect(fd, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
	SPIN_UNTIL(f, counter(&counters.accept_backoffs) > backoffs);
	assert_int_equal(f->t->nopen, 0);
	spin(f, 20); /* retried a few times, paused in between */
	assert_int_equal(f->t->nopen, 0);
	assert_true(counter(&counters.accept_backoffs) < backoffs + 20);

	close(spare);
	freed = mono_ms();
	SPIN_UNTIL(f, f->t->nopen == 1);
	assert_true(mono_ms() - freed < CONN_ACCEPT_BACKOFF_MAX_MS + 300);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	send_frame(fd, 3);
	SPIN_UNTIL(f, spsc_size(&f->h.lanes[0].in) == 1);
	free(pop_in(f));
	close(fd);
	fx_free(f);
}

/* A slot list that cannot grow (out of memory) must not strand a
 * connection: pausing closes it with a log line, and a DEAD slot whose
 * dead-list push failed is released by the sweep. */
static void test_list_nomem(void **state)
{
	struct fx *f = fx_new(2, 1 << 20);
	uint64_t nomem = counter(&counters.conn_nomem_closed);
	struct in_msg *filler[2];
	struct conn *c;
	int fd;

	(void)state;
	c = accept_one(f, &fd);
	conn_fault_list_nomem = 1;
	for (uint32_t seq = 1; seq <= 5; seq++)
		send_frame(fd, seq); /* the third needs the paused list */
	SPIN_UNTIL(f, client_closed(fd));
	assert_int_equal(conn_fault_list_nomem, 0);
	assert_int_equal(counter(&counters.conn_nomem_closed), nomem + 1);
	SPIN_UNTIL(f, c->state == CONN_DEAD || c->state == CONN_FREE);
	for (int i = 0; i < SPIN_MAX; i++) { /* the frames, then IN_CLOSED */
		struct in_msg *m = pop_in(f);

		if (m) {
			free(m);
			continue;
		}
		if (c->state == CONN_FREE)
			break;
		assert_true(ring_poll(f->r, 10, NULL));
	}
	assert_int_equal(c->state, CONN_FREE);
	free(pop_in(f));
	close(fd);

	/* DEAD, the worker's queue full, and no room on the dead list */
	c = accept_one(f, &fd);
	send_frame(fd, 1);
	SPIN_UNTIL(f, spsc_size(&f->h.lanes[0].in) == 1);
	free(pop_in(f));
	for (int i = 0; i < 2; i++) {
		filler[i] = calloc(1, sizeof(*filler[i]));
		assert_true(spsc_push(&f->h.lanes[0].in, filler[i]));
	}
	conn_fault_list_nomem = 1;
	close(fd);
	SPIN_UNTIL(f, c->state == CONN_DEAD);
	assert_int_equal(conn_fault_list_nomem, 0);
	assert_int_equal(f->t->dead.n, 0);
	for (int i = 0; i < 2; i++)
		free(pop_in(f));
	SPIN_UNTIL(f, c->state == CONN_FREE); /* the sweep told the worker */
	struct in_msg *m = pop_in(f);

	assert_non_null(m);
	assert_int_equal(m->kind, IN_CLOSED);
	free(m);
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
	    cmocka_unit_test(test_frame_timeout),
	    cmocka_unit_test(test_login_timeout),
	    cmocka_unit_test(test_idle_counts_frames),
	    cmocka_unit_test(test_per_addr_caps),
	    cmocka_unit_test(test_pending_frames_bound),
	    cmocka_unit_test(test_pending_bytes_bound),
	    cmocka_unit_test(test_fd_limit),
	    cmocka_unit_test(test_accept_emfile_backoff),
	    cmocka_unit_test(test_list_nomem),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
