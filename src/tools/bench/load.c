/*
 * load.c - the message load core: what senders send, what answers and
 * pushes mean, the load thread's loop, and load_run, which sets the
 * threads up, watches them through warm-up, measurement and drain, and
 * merges their results (see load.h; the I/O is the engines', engine.h).
 */
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "engine.h"
#include "ringchat/protocol.h"
#include "text.h"

/* How often a load thread looks at all its connections (paused senders,
 * due acks, drain counts). */
#define LOAD_SCAN_NS (10 * 1000000ull)

void load_kill(struct load_thread *t, struct bconn *c, const char *why)
{
	if (c->dead)
		return;
	if (t->lost + t->bad < 5)
		fprintf(stderr, "ringchat-bench: connection lost: %s\n", why);
	c->dead = true;
	t->eng->forget(t, c);
	t->lost++;
}

static void load_flush(struct load_thread *t, struct bconn *c)
{
	t->eng->flush(t, c);
}

/* Appends one message stamped `stamp` to c's write buffer. */
static void load_put_msg(struct load_thread *t, struct bconn *c, uint64_t stamp)
{
	const struct load_spec *sp = t->spec;
	char text[BENCH_TEXT_MAX + 1], head[BENCH_TEXT_MAX + 160];
	int tl = text_make(text, sp->size, stamp), n;
	uint32_t slot = (c->fifo_head + c->inflight) % (uint32_t)sp->window;

	if (sp->redis) {
		char ch[64];
		int chl = snprintf(ch, sizeof(ch), "%s:%" PRId64, sp->chan_prefix, c->peer);

		n = snprintf(head, sizeof(head), "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n", chl,
			     ch, tl);
		if (bconn_append(c, head, (size_t)n) || bconn_append(c, text, (size_t)tl) ||
		    bconn_append(c, "\r\n", 2)) {
			load_kill(t, c, "out of memory");
			return;
		}
	} else {
		n = snprintf(head, sizeof(head), "{\"%s\":%" PRId64 ",\"type\":0,\"text\":\"%s\"}",
			     sp->group ? "group_id" : "to", c->peer, text);
		if (!bconn_put_frame(c, sp->group ? CMD_GROUP_SEND : CMD_MSG_SEND, head,
				     (size_t)n)) {
			load_kill(t, c, "out of memory");
			return;
		}
	}
	c->sent_ns[slot] = stamp;
	c->inflight++;
	if (c->quota > 0)
		c->quota--;
	t->sent++;
}

/* Closed loop: tops the window up, stamped now. */
static void load_refill(struct load_thread *t, struct bconn *c, uint64_t now)
{
	while (!c->dead && c->inflight < (uint32_t)t->spec->window && c->quota != 0 &&
	       now < t->end_ns && now >= c->paused_until_ns)
		load_put_msg(t, c, now);
	load_flush(t, c);
}

/* Open loop: sends what is due, stamped with when it was due. */
static void load_due(struct load_thread *t, struct bconn *c, uint64_t now)
{
	bool any = false;

	while (!c->dead && c->inflight < (uint32_t)t->spec->window && c->next_due_ns <= now &&
	       c->next_due_ns < t->end_ns && c->quota != 0 && now >= c->paused_until_ns) {
		load_put_msg(t, c, c->next_due_ns);
		c->next_due_ns += c->interval_ns;
		any = true;
	}
	if (any)
		load_flush(t, c);
}

/*
 * An answer to the oldest message in flight. RATE_LIMITED pauses the
 * sender for retry_after_ms (retry_ms) and, when it sends a fixed number
 * of messages, gives the message back to its quota to be sent again.
 */
static void load_answer(struct load_thread *t, struct bconn *c, uint32_t code, int64_t retry_ms,
			uint64_t now)
{
	bool ok = code == ST_OK;
	uint64_t stamp;

	if (c->inflight == 0) {
		t->bad++;
		load_kill(t, c, "an answer nobody asked for");
		return;
	}
	stamp = c->sent_ns[c->fifo_head];
	c->fifo_head = (c->fifo_head + 1) % (uint32_t)t->spec->window;
	c->inflight--;
	if (code == ST_RATE_LIMITED) {
		c->paused_until_ns = now + (uint64_t)(retry_ms > 0 ? retry_ms : 10) * 1000000ull;
		if (c->quota >= 0)
			c->quota++;
		if (now >= t->start_ns && now < t->end_ns)
			t->rate_limited++;
		return;
	}
	if (ok)
		t->ok_all++;
	if (now < t->start_ns || now >= t->end_ns)
		return;
	if (ok) {
		hist_record(&t->ok_hist, now - stamp);
		t->ok++;
	} else {
		t->errors++;
	}
}

static void load_delivered(struct load_thread *t, uint64_t stamp, uint64_t now)
{
	t->delivered_all++;
	if (now < t->start_ns || now >= t->end_ns || stamp == 0 || stamp > now)
		return;
	hist_record(&t->dlv_hist, now - stamp);
	t->delivered++;
}

static size_t load_seen_slot(const int64_t *set, size_t cap, int64_t id)
{
	size_t i = (size_t)(((uint64_t)id * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);

	while (set[i] != 0 && set[i] != id)
		i = (i + 1) & (cap - 1);
	return i;
}

/*
 * Records msg_id as pushed to c. Returns 1 when it is new, 0 when it was
 * pushed before (a duplicate), -ENOMEM when the set cannot grow (the id
 * then counts as new: a bench out of memory does not invent duplicates).
 */
static int load_seen_add(struct bconn *c, int64_t id)
{
	size_t i;

	if (id <= 0)
		return 1; /* no id to judge by */
	if (2 * (c->seen_n + 1) > c->seen_cap) {
		size_t cap = c->seen_cap ? 2 * c->seen_cap : 1024;
		int64_t *set = calloc(cap, sizeof(*set));

		if (!set)
			return -ENOMEM;
		for (size_t k = 0; k < c->seen_cap; k++)
			if (c->seen[k])
				set[load_seen_slot(set, cap, c->seen[k])] = c->seen[k];
		free(c->seen);
		c->seen = set;
		c->seen_cap = cap;
	}
	i = load_seen_slot(c->seen, c->seen_cap, id);
	if (c->seen[i] == id)
		return 0;
	c->seen[i] = id;
	c->seen_n++;
	return 1;
}

static void load_send_acks(struct load_thread *t, struct bconn *c)
{
	char buf[BENCH_ACK_BATCH * 24 + 32];
	size_t n = 0;
	uint32_t i;

	if (c->nacks == 0 || c->dead)
		return;
	n += (size_t)snprintf(buf, sizeof(buf), "{\"msg_ids\":[");
	for (i = 0; i < c->nacks; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%" PRId64, i ? "," : "",
				      c->acks[i]);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "]}");
	c->nacks = 0;
	if (!bconn_put_frame(c, CMD_MSG_ACK, buf, n))
		load_kill(t, c, "out of memory");
}

static void load_on_frame(struct load_thread *t, struct bconn *c, const struct frame_hdr *h,
			  const char *p, uint64_t now)
{
	int64_t msg_id;

	if (h->seq == 0 && h->cmd == CMD_NONE) {
		t->bad++;
		load_kill(t, c, "the node refused a frame (BAD_FRAME / FRAME_TOO_LARGE)");
		return;
	}
	if (c->role == ROLE_SENDER) {
		if (h->seq != 0)
			load_answer(t, c, h->code,
				    h->code == ST_RATE_LIMITED
					? text_json_int(p, h->len, "retry_after_ms")
					: 0,
				    now);
		return;
	}
	if (h->seq != 0) {
		/* The answer to an ack. */
		if (h->code != ST_OK)
			t->ack_errors++;
		return;
	}
	if (h->cmd != CMD_PUSH_MSG)
		return;
	msg_id = text_json_int(p, h->len, "msg_id");
	if (load_seen_add(c, msg_id) == 0) {
		/* pushed before: not a delivery, but acked again like a client */
		t->duplicates++;
	} else {
		load_delivered(t, text_stamp(p, h->len), now);
		if (msg_id < c->last_msg_id)
			t->out_of_order++;
		else
			c->last_msg_id = msg_id;
	}
	if (c->nacks == 0)
		c->ack_first_ns = now;
	c->acks[c->nacks++] = msg_id;
	if (c->nacks == BENCH_ACK_BATCH)
		load_send_acks(t, c);
}

static void load_on_redis(struct load_thread *t, struct bconn *c, redisReply *r, uint64_t now)
{
	if (c->role == ROLE_SENDER) {
		/* PUBLISH answers with the number of subscribers reached. */
		load_answer(t, c,
			    r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? ST_OK : ST_NOT_FOUND,
			    0, now);
		return;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
	    r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "message") &&
	    r->element[2]->type == REDIS_REPLY_STRING)
		load_delivered(t, text_stamp(r->element[2]->str, r->element[2]->len), now);
}

void load_parse(struct load_thread *t, struct bconn *c, uint64_t now)
{
	struct frame_hdr h;
	const char *p;
	size_t off = 0;
	int k;

	if (c->rr) {
		void *reply;

		/* hiredis keeps its own copy: rbuf is only a landing area. */
		redisReaderFeed(c->rr, (const char *)c->rbuf, c->rlen);
		c->rlen = 0;
		while (!c->dead) {
			if (redisReaderGetReply(c->rr, &reply) != REDIS_OK) {
				t->bad++;
				load_kill(t, c, "bad RESP from redis");
				return;
			}
			if (!reply)
				break;
			load_on_redis(t, c, reply, now);
			freeReplyObject(reply);
		}
	} else {
		while (!c->dead && (k = bconn_frame(c, &off, &h, &p)) == 1)
			load_on_frame(t, c, &h, p, now);
		if (c->dead)
			return;
		if (k < 0) {
			t->bad++;
			load_kill(t, c, "bad frame from the node");
			return;
		}
		bconn_consume(c, off);
	}
	if (c->role == ROLE_SENDER && !t->open_loop)
		load_refill(t, c, now);
	else
		load_flush(t, c);
}

/* True once every sender used its quota and has no answer pending. */
static bool load_quota_done(const struct load_thread *t)
{
	int i;

	for (i = 0; i < t->nconns; i++) {
		const struct bconn *c = t->conns[i];

		if (c->role == ROLE_SENDER && !c->dead && (c->quota != 0 || c->inflight > 0))
			return false;
	}
	return true;
}

/* Messages the thread's live senders have in flight. */
static uint64_t load_inflight(const struct load_thread *t)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < t->nconns; i++)
		if (t->conns[i]->role == ROLE_SENDER && !t->conns[i]->dead)
			sum += t->conns[i]->inflight;
	return sum;
}

/* Open loop: when the next message of any sender is due (at most 10 ms
 * ahead), as a timeout from now. */
static void load_next_due(const struct load_thread *t, uint64_t now, struct timespec *ts)
{
	uint64_t first = now + 10000000ull;
	int i;

	for (i = 0; i < t->nconns; i++) {
		struct bconn *c = t->conns[i];

		if (c->role == ROLE_SENDER && !c->dead && c->inflight < (uint32_t)t->spec->window &&
		    c->next_due_ns < first)
			first = c->next_due_ns;
	}
	/* Waking at every due time costs a timer interrupt and a system call
	 * per message; on a tick, one wake-up sends all that is due (still
	 * stamped with its due time, so the lateness counts against the
	 * server, not for it). */
	if (t->spec->tick_ns && first > now)
		first = (first + t->spec->tick_ns - 1) / t->spec->tick_ns * t->spec->tick_ns;
	ts->tv_sec = 0;
	ts->tv_nsec = first > now ? (long)(first - now) : 0;
}

static void *load_main(void *arg)
{
	struct load_thread *t = arg;
	uint64_t now = bench_now_ns(), last_scan = now;
	int i;

	if (t->eng->start(t)) {
		t->lost = (uint64_t)t->nconns;
		atomic_store_explicit(&t->drain_inflight, 0, memory_order_release);
		atomic_store_explicit(&t->done, true, memory_order_release);
		return NULL;
	}
	for (i = 0; i < t->nconns; i++)
		if (t->conns[i]->role == ROLE_SENDER && !t->open_loop)
			load_refill(t, t->conns[i], now);
	while (t->lost < (uint64_t)t->nconns) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
		bool draining = now >= t->end_ns;

		if (draining && atomic_load_explicit(&t->stop, memory_order_relaxed))
			break;
		if (t->open_loop && !draining)
			load_next_due(t, now, &ts);
		t->eng->wait(t, &ts, &now);
		if (t->open_loop)
			for (i = 0; i < t->nconns; i++)
				if (t->conns[i]->role == ROLE_SENDER)
					load_due(t, t->conns[i], now);
		if (now - last_scan >= LOAD_SCAN_NS) {
			last_scan = now;
			for (i = 0; i < t->nconns; i++) {
				struct bconn *c = t->conns[i];

				/* A sender paused by RATE_LIMITED picks up again. */
				if (c->role == ROLE_SENDER && !t->open_loop && !c->dead &&
				    c->paused_until_ns && c->paused_until_ns <= now) {
					c->paused_until_ns = 0;
					load_refill(t, c, now);
				}
				if (c->role == ROLE_RECIPIENT && c->nacks > 0 &&
				    now - c->ack_first_ns >= BENCH_ACK_NS) {
					load_send_acks(t, c);
					load_flush(t, c);
				}
			}
			if (t->quota_mode && load_quota_done(t))
				break;
		}
		atomic_store_explicit(&t->prog_ok, t->ok, memory_order_relaxed);
		atomic_store_explicit(&t->prog_dlv, t->delivered, memory_order_relaxed);
		atomic_store_explicit(&t->prog_ok_all, t->ok_all, memory_order_relaxed);
		atomic_store_explicit(&t->prog_dlv_all, t->delivered_all, memory_order_relaxed);
		/* Past end no sender starts a message: in flight only shrinks. */
		if (now >= t->end_ns)
			atomic_store_explicit(&t->drain_inflight, load_inflight(t),
					      memory_order_release);
	}
	/* What was received is acked, so the node does not keep it pending. */
	for (i = 0; i < t->nconns; i++) {
		struct bconn *c = t->conns[i];

		if (c->role == ROLE_RECIPIENT && c->nacks > 0) {
			load_send_acks(t, c);
			load_flush(t, c);
		}
	}
	t->eng->finish(t);
	t->ended_ns = now < t->end_ns ? now : t->end_ns;
	atomic_store_explicit(&t->drain_inflight, 0, memory_order_release);
	atomic_store_explicit(&t->done, true, memory_order_release);
	return NULL;
}

/* What main knows of the drain. */
struct load_drain {
	uint64_t last_dlv, last_change_ns;
	bool over, complete;
};

/*
 * Main, past end: decides whether the drain is over (see load.h). Reads
 * every thread's in-flight count first (acquire) so the whole-run counts
 * read after it are at least as recent.
 */
static void load_drain_check(struct load_thread *threads, int n, int fanout, uint64_t end,
			     uint64_t now, struct load_drain *d)
{
	uint64_t inflight = 0, ok = 0, dlv = 0;
	int i;

	for (i = 0; i < n; i++) {
		uint64_t f = atomic_load_explicit(&threads[i].drain_inflight, memory_order_acquire);

		if (f == UINT64_MAX)
			return; /* this thread has not seen end yet */
		inflight += f;
	}
	for (i = 0; i < n; i++) {
		ok += atomic_load_explicit(&threads[i].prog_ok_all, memory_order_relaxed);
		dlv += atomic_load_explicit(&threads[i].prog_dlv_all, memory_order_relaxed);
	}
	if (d->last_change_ns == 0 || dlv != d->last_dlv) {
		d->last_dlv = dlv;
		d->last_change_ns = now;
	}
	if (inflight == 0 && dlv >= ok * (uint64_t)fanout) {
		d->over = d->complete = true;
		return;
	}
	if ((inflight == 0 && now - d->last_change_ns >= LOAD_DRAIN_QUIET_NS) ||
	    now - end >= LOAD_DRAIN_MAX_NS)
		d->over = true;
}

int load_run(const struct bench_opts *o, const struct load_spec *sp, struct bconn *conns, int n,
	     double rate, bool quota_mode, struct load_result *res)
{
	const struct load_engine *eng = sp->uring ? &load_engine_uring : &load_engine_epoll;
	int nthreads = o->threads < n ? o->threads : n, i, started = 0, senders = 0, si = 0;
	struct load_thread *threads = calloc((size_t)nthreads, sizeof(*threads));
	uint64_t t0, start, end, next_progress, last_ok = 0, last_dlv = 0, last_t;
	struct load_drain drain = {0};
	bool cpu_ended = false;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	if (!threads)
		return -1;
	for (i = 0; i < n; i++) {
		if (conns[i].role != ROLE_SENDER)
			continue;
		senders++;
		conns[i].sent_ns = calloc((size_t)sp->window, sizeof(uint64_t));
		if (!conns[i].sent_ns)
			goto out_free;
		conns[i].inflight = conns[i].fifo_head = 0;
	}
	t0 = bench_now_ns();
	start = t0 + (quota_mode ? 0 : (uint64_t)o->warmup_s * 1000000000ull);
	end = quota_mode ? UINT64_MAX / 2 : start + (uint64_t)o->duration_s * 1000000000ull;
	for (i = 0; i < n; i++) {
		struct bconn *c = &conns[i];

		if (c->role != ROLE_SENDER || rate <= 0)
			continue;
		c->interval_ns = (uint64_t)((double)senders / rate * 1e9);
		if (c->interval_ns == 0)
			c->interval_ns = 1;
		/* Sender k starts k/senders of an interval in: an even total rate. */
		c->next_due_ns = t0 + c->interval_ns * (uint64_t)si++ / (uint64_t)senders;
	}
	for (i = 0; i < nthreads; i++) {
		threads[i].ep = -1;
		threads[i].eng = eng;
		atomic_init(&threads[i].drain_inflight, UINT64_MAX);
	}
	for (i = 0; i < nthreads; i++) {
		struct load_thread *t = &threads[i];
		int k;

		t->spec = sp;
		t->start_ns = start;
		t->end_ns = end;
		t->open_loop = rate > 0;
		t->quota_mode = quota_mode;
		t->conns = calloc((size_t)(n / nthreads + 1), sizeof(*t->conns));
		if (!t->conns || eng->setup(t))
			goto out_stop;
		for (k = i; k < n; k += nthreads) {
			if (eng->attach(t, &conns[k]))
				goto out_stop;
			t->conns[t->nconns++] = &conns[k];
		}
	}
	for (i = 0; i < nthreads; i++) {
		if (pthread_create(&threads[i].tid, NULL, load_main, &threads[i]) != 0) {
			fprintf(stderr, "ringchat-bench: cannot start thread %d\n", i);
			/* The drain must not wait for threads that never ran. */
			for (int k = i; k < nthreads; k++)
				atomic_store_explicit(&threads[k].drain_inflight, 0,
						      memory_order_relaxed);
			break;
		}
		started++;
	}
	/* Main: the CPU span, the drain and a progress line while the threads work. */
	next_progress = t0 + BENCH_PROGRESS_NS;
	last_t = t0;
	bench_sleep_until(start < t0 ? t0 : start);
	procstat_span_begin(&res->cpu, o->server_pids, o->nserver_pids);
	for (;;) {
		bool all = true;
		uint64_t now = bench_now_ns();

		for (i = 0; i < started; i++)
			all = all && atomic_load_explicit(&threads[i].done, memory_order_acquire);
		if (all)
			break;
		/* The span is the measured interval: the drain is not in it. */
		if (!cpu_ended && now >= end) {
			procstat_span_end(&res->cpu);
			cpu_ended = true;
		}
		if (now >= end && !drain.over) {
			load_drain_check(threads, started, sp->fanout, end, now, &drain);
			if (drain.over)
				for (i = 0; i < started; i++)
					atomic_store_explicit(&threads[i].stop, true,
							      memory_order_relaxed);
		}
		if (now >= next_progress && (quota_mode || end - t0 > BENCH_PROGRESS_NS)) {
			uint64_t okc = 0, dlv = 0;
			double dt = (double)(now - last_t) / 1e9;

			for (i = 0; i < started; i++) {
				okc +=
				    atomic_load_explicit(&threads[i].prog_ok, memory_order_relaxed);
				dlv += atomic_load_explicit(&threads[i].prog_dlv,
							    memory_order_relaxed);
			}
			bench_progress(
			    t0, "sent OK %" PRIu64 " (%.0f/s)  delivered %" PRIu64 " (%.0f/s)", okc,
			    (double)(okc - last_ok) / dt, dlv, (double)(dlv - last_dlv) / dt);
			last_ok = okc;
			last_dlv = dlv;
			last_t = now;
			next_progress += BENCH_PROGRESS_NS;
		}
		/* Wake at end exactly: the span closes there. */
		if (now < end && end - now < 20000000ull)
			bench_sleep_until(end);
		else
			bench_sleep_ms(now >= end ? 5 : 20);
	}
	if (!cpu_ended)
		procstat_span_end(&res->cpu);
	for (i = 0; i < started; i++)
		pthread_join(threads[i].tid, NULL);
	if (started < nthreads)
		goto out_stop;
	for (i = 0; i < nthreads; i++) {
		struct load_thread *t = &threads[i];
		double secs = t->ended_ns > start ? (double)(t->ended_ns - start) / 1e9 : 0;

		hist_merge(&res->ok_hist, &t->ok_hist);
		hist_merge(&res->dlv_hist, &t->dlv_hist);
		res->sent += t->sent;
		res->ok += t->ok;
		res->errors += t->errors;
		res->rate_limited += t->rate_limited;
		res->delivered += t->delivered;
		res->ack_errors += t->ack_errors;
		res->lost += t->lost;
		res->bad += t->bad;
		res->ok_all += t->ok_all;
		res->delivered_all += t->delivered_all;
		res->duplicates += t->duplicates;
		res->out_of_order += t->out_of_order;
		if (secs > res->seconds)
			res->seconds = secs;
	}
	res->drained = res->delivered_all >= res->ok_all * (uint64_t)sp->fanout;
	rc = 0;
out_stop:
	for (i = 0; i < nthreads; i++) {
		eng->teardown(&threads[i]);
		free(threads[i].conns);
	}
out_free:
	free(threads);
	return rc;
}
