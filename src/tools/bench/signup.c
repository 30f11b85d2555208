/*
 * signup.c - the signup scenario: --connections connections sign --users
 * users up between them, one request at a time each. RATE_LIMITED answers
 * (the node sheds signups when busy) are counted and retried after
 * retry_after_ms; a signup's latency runs from its first try to the OK.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "hist.h"
#include "procstat.h"
#include "scenario.h"
#include "users.h"

int scenario_signup(const struct bench_opts *o)
{
	struct users_ctx x = {0};
	struct bsteps s = {0};
	struct hist *h = calloc(1, sizeof(*h));
	struct procstat_span cpu;
	FILE *out = bench_text_out(o);
	double rate;

	if (!h)
		return 1;
	s.hist = h;
	procstat_span_begin(&cpu, o->server_pids, o->nserver_pids);
	if (users_signup_all(o, o->users, o->connections, &s, &x)) {
		free(h);
		return 1;
	}
	procstat_span_end(&cpu);
	rate = s.seconds > 0 ? (double)s.steps_done / s.seconds : 0;
	fprintf(out, "signup: %d users over %d connections in %.2f s\n", o->users,
		o->connections < o->users ? o->connections : o->users, s.seconds);
	fprintf(out, "  signups %" PRIu64 " (%.1f/s)  RATE_LIMITED %" PRIu64 "\n", s.steps_done,
		rate, s.rate_limited);
	hist_text(out, "signup latency", h);
	procstat_span_text(out, &cpu, (double)s.steps_done, "signups", "signup");
	fflush(out);
	if (o->json) {
		printf("{\"scenario\":\"signup\",\"users\":%d,\"connections\":%d,\"seconds\":%.3f,"
		       "\"signups\":%" PRIu64 ",\"signups_per_s\":%.1f,\"rate_limited\":%" PRIu64,
		       o->users, o->connections < o->users ? o->connections : o->users, s.seconds,
		       s.steps_done, rate, s.rate_limited);
		hist_json(stdout, "", h);
		procstat_span_json(stdout, &cpu, (double)s.steps_done, "signups");
		printf("}\n");
		fflush(stdout);
	}
	free(h);
	return 0;
}
