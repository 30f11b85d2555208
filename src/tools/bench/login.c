/*
 * login.c - the login scenario: --users users, signed up beforehand, log
 * in on --users fresh connections (one connection carries one user), at
 * most --connections logins in flight; meanwhile a probe connection PINGs
 * every PROBE_INTERVAL_MS, which shows whether the node stays responsive
 * while it hashes passwords. RATE_LIMITED answers (the node sheds logins
 * when busy) are counted and retried after retry_after_ms; a login's
 * latency runs from its first try to the OK.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "hist.h"
#include "procstat.h"
#include "ringchat/client.h"
#include "ringchat/protocol.h"
#include "scenario.h"
#include "users.h"

#define PROBE_INTERVAL_MS 10

struct probe {
	pthread_t tid;
	const struct bench_opts *o;
	/* 0: before the storm, 1: during it, 2: stop. Release/acquire: the
	 * main thread reads the histograms only after the join. */
	_Atomic int phase;
	struct hist hist[2];
	uint64_t failures;
};

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	struct rc_client *c = rc_connect(p->o->host, p->o->port, 5000);
	struct rc_frame f;
	int phase;

	if (!c) {
		p->failures++;
		return NULL;
	}
	while ((phase = atomic_load_explicit(&p->phase, memory_order_acquire)) < 2) {
		uint64_t t0 = bench_now_ns();
		int rc = rc_call(c, CMD_PING, NULL, &f, 5000);

		if (rc || f.hdr.code != ST_OK)
			p->failures++;
		else
			hist_record(&p->hist[phase], bench_now_ns() - t0);
		rc_frame_free(&f);
		if (rc && rc != -ETIMEDOUT)
			break;
		bench_sleep_ms(PROBE_INTERVAL_MS);
	}
	rc_close(c);
	return NULL;
}

int scenario_login(const struct bench_opts *o)
{
	struct users_ctx x = {0};
	struct bsteps pre = {0}, s = {0};
	struct probe *probe = calloc(1, sizeof(*probe));
	struct hist *h = calloc(1, sizeof(*h));
	FILE *out = bench_text_out(o);
	struct procstat_span cpu;
	struct bconn *conns = NULL;
	bool probing = false;
	double rate;
	int rc = 1;

	if (!probe || !h)
		goto out_free;
	fprintf(stderr, "ringchat-bench: login: signing up %d users first\n", o->users);
	if (users_signup_all(o, o->users, BENCH_SETUP_BUSY, &pre, &x))
		goto out_free;
	fprintf(stderr, "ringchat-bench: login: %d signups in %.2f s; opening %d connections\n",
		o->users, pre.seconds, o->users);
	conns = bconns_open(o->host, o->port, o->users, false);
	if (!conns)
		goto out_free;

	probe->o = o;
	if (pthread_create(&probe->tid, NULL, probe_main, probe) == 0)
		probing = true;
	/* A second of the probe alone: the baseline. */
	bench_sleep_ms(1000);
	atomic_store_explicit(&probe->phase, 1, memory_order_release);

	x.phase = PH_LOGIN_ONLY;
	s.what = "login storm";
	s.conns = conns;
	s.n = o->users;
	s.busy_max = o->connections;
	s.build = users_build;
	s.reply = users_reply;
	s.ctx = &x;
	s.hist = h;
	procstat_span_begin(&cpu, o->server_pids, o->nserver_pids);
	rc = bsteps_run(&s) ? 1 : 0;
	procstat_span_end(&cpu);
	if (probing) {
		atomic_store_explicit(&probe->phase, 2, memory_order_release);
		pthread_join(probe->tid, NULL);
	}
	if (rc)
		goto out_free;
	rate = s.seconds > 0 ? (double)s.steps_done / s.seconds : 0;
	fprintf(out, "login: %d users, at most %d logins in flight, %.2f s\n", o->users,
		o->connections, s.seconds);
	fprintf(out, "  logins %" PRIu64 " (%.1f/s)  RATE_LIMITED %" PRIu64 "\n", s.steps_done,
		rate, s.rate_limited);
	hist_text(out, "login latency", h);
	hist_text(out, "probe PING idle", &probe->hist[0]);
	hist_text(out, "probe PING storm", &probe->hist[1]);
	if (probe->failures)
		fprintf(out, "  probe failures %" PRIu64 "\n", probe->failures);
	procstat_span_text(out, &cpu, (double)s.steps_done, "logins", "login");
	fflush(out);
	if (o->json) {
		printf("{\"scenario\":\"login\",\"users\":%d,\"concurrency\":%d,\"seconds\":%.3f,"
		       "\"logins\":%" PRIu64 ",\"logins_per_s\":%.1f,\"rate_limited\":%" PRIu64,
		       o->users, o->connections, s.seconds, s.steps_done, rate, s.rate_limited);
		hist_json(stdout, "login_", h);
		hist_json(stdout, "probe_idle_", &probe->hist[0]);
		hist_json(stdout, "probe_", &probe->hist[1]);
		printf(",\"probe_failures\":%" PRIu64, probe->failures);
		procstat_span_json(stdout, &cpu, (double)s.steps_done, "logins");
		printf("}\n");
		fflush(stdout);
	}
	rc = probe->failures == 0 ? 0 : 1;
out_free:
	bconns_free(conns, o->users);
	free(probe);
	free(h);
	return rc;
}
