/*
 * test_udp_proxy.c - runs the ringchat-udp-proxy binary (path in
 * $RINGCHAT_UDP_PROXY, else skip) between two loopback sockets and checks
 * what arrives against the proxy's own counters: everything, in order, at
 * 0%; exactly in - drop at 50% drop; twice everything at 100% dup; one
 * flipped bit per datagram at 100% corrupt; at least the delay; and the
 * reply direction to the last client.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define DGRAM_BYTES 200
#define BATCH 50 /* in flight at once: far below any socket buffer */

struct proxy_run {
	pid_t pid;
	int out_fd; /* proxy's stdout */
	char buf[8192];
	size_t len;
	uint16_t port;
};

struct stats {
	uint64_t in, out, drop, dup, corrupt, reorder, overflow;
};

static const char *proxy_path;
static pid_t live_pid; /* the proxy a failed test may leave behind */

static int reap_proxy(void **state)
{
	(void)state;
	if (live_pid > 0) {
		kill(live_pid, SIGKILL);
		waitpid(live_pid, NULL, 0);
		live_pid = 0;
	}
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reads one line of the proxy's output into line; false on timeout/EOF. */
static bool read_line(struct proxy_run *pr, char *line, size_t cap, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		char *nl = memchr(pr->buf, '\n', pr->len);
		if (nl) {
			size_t n = (size_t)(nl - pr->buf);
			if (n >= cap)
				n = cap - 1;
			memcpy(line, pr->buf, n);
			line[n] = '\0';
			size_t used = (size_t)(nl - pr->buf) + 1;
			memmove(pr->buf, pr->buf + used, pr->len - used);
			pr->len -= used;
			return true;
		}
		uint64_t now = now_ms();
		if (now >= end)
			return false;
		struct pollfd pfd = {.fd = pr->out_fd, .events = POLLIN};
		if (poll(&pfd, 1, (int)(end - now)) <= 0)
			continue;
		ssize_t n = read(pr->out_fd, pr->buf + pr->len, sizeof(pr->buf) - pr->len - 1);
		if (n <= 0)
			return false;
		pr->len += (size_t)n;
	}
}

static void proxy_start(struct proxy_run *pr, uint16_t forward_port, const char *const *extra)
{
	int pipefd[2];
	char fwd[32];
	const char *argv[32];
	int argc = 0;

	snprintf(fwd, sizeof(fwd), "127.0.0.1:%u", forward_port);
	argv[argc++] = proxy_path;
	argv[argc++] = "--listen";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--forward";
	argv[argc++] = fwd;
	argv[argc++] = "--seed";
	argv[argc++] = "42";
	for (; extra && *extra; extra++)
		argv[argc++] = *extra;
	argv[argc] = NULL;

	assert_int_equal(pipe(pipefd), 0);
	pr->pid = fork();
	assert_true(pr->pid >= 0);
	if (pr->pid == 0) {
		/* A failed assertion must not leave the proxy running. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pipefd[1], STDOUT_FILENO);
		close(pipefd[0]);
		close(pipefd[1]);
		execv(proxy_path, (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	live_pid = pr->pid;
	pr->out_fd = pipefd[0];
	pr->len = 0;

	char line[256];
	unsigned port = 0;
	assert_true(read_line(pr, line, sizeof(line), 5000));
	assert_int_equal(sscanf(line, "listening 127.0.0.1:%u", &port), 1);
	pr->port = (uint16_t)port;
}

static void parse_dir(const char *line, const char *dir, struct stats *s)
{
	char key[16];
	snprintf(key, sizeof(key), " %s ", dir);
	const char *p = strstr(line, key);
	assert_non_null(p);
	assert_int_equal(sscanf(p + strlen(key),
				"in=%" SCNu64 " out=%" SCNu64 " drop=%" SCNu64 " dup=%" SCNu64
				" corrupt=%" SCNu64 " reorder=%" SCNu64 " overflow=%" SCNu64,
				&s->in, &s->out, &s->drop, &s->dup, &s->corrupt, &s->reorder,
				&s->overflow),
			 7);
}

/* Asks for counters (SIGUSR1) until the proxy has read `want_in` datagrams
 * in direction dir and holds none back. */
static void proxy_stats(struct proxy_run *pr, const char *dir, uint64_t want_in, struct stats *s)
{
	char line[1024];

	for (int i = 0; i < 500; i++) {
		assert_int_equal(kill(pr->pid, SIGUSR1), 0);
		assert_true(read_line(pr, line, sizeof(line), 5000));
		assert_non_null(strstr(line, "stats "));
		parse_dir(line, dir, s);
		if (s->in == want_in && strstr(line, " queued=0"))
			return;
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL); /* poll interval while the proxy catches up */
	}
	fail_msg("proxy never read %" PRIu64 " datagrams", want_in);
}

static void proxy_stop(struct proxy_run *pr)
{
	int status;
	char line[1024];

	kill(pr->pid, SIGTERM);
	/* It prints its counters on the way out. */
	assert_true(read_line(pr, line, sizeof(line), 5000));
	assert_non_null(strstr(line, "stats "));
	assert_int_equal(waitpid(pr->pid, &status, 0), pr->pid);
	live_pid = 0;
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(pr->out_fd);
}

static int udp_socket(uint16_t *port)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	if (port)
		*port = ntohs(a.sin_port);
	return fd;
}

static void fill(uint8_t *b, uint32_t i)
{
	memcpy(b, &i, 4);
	for (int k = 4; k < DGRAM_BYTES; k++)
		b[k] = (uint8_t)(i * 7 + (uint32_t)k);
}

/* Receives until `count` datagrams arrived or timeout_ms passed; records
 * each index (first 4 bytes) into idx if non-NULL. Returns the count. */
static size_t recv_some(int fd, size_t count, int timeout_ms, uint32_t *idx, int *corrupt_bits,
			struct sockaddr_in *from)
{
	size_t got = 0;
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	uint8_t b[2048];

	while (got < count) {
		uint64_t now = now_ms();
		if (now >= end)
			break;
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, (int)(end - now)) <= 0)
			continue;
		socklen_t flen = sizeof(*from);
		ssize_t n = recvfrom(fd, b, sizeof(b), 0, (struct sockaddr *)from, &flen);
		assert_int_equal(n, DGRAM_BYTES);
		uint32_t i;
		memcpy(&i, b, 4);
		if (corrupt_bits) {
			/* Compare against what any index could have been: count
			 * differing bits against the closest plausible original. */
			uint8_t want[DGRAM_BYTES];
			fill(want, i);
			int bits = 0;
			for (int k = 0; k < DGRAM_BYTES; k++)
				bits += __builtin_popcount(want[k] ^ b[k]);
			corrupt_bits[got] = bits;
		}
		if (idx)
			idx[got] = i;
		got++;
	}
	return got;
}

/* Sends n numbered datagrams through the proxy in batches of BATCH, each
 * batch after the previous one arrived (or could not arrive). */
static size_t pump(int cfd, uint16_t proxy_port, int sfd, uint32_t n, uint32_t *idx,
		   int *bits, unsigned expect_pct)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(proxy_port)};
	struct sockaddr_in from;
	uint8_t b[DGRAM_BYTES];
	size_t got = 0;

	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (uint32_t i = 0; i < n; i += BATCH) {
		uint32_t k = n - i < BATCH ? n - i : BATCH;
		for (uint32_t j = 0; j < k; j++) {
			fill(b, i + j);
			assert_int_equal(sendto(cfd, b, sizeof(b), 0, (struct sockaddr *)&to, sizeof(to)),
					 (ssize_t)sizeof(b));
		}
		/* With loss we cannot know how many come: wait for the
		 * expected share, briefly. */
		size_t want = (size_t)k * expect_pct / 100;
		got += recv_some(sfd, want, expect_pct >= 100 ? 5000 : 50, idx ? idx + got : NULL,
				 bits ? bits + got : NULL, &from);
	}
	return got;
}

static void test_lossless_everything_in_order_both_ways(void **state)
{
	(void)state;
	uint16_t sport;
	int sfd = udp_socket(&sport), cfd = udp_socket(NULL);
	struct proxy_run pr;
	enum { N = 2000 };
	static uint32_t idx[N];

	proxy_start(&pr, sport, NULL);
	size_t got = pump(cfd, pr.port, sfd, N, idx, NULL, 100);
	assert_int_equal(got, N);
	for (uint32_t i = 0; i < N; i++)
		assert_int_equal(idx[i], i);
	struct stats s;
	proxy_stats(&pr, "c2s", N, &s);
	assert_int_equal(s.out, N);
	assert_int_equal(s.drop, 0);

	/* Replies from the server go back to the client's address. */
	struct sockaddr_in proxy_up, from;
	socklen_t plen = sizeof(proxy_up);
	uint8_t b[DGRAM_BYTES];
	/* The proxy's upstream address is where the server's datagrams come from. */
	fill(b, 0);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(pr.port)};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(sendto(cfd, b, sizeof(b), 0, (struct sockaddr *)&to, sizeof(to)),
			 DGRAM_BYTES);
	assert_int_equal(recvfrom(sfd, b, sizeof(b), 0, (struct sockaddr *)&proxy_up, &plen),
			 DGRAM_BYTES);
	for (uint32_t i = 0; i < 500; i++) {
		fill(b, i);
		assert_int_equal(sendto(sfd, b, sizeof(b), 0, (struct sockaddr *)&proxy_up,
					sizeof(proxy_up)),
				 DGRAM_BYTES);
		if ((i + 1) % BATCH == 0)
			assert_int_equal(recv_some(cfd, BATCH, 5000, idx + i + 1 - BATCH, NULL, &from),
					 BATCH);
	}
	for (uint32_t i = 0; i < 500; i++)
		assert_int_equal(idx[i], i);
	proxy_stats(&pr, "s2c", 500, &s);
	assert_int_equal(s.out, 500);
	proxy_stop(&pr);
	close(sfd);
	close(cfd);
}

static void test_drop_50_counts_add_up(void **state)
{
	(void)state;
	uint16_t sport;
	int sfd = udp_socket(&sport), cfd = udp_socket(NULL);
	struct proxy_run pr;
	enum { N = 2000 };
	static uint32_t idx[N];
	const char *extra[] = {"--drop", "50", NULL};

	proxy_start(&pr, sport, extra);
	size_t got = pump(cfd, pr.port, sfd, N, idx, NULL, 50);
	struct stats s;
	proxy_stats(&pr, "c2s", N, &s);
	assert_int_equal(s.in, N);
	assert_int_equal(s.drop + s.out, N);
	/* Binomial(2000, 0.5): 6 sigma is +-134. */
	assert_true(s.drop > 1000 - 134 && s.drop < 1000 + 134);
	/* Whatever the proxy sent arrives (loopback, small batches). */
	got += recv_some(sfd, s.out - got, 2000, idx + got, NULL, &(struct sockaddr_in){0});
	assert_int_equal(got, s.out);
	for (size_t i = 1; i < got; i++)
		assert_true(idx[i] > idx[i - 1]); /* no reordering asked for */
	proxy_stop(&pr);
	close(sfd);
	close(cfd);
}

static void test_dup_corrupt_delay_reorder(void **state)
{
	(void)state;
	uint16_t sport;
	int sfd = udp_socket(&sport), cfd = udp_socket(NULL);
	struct proxy_run pr;
	enum { N = 200 };
	static uint32_t idx[2 * N];
	static int bits[2 * N];
	struct stats s;

	/* 100% dup: exactly twice each. */
	const char *dup[] = {"--dup", "100", NULL};
	proxy_start(&pr, sport, dup);
	assert_int_equal(pump(cfd, pr.port, sfd, N, idx, NULL, 200), 2 * N);
	proxy_stats(&pr, "c2s", N, &s);
	assert_int_equal(s.dup, N);
	assert_int_equal(s.out, 2 * N);
	proxy_stop(&pr);

	/* 100% corrupt: every datagram differs by exactly one bit. */
	const char *cor[] = {"--corrupt", "100", NULL};
	proxy_start(&pr, sport, cor);
	assert_int_equal(pump(cfd, pr.port, sfd, N, idx, bits, 100), N);
	int one_bit = 0;
	for (int i = 0; i < N; i++)
		/* (a flip inside the index itself shows as a wrong index) */
		one_bit += bits[i] == 1 ||
			   (idx[i] != (uint32_t)i && __builtin_popcount(idx[i] ^ (uint32_t)i) == 1);
	assert_int_equal(one_bit, N);
	proxy_stop(&pr);

	/* Delay: nothing arrives before 50 ms. */
	const char *del[] = {"--delay-ms", "50", NULL};
	proxy_start(&pr, sport, del);
	uint64_t t0 = now_ms();
	assert_int_equal(pump(cfd, pr.port, sfd, 1, idx, NULL, 100), 1);
	assert_true(now_ms() - t0 >= 50);
	proxy_stop(&pr);

	/* Reorder: all arrive, not all in order. */
	const char *reo[] = {"--reorder", "50", "--delay-ms", "1", NULL};
	proxy_start(&pr, sport, reo);
	assert_int_equal(pump(cfd, pr.port, sfd, N, idx, NULL, 100), N);
	int inversions = 0;
	for (int i = 1; i < N; i++)
		inversions += idx[i] < idx[i - 1];
	assert_true(inversions > 0);
	proxy_stats(&pr, "c2s", N, &s);
	assert_true(s.reorder > 0);
	proxy_stop(&pr);
	close(sfd);
	close(cfd);
}

int main(void)
{
	proxy_path = getenv("RINGCHAT_UDP_PROXY");
	if (!proxy_path || access(proxy_path, X_OK) != 0) {
		fprintf(stderr, "RINGCHAT_UDP_PROXY not set or not executable: skip\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_lossless_everything_in_order_both_ways, reap_proxy),
	    cmocka_unit_test_teardown(test_drop_50_counts_add_up, reap_proxy),
	    cmocka_unit_test_teardown(test_dup_corrupt_delay_reorder, reap_proxy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
