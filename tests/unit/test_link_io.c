/*
 * test_link_io.c - the node link on a real ring (link_io.h): its flow
 * control toward a peer that takes messages in more slowly than a sender
 * queues them.
 *
 * Node 1 is a link_io on a ring driven step by step by the test's main
 * thread (which is therefore the I/O thread). Nodes 2 and 3 are bare
 * struct links (link.h) on UDP sockets of the test, pumped by the same
 * thread between ring iterations, a few datagrams at a time: slow peers.
 * A sender thread plays a worker, calling link_io_send as fast as it can.
 *
 * Every message carries its index, so the peer checks exactly-once and
 * order, and the test knows at each step how many messages were queued
 * but not yet delivered: that backlog is what shows up as delivery lag.
 *
 * The receive side: node 1 takes its datagrams in through a multishot
 * recvmsg into the link's own buffers. Bursts larger than those buffers
 * (from the peers, and junk from a stranger's socket, which the link
 * counts one by one as unknown sources) must all arrive.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/clock.h"
#include "ringchat/config.h"
#include "ringchat/handoff.h"
#include "ringchat/link.h"
#include "ringchat/link_io.h"
#include "ringchat/ring.h"
#include "ringchat/sock.h"

#define NODE_IO 1
#define NODE_PEER 2 /* peer 0; peer 1 is node 3 */
#define NPEERS 2
#define MSG_BYTES 200
#define BIG_BYTES (300u << 10) /* more than LINK_IO_FLOW_BYTES */
/* Iterations of the main loop before a test gives up on a condition. */
#define SPIN_MAX 200000
/* link_io.c's multishot buffers (LIO_RECV_BUFS) */
#define RECV_BUFS 256
/* A peer message that fills a datagram of its own (dgram_bytes 1200). */
#define FULL_BYTES 1000

static const uint8_t SECRET[] = "ringchat-test-cluster-secret-0123456789";

/* A peer: a bare link on its own socket. */
struct tpeer {
	uint32_t node;
	int fd;
	struct sockaddr_in addr;
	struct link *link;
	uint64_t delivered;  /* messages it got */
	uint64_t big;	     /* BIG_BYTES messages it got */
	uint32_t next_index; /* the index it expects next */
	bool misordered;
	bool silent; /* it reads nothing (a dead or stuck node) */
};

struct fx {
	struct config cfg;
	struct handoff h;
	struct ring *r;
	struct link_io *lio;
	struct sockaddr_in io_addr;
	struct tpeer p[NPEERS];
	/* what node 1 got from each peer: count, and the index expected next */
	uint64_t io_delivered[NPEERS];
	uint32_t io_next[NPEERS];
	bool io_misordered;
	int io_rcvbuf; /* node 1's socket receive buffer, bytes */

	/* the sender thread */
	pthread_t sender;
	uint32_t to_node;	 /* where it sends */
	uint32_t first, to_send; /* it sends indices first, first + 1, ... */
	_Atomic uint32_t sent;	 /* link_io_send returned 0 */
	_Atomic int send_error;
	_Atomic uint64_t send_max_ns; /* the longest single link_io_send */
};

/* ---- the peers -------------------------------------------------------------- */

static void peer_send_dgram(void *ctx, const struct sockaddr_in *to, const uint8_t *buf, size_t len)
{
	struct tpeer *p = ctx;

	(void)sendto(p->fd, buf, len, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof(*to));
}

static void peer_deliver(void *ctx, uint32_t node, const uint8_t *msg, size_t len)
{
	struct tpeer *p = ctx;
	uint32_t index;

	assert_int_equal(node, NODE_IO);
	if (len == BIG_BYTES) {
		p->big++; /* outside the indexed sequence */
		return;
	}
	assert_int_equal(len, MSG_BYTES);
	memcpy(&index, msg, sizeof(index));
	if (index != p->next_index)
		p->misordered = true;
	p->next_index = index + 1;
	p->delivered++;
}

static const struct link_ops peer_ops = {
    .send_dgram = peer_send_dgram,
    .deliver = peer_deliver,
};

/* Takes in at most max datagrams waiting on the peer's socket, then runs
 * its timers (acks go out there). */
static void peer_pump(struct tpeer *p, int max)
{
	uint8_t buf[2048];
	uint64_t now = clock_mono_ms();

	if (p->silent)
		return;
	for (int i = 0; i < max; i++) {
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n =
		    recvfrom(p->fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);

		if (n <= 0)
			break;
		link_input(p->link, &from, buf, (size_t)n, now);
	}
	link_poll(p->link, now);
}

/* ---- node 1 ----------------------------------------------------------------- */

static void io_deliver(void *ctx, int from, const uint8_t *msg, size_t len)
{
	struct fx *f = ctx;
	int i = from - NODE_PEER;
	uint32_t index;

	assert_true(i >= 0 && i < NPEERS);
	assert_int_equal(len, FULL_BYTES);
	memcpy(&index, msg, sizeof(index));
	if (index != f->io_next[i])
		f->io_misordered = true;
	f->io_next[i] = index + 1;
	f->io_delivered[i]++;
}

static const struct link_io_ops io_ops = {.deliver = io_deliver};

static int udp_bound(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	socklen_t len = sizeof(*addr);

	assert_true(fd >= 0);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	return fd;
}

/* One step of the world: a ring iteration (node 1), then the peers. */
static void step(struct fx *f, int peer_budget)
{
	assert_true(ring_poll(f->r, 1, NULL));
	for (int i = 0; i < NPEERS; i++)
		peer_pump(&f->p[i], peer_budget);
}

static struct fx *fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));
	int io_fd;

	assert_non_null(f);
	config_defaults(&f->cfg);
	f->cfg.node_id = NODE_IO;
	assert_int_equal(handoff_init(&f->h, 1, 64), 0);
	f->r = ring_create(&f->cfg);
	if (!f->r) {
		handoff_destroy(&f->h);
		free(f);
		skip(); /* no io_uring here */
		return NULL;
	}
	io_fd = udp_bound(&f->io_addr);
	/* the bursts below must wait in the socket, not be dropped by it,
	 * while node 1's receive is out of buffers (beyond rmem_max only
	 * with CAP_NET_ADMIN) */
	if (setsockopt(io_fd, SOL_SOCKET, SO_RCVBUFFORCE, &(int){4 << 20}, sizeof(int)) == -1)
		(void)setsockopt(io_fd, SOL_SOCKET, SO_RCVBUF, &(int){4 << 20}, sizeof(int));
	assert_int_equal(getsockopt(io_fd, SOL_SOCKET, SO_RCVBUF, &f->io_rcvbuf,
				    &(socklen_t){sizeof(f->io_rcvbuf)}),
			 0);
	f->lio = link_io_new(&f->cfg, io_fd, SECRET, sizeof(SECRET) - 1, &io_ops, f);
	assert_non_null(f->lio);
	/* this thread runs the ring: it is the I/O thread */
	assert_int_equal(link_io_attach(f->lio, f->r, &f->h), 0);
	for (int i = 0; i < NPEERS; i++) {
		struct tpeer *p = &f->p[i];
		struct link_config pc = {
		    .node_id = NODE_PEER + (uint32_t)i,
		    .epoch = clock_epoch_ms(),
		    .secret = SECRET,
		    .secret_len = sizeof(SECRET) - 1,
		};
		char addr[64];

		p->node = pc.node_id;
		p->fd = udp_bound(&p->addr);
		p->link = link_new(&pc, &peer_ops, p);
		assert_non_null(p->link);
		assert_int_equal(link_peer_add(p->link, NODE_IO, &f->io_addr, clock_mono_ms()), 0);
		snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(p->addr.sin_port));
		link_io_set_peer(f->lio, (int)p->node, addr);
	}
	return f;
}

static void fx_free(struct fx *f)
{
	ring_destroy(f->r);
	link_io_free(f->lio);
	for (int i = 0; i < NPEERS; i++) {
		link_free(f->p[i].link);
		close(f->p[i].fd);
	}
	handoff_destroy(&f->h);
	free(f);
}

/* The value of an unlabelled metric in node 1's link_io_metrics text,
 * UINT64_MAX when it is not there. */
static uint64_t io_metric(struct fx *f, const char *name)
{
	static char text[16384];
	FILE *out = fmemopen(text, sizeof(text) - 1, "w");
	char key[128];
	const char *p;
	size_t len;

	assert_non_null(out);
	link_io_metrics(f->lio, out);
	len = (size_t)ftell(out);
	fclose(out);
	text[len] = '\0';
	snprintf(key, sizeof(key), "\n%s ", name);
	p = strstr(text, key);
	return p ? strtoull(p + strlen(key), NULL, 10) : UINT64_MAX;
}

/* Waits until both links see each other up. */
static void connect_both(struct fx *f)
{
	int i;

	for (i = 0; i < SPIN_MAX &&
		    !(link_peer_up(f->p[0].link, NODE_IO) && link_peer_up(f->p[1].link, NODE_IO) &&
		      io_metric(f, "ringchat_link_peers_up") == NPEERS);
	     i++)
		step(f, 64);
	assert_true(i < SPIN_MAX);
}

/* ---- the sender (a worker) -------------------------------------------------- */

static void *sender_main(void *arg)
{
	struct fx *f = arg;
	uint8_t msg[MSG_BYTES];

	memset(msg, 'm', sizeof(msg));
	for (uint32_t i = f->first; i < f->first + f->to_send; i++) {
		uint64_t t0 = clock_mono_ns(), dt;
		int ret;

		memcpy(msg, &i, sizeof(i));
		ret = link_io_send(f->lio, (int)f->to_node, msg, sizeof(msg));
		dt = clock_mono_ns() - t0;
		if (dt > atomic_load(&f->send_max_ns))
			atomic_store(&f->send_max_ns, dt);
		if (ret) {
			atomic_store(&f->send_error, ret);
			break;
		}
		atomic_fetch_add(&f->sent, 1);
	}
	return NULL;
}

static void sender_start(struct fx *f, uint32_t node, uint32_t first, uint32_t n)
{
	f->to_node = node;
	f->first = first;
	f->to_send = n;
	assert_int_equal(pthread_create(&f->sender, NULL, sender_main, f), 0);
}

/* ---- tests ------------------------------------------------------------------ */

/*
 * A sender far faster than its peer: what it has queued and the peer has
 * not received stays near LINK_IO_FLOW_BYTES (the sender waits for the
 * peer's acks) instead of growing toward the 32 MiB bound, which in a
 * saturated cluster meant seconds of delivery lag. Every message arrives
 * once and in order.
 */
static void test_flow_bounds_what_waits(void **state)
{
	struct fx *f = fx_new();
	/* 8 MB: far past the flow bound, well under the hard one */
	const uint32_t n = 40000;
	uint64_t worst = 0;
	int i;

	(void)state;
	connect_both(f);
	sender_start(f, NODE_PEER, 0, n);
	for (i = 0; i < SPIN_MAX && f->p[0].delivered < n; i++) {
		uint64_t sent = atomic_load(&f->sent);
		/* sent is counted after link_io_send returned: the peer may
		 * have the message already */
		uint64_t waiting = sent > f->p[0].delivered ? sent - f->p[0].delivered : 0;

		if (waiting > worst)
			worst = waiting;
		/* a slow peer: 4 datagrams (about 20 messages) per step */
		step(f, 4);
	}
	assert_int_equal(pthread_join(f->sender, NULL), 0);
	assert_int_equal(atomic_load(&f->send_error), 0);
	assert_int_equal(f->p[0].delivered, n);
	assert_false(f->p[0].misordered);
	print_message("most messages queued and not delivered: %llu (%llu bytes)\n",
		      (unsigned long long)worst, (unsigned long long)worst * MSG_BYTES);
	/* the bound, plus what a sender queues while the ring is between
	 * two publications; without flow control it reached the whole 8 MB */
	assert_true(worst * MSG_BYTES <= 4 * (uint64_t)LINK_IO_FLOW_BYTES);
	assert_true(io_metric(f, "ringchat_link_flow_waits_total") > 0);
	assert_int_equal(io_metric(f, "ringchat_link_queue_full_total"), 0);
	fx_free(f);
}

/*
 * A peer that answers nothing any more: the sender's wait gives up after
 * one stall (200 ms without an ack), and later sends do not wait again, so
 * a dead node does not cost a wait per message. The I/O thread itself
 * never waits.
 */
static void test_flow_silent_peer_one_stall(void **state)
{
	struct fx *f = fx_new();
	/* twice the flow bound */
	const uint32_t n = 2 * LINK_IO_FLOW_BYTES / MSG_BYTES;
	uint8_t msg[MSG_BYTES] = {0};
	uint64_t t0;
	int i;

	(void)state;
	connect_both(f);
	f->p[0].silent = true;
	t0 = clock_mono_ms();
	sender_start(f, NODE_PEER, 0, n);
	for (i = 0; i < SPIN_MAX && atomic_load(&f->sent) < n && !atomic_load(&f->send_error); i++)
		step(f, 0);
	assert_int_equal(pthread_join(f->sender, NULL), 0);
	assert_int_equal(atomic_load(&f->send_error), 0);
	assert_int_equal(atomic_load(&f->sent), n);
	/* one wait of about 200 ms, not one per message past the bound (the
	 * dead_ms of 3 s would end the peer long before) */
	assert_true(clock_mono_ms() - t0 < 1500);
	assert_int_equal(io_metric(f, "ringchat_link_flow_stalls_total"), 1);
	/* that one send waited the stall out */
	assert_true(atomic_load(&f->send_max_ns) >= 195 * 1000000ull);
	assert_true(atomic_load(&f->send_max_ns) < 1000 * 1000000ull);

	/* over the bound, on the I/O thread: queued at once */
	t0 = clock_mono_ms();
	assert_int_equal(link_io_send(f->lio, NODE_PEER, msg, sizeof(msg)), 0);
	assert_true(clock_mono_ms() - t0 < 20);
	fx_free(f);
}

/* Once the silent peer answers again, the sender waits for it again. */
static void test_flow_resumes_after_stall(void **state)
{
	struct fx *f = fx_new();
	const uint32_t n = 2 * LINK_IO_FLOW_BYTES / MSG_BYTES;
	uint64_t waits;
	int i;

	(void)state;
	connect_both(f);
	f->p[0].silent = true;
	sender_start(f, NODE_PEER, 0, n);
	for (i = 0; i < SPIN_MAX && atomic_load(&f->sent) < n; i++)
		step(f, 0);
	assert_int_equal(pthread_join(f->sender, NULL), 0);
	assert_int_equal(io_metric(f, "ringchat_link_flow_stalls_total"), 1);
	waits = io_metric(f, "ringchat_link_flow_waits_total");

	/* the peer is back: everything arrives, and new sends are paced */
	f->p[0].silent = false;
	for (i = 0; i < SPIN_MAX && f->p[0].delivered < n; i++)
		step(f, 64);
	assert_int_equal(f->p[0].delivered, n);
	sender_start(f, NODE_PEER, n, 4 * n);
	for (i = 0; i < SPIN_MAX && f->p[0].delivered < 5 * (uint64_t)n; i++)
		step(f, 4);
	assert_int_equal(pthread_join(f->sender, NULL), 0);
	assert_int_equal(f->p[0].delivered, 5 * (uint64_t)n);
	assert_false(f->p[0].misordered);
	assert_true(io_metric(f, "ringchat_link_flow_waits_total") > waits);
	fx_free(f);
}

/*
 * Node 2 stops answering while a sender has more for it than the link's
 * send queue holds (2 MiB by default): the rest waits in link_io's
 * backlog for node 2. Messages for node 3 must not wait behind it: with
 * one backlog for all nodes they waited until node 2 was declared down
 * (dead_ms, 3 s), a cluster-wide stall for one dead node.
 */
static void test_silent_peer_holds_up_no_other(void **state)
{
	struct fx *f = fx_new();
	/* the link's queue toward node 2, and 256 KiB more */
	const uint32_t n = ((2u << 20) + LINK_IO_FLOW_BYTES) / MSG_BYTES;
	struct tpeer *other = &f->p[1];
	char name[64];
	uint64_t t0;
	int i;

	(void)state;
	connect_both(f);
	f->p[0].silent = true;
	sender_start(f, NODE_PEER, 0, n);
	for (i = 0; i < SPIN_MAX && atomic_load(&f->sent) < n && !atomic_load(&f->send_error); i++)
		step(f, 64);
	assert_int_equal(pthread_join(f->sender, NULL), 0);
	assert_int_equal(atomic_load(&f->send_error), 0);
	step(f, 64);
	/* all of it queued toward node 2, more than its link takes */
	snprintf(name, sizeof(name), "ringchat_link_queued_bytes{peer=\"%d\"}", NODE_PEER);
	assert_int_equal(io_metric(f, name), (uint64_t)n * MSG_BYTES);

	atomic_store(&f->sent, 0);
	t0 = clock_mono_ms();
	sender_start(f, other->node, 0, 500);
	for (i = 0; i < SPIN_MAX && other->delivered < 500 && clock_mono_ms() - t0 < 2000; i++)
		step(f, 64);
	assert_int_equal(pthread_join(f->sender, NULL), 0);
	print_message("node 3 got its 500 messages after %llu ms\n",
		      (unsigned long long)(clock_mono_ms() - t0));
	assert_int_equal(other->delivered, 500);
	assert_false(other->misordered);
	assert_true(clock_mono_ms() - t0 < 1000);
	/* node 2 is still up for the link: nothing was given up on */
	assert_int_equal(io_metric(f, name), (uint64_t)n * MSG_BYTES);
	fx_free(f);
}

struct big_send {
	struct fx *f;
	_Atomic bool done;
	int ret;
	uint64_t ns; /* how long link_io_send took */
};

static void *big_main(void *arg)
{
	struct big_send *b = arg;
	uint8_t *msg = calloc(1, BIG_BYTES);
	uint64_t t0 = clock_mono_ns();

	assert_non_null(msg);
	b->ret = link_io_send(b->f->lio, NODE_PEER, msg, BIG_BYTES);
	b->ns = clock_mono_ns() - t0;
	free(msg);
	atomic_store(&b->done, true);
	return NULL;
}

/*
 * A message larger than the flow bound can only go once nothing else is
 * queued for its node; while others keep the queue busy that never
 * happens, and its sender (a worker, with all its connections) would
 * wait for as long as they send. Its wait ends after 500 ms at most. The
 * others are played by this thread, the I/O thread, which never waits:
 * it keeps about as much queued as the peer takes in.
 */
static void test_flow_large_message_waits_bounded(void **state)
{
	struct fx *f = fx_new();
	struct big_send b = {.f = f};
	uint8_t msg[MSG_BYTES] = {0};
	uint32_t index = 0;
	uint64_t t0;
	pthread_t big;
	int i;

	(void)state;
	connect_both(f);
	/* more than the bound queued */
	for (; index < (LINK_IO_FLOW_BYTES + (64u << 10)) / MSG_BYTES; index++) {
		memcpy(msg, &index, sizeof(index));
		assert_int_equal(link_io_send(f->lio, NODE_PEER, msg, sizeof(msg)), 0);
	}
	assert_int_equal(pthread_create(&big, NULL, big_main, &b), 0);
	t0 = clock_mono_ms();
	for (i = 0; i < SPIN_MAX && !atomic_load(&b.done) && clock_mono_ms() - t0 < 3000; i++) {
		/* about what one datagram carries: the queue never empties */
		for (int k = 0; k < 6; k++, index++) {
			memcpy(msg, &index, sizeof(index));
			assert_int_equal(link_io_send(f->lio, NODE_PEER, msg, sizeof(msg)), 0);
		}
		step(f, 1);
	}
	for (i = 0; i < SPIN_MAX && (f->p[0].delivered < index || f->p[0].big < 1); i++)
		step(f, 64);
	assert_int_equal(pthread_join(big, NULL), 0);
	print_message("the large message waited %llu ms\n", (unsigned long long)(b.ns / 1000000));
	assert_int_equal(b.ret, 0);
	assert_true(b.ns < 1000 * 1000000ull);
	assert_int_equal(f->p[0].delivered, index);
	assert_int_equal(f->p[0].big, 1);
	assert_false(f->p[0].misordered);
	assert_int_equal(io_metric(f, "ringchat_link_flow_give_ups_total"), 1);
	fx_free(f);
}

/* ---- the receive side --------------------------------------------------------- */

/* Multishot recvmsg with provided buffers came with kernel 6.0. */
static bool kernel_has_multishot_recvmsg(void)
{
	struct utsname u;
	int major = 0;

	return uname(&u) == 0 && sscanf(u.release, "%d", &major) == 1 && major >= 6;
}

/* False (the test skips) when node 1's socket cannot hold a burst of n
 * small datagrams (about 1 KiB each in the kernel's accounting): the
 * kernel would drop some, which is not what the test is about. */
static bool burst_fits(struct fx *f, uint32_t n)
{
	if ((uint64_t)f->io_rcvbuf >= (uint64_t)n * 1024)
		return true;
	print_message("SO_RCVBUF %d cannot hold %u datagrams: skipped\n", f->io_rcvbuf, n);
	fx_free(f);
	return false;
}

/* Sends n datagrams of len bytes to node 1 from fd, all at once. */
static void junk_burst(struct fx *f, int fd, uint32_t n, size_t len)
{
	uint8_t buf[4096];

	assert_true(len <= sizeof(buf));
	memset(buf, 'j', len);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(buf, &i, sizeof(i));
		assert_int_equal(sendto(fd, buf, len, 0, (const struct sockaddr *)&f->io_addr,
					sizeof(f->io_addr)),
				 (ssize_t)len);
	}
}

/* A receive test gives up on a condition after this long. */
#define RECV_WAIT_MS 10000

/* Steps until node 1's metric name reaches want (or RECV_WAIT_MS). */
static uint64_t wait_metric(struct fx *f, const char *name, uint64_t want)
{
	uint64_t t0 = clock_mono_ms();
	uint64_t v;

	while ((v = io_metric(f, name)) < want && clock_mono_ms() - t0 < RECV_WAIT_MS)
		step(f, 64);
	return v;
}

/* Each peer sends n messages of FULL_BYTES (a datagram each) to node 1,
 * as fast as its link lets it; steps until node 1 has them all. */
static void peers_send(struct fx *f, uint32_t n)
{
	uint8_t msg[FULL_BYTES];
	uint32_t queued[NPEERS] = {0};
	uint64_t t0 = clock_mono_ms();

	memset(msg, 'p', sizeof(msg));
	while ((f->io_delivered[0] < n || f->io_delivered[1] < n) &&
	       clock_mono_ms() - t0 < RECV_WAIT_MS) {
		for (int k = 0; k < NPEERS; k++) {
			struct tpeer *p = &f->p[k];

			while (queued[k] < n) {
				memcpy(msg, &queued[k], sizeof(queued[k]));
				if (link_send(p->link, NODE_IO, msg, sizeof(msg), clock_mono_ms()))
					break;
				queued[k]++;
			}
		}
		step(f, 64);
	}
}

/*
 * On this kernel the link receives through multishot recvmsg, and a burst
 * four times larger than its buffers, sent while node 1 does not look,
 * arrives whole: every datagram is counted once. A datagram longer than
 * any node sends arrives cut and counts as malformed, not as anything the
 * link parsed. The peers' own traffic, a window's worth of datagrams at a
 * time, all arrives in order.
 */
static void test_recv_multishot_burst(void **state)
{
	struct fx *f;
	struct sockaddr_in junk_addr;
	const uint32_t n = 4 * RECV_BUFS;
	uint64_t unknown0, malformed0;
	int junk;

	(void)state;
	if (!kernel_has_multishot_recvmsg())
		skip();
	f = fx_new();
	if (!burst_fits(f, n))
		skip();
	connect_both(f);
	/* datagrams came in (the peers answered), and not through the fallback */
	assert_int_equal(io_metric(f, "ringchat_link_recv_multishot"), 1);
	junk = udp_bound(&junk_addr);
	unknown0 = io_metric(f, "ringchat_link_unknown_source_total");
	malformed0 = io_metric(f, "ringchat_link_malformed_total");

	junk_burst(f, junk, n, 64);
	assert_int_equal(wait_metric(f, "ringchat_link_unknown_source_total", unknown0 + n),
			 unknown0 + n);
	print_message("a burst of %u datagrams: %llu times out of buffers\n", n,
		      (unsigned long long)io_metric(f, "ringchat_link_recv_nobufs_total"));

	/* longer than LIO_DGRAM_MAX (2048): cut, dropped, malformed */
	junk_burst(f, junk, 1, 3000);
	assert_int_equal(wait_metric(f, "ringchat_link_malformed_total", malformed0 + 1),
			 malformed0 + 1);
	/* ...and the link went on receiving: nothing else was counted */
	assert_int_equal(io_metric(f, "ringchat_link_unknown_source_total"), unknown0 + n);

	peers_send(f, 2000);
	assert_int_equal(f->io_delivered[0], 2000);
	assert_int_equal(f->io_delivered[1], 2000);
	assert_false(f->io_misordered);
	assert_int_equal(io_metric(f, "ringchat_link_recv_multishot"), 1);
	assert_int_equal(io_metric(f, "ringchat_link_recv_errors_total"), 0);
	close(junk);
	fx_free(f);
}

/*
 * With only 4 buffers (fault injection), every burst exhausts them: the
 * multishot receive stops with -ENOBUFS, is counted, and is armed again
 * once the buffers are back; the datagrams that waited in the socket
 * meanwhile all arrive, the peers' messages in order.
 */
static void test_recv_nobufs_recovers(void **state)
{
	struct fx *f;
	struct sockaddr_in junk_addr;
	const uint32_t n = 500;
	uint64_t unknown0;
	int junk;

	(void)state;
	if (!kernel_has_multishot_recvmsg())
		skip();
	link_io_fault_recv_bufs = 4;
	f = fx_new();
	link_io_fault_recv_bufs = 0;
	if (!burst_fits(f, n))
		skip();
	connect_both(f);
	junk = udp_bound(&junk_addr);
	unknown0 = io_metric(f, "ringchat_link_unknown_source_total");

	junk_burst(f, junk, n, 64);
	assert_int_equal(wait_metric(f, "ringchat_link_unknown_source_total", unknown0 + n),
			 unknown0 + n);
	assert_true(io_metric(f, "ringchat_link_recv_nobufs_total") > 0);

	peers_send(f, 1000);
	assert_int_equal(f->io_delivered[0], 1000);
	assert_int_equal(f->io_delivered[1], 1000);
	assert_false(f->io_misordered);
	print_message("out of buffers %llu times\n",
		      (unsigned long long)io_metric(f, "ringchat_link_recv_nobufs_total"));
	assert_int_equal(io_metric(f, "ringchat_link_recv_multishot"), 1);
	assert_int_equal(io_metric(f, "ringchat_link_recv_errors_total"), 0);
	close(junk);
	fx_free(f);
}

/*
 * A kernel without multishot recvmsg answers the first arm with -EINVAL
 * (forged here: this kernel has it): the link falls back to single-shot
 * recvmsg, says so in its metric, and receives on. (The real multishot
 * arm stays in this kernel, so datagrams come through both: each is
 * still counted exactly once.)
 */
static void test_recv_falls_back_on_einval(void **state)
{
	struct fx *f = fx_new();
	struct io_uring_cqe cqe = {
	    .user_data = ring_ud(RING_OP_LINK, 3 /* link_io.c: LIO_SUB_RECV_MS */, 0),
	    .res = -EINVAL,
	};
	struct sockaddr_in junk_addr;
	const uint32_t n = 300;
	uint64_t unknown0, malformed0;
	int junk;

	(void)state;
	ring_dispatch_cqe(f->r, &cqe);
	assert_int_equal(io_metric(f, "ringchat_link_recv_multishot"), 0);
	connect_both(f);
	junk = udp_bound(&junk_addr);
	unknown0 = io_metric(f, "ringchat_link_unknown_source_total");
	malformed0 = io_metric(f, "ringchat_link_malformed_total");
	junk_burst(f, junk, n, 64);
	junk_burst(f, junk, 1, 3000);
	assert_int_equal(wait_metric(f, "ringchat_link_unknown_source_total", unknown0 + n),
			 unknown0 + n);
	assert_int_equal(wait_metric(f, "ringchat_link_malformed_total", malformed0 + 1),
			 malformed0 + 1);
	peers_send(f, 500);
	assert_int_equal(f->io_delivered[0], 500);
	assert_false(f->io_misordered);
	assert_int_equal(io_metric(f, "ringchat_link_recv_multishot"), 0);
	close(junk);
	fx_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_flow_bounds_what_waits),
	    cmocka_unit_test(test_flow_silent_peer_one_stall),
	    cmocka_unit_test(test_flow_resumes_after_stall),
	    cmocka_unit_test(test_flow_large_message_waits_bounded),
	    cmocka_unit_test(test_silent_peer_holds_up_no_other),
	    cmocka_unit_test(test_recv_multishot_burst),
	    cmocka_unit_test(test_recv_nobufs_recovers),
	    cmocka_unit_test(test_recv_falls_back_on_einval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
