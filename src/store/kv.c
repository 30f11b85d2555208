/*
 * kv.c - Redis access: one blocking hiredis connection per worker.
 *
 * The link goes through the same two states as db.c:
 *
 *             connect ok                        connect fails
 *   DOWN -------------------------> UP          DOWN ----------> DOWN
 *    ^                               |          (back off)
 *    +------ link lost (drop) -------+
 *      proven link: reconnect at once; fresh link: back off
 *
 * Backing off starts or doubles a window (50 ms .. 5 s) in which commands
 * fail at once. A link is proven once a reply arrived on it, which also
 * resets the back-off; so a server that accepts connections but never
 * answers (stopped, overloaded) costs one command timeout per window, not
 * one per command.
 *
 * Commands travel in batches: kv_cmd is a batch of one, a pipeline is the
 * run of kv_append calls until its last kv_reply. When a batch starts,
 * nothing is outstanding on the link, so a readable or hung-up socket means
 * the server closed it; it is replaced before anything is queued.
 *
 * Reply accounting. Every appended command owes one kv_reply. The owed
 * replies form a queue of n_dead commands that failed (their kv_reply
 * gives NULL) followed by n_live commands queued on the link. Commands
 * only fail to queue at the start of a batch (link down), and a broken
 * link turns every live command dead, so failed ones always come first
 * and plain counters keep the order.
 *
 * Resending. hiredis writes the whole batch on the first kv_reply and
 * keeps unwritten bytes in c->obuf. If that write fails before a single
 * byte left, the server saw nothing, so the same bytes are sent once on a
 * fresh link. Any later failure may have run some commands: those report
 * NULL and are not repeated.
 */
#include "ringchat/kv.h"
#include "ringchat/config.h"
#include "ringchat/log.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/sds.h>

#define KV_CONNECT_TIMEOUT_MS 1000
#define KV_COMMAND_TIMEOUT_MS 2000
#define KV_BACKOFF_MIN_MS 50
#define KV_BACKOFF_MAX_MS 5000

struct kv {
	redisContext *c;  /* NULL while DOWN */
	bool link_proven; /* a reply has arrived on c */
	int64_t retry_at_ms;
	unsigned backoff_ms;
	unsigned failures; /* since the last reply, for logs */

	unsigned n_dead;   /* owed replies that will be NULL; they come first */
	unsigned n_live;   /* commands queued on c whose replies are unread */
	bool batch_read;   /* a reply of the current batch has been read */
	size_t batch_obuf; /* unwritten bytes when the batch's first reply was asked */

	char errmsg[160];
	char host[128];
	char socket[256];
	char password[128]; /* AUTH on every new link; "" = none */
	int port;
};

static int64_t kv_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((format(printf, 2, 3))) static void kv_fail(struct kv *kv, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(kv->errmsg, sizeof(kv->errmsg), fmt, ap);
	va_end(ap);
}

static const char *kv_where(const struct kv *kv)
{
	return kv->socket[0] ? kv->socket : kv->host;
}

/* Starts or doubles the back-off window after a failure (kv->errmsg). */
static void kv_back_off(struct kv *kv)
{
	kv->backoff_ms = kv->backoff_ms ? kv->backoff_ms * 2 : KV_BACKOFF_MIN_MS;
	if (kv->backoff_ms > KV_BACKOFF_MAX_MS)
		kv->backoff_ms = KV_BACKOFF_MAX_MS;
	/* the window starts after the attempt, which may have taken a
	 * whole timeout */
	kv->retry_at_ms = kv_now_ms() + kv->backoff_ms;
	/* one warning per outage; the attempts that follow are debug */
	if (kv->failures++ == 0)
		log_warn("kv: %s; retrying with back-off", kv->errmsg);
	else
		log_debug("kv: %s (failure %u, next try in %u ms)", kv->errmsg, kv->failures,
			  kv->backoff_ms);
}

static void kv_succeeded(struct kv *kv)
{
	if (kv->failures)
		log_info("kv: working again after %u failures", kv->failures);
	kv->failures = 0;
	kv->backoff_ms = 0;
	kv->link_proven = true;
}

/* Gives up a link that failed. */
static void kv_drop(struct kv *kv)
{
	redisFree(kv->c);
	kv->c = NULL;
	kv->batch_read = false;
	if (kv->link_proven)
		kv->retry_at_ms = 0;
	else
		kv_back_off(kv);
}

/*
 * AUTH on a new link, before anything else is sent on it (a resent batch
 * included). Returns 0, or -EACCES with kv->errmsg set; a refused
 * password backs off like a server that is down, and is logged once per
 * outage, so a wrong redis_password shows in the log at once.
 */
static int kv_auth(struct kv *kv, redisContext *c)
{
	redisReply *r = redisCommand(c, "AUTH %s", kv->password);
	int ret = 0;

	if (!r || r->type != REDIS_REPLY_STATUS) {
		kv_fail(kv, "AUTH at %s refused: %s", kv_where(kv),
			!r ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		ret = -EACCES;
	}
	if (r)
		freeReplyObject(r);
	return ret;
}

static int kv_connect(struct kv *kv)
{
	struct timeval conn_tv = {.tv_sec = KV_CONNECT_TIMEOUT_MS / 1000,
				  .tv_usec = KV_CONNECT_TIMEOUT_MS % 1000 * 1000};
	struct timeval cmd_tv = {.tv_sec = KV_COMMAND_TIMEOUT_MS / 1000,
				 .tv_usec = KV_COMMAND_TIMEOUT_MS % 1000 * 1000};
	int64_t now = kv_now_ms();
	redisContext *c;

	if (now < kv->retry_at_ms) {
		kv_fail(kv, "server down; next connect attempt in %" PRId64 " ms",
			kv->retry_at_ms - now);
		return -ENOTCONN;
	}
	if (kv->socket[0])
		c = redisConnectUnixWithTimeout(kv->socket, conn_tv);
	else
		c = redisConnectWithTimeout(kv->host, kv->port, conn_tv);
	if (c && !c->err && redisSetTimeout(c, cmd_tv) == REDIS_OK &&
	    (kv->socket[0] || redisEnableKeepAlive(c) == REDIS_OK)) {
		if (kv->password[0] && kv_auth(kv, c))
			goto out_free;
		kv->c = c;
		kv->link_proven = false;
		return 0;
	}
	kv_fail(kv, "connect to %s: %s", kv_where(kv), c ? c->errstr : "out of memory");
out_free:
	redisFree(c);
	kv_back_off(kv);
	return -ENOTCONN;
}

/* Called with nothing outstanding: makes the link UP for a new batch. */
static int kv_batch_start(struct kv *kv)
{
	if (kv->c) {
		struct pollfd p = {.fd = kv->c->fd, .events = POLLIN | POLLRDHUP};

		if (poll(&p, 1, 0) > 0) {
			log_warn("kv: server closed the idle connection; reconnecting");
			kv_drop(kv);
		}
	}
	kv->batch_read = false;
	return kv->c ? 0 : kv_connect(kv);
}

/* Common tail of a failed append: see "Reply accounting" above. */
static int kv_append_failed(struct kv *kv, int rc)
{
	if (rc != -ENOTCONN) {
		kv_fail(kv, "append: %s", kv->c->errstr);
		if (kv->n_live) {
			/* earlier commands of the batch are queued ahead of this
			 * one; failing them all keeps the order of replies */
			kv->n_dead += kv->n_live;
			kv->n_live = 0;
			kv_drop(kv);
		} else {
			/* nothing queued: the link is clean, only the context
			 * remembers the formatting error */
			kv->c->err = 0;
			kv->c->errstr[0] = '\0';
		}
	}
	kv->n_dead++;
	return rc;
}

static int kv_hiredis_errno(const redisContext *c)
{
	return c->err == REDIS_ERR_OOM ? -ENOMEM : -EINVAL;
}

static int kv_vappend(struct kv *kv, const char *fmt, va_list ap)
{
	int rc = kv->n_live ? 0 : kv_batch_start(kv);

	if (rc)
		return kv_append_failed(kv, rc);
	if (redisvAppendCommand(kv->c, fmt, ap) != REDIS_OK)
		return kv_append_failed(kv, kv_hiredis_errno(kv->c));
	kv->n_live++;
	return 0;
}

static int kv_append_argv(struct kv *kv, int argc, const char **argv, const size_t *argvlen)
{
	int rc = kv->n_live ? 0 : kv_batch_start(kv);

	if (rc)
		return kv_append_failed(kv, rc);
	if (redisAppendCommandArgv(kv->c, argc, argv, argvlen) != REDIS_OK)
		return kv_append_failed(kv, kv_hiredis_errno(kv->c));
	kv->n_live++;
	return 0;
}

/* Moves the unwritten batch to a fresh link; see "Resending" above. */
static bool kv_resend(struct kv *kv)
{
	redisContext *old = kv->c;
	bool ok;

	kv->c = NULL;
	ok = kv_connect(kv) == 0 &&
	     redisAppendFormattedCommand(kv->c, old->obuf, sdslen(old->obuf)) == REDIS_OK;
	redisFree(old);
	if (!ok && kv->c)
		kv_drop(kv);
	return ok;
}

redisReply *kv_reply(struct kv *kv)
{
	void *reply = NULL;
	bool resent = false;

	if (kv->n_dead) {
		kv->n_dead--;
		return NULL;
	}
	if (!kv->n_live) {
		kv_fail(kv, "kv_reply without a pending command");
		return NULL;
	}
	if (!kv->batch_read)
		kv->batch_obuf = sdslen(kv->c->obuf);
	while (redisGetReply(kv->c, &reply) != REDIS_OK) {
		kv_fail(kv, "%s: %s", kv_where(kv), kv->c->errstr);
		if (!resent && !kv->batch_read && kv->batch_obuf &&
		    sdslen(kv->c->obuf) == kv->batch_obuf) {
			log_warn("kv: connection lost before sending (%s); resending", kv->errmsg);
			resent = true;
			if (kv_resend(kv))
				continue;
		} else {
			log_warn("kv: connection lost: %s", kv->errmsg);
		}
		kv->n_dead += kv->n_live - 1;
		kv->n_live = 0;
		if (kv->c) /* else a failed resend already backed off */
			kv_drop(kv);
		return NULL;
	}
	kv->batch_read = --kv->n_live > 0;
	kv_succeeded(kv);
	return reply;
}

unsigned kv_pending(const struct kv *kv)
{
	return kv->n_dead + kv->n_live;
}

int kv_append(struct kv *kv, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = kv_vappend(kv, fmt, ap);
	va_end(ap);
	return rc;
}

static bool kv_idle(struct kv *kv)
{
	if (kv->n_dead || kv->n_live) {
		kv_fail(kv, "single command while %u pipelined replies are pending",
			kv->n_dead + kv->n_live);
		log_error("kv: %s", kv->errmsg);
		return false;
	}
	return true;
}

redisReply *kv_cmd(struct kv *kv, const char *fmt, ...)
{
	va_list ap;
	int rc;

	if (!kv_idle(kv))
		return NULL;
	va_start(ap, fmt);
	rc = kv_vappend(kv, fmt, ap);
	va_end(ap);
	if (rc) {
		kv->n_dead--; /* the owed NULL is this return */
		return NULL;
	}
	return kv_reply(kv);
}

redisReply *kv_argv(struct kv *kv, int argc, const char **argv, const size_t *argvlen)
{
	if (!kv_idle(kv))
		return NULL;
	if (kv_append_argv(kv, argc, argv, argvlen)) {
		kv->n_dead--;
		return NULL;
	}
	return kv_reply(kv);
}

struct kv *kv_open(const struct config *c)
{
	struct kv *kv = calloc(1, sizeof(*kv));

	if (!kv)
		return NULL;
	snprintf(kv->host, sizeof(kv->host), "%s", c->redis_host);
	snprintf(kv->socket, sizeof(kv->socket), "%s", c->redis_socket);
	snprintf(kv->password, sizeof(kv->password), "%s", c->redis_password);
	kv->port = c->redis_port;
	return kv;
}

void kv_close(struct kv *kv)
{
	if (!kv)
		return;
	redisFree(kv->c);
	explicit_bzero(kv->password, sizeof(kv->password));
	free(kv);
}

const char *kv_errmsg(const struct kv *kv)
{
	return kv->errmsg;
}
