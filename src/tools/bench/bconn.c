/*
 * bconn.c - buffered connections of the message scenarios (see bconn.h).
 */
#include "bconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "net.h"

int bconn_grow(uint8_t **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 512;
	uint8_t *nb;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	nb = realloc(*buf, ncap);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = ncap;
	return 0;
}

int bconn_append(struct bconn *c, const void *p, size_t n)
{
	if (c->woff > 0 && c->woff == c->wlen)
		c->woff = c->wlen = 0;
	if (c->wlen + n > c->wcap) {
		if (c->woff > 0) {
			memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
			c->wlen -= c->woff;
			c->woff = 0;
		}
		if (bconn_grow(&c->wbuf, &c->wcap, c->wlen + n))
			return -ENOMEM;
	}
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
	return 0;
}

uint32_t bconn_put_frame(struct bconn *c, uint16_t cmd, const char *payload, size_t len)
{
	struct frame_hdr h = {
	    .magic = FRAME_MAGIC,
	    .version = FRAME_VERSION,
	    .cmd = cmd,
	    .seq = c->next_seq,
	    .len = (uint32_t)len,
	};
	uint8_t hb[FRAME_HDR_BYTES];

	c->next_seq = c->next_seq == UINT32_MAX ? 1 : c->next_seq + 1;
	frame_hdr_encode(hb, &h);
	if (bconn_append(c, hb, sizeof(hb)) || (len && bconn_append(c, payload, len)))
		return 0;
	return h.seq;
}

static void bconn_arm(struct bconn *c, int ep, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};

	if (c->want_out == out)
		return;
	c->want_out = out;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

int bconn_flush(struct bconn *c, int ep)
{
	while (c->woff < c->wlen) {
		ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);

		if (w > 0) {
			c->woff += (size_t)w;
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			bconn_arm(c, ep, true);
			return 0;
		}
		return w == -1 ? -errno : -EPIPE;
	}
	c->woff = c->wlen = 0;
	bconn_arm(c, ep, false);
	return 0;
}

int bconn_fill(struct bconn *c)
{
	ssize_t r;

	if (c->rcap - c->rlen < 4096 && bconn_grow(&c->rbuf, &c->rcap, c->rlen + 16384))
		return -ENOMEM;
	r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	if (r > 0) {
		c->rlen += (size_t)r;
		return (int)r;
	}
	if (r == 0)
		return -ENOTCONN;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return -errno;
}

int bconn_frame(const struct bconn *c, size_t *off, struct frame_hdr *h, const char **payload)
{
	if (c->rlen - *off < FRAME_HDR_BYTES)
		return 0;
	frame_hdr_decode(c->rbuf + *off, h);
	if (h->magic != FRAME_MAGIC || h->len > FRAME_MAX_OUT_BYTES)
		return -EPROTO;
	if (c->rlen - *off < FRAME_HDR_BYTES + (size_t)h->len)
		return 0;
	*payload = (const char *)c->rbuf + *off + FRAME_HDR_BYTES;
	*off += FRAME_HDR_BYTES + h->len;
	return 1;
}

void bconn_consume(struct bconn *c, size_t off)
{
	if (off == 0)
		return;
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

void bconn_free(struct bconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->rbuf);
	free(c->wbuf);
	free(c->sbuf);
	free(c->sent_ns);
	free(c->seen);
	c->seen = NULL;
	c->seen_n = c->seen_cap = 0;
	if (c->rr)
		redisReaderFree(c->rr);
	c->rbuf = c->wbuf = c->sbuf = NULL;
	c->sent_ns = NULL;
	c->rr = NULL;
}

void bconns_free(struct bconn *conns, int n)
{
	int i;

	if (!conns)
		return;
	for (i = 0; i < n; i++)
		bconn_free(&conns[i]);
	free(conns);
}

struct bconn *bconns_open_spread(const struct bench_endpoint *eps, int neps, const int *ep_of,
				 int n, bool redis)
{
	struct bconn *conns = calloc((size_t)n, sizeof(*conns));
	int *fds = malloc((size_t)n * sizeof(*fds));
	int i, e, k, err;

	if (!conns || !fds) {
		fprintf(stderr, "ringchat-bench: out of memory\n");
		goto out_free;
	}
	for (i = 0; i < n; i++)
		conns[i].fd = -1;
	if (net_raise_fd_limit(n + BENCH_SPARE_FDS))
		goto out_free;
	/* One batch of connects per endpoint; fds[] is a scratch list. */
	for (e = 0; e < neps; e++) {
		for (i = 0, k = 0; i < n; i++)
			if (!ep_of || ep_of[i] == e)
				k++;
		if (k == 0)
			continue;
		err = net_connect_all(eps[e].host, eps[e].port, NULL, fds, k);
		if (err) {
			fprintf(stderr, "ringchat-bench: cannot open %d connections to %s:%u: %s\n",
				k, eps[e].host, eps[e].port, strerror(-err));
			goto out_free_conns;
		}
		for (i = 0, k = 0; i < n; i++)
			if (!ep_of || ep_of[i] == e)
				conns[i].fd = fds[k++];
	}
	for (i = 0; i < n; i++) {
		conns[i].next_seq = 1;
		conns[i].index = i;
		conns[i].quota = -1;
		if (redis && !(conns[i].rr = redisReaderCreate())) {
			fprintf(stderr, "ringchat-bench: out of memory\n");
			goto out_free_conns;
		}
	}
	free(fds);
	return conns;

out_free_conns:
	free(fds);
	bconns_free(conns, n);
	return NULL;
out_free:
	free(fds);
	free(conns);
	return NULL;
}

struct bconn *bconns_open(const char *host, uint16_t port, int n, bool redis)
{
	struct bench_endpoint ep = {.port = port};

	snprintf(ep.host, sizeof(ep.host), "%s", host);
	return bconns_open_spread(&ep, 1, NULL, n, redis);
}
