/*
 * msg.c - chat and group on Ringchat or on Redis pub/sub: set-up, run,
 * report (see msg.h).
 */
#include "msg.h"

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "load.h"
#include "users.h"

/*
 * Redis: every recipient SUBSCRIBEs to its channel on its own connection;
 * returns once every subscription is confirmed. 0 or -1.
 */
static int msg_redis_subscribe_all(struct bconn *conns, int n, const char *prefix)
{
	uint64_t deadline = bench_now_ns() + 60 * 1000000000ull;
	int i, pending = 0;
	struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));

	if (!pfd)
		return -1;
	for (i = 0; i < n; i++) {
		char cmd[160], ch[64];
		int chl, len;

		pfd[i].fd = -1;
		if (conns[i].role != ROLE_RECIPIENT)
			continue;
		chl = snprintf(ch, sizeof(ch), "%s:%" PRId64, prefix, conns[i].peer);
		len = snprintf(cmd, sizeof(cmd), "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", chl, ch);
		if (send(conns[i].fd, cmd, (size_t)len, MSG_NOSIGNAL) != len) {
			fprintf(stderr, "ringchat-bench: redis: SUBSCRIBE send failed\n");
			free(pfd);
			return -1;
		}
		pfd[i].fd = conns[i].fd;
		pfd[i].events = POLLIN;
		pending++;
	}
	while (pending > 0) {
		if (bench_now_ns() > deadline || poll(pfd, (nfds_t)n, 1000) < 0) {
			fprintf(stderr, "ringchat-bench: redis: %d subscriptions unconfirmed\n",
				pending);
			free(pfd);
			return -1;
		}
		for (i = 0; i < n; i++) {
			struct bconn *c = &conns[i];
			void *reply = NULL;
			int r;

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			r = bconn_fill(c);
			if (r < 0) {
				fprintf(stderr, "ringchat-bench: redis: connection lost\n");
				free(pfd);
				return -1;
			}
			redisReaderFeed(c->rr, (const char *)c->rbuf, c->rlen);
			c->rlen = 0;
			if (redisReaderGetReply(c->rr, &reply) != REDIS_OK) {
				fprintf(stderr, "ringchat-bench: redis: bad reply\n");
				free(pfd);
				return -1;
			}
			if (reply) {
				redisReply *rep = reply;

				if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
				    strcmp(rep->element[0]->str ? rep->element[0]->str : "",
					   "subscribe")) {
					fprintf(stderr,
						"ringchat-bench: redis: SUBSCRIBE refused\n");
					freeReplyObject(reply);
					free(pfd);
					return -1;
				}
				freeReplyObject(reply);
				pfd[i].fd = -1;
				pending--;
			}
		}
	}
	free(pfd);
	return 0;
}

/* Ringchat connections of ms, to --host:--port or spread over --nodes. */
static struct bconn *msg_open(const struct bench_opts *o, const struct msg_setup *ms)
{
	struct bconn *conns;
	int *ep_of, i;

	if (o->nnodes == 0) {
		fprintf(stderr, "ringchat-bench: ringchat: opening %d connections to %s:%u\n",
			ms->n, o->host, o->port);
		return bconns_open(o->host, o->port, ms->n, false);
	}
	ep_of = malloc((size_t)ms->n * sizeof(*ep_of));
	if (!ep_of) {
		fprintf(stderr, "ringchat-bench: out of memory\n");
		return NULL;
	}
	for (i = 0; i < ms->n; i++)
		ep_of[i] = (i / ms->members + i % ms->members) % o->nnodes;
	fprintf(stderr, "ringchat-bench: ringchat: opening %d connections over %d nodes\n", ms->n,
		o->nnodes);
	conns = bconns_open_spread(o->nodes, o->nnodes, ep_of, ms->n, false);
	free(ep_of);
	return conns;
}

struct bconn *msg_setup(const struct bench_opts *o, const struct msg_setup *ms, bool redis,
			const char *chan_prefix, double *setup_s, uint64_t *rate_limited)
{
	uint64_t t0 = bench_now_ns();
	struct users_ctx x = {.o = o, .group = ms->group, .members = ms->members};
	struct bconn *conns;
	int i, ngroups = ms->n / ms->members;

	if (redis) {
		fprintf(stderr, "ringchat-bench: redis: opening %d connections to %s:%u\n", ms->n,
			o->redis_host, o->redis_port);
		conns = bconns_open(o->redis_host, o->redis_port, ms->n, true);
	} else {
		conns = msg_open(o, ms);
	}
	if (!conns)
		return NULL;
	for (i = 0; i < ms->n; i++) {
		struct bconn *c = &conns[i];

		if (ms->group)
			c->role = i % ms->members == 0 ? ROLE_SENDER : ROLE_RECIPIENT;
		else
			c->role = i % 2 == 0 ? ROLE_SENDER : ROLE_RECIPIENT;
		/* Redis channels: the group, or the pair. */
		if (redis)
			c->peer = ms->group ? i / ms->members : i / 2;
	}
	if (redis) {
		if (msg_redis_subscribe_all(conns, ms->n, chan_prefix))
			goto out_free;
		*setup_s = (double)(bench_now_ns() - t0) / 1e9;
		return conns;
	}
	x.gids = calloc((size_t)ngroups + 1, sizeof(*x.gids));
	if (!x.gids)
		goto out_free;
	if (users_phase_run(&x, PH_LOGIN, "signup+login", conns, ms->n, BENCH_SETUP_BUSY,
			    rate_limited) ||
	    users_phase_run(&x, PH_LINK, ms->group ? "group create" : "friend requests", conns,
			    ms->n, 0, rate_limited) ||
	    users_phase_run(&x, PH_ACCEPT, ms->group ? "group join" : "friend accepts", conns,
			    ms->n, 0, rate_limited)) {
		free(x.gids);
		goto out_free;
	}
	for (i = 0; i < ms->n; i++) {
		struct bconn *c = &conns[i];

		if (c->role != ROLE_SENDER)
			continue;
		c->peer = ms->group ? x.gids[i / ms->members] : conns[users_partner(i)].user_id;
	}
	free(x.gids);
	*setup_s = (double)(bench_now_ns() - t0) / 1e9;
	return conns;

out_free:
	bconns_free(conns, ms->n);
	return NULL;
}

static void msg_report(const struct bench_opts *o, bool redis, const struct msg_setup *ms,
		       const struct load_result *r, double setup_s, uint64_t setup_rl)
{
	FILE *out = bench_text_out(o);
	double secs = r->seconds > 0 ? r->seconds : 1;
	int senders = ms->group ? ms->n / ms->members : ms->n / 2;
	int nodes = redis ? 0 : o->nnodes;
	uint64_t expected = r->ok_all * (uint64_t)(ms->members - 1);
	int i;

	fprintf(out, "%s on %s: ", o->scenario, redis ? "redis pub/sub" : "ringchat");
	if (ms->group)
		fprintf(out, "%d groups of %d members", ms->n / ms->members, ms->members);
	else
		fprintf(out, "%d users in %d pairs", ms->n, ms->n / 2);
	fprintf(out, ", %d senders, %s, %d-byte texts, %d threads, %.2f s measured\n", senders,
		o->rate > 0 ? "open loop" : "closed loop", o->size, o->threads, secs);
	if (nodes > 0) {
		fprintf(out, "  %d nodes:", nodes);
		for (i = 0; i < nodes; i++)
			fprintf(out, " %s:%u", o->nodes[i].host, o->nodes[i].port);
		fprintf(out, "  (member k of %s g on node (g + k) mod %d)\n",
			ms->group ? "group" : "pair", nodes);
	}
	if (o->rate > 0)
		fprintf(out, "  rate %.0f msgs/s scheduled (window %d per sender)\n", o->rate,
			o->window);
	else
		fprintf(out, "  window %d per sender\n", o->window);
	fprintf(out, "  setup %.2f s (%" PRIu64 " RATE_LIMITED retries)\n", setup_s, setup_rl);
	fprintf(out,
		"  sent OK %" PRIu64 " (%.1f msgs/s)  delivered %" PRIu64
		" (%.1f msgs/s)  errors %" PRIu64 "  RATE_LIMITED %" PRIu64
		"  lost connections %" PRIu64 "\n",
		r->ok, (double)r->ok / secs, r->delivered, (double)r->delivered / secs, r->errors,
		r->rate_limited, r->lost);
	hist_text(out, redis ? "send->reply" : "send->OK", &r->ok_hist);
	hist_text(out, "send->delivery", &r->dlv_hist);
	fprintf(out,
		"  whole run with warm-up and drain: sent %" PRIu64 "  OK %" PRIu64
		"  delivered %" PRIu64 " of %" PRIu64 "  duplicates %" PRIu64
		"  out of order %" PRIu64 "%s\n",
		r->sent, r->ok_all, r->delivered_all, expected, r->duplicates, r->out_of_order,
		r->drained ? "" : "  (drain gave up)");
	procstat_span_text(out, &r->cpu, (double)r->delivered, "deliveries", "delivery");
	fflush(out);
	if (!o->json)
		return;
	printf("{\"scenario\":\"%s\",\"target\":\"%s\",\"connections\":%d,\"senders\":%d",
	       o->scenario, redis ? "redis" : "ringchat", ms->n, senders);
	if (ms->group)
		printf(",\"groups\":%d,\"members\":%d", ms->n / ms->members, ms->members);
	if (nodes > 0)
		printf(",\"nodes\":%d", nodes);
	printf(",\"window\":%d,\"rate\":%.0f,\"size\":%d,\"threads\":%d,\"duration_s\":%d,"
	       "\"seconds\":%.3f,\"setup_s\":%.2f,\"setup_rate_limited\":%" PRIu64
	       ",\"sent_ok\":%" PRIu64 ",\"sent_per_s\":%.1f,\"delivered\":%" PRIu64
	       ",\"delivered_per_s\":%.1f",
	       o->window, o->rate, o->size, o->threads, o->duration_s, secs, setup_s, setup_rl,
	       r->ok, (double)r->ok / secs, r->delivered, (double)r->delivered / secs);
	hist_json(stdout, "ok_", &r->ok_hist);
	hist_json(stdout, "dlv_", &r->dlv_hist);
	printf(",\"errors\":%" PRIu64 ",\"rate_limited\":%" PRIu64 ",\"ack_errors\":%" PRIu64
	       ",\"lost_connections\":%" PRIu64,
	       r->errors, r->rate_limited, r->ack_errors, r->lost);
	printf(",\"sent_total\":%" PRIu64 ",\"sent_ok_total\":%" PRIu64
	       ",\"delivered_total\":%" PRIu64 ",\"delivered_expected\":%" PRIu64
	       ",\"duplicates\":%" PRIu64 ",\"out_of_order\":%" PRIu64 ",\"drained\":%s",
	       r->sent, r->ok_all, r->delivered_all, expected, r->duplicates, r->out_of_order,
	       r->drained ? "true" : "false");
	procstat_span_json(stdout, &r->cpu, (double)r->delivered, "deliveries");
	printf("}\n");
	fflush(stdout);
}

static int msg_scenario_one(const struct bench_opts *o, const struct msg_setup *ms, bool redis)
{
	char chan[32];
	struct load_spec sp = {
	    .redis = redis,
	    .group = ms->group,
	    .window = o->window,
	    .size = o->size,
	    .tick_ns = (uint64_t)o->tick_us * 1000u,
	    .uring = o->uring,
	    .chan_prefix = chan,
	    .fanout = ms->members - 1,
	};
	struct load_result *res = calloc(1, sizeof(*res));
	struct bconn *conns;
	uint64_t setup_rl = 0;
	double setup_s = 0;
	int rc = 1;

	if (!res)
		return 1;
	snprintf(chan, sizeof(chan), "%s", o->prefix);
	conns = msg_setup(o, ms, redis, chan, &setup_s, &setup_rl);
	if (!conns)
		goto out_free;
	if (load_run(o, &sp, conns, ms->n, o->rate, false, res) == 0) {
		msg_report(o, redis, ms, res, setup_s, setup_rl);
		rc = res->delivered > 0 && res->lost == 0 ? 0 : 1;
		if (res->errors)
			fprintf(stderr,
				"ringchat-bench: %" PRIu64 " sends failed (RATE_LIMITED? see "
				"rate_msgs_per_s; FORBIDDEN? the pairs were not linked)\n",
				res->errors);
	}
	bconns_free(conns, ms->n);
out_free:
	free(res);
	return rc;
}

int msg_scenario(const struct bench_opts *o, const struct msg_setup *ms)
{
	struct bench_opts ro = *o;
	int rc = 0;

	if (o->target != TARGET_REDIS)
		rc |= msg_scenario_one(o, ms, false);
	if (o->target != TARGET_RINGCHAT) {
		/* The Redis run's CPU is redis-server's (--redis-pid), not the node's. */
		ro.nserver_pids = o->redis_pid ? 1 : 0;
		ro.server_pids[0] = o->redis_pid;
		rc |= msg_scenario_one(&ro, ms, true);
	}
	return rc;
}
