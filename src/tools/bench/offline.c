/*
 * offline.c - the offline scenario: A and B are friends; B goes offline;
 * A stores --messages messages for B (--window in flight); then B logs in
 * on a new connection and the clock runs until all of them arrived as
 * PUSH_MSG (B acks as it goes, in batches, as a client would).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bconn.h"
#include "clock.h"
#include "load.h"
#include "msg.h"
#include "net.h"
#include "procstat.h"
#include "ringchat/protocol.h"
#include "scenario.h"
#include "text.h"
#include "users.h"

static void offline_ack(struct bconn *b, int64_t *ids, int *n)
{
	char buf[BENCH_ACK_BATCH * 24 + 32];
	size_t len = 0;
	int i;

	if (*n == 0)
		return;
	len += (size_t)snprintf(buf, sizeof(buf), "{\"msg_ids\":[");
	for (i = 0; i < *n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%" PRId64, i ? "," : "",
					ids[i]);
	len += (size_t)snprintf(buf + len, sizeof(buf) - len, "]}");
	bconn_put_frame(b, CMD_MSG_ACK, buf, len);
	*n = 0;
}

struct drain_result {
	double login_s, first_s, all_s;
	long got;
	uint64_t ack_errors;
};

/* B logs in on a fresh connection; waits for `want` PUSH_MSG. 0 or -1. */
static int offline_drain(const struct bench_opts *o, long want, struct drain_result *d)
{
	struct bconn b = {.fd = -1, .next_seq = 1};
	uint64_t t0, now, last_ack, deadline, next_progress, relogin_at = 0;
	int64_t ids[BENCH_ACK_BATCH];
	char name[40], json[128];
	uint32_t login_seq;
	int nids = 0, ep = -1, rc = -1, len, err;

	memset(d, 0, sizeof(*d));
	err = net_connect_all(o->host, o->port, NULL, &b.fd, 1);
	if (err) {
		fprintf(stderr, "ringchat-bench: offline: connect: %s\n", strerror(-err));
		return -1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &b};

		if (ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, b.fd, &ev) == -1)
			goto out_close;
	}
	users_name(o, 1, name, sizeof(name));
	len = snprintf(json, sizeof(json), "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		       BENCH_PASSWORD);
	t0 = last_ack = bench_now_ns();
	next_progress = t0 + BENCH_PROGRESS_NS;
	deadline = t0 + (60 + (uint64_t)want / 500) * 1000000000ull;
	login_seq = bconn_put_frame(&b, CMD_LOGIN, json, (size_t)len);
	if (bconn_flush(&b, ep))
		goto out_close;
	while (d->got < want) {
		struct epoll_event ev;
		struct frame_hdr h;
		const char *p;
		size_t off = 0;
		int n, k;

		n = epoll_wait(ep, &ev, 1, 10);
		now = bench_now_ns();
		if (now > deadline) {
			fprintf(stderr,
				"ringchat-bench: offline: %ld of %ld messages after %.0f s\n",
				d->got, want, (double)(now - t0) / 1e9);
			goto out_close;
		}
		if (now >= next_progress) {
			bench_progress(t0, "drain: %ld of %ld messages", d->got, want);
			next_progress += BENCH_PROGRESS_NS;
		}
		if (n == 1 && (ev.events & EPOLLOUT) && bconn_flush(&b, ep))
			goto out_close;
		if (n == 1 && (ev.events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
			k = bconn_fill(&b);
			if (k < 0) {
				fprintf(stderr, "ringchat-bench: offline: connection lost: %s\n",
					k == -ENOTCONN ? "closed by the node" : strerror(-k));
				goto out_close;
			}
			while ((k = bconn_frame(&b, &off, &h, &p)) == 1) {
				if (h.seq == login_seq && h.code == ST_RATE_LIMITED) {
					/* a node busy with other logins sheds this
					 * one: try again shortly, as a client would */
					relogin_at = now + 50000000ull;
				} else if (h.seq == login_seq) {
					if (h.code != ST_OK) {
						fprintf(
						    stderr,
						    "ringchat-bench: offline: LOGIN: %s: %.*s\n",
						    rc_status_name(h.code), (int)h.len, p);
						goto out_close;
					}
					d->login_s = (double)(now - t0) / 1e9;
				} else if (h.seq != 0) {
					if (h.code != ST_OK)
						d->ack_errors++;
				} else if (h.cmd == CMD_PUSH_MSG) {
					if (d->got++ == 0)
						d->first_s = (double)(now - t0) / 1e9;
					if (nids == 0)
						last_ack = now;
					ids[nids++] = text_json_int(p, h.len, "msg_id");
					if (nids == BENCH_ACK_BATCH)
						offline_ack(&b, ids, &nids);
				}
			}
			if (k < 0)
				goto out_close;
			bconn_consume(&b, off);
		}
		if (relogin_at && now >= relogin_at) {
			relogin_at = 0;
			login_seq = bconn_put_frame(&b, CMD_LOGIN, json, (size_t)len);
		}
		if (nids > 0 && now - last_ack >= BENCH_ACK_NS)
			offline_ack(&b, ids, &nids);
		if (bconn_flush(&b, ep))
			goto out_close;
	}
	d->all_s = (double)(bench_now_ns() - t0) / 1e9;
	offline_ack(&b, ids, &nids);
	bconn_flush(&b, ep);
	rc = 0;
out_close:
	if (ep >= 0)
		close(ep);
	bconn_free(&b);
	return rc;
}

int scenario_offline(const struct bench_opts *o)
{
	struct msg_setup ms = {.n = 2, .members = 2, .group = false};
	struct load_spec sp = {.window = o->window, .size = o->size};
	struct load_result *res = calloc(1, sizeof(*res));
	FILE *out = bench_text_out(o);
	struct procstat_span cpu;
	struct drain_result d;
	struct bconn *conns = NULL;
	uint64_t setup_rl = 0;
	double setup_s, store_rate, drain_rate;
	int rc = 1;

	if (!res)
		return 1;
	conns = msg_setup(o, &ms, false, NULL, &setup_s, &setup_rl);
	if (!conns)
		goto out_free;
	/* B goes offline: its connection closes and its session ends. */
	close(conns[1].fd);
	conns[1].fd = -1;
	conns[1].role = ROLE_IDLE;
	bench_sleep_ms(300);

	fprintf(stderr, "ringchat-bench: offline: storing %d messages, window %d\n", o->messages,
		o->window);
	conns[0].quota = o->messages;
	if (load_run(o, &sp, conns, 1, 0, true, res))
		goto out_free;
	if (res->ok != (uint64_t)o->messages) {
		fprintf(stderr,
			"ringchat-bench: offline: %" PRIu64 " of %d sends OK (%" PRIu64
			" errors)\n",
			res->ok, o->messages, res->errors);
		goto out_free;
	}
	procstat_span_begin(&cpu, o->server_pids, o->nserver_pids);
	if (offline_drain(o, o->messages, &d))
		goto out_free;
	procstat_span_end(&cpu);
	store_rate = res->seconds > 0 ? (double)res->ok / res->seconds : 0;
	drain_rate = d.all_s > 0 ? (double)d.got / d.all_s : 0;
	fprintf(out,
		"offline: %d messages of %d bytes stored for an offline user, then its login\n",
		o->messages, o->size);
	fprintf(out,
		"  store %.2f s (%.1f msgs/s, window %d, %" PRIu64 " RATE_LIMITED and resent)\n",
		res->seconds, store_rate, o->window, res->rate_limited);
	hist_text(out, "send->OK", &res->ok_hist);
	fprintf(out,
		"  drain: LOGIN answered %.1f ms, first push %.1f ms, all %ld pushes %.3f s "
		"(%.1f msgs/s)\n",
		d.login_s * 1e3, d.first_s * 1e3, d.got, d.all_s, drain_rate);
	procstat_span_text(out, &cpu, (double)d.got, "drained msgs", "drained message");
	fflush(out);
	if (o->json) {
		printf("{\"scenario\":\"offline\",\"messages\":%d,\"size\":%d,\"window\":%d,"
		       "\"store_s\":%.3f,\"store_per_s\":%.1f",
		       o->messages, o->size, o->window, res->seconds, store_rate);
		hist_json(stdout, "ok_", &res->ok_hist);
		printf(",\"login_ms\":%.2f,\"first_push_ms\":%.2f,\"drain_s\":%.3f,"
		       "\"drain_per_s\":%.1f,\"ack_errors\":%" PRIu64,
		       d.login_s * 1e3, d.first_s * 1e3, d.all_s, drain_rate, d.ack_errors);
		procstat_span_json(stdout, &cpu, (double)d.got, "drained");
		printf("}\n");
		fflush(stdout);
	}
	rc = 0;
out_free:
	bconns_free(conns, 2);
	free(res);
	return rc;
}
