/*
 * users.c - signup, login and linking scripts for the step engine (see
 * users.h).
 */
#include "users.h"

#include <inttypes.h>
#include <stdio.h>

#include "ringchat/protocol.h"
#include "text.h"

void users_name(const struct bench_opts *o, int i, char *out, size_t n)
{
	snprintf(out, n, "%s_%d", o->prefix, i);
}

int users_partner(int i)
{
	return i ^ 1;
}

int users_build(struct bsteps *s, struct bconn *c, uint16_t *cmd, char *buf, size_t cap)
{
	struct users_ctx *x = s->ctx;
	char name[40];
	int user = c->index;

	switch (x->phase) {
	case PH_SIGNUP_ONLY:
		user = c->index + (int)c->step * x->stride;
		if (user >= x->users)
			return -1;
		users_name(x->o, user, name, sizeof(name));
		*cmd = CMD_SIGNUP;
		return snprintf(buf, cap, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
				BENCH_PASSWORD);
	case PH_LOGIN:
	case PH_LOGIN_ONLY:
		if (c->step > (x->phase == PH_LOGIN ? 1u : 0u))
			return -1;
		users_name(x->o, user, name, sizeof(name));
		*cmd = x->phase == PH_LOGIN && c->step == 0 ? CMD_SIGNUP : CMD_LOGIN;
		return snprintf(buf, cap, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
				BENCH_PASSWORD);
	case PH_LINK:
		if (c->step > 0)
			return -1;
		if (x->group) {
			if (c->index % x->members != 0)
				return -1;
			*cmd = CMD_GROUP_CREATE;
			return snprintf(buf, cap, "{\"name\":\"%s-g%d\"}", x->o->prefix,
					c->index / x->members);
		}
		if (c->role != ROLE_SENDER)
			return -1;
		*cmd = CMD_FRIEND_REQUEST;
		return snprintf(buf, cap, "{\"user_id\":%" PRId64 "}",
				s->conns[users_partner(c->index)].user_id);
	case PH_ACCEPT:
		if (c->step > 0)
			return -1;
		if (x->group) {
			if (c->index % x->members == 0)
				return -1;
			*cmd = CMD_GROUP_JOIN;
			return snprintf(buf, cap, "{\"group_id\":%" PRId64 "}",
					x->gids[c->index / x->members]);
		}
		if (c->role != ROLE_RECIPIENT)
			return -1;
		*cmd = CMD_FRIEND_ACCEPT;
		return snprintf(buf, cap, "{\"user_id\":%" PRId64 "}",
				s->conns[users_partner(c->index)].user_id);
	}
	return -1;
}

int users_reply(struct bsteps *s, struct bconn *c, const struct frame_hdr *h, const char *payload)
{
	struct users_ctx *x = s->ctx;

	if (bsteps_expect_ok(s, c, h, payload))
		return -1;
	if (h->cmd == CMD_LOGIN)
		c->user_id = text_json_int(payload, h->len, "user_id");
	if (h->cmd == CMD_GROUP_CREATE)
		x->gids[c->index / x->members] = text_json_int(payload, h->len, "group_id");
	return 0;
}

int users_phase_run(struct users_ctx *x, enum users_phase ph, const char *what, struct bconn *conns,
		    int n, int busy_max, uint64_t *rate_limited)
{
	struct bsteps s = {
	    .what = what,
	    .conns = conns,
	    .n = n,
	    .busy_max = busy_max,
	    .build = users_build,
	    .reply = users_reply,
	    .ctx = x,
	};

	x->phase = ph;
	if (bsteps_run(&s))
		return -1;
	if (rate_limited)
		*rate_limited += s.rate_limited;
	fprintf(stderr,
		"ringchat-bench: %s: %" PRIu64 " requests in %.2f s (%" PRIu64
		" RATE_LIMITED retries)\n",
		what, s.steps_done, s.seconds, s.rate_limited);
	return 0;
}

int users_signup_all(const struct bench_opts *o, int users, int nconns, struct bsteps *s,
		     struct users_ctx *x)
{
	struct bconn *conns;
	int rc;

	if (nconns > users)
		nconns = users;
	conns = bconns_open(o->host, o->port, nconns, false);
	if (!conns)
		return -1;
	x->o = o;
	x->phase = PH_SIGNUP_ONLY;
	x->stride = nconns;
	x->users = users;
	s->what = "signup";
	s->conns = conns;
	s->n = nconns;
	s->build = users_build;
	s->reply = users_reply;
	s->ctx = x;
	rc = bsteps_run(s);
	bconns_free(conns, nconns);
	return rc;
}
