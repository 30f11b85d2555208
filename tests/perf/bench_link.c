/*
 * bench_link.c - throughput of two node links on a loss-free in-memory
 * channel (one thread, so the figure is the CPU cost of both ends), and
 * the cost of the datagram MAC.
 *
 *   bench_link [seconds-per-case]   (default 1)
 *
 * Output: one line per message size with messages/s, MB/s of payload,
 * datagrams/s and messages per datagram; then HMAC-SHA256 per 1200-byte
 * datagram with a re-used EVP_MAC context (what link.c does) and with the
 * one-shot HMAC() for comparison.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include "ringchat/link.h"

static const uint8_t SECRET[] = "bench-cluster-secret-0123456789abcdef";

struct dg {
	int to;
	size_t len;
	uint8_t buf[1200];
};

static struct dg *q;
static size_t nq, capq;
static struct link *links[2];
static uint64_t delivered;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ms(void)
{
	return (uint64_t)(now_s() * 1000.0);
}

static void on_send(void *ctx, const struct sockaddr_in *to, const uint8_t *buf, size_t len)
{
	(void)ctx;
	if (nq == capq) {
		capq = capq ? 2 * capq : 1024;
		q = realloc(q, capq * sizeof(*q));
		if (!q)
			abort();
	}
	q[nq].to = ntohs(to->sin_port) == 1 ? 0 : 1;
	q[nq].len = len;
	memcpy(q[nq].buf, buf, len);
	nq++;
}

static void on_deliver(void *ctx, uint32_t node, const uint8_t *m, size_t len)
{
	(void)ctx;
	(void)node;
	(void)m;
	(void)len;
	delivered++;
}

static const struct link_ops OPS = {.send_dgram = on_send, .deliver = on_deliver};

static struct sockaddr_in addr(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static void pump(void)
{
	/* Hand over until both sides are quiet (acks included). */
	while (nq) {
		size_t n = nq;
		static struct dg *batch;
		static size_t capb;
		if (capb < n) {
			batch = realloc(batch, n * sizeof(*batch));
			if (!batch)
				abort();
			capb = n;
		}
		memcpy(batch, q, n * sizeof(*q));
		nq = 0;
		uint64_t t = now_ms();
		struct sockaddr_in from[2] = {addr(1), addr(2)};
		for (size_t i = 0; i < n; i++)
			link_input(links[batch[i].to], &from[!batch[i].to], batch[i].buf,
				   batch[i].len, t);
		link_flush(links[0], t);
		link_flush(links[1], t);
	}
}

static void bench_size(size_t size, double secs)
{
	struct link_config c[2];
	for (int i = 0; i < 2; i++) {
		c[i] = (struct link_config){.node_id = (uint32_t)i + 1,
					    .epoch = 1000 + (uint64_t)i,
					    .secret = SECRET,
					    .secret_len = sizeof(SECRET) - 1};
		links[i] = link_new(&c[i], &OPS, NULL);
		if (!links[i])
			abort();
	}
	struct sockaddr_in a1 = addr(1), a2 = addr(2);
	link_peer_add(links[0], 2, &a2, now_ms());
	link_peer_add(links[1], 1, &a1, now_ms());
	for (int i = 0; i < 10 && !link_peer_up(links[0], 2); i++) {
		link_poll(links[0], now_ms());
		link_poll(links[1], now_ms());
		pump();
	}

	uint8_t *msg = calloc(1, size);
	delivered = 0;
	uint64_t sent = 0;
	double t0 = now_s(), t;
	do {
		for (int k = 0; k < 256; k++) {
			if (link_send(links[0], 2, msg, size, now_ms()) != 0)
				break;
			sent++;
		}
		link_flush(links[0], now_ms());
		pump();
		link_poll(links[0], now_ms());
		link_poll(links[1], now_ms());
		t = now_s();
	} while (t - t0 < secs);
	/* drain */
	for (int i = 0; i < 1000 && delivered < sent; i++) {
		link_poll(links[0], now_ms());
		pump();
	}
	t = now_s() - t0;

	struct link_peer_stats s;
	link_peer_stats(links[0], 2, &s);
	printf("msg %7zu B: %10.0f msgs/s %8.1f MB/s %9.0f dgrams/s %6.2f msgs/dgram  rtx %lu\n",
	       size, (double)delivered / t, (double)delivered * (double)size / t / 1e6,
	       (double)s.data_dgrams_sent / t,
	       (double)s.msgs_packed / (double)(s.data_dgrams_sent ? s.data_dgrams_sent : 1),
	       (unsigned long)s.retransmits);
	free(msg);
	link_free(links[0]);
	link_free(links[1]);
}

static void bench_mac(void)
{
	uint8_t d[1200], out[EVP_MAX_MD_SIZE];
	size_t outl;
	const int N = 200000;
	memset(d, 0x5a, sizeof(d));

	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
			       OSSL_PARAM_construct_end()};
	EVP_MAC_init(ctx, SECRET, sizeof(SECRET) - 1, params);
	double t0 = now_s();
	for (int i = 0; i < N; i++) {
		d[0] = (uint8_t)i;
		EVP_MAC_init(ctx, NULL, 0, NULL);
		EVP_MAC_update(ctx, d, 64);
		EVP_MAC_update(ctx, d + 80, sizeof(d) - 80);
		EVP_MAC_final(ctx, out, &outl, sizeof(out));
	}
	double reused = (now_s() - t0) / N * 1e9;
	unsigned ol;
	t0 = now_s();
	for (int i = 0; i < N; i++) {
		d[0] = (uint8_t)i;
		HMAC(EVP_sha256(), SECRET, sizeof(SECRET) - 1, d, sizeof(d), out, &ol);
	}
	double oneshot = (now_s() - t0) / N * 1e9;
	printf("HMAC-SHA256 of a 1200-byte datagram: %.0f ns (EVP_MAC ctx re-used), %.0f ns "
	       "(HMAC() one-shot)\n",
	       reused, oneshot);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	static const size_t sizes[] = {64, 256, 1000, 4096, 65536};

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		bench_size(sizes[i], secs);
	bench_mac();
	free(q);
	return 0;
}
