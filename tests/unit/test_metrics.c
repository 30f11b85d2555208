/*
 * test_metrics.c - the admin endpoint (metrics.h) on a real ring with real
 * HTTP clients on loopback: idle clients cannot block it (each has
 * admin_timeout_ms, at most admin_max_clients at once, more wait in the
 * backlog), and a failed accept does not leave the listener deaf.
 *
 * Every wait is a bounded loop of ring iterations (each at most 10 ms).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/config.h"
#include "ringchat/counters.h"
#include "ringchat/metrics.h"
#include "ringchat/ring.h"
#include "ringchat/sock.h"

#define SPIN_MAX 300 /* ring iterations of at most 10 ms: 3 s at most */

struct fx {
	struct config cfg;
	struct ring *r;
	struct metrics *m;
	struct sockaddr_in addr;
};

static struct fx *fx_new(int max_clients, int timeout_ms)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	config_defaults(&f->cfg);
	strcpy(f->cfg.admin_listen, "127.0.0.1:0");
	f->cfg.admin_max_clients = max_clients;
	f->cfg.admin_timeout_ms = timeout_ms;
	f->r = ring_create(&f->cfg);
	if (!f->r) {
		free(f);
		skip(); /* no io_uring here */
		return NULL;
	}
	f->m = metrics_create(f->r, &f->cfg, NULL);
	assert_non_null(f->m);
	assert_int_equal(sock_parse_hostport(metrics_bound(f->m), &f->addr), 0);
	return f;
}

static void fx_free(struct fx *f)
{
	ring_destroy(f->r);
	metrics_destroy(f->m);
	free(f);
}

static uint64_t counter(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

#define SPIN_UNTIL(f, cond)                                                    \
	do {                                                                   \
		int spin_;                                                     \
		for (spin_ = 0; spin_ < SPIN_MAX && !(cond); spin_++)          \
			assert_true(ring_poll((f)->r, 10, NULL));              \
		if (!(cond))                                                   \
			fail_msg("still not true after %d iterations: %s",     \
				 SPIN_MAX, #cond);                             \
	} while (0)

static int client_connect(struct fx *f)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&f->addr, sizeof(f->addr)) == -1)
		assert_int_equal(errno, EINPROGRESS);
	return fd;
}

/* Reads what is there: > 0 bytes, 0 at EOF (or reset), -EAGAIN none. */
static ssize_t client_read(int fd, char *buf, size_t n)
{
	ssize_t got = read(fd, buf, n);

	if (got == -1)
		return errno == EAGAIN ? -EAGAIN : 0;
	return got;
}

struct resp {
	char text[1 << 16];
	size_t len;
	bool eof;
};

/* Reads until EOF, driving the ring meanwhile; true when EOF came. */
static bool read_to_eof(struct fx *f, int fd, struct resp *r, int spins)
{
	for (int i = 0; i < spins && !r->eof; i++) {
		ssize_t got = client_read(fd, r->text + r->len, sizeof(r->text) - 1 - r->len);

		if (got > 0) {
			r->len += (size_t)got;
			r->text[r->len] = '\0';
		} else if (got == 0) {
			r->eof = true;
		} else {
			assert_true(ring_poll(f->r, 10, NULL));
		}
	}
	return r->eof;
}

/* A whole GET /metrics on a new connection: the response text. */
static void get_metrics(struct fx *f, struct resp *r)
{
	static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
	int fd = client_connect(f);
	size_t sent = 0;

	memset(r, 0, sizeof(*r));
	for (int i = 0; i < SPIN_MAX && sent < sizeof(req) - 1; i++) {
		ssize_t n = write(fd, req + sent, sizeof(req) - 1 - sent);

		if (n > 0)
			sent += (size_t)n;
		else
			assert_true(ring_poll(f->r, 10, NULL));
	}
	assert_int_equal(sent, sizeof(req) - 1);
	if (!read_to_eof(f, fd, r, SPIN_MAX))
		fail_msg("no whole response to GET /metrics");
	close(fd);
	assert_non_null(strstr(r->text, "HTTP/1.0 200 OK\r\n"));
	assert_non_null(strstr(r->text, "ringchat_conn_accepted_total"));
}

/* Clients that connect and say nothing take every place; each is closed
 * after admin_timeout_ms, and a scraper waiting behind them is served. */
static void test_idle_clients_time_out(void **state)
{
	struct fx *f = fx_new(2, 200);
	uint64_t timeouts = counter(&counters.admin_timeouts);
	struct resp *r = calloc(1, sizeof(*r)), idle_r;
	int idle[2];

	(void)state;
	assert_non_null(r);
	for (int i = 0; i < 2; i++)
		idle[i] = client_connect(f);
	for (int i = 0; i < 20; i++)
		assert_true(ring_poll(f->r, 5, NULL));
	get_metrics(f, r); /* waits in the backlog until a place frees */
	assert_int_equal(counter(&counters.admin_timeouts), timeouts + 2);
	for (int i = 0; i < 2; i++) {
		memset(&idle_r, 0, sizeof(idle_r));
		assert_true(read_to_eof(f, idle[i], &idle_r, 10));
		assert_int_equal(idle_r.len, 0); /* closed without an answer */
		close(idle[i]);
	}
	/* a client that sends half a request is timed out the same way */
	idle[0] = client_connect(f);
	assert_int_equal(write(idle[0], "GET /met", 8), 8);
	memset(&idle_r, 0, sizeof(idle_r));
	assert_true(read_to_eof(f, idle[0], &idle_r, SPIN_MAX));
	assert_int_equal(counter(&counters.admin_timeouts), timeouts + 3);
	close(idle[0]);
	get_metrics(f, r);
	free(r);
	fx_free(f);
}

/* An accept that fails (EMFILE) is retried: once descriptors are free
 * again the endpoint answers. */
static void test_failed_accept_rearmed(void **state)
{
	struct fx *f = fx_new(4, 5000);
	uint64_t errors = counter(&counters.admin_accept_errors);
	struct resp *r = calloc(1, sizeof(*r));
	struct rlimit old, low;
	int fd, probe;

	(void)state;
	assert_non_null(r);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	fd = client_connect(f);
	probe = dup(fd); /* the lowest free number: every one below is used */
	assert_true(probe >= 0);
	close(probe);
	low = old;
	low.rlim_cur = (rlim_t)probe;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	SPIN_UNTIL(f, counter(&counters.admin_accept_errors) > errors);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	/* the client that was refused is accepted on the retry */
	assert_int_equal(write(fd, "GET /metrics HTTP/1.0\r\n\r\n", 25), 25);
	assert_true(read_to_eof(f, fd, r, SPIN_MAX));
	assert_non_null(strstr(r->text, "HTTP/1.0 200 OK\r\n"));
	close(fd);
	get_metrics(f, r);
	free(r);
	fx_free(f);
}

/* A request head that never ends within ADMIN_REQ_MAX is answered 400,
 * other paths 404; neither blocks the next scraper. */
static void test_bad_requests(void **state)
{
	struct fx *f = fx_new(2, 2000);
	struct resp *r = calloc(1, sizeof(*r));
	char *big = malloc(5000);
	int fd;

	(void)state;
	assert_non_null(r);
	assert_non_null(big);
	memset(big, 'x', 5000);
	fd = client_connect(f);
	for (size_t sent = 0, i = 0; sent < 5000 && i < SPIN_MAX; i++) {
		ssize_t n = write(fd, big + sent, 5000 - sent);

		if (n > 0)
			sent += (size_t)n;
		assert_true(ring_poll(f->r, 5, NULL));
		if (strstr(r->text, "HTTP"))
			break;
		n = client_read(fd, r->text + r->len, sizeof(r->text) - 1 - r->len);
		if (n > 0)
			r->len += (size_t)n;
	}
	read_to_eof(f, fd, r, SPIN_MAX);
	assert_non_null(strstr(r->text, "HTTP/1.0 400 Bad Request"));
	close(fd);
	memset(r, 0, sizeof(*r));
	fd = client_connect(f);
	assert_int_equal(write(fd, "GET /other HTTP/1.0\r\n\r\n", 23), 23);
	assert_true(read_to_eof(f, fd, r, SPIN_MAX));
	assert_non_null(strstr(r->text, "HTTP/1.0 404 Not Found"));
	close(fd);
	get_metrics(f, r);
	free(big);
	free(r);
	fx_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_idle_clients_time_out),
	    cmocka_unit_test(test_failed_accept_rearmed),
	    cmocka_unit_test(test_bad_requests),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
