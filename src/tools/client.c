/*
 * client.c - blocking protocol v1 client (see client.h).
 *
 * The socket is non-blocking; every wait is a poll(2) bounded by the
 * caller's deadline, so no call can hang past its timeout.
 *
 * Receive path:
 *
 *   socket ──read──► rbuf[roff..rlen) ──client_take──► one rc_frame
 *                                                         │
 *          rc_recv: returned as is                        │
 *          rc_call: its seq → returned; seq 0 → queue; other → dropped
 *          rc_wait_push: wanted push → returned; seq 0 → queue; other → dropped
 *
 * rbuf grows to hold one whole frame (at most FRAME_HDR_BYTES +
 * FRAME_MAX_OUT_BYTES) and is freed whenever its last frame is taken, so an
 * idle client holds little memory (the integration tests open thousands).
 */
#include "ringchat/client.h"
#include "ringchat/protocol.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Least room offered to one recv(2). */
#define CLIENT_READ_CHUNK 16384u

struct client_push {
	struct client_push *next;
	struct rc_frame f;
};

struct rc_client {
	int fd;
	int dead;	   /* 0, or the -errno every further read returns */
	uint32_t next_seq; /* seq of the next rc_call, never 0 */
	uint8_t *rbuf;
	size_t roff; /* first unconsumed byte */
	size_t rlen; /* end of received bytes */
	size_t rcap;
	struct client_push *qhead, *qtail;
	size_t qlen;
};

static int64_t client_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Deadline for a timeout; -1 means none. */
static int64_t client_deadline(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : client_now_ms() + timeout_ms;
}

/* Milliseconds left until deadline, as poll(2) wants them. */
static int client_left_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - client_now_ms();
	if (left < 0)
		return 0;
	return left > 1000000000 ? 1000000000 : (int)left;
}

/* Waits for events on fd; 0 when one came, -ETIMEDOUT, or -errno. */
static int client_wait(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int n;

	for (;;) {
		n = poll(&p, 1, client_left_ms(deadline));
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

void rc_frame_free(struct rc_frame *f)
{
	if (!f)
		return;
	free(f->payload);
	cJSON_Delete(f->json);
	memset(f, 0, sizeof(*f));
}

static int client_connect_one(const struct addrinfo *ai, int64_t deadline)
{
	int fd, err, one = 1;
	socklen_t len = sizeof(err);

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd == -1)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
		if (errno != EINPROGRESS) {
			err = -errno;
			goto out_close_fd;
		}
		err = client_wait(fd, POLLOUT, deadline);
		if (err)
			goto out_close_fd;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
			err = -errno;
			goto out_close_fd;
		}
		if (err) {
			err = -err;
			goto out_close_fd;
		}
	}
	/* Requests are small and latency matters more than segment count. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;

out_close_fd:
	close(fd);
	return err;
}

struct rc_client *rc_connect(const char *host, uint16_t port, int timeout_ms)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res, *ai;
	int64_t deadline = client_deadline(timeout_ms);
	struct rc_client *c;
	char service[8];
	int fd = -ENOENT, rc;

	snprintf(service, sizeof(service), "%u", (unsigned)port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc != 0) {
		errno = rc == EAI_SYSTEM ? errno : ENOENT;
		return NULL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = client_connect_one(ai, deadline);
		if (fd >= 0 || fd == -ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		errno = -fd;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	c->fd = fd;
	c->next_seq = 1;
	return c;
}

void rc_close(struct rc_client *c)
{
	struct client_push *p, *next;

	if (!c)
		return;
	for (p = c->qhead; p; p = next) {
		next = p->next;
		rc_frame_free(&p->f);
		free(p);
	}
	close(c->fd);
	free(c->rbuf);
	free(c);
}

int rc_fd(const struct rc_client *c)
{
	return c->fd;
}

size_t rc_pending(const struct rc_client *c)
{
	return c->qlen;
}

uint32_t rc_next_seq(const struct rc_client *c)
{
	return c->next_seq;
}

int rc_send_raw(struct rc_client *c, const void *bytes, size_t n)
{
	const uint8_t *p = bytes;
	int64_t deadline = client_deadline(RC_SEND_TIMEOUT_MS);
	ssize_t w;
	int err;

	while (n > 0) {
		/* MSG_NOSIGNAL: a closed peer is an -EPIPE, not a SIGPIPE. */
		w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w >= 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		err = client_wait(c->fd, POLLOUT, deadline);
		if (err)
			return err;
	}
	return 0;
}

int rc_send(struct rc_client *c, uint16_t cmd, uint32_t seq, const char *json)
{
	size_t len = json ? strlen(json) : 0;
	struct frame_hdr h = {
	    .magic = FRAME_MAGIC,
	    .version = FRAME_VERSION,
	    .cmd = cmd,
	    .seq = seq,
	};
	uint8_t small[FRAME_HDR_BYTES + 512];
	uint8_t *buf = small;
	int err;

	if (len > UINT32_MAX - FRAME_HDR_BYTES)
		return -EMSGSIZE;
	h.len = (uint32_t)len;
	/* One buffer, one send: a header alone in a segment is wasteful. */
	if (len > sizeof(small) - FRAME_HDR_BYTES) {
		buf = malloc(FRAME_HDR_BYTES + len);
		if (!buf)
			return -ENOMEM;
	}
	frame_hdr_encode(buf, &h);
	if (len)
		memcpy(buf + FRAME_HDR_BYTES, json, len);
	err = rc_send_raw(c, buf, FRAME_HDR_BYTES + len);
	if (buf != small)
		free(buf);
	return err;
}

/*
 * Cuts one complete frame out of rbuf into *out. Returns 1 when it did,
 * 0 when rbuf holds no complete frame, -EPROTO / -ENOMEM on failure.
 */
static int client_take(struct rc_client *c, struct rc_frame *out)
{
	size_t avail = c->rlen - c->roff;
	struct frame_hdr h;
	char *payload;

	if (avail < FRAME_HDR_BYTES)
		return 0;
	frame_hdr_decode(c->rbuf + c->roff, &h);
	if (h.magic != FRAME_MAGIC || h.len > FRAME_MAX_OUT_BYTES)
		return -EPROTO;
	if (avail < FRAME_HDR_BYTES + (size_t)h.len)
		return 0;
	payload = malloc((size_t)h.len + 1);
	if (!payload)
		return -ENOMEM;
	memcpy(payload, c->rbuf + c->roff + FRAME_HDR_BYTES, h.len);
	payload[h.len] = '\0';
	c->roff += FRAME_HDR_BYTES + h.len;
	if (c->roff == c->rlen) {
		/* Drained: give the memory back (tests keep thousands of clients). */
		free(c->rbuf);
		c->rbuf = NULL;
		c->roff = c->rlen = c->rcap = 0;
	}

	out->hdr = h;
	out->payload = payload;
	/* The contract reads an empty payload as {}. */
	out->json = h.len ? cJSON_ParseWithLength(payload, h.len) : cJSON_CreateObject();
	return 1;
}

/*
 * Makes room for the rest of the frame at roff (or one read chunk) and
 * returns how many bytes may be read into rbuf + rlen.
 */
static int client_make_room(struct rc_client *c, size_t *room)
{
	size_t need = CLIENT_READ_CHUNK, avail = c->rlen - c->roff;
	struct frame_hdr h;
	uint8_t *nb;

	if (avail >= FRAME_HDR_BYTES) {
		frame_hdr_decode(c->rbuf + c->roff, &h);
		if (h.len > FRAME_MAX_OUT_BYTES)
			return -EPROTO;
		if (FRAME_HDR_BYTES + (size_t)h.len > need)
			need = FRAME_HDR_BYTES + (size_t)h.len;
	}
	if (c->roff > 0) {
		memmove(c->rbuf, c->rbuf + c->roff, avail);
		c->roff = 0;
		c->rlen = avail;
	}
	if (c->rcap < need) {
		nb = realloc(c->rbuf, need);
		if (!nb)
			return -ENOMEM;
		c->rbuf = nb;
		c->rcap = need;
	}
	*room = c->rcap - c->rlen;
	return 0;
}

/* Reads once (waiting until deadline). 0, -ETIMEDOUT or the death code. */
static int client_fill(struct rc_client *c, int64_t deadline)
{
	size_t room;
	ssize_t n;
	int err;

	if (c->dead)
		return c->dead;
	err = client_make_room(c, &room);
	if (err)
		return err;
	for (;;) {
		n = recv(c->fd, c->rbuf + c->rlen, room, 0);
		if (n > 0) {
			c->rlen += (size_t)n;
			return 0;
		}
		if (n == 0) {
			c->dead = -ENOTCONN;
			return c->dead;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			c->dead = -errno;
			return c->dead;
		}
		err = client_wait(c->fd, POLLIN, deadline);
		if (err)
			return err;
	}
}

/* Next frame from the socket only (the queue is not looked at). */
static int client_read_frame(struct rc_client *c, struct rc_frame *out, int64_t deadline)
{
	int rc;

	memset(out, 0, sizeof(*out));
	for (;;) {
		rc = client_take(c, out);
		if (rc == 1)
			return 0;
		if (rc < 0) {
			c->dead = rc;
			return rc;
		}
		rc = client_fill(c, deadline);
		if (rc)
			return rc;
	}
}

static int client_queue(struct rc_client *c, struct rc_frame *f)
{
	struct client_push *p;

	if (c->qlen >= RC_PUSH_QUEUE_MAX)
		return -ENOBUFS;
	p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->f = *f;
	p->next = NULL;
	if (c->qtail)
		c->qtail->next = p;
	else
		c->qhead = p;
	c->qtail = p;
	c->qlen++;
	memset(f, 0, sizeof(*f));
	return 0;
}

/* Removes the first queued frame with cmd (0 = any) into *out; 1 if found. */
static int client_unqueue(struct rc_client *c, uint16_t cmd, struct rc_frame *out)
{
	struct client_push **pp, *p, *prev = NULL;

	for (pp = &c->qhead; (p = *pp); pp = &p->next) {
		if (cmd == 0 || p->f.hdr.cmd == cmd) {
			*pp = p->next;
			if (c->qtail == p)
				c->qtail = prev;
			c->qlen--;
			*out = p->f;
			free(p);
			return 1;
		}
		prev = p;
	}
	return 0;
}

int rc_recv(struct rc_client *c, struct rc_frame *out, int timeout_ms)
{
	if (client_unqueue(c, 0, out))
		return 0;
	return client_read_frame(c, out, client_deadline(timeout_ms));
}

int rc_call(struct rc_client *c, uint16_t cmd, const char *json, struct rc_frame *resp,
	    int timeout_ms)
{
	int64_t deadline = client_deadline(timeout_ms);
	uint32_t seq = c->next_seq;
	struct rc_frame f;
	int rc;

	memset(resp, 0, sizeof(*resp));
	c->next_seq = c->next_seq == UINT32_MAX ? 1 : c->next_seq + 1;
	rc = rc_send(c, cmd, seq, json);
	if (rc)
		return rc;
	for (;;) {
		rc = client_read_frame(c, &f, deadline);
		if (rc)
			return rc;
		if (f.hdr.seq == seq || (f.hdr.seq == 0 && f.hdr.cmd == CMD_NONE)) {
			*resp = f;
			return 0;
		}
		if (f.hdr.seq != 0) {
			/* The answer to a request nobody waits for any more. */
			rc_frame_free(&f);
			continue;
		}
		rc = client_queue(c, &f);
		if (rc) {
			rc_frame_free(&f);
			return rc;
		}
	}
}

int rc_wait_push(struct rc_client *c, uint16_t cmd, struct rc_frame *out, int timeout_ms)
{
	int64_t deadline = client_deadline(timeout_ms);
	struct rc_frame f;
	int rc;

	memset(out, 0, sizeof(*out));
	if (client_unqueue(c, cmd, out))
		return 0;
	for (;;) {
		rc = client_read_frame(c, &f, deadline);
		if (rc)
			return rc;
		if (f.hdr.seq != 0) {
			rc_frame_free(&f);
			continue;
		}
		if (cmd == 0 || f.hdr.cmd == cmd) {
			*out = f;
			return 0;
		}
		rc = client_queue(c, &f);
		if (rc) {
			rc_frame_free(&f);
			return rc;
		}
	}
}

int rc_next_push(struct rc_client *c, struct rc_frame *out, int timeout_ms)
{
	return rc_wait_push(c, 0, out, timeout_ms);
}
