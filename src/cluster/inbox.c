/*
 * inbox.c - the node-to-node transport over Redis streams (see inbox.h).
 *
 * Sending. Each destination has a queue: a byte buffer already in the
 * entry's format (length-prefixed messages), so a send is one locked
 * memcpy and a flush takes the whole buffer without walking messages.
 * The driving thread swaps the "live" buffer (producers append, under the
 * destination's mutex) with its own "flight" buffer and XADDs the flight
 * buffer from flight_off; what a broken link left unsent stays in flight
 * and goes first at the next flush, so order holds per destination. The
 * bound is one atomic byte count over all destinations, reserved before
 * the append and released when the XADD is confirmed.
 *
 * Receiving. The reader has its own raw hiredis connection because its
 * XREADGROUP BLOCKs: the command is written, then the driving thread polls
 * the socket together with its other work, and only reads once data is
 * there (redisBufferRead + redisGetReplyFromReader never wait). Its states:
 *
 *          connect ok, XGROUP CREATE        write XREADGROUP
 *   DOWN -----------------------------> IDLE ----------------> IN FLIGHT
 *    ^ (back-off 50 ms .. 2 s)           ^                        |
 *    |                                   +--- reply: deliver, ----+
 *    +---- any error, or no reply within      XACK + XTRIM
 *          INBOX_BLOCK_MS + RX_TIMEOUT_MS
 *
 * After every connect the reader first walks its own pending entries
 * (cursor from "0": delivered to us before but not acked, e.g. before a
 * crash), then reads new ones (">").
 *
 * Trimming. We are the group's only consumer and handle entries in id
 * order, so once id X is acked every entry below X is handled: XTRIM
 * MINID ~ X is safe and keeps the stream short.
 */
#include "ringchat/inbox.h"
#include "ringchat/clock.h"
#include "ringchat/config.h"
#include "ringchat/kv.h"
#include "ringchat/log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#define INBOX_GROUP "g"
#define RX_CONNECT_TIMEOUT_MS 1000
#define RX_TIMEOUT_MS 2000
#define RX_BACKOFF_MIN_MS 50
#define RX_BACKOFF_MAX_MS 2000
/* XADDs pipelined in one flush; the rest waits for the next round. */
#define FLUSH_MAX_ENTRIES 64
/* A flight buffer bigger than this is freed once empty, not kept. */
#define OUT_KEEP_BYTES (4u << 20)

struct inbox_buf {
	uint8_t *p;
	size_t len, cap;
	uint32_t count;
};

struct inbox_out {
	pthread_mutex_t lock; /* guards live */
	struct inbox_buf live;
	/* driving thread only */
	struct inbox_buf flight;
	size_t flight_off;    /* bytes of flight confirmed by Redis */
	uint32_t flight_done; /* messages of flight confirmed */
	char key[32];
} __attribute__((aligned(64)));

/* Relaxed atomics: counters for metrics, ordering nothing. */
struct inbox_counters {
	_Atomic uint64_t entries_sent[MEMBERSHIP_MAX_NODES], msgs_sent[MEMBERSHIP_MAX_NODES],
	    bytes_sent[MEMBERSHIP_MAX_NODES];
	_Atomic uint64_t entries_recv[MEMBERSHIP_MAX_NODES], msgs_recv[MEMBERSHIP_MAX_NODES],
	    bytes_recv[MEMBERSHIP_MAX_NODES];
	_Atomic uint64_t queued_msgs, enobufs, dropped, batch_max, bad_entries, lag_ms_last,
	    lag_ms_max;
};

struct inbox {
	int self;
	int maxlen;
	size_t queue_max;
	inbox_deliver_fn deliver;
	void *ctx;
	char key[32]; /* our stream */
	char consumer[16];

	/* reserved bytes of all queues; see "Sending" */
	_Atomic size_t queued_bytes __attribute__((aligned(64)));
	/* a flush is due; set by producers, cleared by the driving thread */
	_Atomic bool flush_wanted;

	/* reader, driving thread only */
	redisContext *rx;
	bool rx_inflight;
	bool rx_pending; /* walking our pending entries */
	bool rx_need_group;
	char rx_cursor[48];   /* last pending id read */
	uint64_t rx_since_ms; /* when the read in flight was written */
	uint64_t rx_retry_ms;
	unsigned rx_backoff_ms;
	unsigned rx_failures;
	char redis_host[128];
	char redis_socket[256];
	int redis_port;

	struct inbox_counters n;
	struct inbox_out out[MEMBERSHIP_MAX_NODES];
};

static void ctr_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static void ctr_max(_Atomic uint64_t *c, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(c, memory_order_relaxed);

	while (v > cur && !atomic_compare_exchange_weak_explicit(c, &cur, v, memory_order_relaxed,
								 memory_order_relaxed))
		;
}

struct inbox *inbox_create(const struct config *cfg, inbox_deliver_fn deliver, void *ctx)
{
	struct inbox *ib = aligned_alloc(64, (sizeof(*ib) + 63) / 64 * 64);
	int i;

	if (!ib)
		return NULL;
	memset(ib, 0, sizeof(*ib));
	ib->self = cfg->node_id;
	ib->maxlen = cfg->inbox_maxlen;
	ib->queue_max = (size_t)cfg->cluster_queue_bytes;
	ib->deliver = deliver;
	ib->ctx = ctx;
	snprintf(ib->key, sizeof(ib->key), "rc:inbox:%d", cfg->node_id);
	snprintf(ib->consumer, sizeof(ib->consumer), "%d", cfg->node_id);
	snprintf(ib->redis_host, sizeof(ib->redis_host), "%s", cfg->redis_host);
	snprintf(ib->redis_socket, sizeof(ib->redis_socket), "%s", cfg->redis_socket);
	ib->redis_port = cfg->redis_port;
	for (i = 0; i < MEMBERSHIP_MAX_NODES; i++) {
		if (pthread_mutex_init(&ib->out[i].lock, NULL)) {
			while (i-- > 0)
				pthread_mutex_destroy(&ib->out[i].lock);
			free(ib);
			return NULL;
		}
		snprintf(ib->out[i].key, sizeof(ib->out[i].key), "rc:inbox:%d", i);
	}
	return ib;
}

static void inbox_rx_close(struct inbox *ib)
{
	redisFree(ib->rx);
	ib->rx = NULL;
	ib->rx_inflight = false;
}

void inbox_destroy(struct inbox *ib)
{
	if (!ib)
		return;
	inbox_rx_close(ib);
	for (int i = 0; i < MEMBERSHIP_MAX_NODES; i++) {
		pthread_mutex_destroy(&ib->out[i].lock);
		free(ib->out[i].live.p);
		free(ib->out[i].flight.p);
	}
	free(ib);
}

/* ---- sending ------------------------------------------------------------ */

static int inbox_buf_reserve(struct inbox_buf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 4096;
	uint8_t *p;

	if (b->len + more <= b->cap)
		return 0;
	while (cap < b->len + more)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int inbox_enqueue(struct inbox *ib, int node, const void *msg, size_t len, bool *wake)
{
	struct inbox_out *o;
	size_t need = 4 + len;
	uint8_t *w;
	int rc;

	*wake = false;
	if (node < 0 || node >= MEMBERSHIP_MAX_NODES)
		return -EINVAL;
	if (len > INBOX_MSG_MAX_BYTES)
		return -EMSGSIZE;
	/* relaxed: the count is a bound, it orders nothing */
	if (atomic_fetch_add_explicit(&ib->queued_bytes, need, memory_order_relaxed) + need >
	    ib->queue_max) {
		atomic_fetch_sub_explicit(&ib->queued_bytes, need, memory_order_relaxed);
		ctr_add(&ib->n.enobufs, 1);
		return -ENOBUFS;
	}
	o = &ib->out[node];
	pthread_mutex_lock(&o->lock);
	rc = inbox_buf_reserve(&o->live, need);
	if (rc == 0) {
		w = o->live.p + o->live.len;
		w[0] = (uint8_t)(len >> 24);
		w[1] = (uint8_t)(len >> 16);
		w[2] = (uint8_t)(len >> 8);
		w[3] = (uint8_t)len;
		memcpy(w + 4, msg, len);
		o->live.len += need;
		o->live.count++;
	}
	pthread_mutex_unlock(&o->lock);
	if (rc) {
		atomic_fetch_sub_explicit(&ib->queued_bytes, need, memory_order_relaxed);
		return rc;
	}
	ctr_add(&ib->n.queued_msgs, 1);
	/*
	 * acq_rel: the release half publishes the append (also published by
	 * the mutex) before the flag; the wake-up is owed only on the
	 * false -> true transition, paired with the exchange to false in
	 * inbox_flush, which happens before the queues are looked at.
	 */
	*wake = !atomic_exchange_explicit(&ib->flush_wanted, true, memory_order_acq_rel);
	return 0;
}

bool inbox_has_queued(const struct inbox *ib)
{
	return atomic_load_explicit(&ib->queued_bytes, memory_order_relaxed) > 0;
}

/* Bytes of the messages of b from off on that fit one entry (at least
 * one message); *count gets their number. */
static size_t inbox_chunk(const struct inbox_buf *b, size_t off, uint32_t *count)
{
	size_t start = off;

	*count = 0;
	while (off < b->len) {
		const uint8_t *p = b->p + off;
		size_t m = 4 + ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);

		if (*count && off - start + m > INBOX_ENTRY_MAX_BYTES)
			break;
		off += m;
		(*count)++;
	}
	return off - start;
}

/* The flight buffer is fully confirmed: reset it, keeping small memory. */
static void inbox_flight_reset(struct inbox_out *o)
{
	if (o->flight.cap > OUT_KEEP_BYTES) {
		free(o->flight.p);
		o->flight.p = NULL;
		o->flight.cap = 0;
	}
	o->flight.len = 0;
	o->flight.count = 0;
	o->flight_off = 0;
	o->flight_done = 0;
}

struct inbox_sent {
	int node;
	size_t bytes;
	uint32_t count;
};

int inbox_flush(struct inbox *ib, struct kv *kv)
{
	struct inbox_sent sent[FLUSH_MAX_ENTRIES];
	size_t nsent = 0, released = 0;
	uint32_t released_msgs = 0;
	bool broken = false;
	int i;

	/* pairs with the exchange in inbox_enqueue; see there */
	atomic_exchange_explicit(&ib->flush_wanted, false, memory_order_acq_rel);
	for (i = 0; i < MEMBERSHIP_MAX_NODES && nsent < FLUSH_MAX_ENTRIES; i++) {
		struct inbox_out *o = &ib->out[i];
		size_t off;

		if (o->flight_off == o->flight.len) {
			struct inbox_buf t;

			inbox_flight_reset(o);
			pthread_mutex_lock(&o->lock);
			t = o->live;
			o->live = o->flight;
			o->flight = t;
			pthread_mutex_unlock(&o->lock);
		}
		off = o->flight_off;
		while (off < o->flight.len && nsent < FLUSH_MAX_ENTRIES) {
			uint32_t count;
			size_t bytes = inbox_chunk(&o->flight, off, &count);

			/* a failed append still owes a kv_reply (NULL) */
			kv_append(kv, "XADD %s MAXLEN ~ %d * f %d n %u m %b", o->key, ib->maxlen,
				  ib->self, count, o->flight.p + off, bytes);
			sent[nsent++] =
			    (struct inbox_sent){.node = i, .bytes = bytes, .count = count};
			off += bytes;
		}
	}
	for (size_t k = 0; k < nsent; k++) {
		struct inbox_sent *s = &sent[k];
		struct inbox_out *o = &ib->out[s->node];
		redisReply *r = kv_reply(kv);

		if (!r || broken) {
			/* kv fails every reply after a broken one; keep the rest
			 * in flight, in order */
			broken = true;
			if (r)
				freeReplyObject(r);
			continue;
		}
		if (r->type == REDIS_REPLY_ERROR) {
			/* retrying a refused entry would block this peer for
			 * good; drop it and say so */
			static struct log_gate gate;

			log_limited(&gate, LOG_ERROR,
				    "inbox: XADD to %s refused (%s); %u messages dropped", o->key,
				    r->str, s->count);
			ctr_add(&ib->n.dropped, s->count);
		} else {
			ctr_add(&ib->n.entries_sent[s->node], 1);
			ctr_add(&ib->n.msgs_sent[s->node], s->count);
			ctr_add(&ib->n.bytes_sent[s->node], s->bytes - 4 * (size_t)s->count);
			ctr_max(&ib->n.batch_max, s->count);
		}
		freeReplyObject(r);
		o->flight_off += s->bytes;
		o->flight_done += s->count;
		released += s->bytes;
		released_msgs += s->count;
	}
	if (released) {
		atomic_fetch_sub_explicit(&ib->queued_bytes, released, memory_order_relaxed);
		atomic_fetch_sub_explicit(&ib->n.queued_msgs, released_msgs, memory_order_relaxed);
	}
	if (broken)
		return -ENOTCONN;
	if (nsent == FLUSH_MAX_ENTRIES)
		/* more may wait: make sure the caller comes back */
		atomic_store_explicit(&ib->flush_wanted, true, memory_order_relaxed);
	return 0;
}

/* ---- receiving ---------------------------------------------------------- */

static void inbox_rx_fail(struct inbox *ib, const char *what)
{
	char why[128];

	/* copied: closing frees the context that holds errstr */
	snprintf(why, sizeof(why), "%s",
		 !ib->rx       ? "out of memory"
		 : ib->rx->err ? ib->rx->errstr
			       : "no reply");
	inbox_rx_close(ib);
	ib->rx_backoff_ms = ib->rx_backoff_ms ? ib->rx_backoff_ms * 2 : RX_BACKOFF_MIN_MS;
	if (ib->rx_backoff_ms > RX_BACKOFF_MAX_MS)
		ib->rx_backoff_ms = RX_BACKOFF_MAX_MS;
	ib->rx_retry_ms = clock_mono_ms() + ib->rx_backoff_ms;
	/* one warning per outage */
	if (ib->rx_failures++ == 0)
		log_warn("inbox: reader of %s: %s: %s; retrying with back-off", ib->key, what, why);
	else
		log_debug("inbox: reader of %s: %s: %s (failure %u)", ib->key, what, why,
			  ib->rx_failures);
}

static bool inbox_reply_is_error(const redisReply *r, const char *prefix)
{
	return r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, prefix, strlen(prefix)) == 0;
}

/* Blocking: the connection is idle when this runs. */
static int inbox_rx_create_group(struct inbox *ib)
{
	/* from 0: what senders added before the group existed is ours too */
	redisReply *r =
	    redisCommand(ib->rx, "XGROUP CREATE %s %s 0 MKSTREAM", ib->key, INBOX_GROUP);

	if (!r) {
		inbox_rx_fail(ib, "XGROUP CREATE");
		return -ENOTCONN;
	}
	if (r->type == REDIS_REPLY_ERROR && !inbox_reply_is_error(r, "BUSYGROUP")) {
		log_error("inbox: XGROUP CREATE %s: %s", ib->key, r->str);
		freeReplyObject(r);
		inbox_rx_fail(ib, "XGROUP CREATE");
		return -EPROTO;
	}
	freeReplyObject(r);
	ib->rx_need_group = false;
	return 0;
}

static int inbox_rx_connect(struct inbox *ib)
{
	struct timeval ctv = {.tv_sec = RX_CONNECT_TIMEOUT_MS / 1000,
			      .tv_usec = RX_CONNECT_TIMEOUT_MS % 1000 * 1000};
	struct timeval tv = {.tv_sec = RX_TIMEOUT_MS / 1000,
			     .tv_usec = RX_TIMEOUT_MS % 1000 * 1000};

	if (ib->redis_socket[0])
		ib->rx = redisConnectUnixWithTimeout(ib->redis_socket, ctv);
	else
		ib->rx = redisConnectWithTimeout(ib->redis_host, ib->redis_port, ctv);
	if (!ib->rx || ib->rx->err || redisSetTimeout(ib->rx, tv) != REDIS_OK) {
		inbox_rx_fail(ib, "connect");
		return -ENOTCONN;
	}
	/* a new link may have missed acks: walk our pending entries first */
	ib->rx_pending = true;
	snprintf(ib->rx_cursor, sizeof(ib->rx_cursor), "0");
	ib->rx_need_group = true;
	return 0;
}

static int inbox_rx_issue(struct inbox *ib)
{
	int done = 0, rc;

	if (ib->rx_pending)
		rc = redisAppendCommand(ib->rx, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s %s",
					INBOX_GROUP, ib->consumer, INBOX_READ_COUNT, ib->key,
					ib->rx_cursor);
	else
		rc = redisAppendCommand(
		    ib->rx, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >", INBOX_GROUP,
		    ib->consumer, INBOX_READ_COUNT, INBOX_BLOCK_MS, ib->key);
	while (rc == REDIS_OK && !done)
		rc = redisBufferWrite(ib->rx, &done);
	if (rc != REDIS_OK) {
		inbox_rx_fail(ib, "XREADGROUP");
		return -ENOTCONN;
	}
	ib->rx_inflight = true;
	ib->rx_since_ms = clock_mono_ms();
	return 0;
}

static uint64_t inbox_id_ms(const redisReply *id)
{
	return id && id->type == REDIS_REPLY_STRING ? strtoull(id->str, NULL, 10) : 0;
}

static uint32_t inbox_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Finds field name in an entry's flat field list; NULL when absent. */
static const redisReply *inbox_field(const redisReply *fields, const char *name)
{
	for (size_t i = 0; i + 1 < fields->elements; i += 2) {
		const redisReply *k = fields->element[i];

		if (k->type == REDIS_REPLY_STRING && k->len == strlen(name) &&
		    memcmp(k->str, name, k->len) == 0)
			return fields->element[i + 1];
	}
	return NULL;
}

/* Checks an entry whole before the first delivery, so a bad entry
 * delivers nothing. Returns the sender id, or -1. */
static int inbox_check_entry(const redisReply *fields, const redisReply **m, uint32_t *count)
{
	const redisReply *f, *n;
	size_t off = 0;
	uint32_t k = 0;
	long from;

	if (!fields || fields->type != REDIS_REPLY_ARRAY)
		return -1;
	f = inbox_field(fields, "f");
	n = inbox_field(fields, "n");
	*m = inbox_field(fields, "m");
	if (!f || !n || !*m || f->type != REDIS_REPLY_STRING || n->type != REDIS_REPLY_STRING ||
	    (*m)->type != REDIS_REPLY_STRING)
		return -1;
	from = strtol(f->str, NULL, 10);
	if (from < 0 || from >= MEMBERSHIP_MAX_NODES)
		return -1;
	while (off < (*m)->len) {
		if ((*m)->len - off < 4)
			return -1;
		uint32_t len = inbox_be32((const uint8_t *)(*m)->str + off);
		if ((*m)->len - off - 4 < len)
			return -1;
		off += 4 + (size_t)len;
		k++;
	}
	if (k != strtoul(n->str, NULL, 10))
		return -1;
	*count = k;
	return (int)from;
}

/* Acks and trims up to the entries of one read; blocking, link idle. */
static int inbox_rx_ack(struct inbox *ib, const redisReply *entries)
{
	size_t n = entries->elements, argc = 3 + n;
	const char **argv = malloc(argc * sizeof(*argv));
	size_t *lens = malloc(argc * sizeof(*lens));
	const redisReply *last = entries->element[n - 1]->element[0];
	redisReply *r;

	if (!argv || !lens) {
		free(argv);
		free(lens);
		/* not acked: delivered again after the next reconnect */
		return -ENOMEM;
	}
	argv[0] = "XACK";
	argv[1] = ib->key;
	argv[2] = INBOX_GROUP;
	for (size_t i = 0; i < 3; i++)
		lens[i] = strlen(argv[i]);
	for (size_t i = 0; i < n; i++) {
		argv[3 + i] = entries->element[i]->element[0]->str;
		lens[3 + i] = entries->element[i]->element[0]->len;
	}
	if (redisAppendCommandArgv(ib->rx, (int)argc, argv, lens) != REDIS_OK ||
	    redisAppendCommand(ib->rx, "XTRIM %s MINID ~ %b", ib->key, last->str, last->len) !=
		REDIS_OK) {
		free(argv);
		free(lens);
		/* half a pipeline may be queued: only a new link is clean */
		inbox_rx_fail(ib, "XACK");
		return -ENOTCONN;
	}
	free(argv);
	free(lens);
	for (int i = 0; i < 2; i++) {
		if (redisGetReply(ib->rx, (void **)&r) != REDIS_OK) {
			inbox_rx_fail(ib, "XACK");
			return -ENOTCONN;
		}
		if (r->type == REDIS_REPLY_ERROR)
			log_error("inbox: %s on %s: %s", i ? "XTRIM" : "XACK", ib->key, r->str);
		freeReplyObject(r);
	}
	return 0;
}

/* Handles one XREADGROUP reply. */
static int inbox_rx_handle(struct inbox *ib, redisReply *r)
{
	const redisReply *entries;
	uint64_t now = clock_epoch_ms();

	if (r->type == REDIS_REPLY_NIL)
		return 0; /* BLOCK ran out */
	if (inbox_reply_is_error(r, "NOGROUP") || inbox_reply_is_error(r, "UNBLOCKED")) {
		/* Redis lost the stream (restart without persistence), or it
		 * was deleted while we waited on it */
		log_warn("inbox: group of %s is gone; re-creating it", ib->key);
		ib->rx_need_group = true;
		return 0;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
	    r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2 ||
	    r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
		log_error("inbox: unexpected XREADGROUP reply on %s (type %d%s%s)", ib->key,
			  r->type, r->type == REDIS_REPLY_ERROR ? ": " : "",
			  r->type == REDIS_REPLY_ERROR ? r->str : "");
		return -EPROTO;
	}
	entries = r->element[0]->element[1];
	if (entries->elements == 0) {
		if (ib->rx_pending) {
			ib->rx_pending = false;
			log_debug("inbox: pending entries of %s done", ib->key);
		}
		return 0;
	}
	for (size_t i = 0; i < entries->elements; i++) {
		const redisReply *e = entries->element[i], *m = NULL;
		uint32_t count = 0;
		uint64_t sent_ms;
		size_t off = 0;
		int from;

		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING) {
			log_error("inbox: malformed entry in the reply on %s", ib->key);
			return -EPROTO;
		}
		sent_ms = inbox_id_ms(e->element[0]);
		if (i == 0) {
			uint64_t lag = now > sent_ms ? now - sent_ms : 0;

			atomic_store_explicit(&ib->n.lag_ms_last, lag, memory_order_relaxed);
			ctr_max(&ib->n.lag_ms_max, lag);
		}
		if (ib->rx_pending)
			snprintf(ib->rx_cursor, sizeof(ib->rx_cursor), "%s", e->element[0]->str);
		/* a pending entry that was trimmed since comes with nil fields */
		if (e->element[1]->type == REDIS_REPLY_NIL)
			continue;
		from = inbox_check_entry(e->element[1], &m, &count);
		if (from < 0) {
			static struct log_gate gate;

			ctr_add(&ib->n.bad_entries, 1);
			log_limited(&gate, LOG_ERROR,
				    "inbox: entry %s of %s does not parse; skipped",
				    e->element[0]->str, ib->key);
			continue;
		}
		for (uint32_t k = 0; k < count; k++) {
			uint32_t len = inbox_be32((const uint8_t *)m->str + off);

			if (ib->deliver)
				ib->deliver(ib->ctx, from, sent_ms,
					    (const uint8_t *)m->str + off + 4, len);
			off += 4 + (size_t)len;
		}
		ctr_add(&ib->n.entries_recv[from], 1);
		ctr_add(&ib->n.msgs_recv[from], count);
		ctr_add(&ib->n.bytes_recv[from], m->len - 4 * (size_t)count);
	}
	return inbox_rx_ack(ib, entries);
}

/* The socket is readable: take what is there; a whole reply is handled. */
static int inbox_rx_read(struct inbox *ib)
{
	void *reply = NULL;
	int rc;

	if (redisBufferRead(ib->rx) != REDIS_OK ||
	    redisGetReplyFromReader(ib->rx, &reply) != REDIS_OK) {
		inbox_rx_fail(ib, "read");
		return -ENOTCONN;
	}
	if (!reply)
		return 0; /* part of a reply; wait for more */
	ib->rx_inflight = false;
	rc = inbox_rx_handle(ib, reply);
	freeReplyObject(reply);
	if (rc == -EPROTO && ib->rx) {
		/* start over on a clean link rather than guess */
		inbox_rx_fail(ib, "protocol");
		return -ENOTCONN;
	}
	return ib->rx ? 0 : -ENOTCONN;
}

int inbox_rx_step(struct inbox *ib, bool enabled, bool readable, uint64_t *next_ms)
{
	uint64_t now = clock_mono_ms();

	*next_ms = now + INBOX_BLOCK_MS;
	if (!enabled) {
		if (ib->rx)
			log_info("inbox: reader of %s paused (lease not confirmed)", ib->key);
		inbox_rx_close(ib);
		return -EAGAIN;
	}
	if (ib->rx && ib->rx_inflight && readable && inbox_rx_read(ib))
		goto down;
	if (ib->rx && ib->rx_inflight) {
		if (now < ib->rx_since_ms + INBOX_BLOCK_MS + RX_TIMEOUT_MS) {
			*next_ms = ib->rx_since_ms + INBOX_BLOCK_MS + RX_TIMEOUT_MS;
			return 0;
		}
		inbox_rx_fail(ib, "no reply in time");
		goto down;
	}
	if (!ib->rx) {
		if (now < ib->rx_retry_ms) {
			/* backing off: nothing new to report */
			*next_ms = ib->rx_retry_ms;
			return -EAGAIN;
		}
		if (inbox_rx_connect(ib))
			goto down;
	}
	if (ib->rx_need_group && inbox_rx_create_group(ib))
		goto down;
	if (inbox_rx_issue(ib))
		goto down;
	if (ib->rx_failures) {
		log_info("inbox: reader of %s working again after %u failures", ib->key,
			 ib->rx_failures);
		ib->rx_failures = 0;
		ib->rx_backoff_ms = 0;
	}
	*next_ms = ib->rx_since_ms + INBOX_BLOCK_MS + RX_TIMEOUT_MS;
	return 0;
down:
	*next_ms = ib->rx_retry_ms > now ? ib->rx_retry_ms : now + RX_BACKOFF_MIN_MS;
	return -ENOTCONN;
}

int inbox_rx_fd(const struct inbox *ib)
{
	return ib->rx && ib->rx_inflight ? ib->rx->fd : -1;
}

void inbox_stats(const struct inbox *ib, struct inbox_stats *out)
{
#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < MEMBERSHIP_MAX_NODES; i++) {
		out->peer[i].entries_sent = LOAD(ib->n.entries_sent[i]);
		out->peer[i].msgs_sent = LOAD(ib->n.msgs_sent[i]);
		out->peer[i].bytes_sent = LOAD(ib->n.bytes_sent[i]);
		out->peer[i].entries_recv = LOAD(ib->n.entries_recv[i]);
		out->peer[i].msgs_recv = LOAD(ib->n.msgs_recv[i]);
		out->peer[i].bytes_recv = LOAD(ib->n.bytes_recv[i]);
	}
	out->queued_msgs = LOAD(ib->n.queued_msgs);
	out->queued_bytes = LOAD(ib->queued_bytes);
	out->enobufs = LOAD(ib->n.enobufs);
	out->dropped = LOAD(ib->n.dropped);
	out->batch_max = LOAD(ib->n.batch_max);
	out->bad_entries = LOAD(ib->n.bad_entries);
	out->lag_ms_last = LOAD(ib->n.lag_ms_last);
	out->lag_ms_max = LOAD(ib->n.lag_ms_max);
#undef LOAD
}
