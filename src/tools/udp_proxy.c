/*
 * udp_proxy.c - ringchat-udp-proxy: a bidirectional UDP fault injector for
 * testing the node link on loopback.
 *
 *   ringchat-udp-proxy --listen 127.0.0.1:P --forward 127.0.0.1:Q
 *       [--drop PCT] [--dup PCT] [--reorder PCT] [--delay-ms N [--jitter-ms J]]
 *       [--corrupt PCT] [--seed S] [--stats-interval-ms N] [--max-queue N]
 *
 * Datagrams that reach the listen address go to the forward address from
 * the proxy's own upstream socket; datagrams coming back to that socket go
 * to the last client address seen on the listen side ("c2s" and "s2c"
 * below). Each datagram, in each direction, independently:
 *
 *   dropped     with probability --drop
 *   corrupted   with probability --corrupt (one random bit of one random byte flipped)
 *   duplicated  with probability --dup (the copy gets its own delay)
 *   delayed     by --delay-ms plus a uniform 0..--jitter-ms
 *   reordered   with probability --reorder: held back an extra 1..(delay+jitter+10) ms
 *               so that later datagrams overtake it
 *
 * Delayed datagrams wait in a binary heap ordered by due time (ties keep
 * arrival order), bounded by --max-queue datagrams (default 65536); what
 * does not fit is dropped and counted as "overflow".
 *
 * Output (stdout, one line each): "listening ADDR:PORT" once bound (so a
 * test can use port 0 and learn the port), and the counters
 *   "stats c2s in=.. out=.. drop=.. dup=.. corrupt=.. reorder=.. overflow=..
 *    s2c in=.. ..."
 * on SIGUSR1, every --stats-interval-ms, and at exit (SIGINT/SIGTERM).
 * Only loopback addresses are accepted.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROXY_MAX_DGRAM_BYTES 65536
#define PROXY_DEF_MAX_QUEUE 65536u
#define PROXY_RECV_BATCH 64 /* datagrams read per socket per loop turn */

enum dir { C2S = 0, S2C = 1 };

struct counters {
	uint64_t in, out, drop, dup, corrupt, reorder, overflow;
};

struct pending {
	uint64_t due_ms;
	uint64_t order; /* arrival order, breaks ties */
	enum dir dir;
	uint32_t len;
	uint8_t *data;
};

struct proxy {
	int lfd, ufd;
	struct sockaddr_in listen, forward, client;
	bool have_client;
	unsigned drop, dup, reorder, corrupt;
	uint32_t delay_ms, jitter_ms;
	uint64_t rng;
	struct pending *heap;
	uint32_t nheap, max_queue;
	uint64_t order;
	struct counters c[2];
};

static volatile sig_atomic_t stop_flag, stats_flag;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		stats_flag = 1;
	else
		stop_flag = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rnd(struct proxy *p)
{
	/* splitmix64: good enough for fault dice, repeatable with --seed */
	uint64_t z = (p->rng += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static bool dice(struct proxy *p, unsigned pct)
{
	return pct && rnd(p) % 100 < pct;
}

/* ---- heap ------------------------------------------------------------------ */

static bool before(const struct pending *a, const struct pending *b)
{
	return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->order < b->order);
}

static void heap_swap(struct pending *a, struct pending *b)
{
	struct pending t = *a;
	*a = *b;
	*b = t;
}

static void heap_push(struct proxy *p, struct pending it)
{
	uint32_t i = p->nheap++;
	p->heap[i] = it;
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (!before(&p->heap[i], &p->heap[parent]))
			break;
		heap_swap(&p->heap[i], &p->heap[parent]);
		i = parent;
	}
}

static struct pending heap_pop(struct proxy *p)
{
	struct pending top = p->heap[0];
	p->heap[0] = p->heap[--p->nheap];
	uint32_t i = 0;
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < p->nheap && before(&p->heap[l], &p->heap[m]))
			m = l;
		if (r < p->nheap && before(&p->heap[r], &p->heap[m]))
			m = r;
		if (m == i)
			break;
		heap_swap(&p->heap[i], &p->heap[m]);
		i = m;
	}
	return top;
}

/* ---- forwarding --------------------------------------------------------------- */

static void deliver(struct proxy *p, enum dir d, const uint8_t *buf, size_t len)
{
	ssize_t n;

	if (d == C2S)
		n = sendto(p->ufd, buf, len, 0, (const struct sockaddr *)&p->forward,
			   sizeof(p->forward));
	else if (p->have_client)
		n = sendto(p->lfd, buf, len, 0, (const struct sockaddr *)&p->client,
			   sizeof(p->client));
	else
		n = -1;
	/* A send that fails (no client yet, ICMP refused from an earlier
	 * datagram, full buffer) is what a lossy network does too: count it
	 * as a drop rather than stop. */
	if (n == (ssize_t)len)
		p->c[d].out++;
	else
		p->c[d].drop++;
}

static void schedule(struct proxy *p, enum dir d, const uint8_t *buf, size_t len, uint64_t now)
{
	uint64_t delay = p->delay_ms;

	if (p->jitter_ms)
		delay += rnd(p) % (p->jitter_ms + 1);
	if (dice(p, p->reorder)) {
		delay += 1 + rnd(p) % (p->delay_ms + p->jitter_ms + 10);
		p->c[d].reorder++;
	}
	if (delay == 0 && p->nheap == 0) {
		deliver(p, d, buf, len);
		return;
	}
	if (p->nheap == p->max_queue) {
		p->c[d].overflow++;
		return;
	}
	struct pending it = {.due_ms = now + delay,
			     .order = p->order++,
			     .dir = d,
			     .len = (uint32_t)len,
			     .data = malloc(len ? len : 1)};
	if (!it.data) {
		p->c[d].overflow++;
		return;
	}
	memcpy(it.data, buf, len);
	heap_push(p, it);
}

static void on_datagram(struct proxy *p, enum dir d, uint8_t *buf, size_t len, uint64_t now)
{
	p->c[d].in++;
	if (dice(p, p->drop)) {
		p->c[d].drop++;
		return;
	}
	if (len && dice(p, p->corrupt)) {
		buf[rnd(p) % len] ^= (uint8_t)(1u << (rnd(p) % 8));
		p->c[d].corrupt++;
	}
	int copies = 1;
	if (dice(p, p->dup)) {
		copies = 2;
		p->c[d].dup++;
	}
	for (int i = 0; i < copies; i++)
		schedule(p, d, buf, len, now);
}

static void drain_socket(struct proxy *p, enum dir d, uint8_t *buf)
{
	int fd = d == C2S ? p->lfd : p->ufd;

	for (int i = 0; i < PROXY_RECV_BATCH; i++) {
		struct sockaddr_in from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, buf, PROXY_MAX_DGRAM_BYTES, MSG_DONTWAIT,
				     (struct sockaddr *)&from, &flen);
		if (n == -1)
			return; /* EAGAIN, or ECONNREFUSED from an earlier send */
		if (d == C2S) {
			p->client = from;
			p->have_client = true;
		} else if (from.sin_addr.s_addr != p->forward.sin_addr.s_addr ||
			   from.sin_port != p->forward.sin_port) {
			continue; /* not from the server: not ours to relay */
		}
		on_datagram(p, d, buf, (size_t)n, now_ms());
	}
}

static void print_stats(const struct proxy *p)
{
	static const char *names[2] = {"c2s", "s2c"};

	printf("stats");
	for (int d = 0; d < 2; d++) {
		const struct counters *c = &p->c[d];
		printf(" %s in=%" PRIu64 " out=%" PRIu64 " drop=%" PRIu64 " dup=%" PRIu64
		       " corrupt=%" PRIu64 " reorder=%" PRIu64 " overflow=%" PRIu64,
		       names[d], c->in, c->out, c->drop, c->dup, c->corrupt, c->reorder,
		       c->overflow);
	}
	printf(" queued=%u\n", p->nheap);
	fflush(stdout);
}

/* ---- setup ------------------------------------------------------------------------ */

static int parse_addr(const char *s, struct sockaddr_in *out)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	char *end;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	out->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
		return -EINVAL;
	/* Test tool: loopback only. */
	if ((ntohl(out->sin_addr.s_addr) >> 24) != 127)
		return -EINVAL;
	return 0;
}

static int parse_pct(const char *s, unsigned *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*end || v < 0 || v > 100)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (*end || *s == '-' || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ringchat-udp-proxy --listen 127.0.0.1:P --forward 127.0.0.1:Q\n"
		"       [--drop PCT] [--dup PCT] [--reorder PCT] [--delay-ms N [--jitter-ms J]]\n"
		"       [--corrupt PCT] [--seed S] [--stats-interval-ms N] [--max-queue N]\n");
}

static int open_udp(const struct sockaddr_in *bind_to)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd == -1)
		return -1;
	if (bind_to && bind(fd, (const struct sockaddr *)bind_to, sizeof(*bind_to)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"forward", required_argument, NULL, 'f'},
	    {"drop", required_argument, NULL, 'd'},
	    {"dup", required_argument, NULL, 'u'},
	    {"reorder", required_argument, NULL, 'r'},
	    {"delay-ms", required_argument, NULL, 'D'},
	    {"jitter-ms", required_argument, NULL, 'J'},
	    {"corrupt", required_argument, NULL, 'c'},
	    {"seed", required_argument, NULL, 's'},
	    {"stats-interval-ms", required_argument, NULL, 'i'},
	    {"max-queue", required_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct proxy p = {.lfd = -1, .ufd = -1, .max_queue = PROXY_DEF_MAX_QUEUE};
	bool have_listen = false, have_forward = false;
	uint32_t stats_interval = 0, seed32 = 0;
	bool have_seed = false;
	int opt, rc = 1;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int bad = 0;
		switch (opt) {
		case 'l':
			bad = parse_addr(optarg, &p.listen);
			have_listen = true;
			break;
		case 'f':
			bad = parse_addr(optarg, &p.forward);
			have_forward = true;
			break;
		case 'd':
			bad = parse_pct(optarg, &p.drop);
			break;
		case 'u':
			bad = parse_pct(optarg, &p.dup);
			break;
		case 'r':
			bad = parse_pct(optarg, &p.reorder);
			break;
		case 'c':
			bad = parse_pct(optarg, &p.corrupt);
			break;
		case 'D':
			bad = parse_u32(optarg, &p.delay_ms);
			break;
		case 'J':
			bad = parse_u32(optarg, &p.jitter_ms);
			break;
		case 's':
			bad = parse_u32(optarg, &seed32);
			have_seed = true;
			break;
		case 'i':
			bad = parse_u32(optarg, &stats_interval);
			break;
		case 'q':
			bad = parse_u32(optarg, &p.max_queue);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (bad) {
			fprintf(stderr, "ringchat-udp-proxy: bad option value: %s\n", optarg);
			usage(stderr);
			return 2;
		}
	}
	if (!have_listen || !have_forward || optind != argc || p.max_queue == 0) {
		usage(stderr);
		return 2;
	}
	p.rng = have_seed ? seed32 : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

	p.heap = calloc(p.max_queue, sizeof(*p.heap));
	uint8_t *buf = malloc(PROXY_MAX_DGRAM_BYTES);
	if (!p.heap || !buf) {
		fprintf(stderr, "ringchat-udp-proxy: out of memory\n");
		goto out;
	}
	p.lfd = open_udp(&p.listen);
	p.ufd = open_udp(NULL);
	if (p.lfd == -1 || p.ufd == -1) {
		perror("ringchat-udp-proxy: socket/bind");
		goto out;
	}
	socklen_t alen = sizeof(p.listen);
	getsockname(p.lfd, (struct sockaddr *)&p.listen, &alen);

	/* The signals stay blocked except inside ppoll, so one that arrives
	 * between checking the flags and sleeping still wakes the sleep. */
	struct sigaction sa = {.sa_handler = on_signal};
	sigset_t block, wait_mask;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	sigdelset(&wait_mask, SIGINT);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGUSR1);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	char host[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &p.listen.sin_addr, host, sizeof(host));
	printf("listening %s:%u\n", host, ntohs(p.listen.sin_port));
	fflush(stdout);

	uint64_t next_stats = stats_interval ? now_ms() + stats_interval : UINT64_MAX;
	while (!stop_flag) {
		uint64_t now = now_ms();
		while (p.nheap && p.heap[0].due_ms <= now) {
			struct pending it = heap_pop(&p);
			deliver(&p, it.dir, it.data, it.len);
			free(it.data);
		}
		if (now >= next_stats) {
			print_stats(&p);
			next_stats = now + stats_interval;
		}
		if (stats_flag) {
			stats_flag = 0;
			print_stats(&p);
		}
		uint64_t wake = next_stats;
		if (p.nheap && p.heap[0].due_ms < wake)
			wake = p.heap[0].due_ms;
		struct timespec ts, *tsp = NULL;
		if (wake != UINT64_MAX) {
			uint64_t ms = wake > now ? wake - now : 0;
			ts.tv_sec = (time_t)(ms / 1000);
			ts.tv_nsec = (long)(ms % 1000) * 1000000;
			tsp = &ts;
		}
		struct pollfd pfd[2] = {{.fd = p.lfd, .events = POLLIN},
					{.fd = p.ufd, .events = POLLIN}};
		int n = ppoll(pfd, 2, tsp, &wait_mask);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			perror("ringchat-udp-proxy: poll");
			goto out;
		}
		if (pfd[0].revents)
			drain_socket(&p, C2S, buf);
		if (pfd[1].revents)
			drain_socket(&p, S2C, buf);
	}
	print_stats(&p);
	rc = 0;
out:
	while (p.nheap) {
		struct pending it = heap_pop(&p);
		free(it.data);
	}
	free(p.heap);
	free(buf);
	if (p.lfd != -1)
		close(p.lfd);
	if (p.ufd != -1)
		close(p.ufd);
	return rc;
}
