/*
 * test_udp_proxy.c - runs the ringchat-udp-proxy binary (path in
 * $RINGCHAT_UDP_PROXY, else skip) between two loopback sockets and checks
 * what arrives against the proxy's own counters: everything, in order, at
 * 0%; exactly in - drop at 50% drop; twice everything at 100% dup; one
 * flipped bit per datagram at 100% corrupt; at least the delay; and the
 * reply direction to the last client; then two node links exchange
 * messages over real sockets through a lossy, corrupting proxy.
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

#include "ringchat/link.h"

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
static size_t pump(int cfd, uint16_t proxy_port, int sfd, uint32_t n, uint32_t *idx, int *bits,
		   unsigned expect_pct)
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
			assert_int_equal(
			    sendto(cfd, b, sizeof(b), 0, (struct sockaddr *)&to, sizeof(to)),
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
		assert_int_equal(
		    sendto(sfd, b, sizeof(b), 0, (struct sockaddr *)&proxy_up, sizeof(proxy_up)),
		    DGRAM_BYTES);
		if ((i + 1) % BATCH == 0)
			assert_int_equal(
			    recv_some(cfd, BATCH, 5000, idx + i + 1 - BATCH, NULL, &from), BATCH);
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

/* ---- two node links over real sockets through the proxy ------------------ */

struct node {
	int fd;
	struct link *link;
	uint32_t id, peer;
	uint32_t next_index;
	uint64_t delivered, undelivered;
	bool order_ok;
};

static void node_send_dgram(void *ctx, const struct sockaddr_in *to, const uint8_t *buf, size_t len)
{
	struct node *n = ctx;
	/* A full socket buffer is a lost datagram: the link recovers. */
	(void)sendto(n->fd, buf, len, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof(*to));
}

static void node_deliver(void *ctx, uint32_t node_id, const uint8_t *msg, size_t len)
{
	struct node *n = ctx;
	uint32_t index;

	(void)node_id;
	assert_true(len >= 8);
	memcpy(&index, msg, 4);
	for (size_t k = 4; k < len; k++)
		if (msg[k] != (uint8_t)(index + k))
			n->order_ok = false;
	if (index != n->next_index)
		n->order_ok = false;
	n->next_index = index + 1;
	n->delivered++;
}

static void node_undelivered(void *ctx, uint32_t node_id, const uint8_t *msg, size_t len)
{
	struct node *n = ctx;
	(void)node_id;
	(void)msg;
	(void)len;
	n->undelivered++;
}

static const struct link_ops NODE_OPS = {
    .send_dgram = node_send_dgram,
    .deliver = node_deliver,
    .undelivered = node_undelivered,
};

static void node_drain(struct node *n, uint64_t now)
{
	uint8_t buf[2048];
	struct sockaddr_in from;

	for (;;) {
		socklen_t flen = sizeof(from);
		ssize_t r = recvfrom(n->fd, buf, sizeof(buf), MSG_DONTWAIT,
				     (struct sockaddr *)&from, &flen);
		if (r < 0)
			break;
		link_input(n->link, &from, buf, (size_t)r, now);
	}
	link_flush(n->link, now);
}

static void test_links_through_faulty_proxy(void **state)
{
	(void)state;
	static const uint8_t secret[] = "proxy-test-secret-0123456789abcdef";
	uint16_t a_port, b_port;
	struct node a = {.fd = udp_socket(&a_port), .id = 1, .peer = 2, .order_ok = true};
	struct node b = {.fd = udp_socket(&b_port), .id = 2, .peer = 1, .order_ok = true};
	struct proxy_run pr;
	const char *extra[] = {"--drop",    "20",	  "--dup", "5",		  "--reorder",
			       "10",	    "--delay-ms", "1",	   "--jitter-ms", "2",
			       "--corrupt", "2",	  NULL};
	enum { N = 1000 };

	proxy_start(&pr, b_port, extra);

	/* B sees A at the proxy's upstream address: learn it from one raw
	 * datagram (retried: the proxy drops some). */
	struct sockaddr_in via = {.sin_family = AF_INET, .sin_port = htons(pr.port)}, up;
	via.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t ulen = sizeof(up);
	bool learned = false;
	for (int i = 0; i < 100 && !learned; i++) {
		uint8_t probe[DGRAM_BYTES] = {0};
		sendto(a.fd, probe, sizeof(probe), 0, (struct sockaddr *)&via, sizeof(via));
		struct pollfd pfd = {.fd = b.fd, .events = POLLIN};
		if (poll(&pfd, 1, 100) == 1 &&
		    recvfrom(b.fd, probe, sizeof(probe), 0, (struct sockaddr *)&up, &ulen) > 0)
			learned = true;
	}
	assert_true(learned);
	/* Drop any duplicate of the probe. */
	struct timespec ts = {0, 50 * 1000000};
	nanosleep(&ts, NULL);
	uint8_t junk[2048];
	while (recv(b.fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;

	uint64_t now = now_ms();
	struct link_config ca = {.node_id = 1,
				 .epoch = now,
				 .secret = secret,
				 .secret_len = sizeof(secret) - 1,
				 .dead_ms = 20000};
	struct link_config cb = ca;
	cb.node_id = 2;
	cb.epoch = now + 1;
	a.link = link_new(&ca, &NODE_OPS, &a);
	b.link = link_new(&cb, &NODE_OPS, &b);
	assert_non_null(a.link);
	assert_non_null(b.link);
	assert_int_equal(link_peer_add(a.link, 2, &via, now), 0);
	assert_int_equal(link_peer_add(b.link, 1, &up, now), 0);

	uint8_t msg[6000];
	uint32_t sent[2] = {0, 0};
	struct node *nodes[2] = {&a, &b};
	uint64_t end = now + 60000;
	while ((a.delivered < N || b.delivered < N) && now_ms() < end) {
		now = now_ms();
		for (int e = 0; e < 2; e++) {
			struct node *n = nodes[e];
			while (sent[e] < N) {
				uint32_t i = sent[e];
				size_t len = 8 + (i * 37u) % (i % 10 == 0 ? 5000u : 300u);
				memcpy(msg, &i, 4);
				for (size_t k = 4; k < len; k++)
					msg[k] = (uint8_t)(i + k);
				int rc = link_send(n->link, n->peer, msg, len, now);
				if (rc == -ENOBUFS)
					break;
				assert_int_equal(rc, 0);
				sent[e]++;
			}
			link_flush(n->link, now);
		}
		uint64_t next = link_poll(a.link, now);
		uint64_t nb = link_poll(b.link, now);
		if (nb < next)
			next = nb;
		struct pollfd pfd[2] = {{.fd = a.fd, .events = POLLIN},
					{.fd = b.fd, .events = POLLIN}};
		int timeout = next > now ? (int)(next - now < 100 ? next - now : 100) : 0;
		poll(pfd, 2, timeout);
		now = now_ms();
		node_drain(&a, now);
		node_drain(&b, now);
	}

	struct link_peer_stats sa, sb;
	assert_int_equal(link_peer_stats(a.link, 2, &sa), 0);
	assert_int_equal(link_peer_stats(b.link, 1, &sb), 0);
	print_message("through the proxy: %lu+%lu msgs, rtx %lu+%lu, srtt %u us, "
		      "rejected (mac+malformed) %lu+%lu, replays+dups %lu+%lu\n",
		      (unsigned long)a.delivered, (unsigned long)b.delivered,
		      (unsigned long)sa.retransmits, (unsigned long)sb.retransmits, sa.srtt_us,
		      (unsigned long)(sa.mac_failures + sa.malformed),
		      (unsigned long)(sb.mac_failures + sb.malformed),
		      (unsigned long)(sa.replays + sa.duplicates),
		      (unsigned long)(sb.replays + sb.duplicates));
	assert_int_equal(a.delivered, N);
	assert_int_equal(b.delivered, N);
	assert_true(a.order_ok && b.order_ok);
	assert_int_equal(a.undelivered + b.undelivered, 0);
	assert_true(sa.retransmits > 0 && sb.retransmits > 0);
	/* Corrupted datagrams (2%) were caught, not delivered. */
	struct link_stats la, lb;
	link_stats(a.link, &la);
	link_stats(b.link, &lb);
	assert_true(la.mac_failures + la.malformed + la.unknown_source + lb.mac_failures +
			lb.malformed + lb.unknown_source >
		    0);

	link_free(a.link);
	link_free(b.link);
	proxy_stop(&pr);
	close(a.fd);
	close(b.fd);
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
	    cmocka_unit_test_teardown(test_links_through_faulty_proxy, reap_proxy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
