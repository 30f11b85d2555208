/*
 * test_faults.c - faults injected under traffic, and the one thing that
 * must survive each: nothing a sender was told OK about is lost, and
 * nothing reaches its recipient twice.
 *
 *   - MariaDB restarted while a sender streams MSG_SENDs with
 *     client_msg_ids: every send is answered OK or 12 INTERNAL; each 12 is
 *     sent again with the same client_msg_id until OK; afterwards the
 *     recipient has every message exactly once (live pushes, the pushes at
 *     its next login, and HISTORY all agree, by msg_id).
 *   - The same with MariaDB down for longer than the writer's retry bound
 *     (COMMIT_RETRY_MS): sends are answered 12 quickly, and the node works
 *     normally once MariaDB is back.
 *   - A node SIGKILLed with sends in flight and started again: every OK'd
 *     message is there under its msg_id, the unanswered ones retried with
 *     their client_msg_id are stored once.
 *   - A recipient that never reads its socket while 10,000 messages are
 *     pushed to it: the node closes it at out_limit_bytes (counted and
 *     logged) and every message reaches it, exactly once, at its next
 *     logins.
 *   - A peer node stopped for three lease times (node_ttl_ms) and started
 *     again with the same id, with cluster_route redis and udp: the other
 *     nodes' users go on talking across nodes, messages to the stopped
 *     node's users are stored and come at their next login there, and
 *     cross-node delivery to and from the restarted node resumes.
 *
 * Tests covered elsewhere are not repeated: a SIGKILL right after the last
 * OK and a short MariaDB stop with one request at a time
 * (test_durability.c), a SIGKILL of a cluster node with its users logging
 * in on another node (test_cluster.c), a client flooding PINGs without
 * reading (test_core.c).
 *
 * Needs the services (scripts/services.sh start and env). The tests stop
 * and start this tree's MariaDB.
 */
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ringchat/commit.h"

#define FT_PUSH_MS 10000
/* How long "no more pushes" is watched for where no barrier exists. */
#define FT_QUIET_MS 700
/* A response to any send, even while MariaDB is down, comes within this. */
#define FT_ANSWER_MS (COMMIT_RETRY_MS + 5000)
/* Bound on getting a send through once MariaDB is back. */
#define FT_RECOVER_MS 60000
#define FT_HISTORY_PAGE 200
#define FT_ACK_CHUNK 1000

struct ft_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

/* A growable list of msg_ids. */
struct ft_ids {
	int64_t *v;
	size_t n, cap;
};

static void ft_ids_add(struct ft_ids *l, int64_t id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		assert_non_null(l->v);
	}
	l->v[l->n++] = id;
}

static void ft_ids_free(struct ft_ids *l)
{
	free(l->v);
	*l = (struct ft_ids){0};
}

static int ft_cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Sorted copy of n ids (n may be 0). */
static int64_t *ft_sorted(const int64_t *v, size_t n)
{
	int64_t *s = malloc((n + 1) * sizeof(*s));

	assert_non_null(s);
	if (n)
		memcpy(s, v, n * sizeof(*s));
	qsort(s, n, sizeof(*s), ft_cmp_id);
	return s;
}

static bool ft_contains(const int64_t *sorted, size_t n, int64_t id)
{
	return bsearch(&id, sorted, n, sizeof(*sorted), ft_cmp_id) != NULL;
}

/*
 * Fails unless got has no id twice, every id of got is in allowed, and
 * every id of required is in got. what names the source in the message.
 */
static void ft_check(const char *what, const struct ft_ids *got, const int64_t *required,
		     size_t n_required, const int64_t *allowed, size_t n_allowed)
{
	int64_t *g = ft_sorted(got->v, got->n), *a = ft_sorted(allowed, n_allowed);

	for (size_t k = 1; k < got->n; k++)
		if (g[k] == g[k - 1])
			fail_msg("%s: msg_id %lld came twice (%zu came in all)", what,
				 (long long)g[k], got->n);
	for (size_t k = 0; k < got->n; k++)
		if (!ft_contains(a, n_allowed, g[k]))
			fail_msg("%s: msg_id %lld came, but no send was answered with it", what,
				 (long long)g[k]);
	for (size_t k = 0; k < n_required; k++)
		if (!ft_contains(g, got->n, required[k]))
			fail_msg("%s: msg_id %lld (answered OK) is missing; %zu of %zu came", what,
				 (long long)required[k], got->n, n_required);
	free(g);
	free(a);
}

/* got holds exactly the ids of want, each once. */
static void ft_check_exactly(const char *what, const struct ft_ids *got, const int64_t *want,
			     size_t n_want)
{
	int64_t *w = ft_sorted(want, n_want);

	for (size_t k = 1; k < n_want; k++)
		if (w[k] == w[k - 1])
			fail_msg("%s: msg_id %lld was answered OK for two different sends", what,
				 (long long)w[k]);
	free(w);
	ft_check(what, got, want, n_want, want, n_want);
	assert_int_equal(got->n, n_want);
}

static void ft_close(struct ft_user *u)
{
	if (u->c)
		rc_close(u->c);
	u->c = NULL;
}

/* A new connection to n logged in as u (LOGIN); the old one is closed. */
static void ft_login(struct node *n, struct ft_user *u)
{
	cJSON *r;

	ft_close(u);
	u->c = tc_connect(n);
	r = tc_call_ok(u->c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name,
		       TC_PASSWORD);
	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	cJSON_Delete(r);
}

static void ft_befriend(struct ft_user *a, struct ft_user *b)
{
	cJSON_Delete(tc_call_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, "{\"user_id\":%lld}",
				    (long long)b->id));
	cJSON_Delete(tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, FT_PUSH_MS));
	cJSON_Delete(
	    tc_call_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, "{\"user_id\":%lld}", (long long)a->id));
	cJSON_Delete(tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, FT_PUSH_MS));
}

/*
 * The MSG_SEND payload of send i of a stream tagged tag: text
 * "<tag>.<i>" plus pad bytes of 'x', client_msg_id "<tag>.<i>". Returns
 * a malloc'd string.
 */
static char *ft_send_json(int64_t to, const char *tag, int i, size_t pad)
{
	char *json = malloc(pad + 256);
	int off;

	assert_non_null(json);
	off =
	    snprintf(json, 256, "{\"to\":%lld,\"type\":0,\"text\":\"%s.%d", (long long)to, tag, i);
	memset(json + off, 'x', pad);
	snprintf(json + off + pad, 256, "\",\"client_msg_id\":\"%s.%d\"}", tag, i);
	return json;
}

/*
 * Sends send i again (same client_msg_id) until it is answered OK, waiting
 * between 12s; returns the msg_id. Any answer but OK and 12 fails.
 */
static int64_t ft_retry_until_ok(struct rc_client *c, int64_t to, const char *tag, int i,
				 size_t pad)
{
	char *json = ft_send_json(to, tag, i, pad);
	int64_t deadline = tc_now_ms() + FT_RECOVER_MS, id = 0;

	while (!id) {
		uint32_t code;
		cJSON *r = tc_call(c, CMD_MSG_SEND, json, &code);

		if (code == ST_OK)
			id = tc_json_int(r, "msg_id");
		else if (code != ST_INTERNAL)
			fail_msg("retry of %s.%d answered %u", tag, i, code);
		cJSON_Delete(r);
		if (!id && tc_now_ms() > deadline)
			fail_msg("retry of %s.%d still answered 12 after %d ms", tag, i,
				 FT_RECOVER_MS);
		if (!id)
			tc_sleep_ms(200);
	}
	free(json);
	return id;
}

/* Reads every PUSH_MSG already received or arriving within quiet_ms of
 * the previous one, into out. */
static void ft_drain_pushes(struct rc_client *c, int quiet_ms, struct ft_ids *out)
{
	struct rc_frame f;

	while (rc_wait_push(c, CMD_PUSH_MSG, &f, quiet_ms) == 0) {
		ft_ids_add(out, tc_json_int(f.json, "msg_id"));
		rc_frame_free(&f);
	}
}

/*
 * Logs u in on n again and again, acknowledging what each login pushed,
 * until a login pushes nothing: every unacknowledged message of u ends up
 * in out, in the order pushed. A PING after the LOGIN is answered only
 * after the login's pushes (the session's later frames wait for the
 * push, see messages_push_unacked), so no login waits on a quiet period.
 * Returns the number of logins that pushed something.
 */
static int ft_login_collect(struct node *n, struct ft_user *u, struct ft_ids *out)
{
	int logins = 0;

	for (;;) {
		size_t first = out->n;
		struct rc_frame f;

		ft_login(n, u);
		assert_int_equal(rc_call(u->c, CMD_PING, NULL, &f, TC_CALL_TIMEOUT_MS), 0);
		assert_int_equal(f.hdr.code, ST_OK);
		rc_frame_free(&f);
		ft_drain_pushes(u->c, 0, out);
		if (out->n == first)
			return logins;
		if (++logins > 200)
			fail_msg("more than 200 logins and the pushes do not end (%zu so far)",
				 out->n);
		for (size_t k = first; k < out->n; k += FT_ACK_CHUNK) {
			size_t end = k + FT_ACK_CHUNK < out->n ? k + FT_ACK_CHUNK : out->n;
			char *ack = malloc(32 + (end - k) * 24), *p = ack;

			assert_non_null(ack);
			p += sprintf(p, "{\"msg_ids\":[");
			for (size_t i = k; i < end; i++)
				p += sprintf(p, "%s%lld", i > k ? "," : "", (long long)out->v[i]);
			strcpy(p, "]}");
			tc_expect(u->c, CMD_MSG_ACK, ST_OK, "%s", ack);
			free(ack);
		}
	}
}

/* Every msg_id of the 1:1 conversation of u with `with`, via HISTORY. */
static void ft_history(struct rc_client *c, int64_t with, struct ft_ids *out)
{
	int64_t before = 0;

	for (;;) {
		cJSON *r, *msgs, *m;
		int count = 0;

		if (before)
			r = tc_call_ok(c, CMD_HISTORY,
				       "{\"with\":%lld,\"limit\":%d,\"before_id\":%lld}",
				       (long long)with, FT_HISTORY_PAGE, (long long)before);
		else
			r = tc_call_ok(c, CMD_HISTORY, "{\"with\":%lld,\"limit\":%d}",
				       (long long)with, FT_HISTORY_PAGE);
		msgs = cJSON_GetObjectItemCaseSensitive(r, "messages");
		assert_true(cJSON_IsArray(msgs));
		cJSON_ArrayForEach(m, msgs)
		{
			int64_t id = tc_json_int(m, "msg_id");

			if (before && id >= before)
				fail_msg("HISTORY before_id %lld returned msg_id %lld",
					 (long long)before, (long long)id);
			ft_ids_add(out, id);
			before = id;
			count++;
		}
		cJSON_Delete(r);
		if (count < FT_HISTORY_PAGE)
			return;
	}
}

/*
 * A sender's stream of MSG_SENDs with client_msg_ids, pipelined: at most
 * `window` unanswered, a new one at most every pace_ms (0 = as fast as
 * answers come). Answers must come in request order.
 */
struct ft_stream {
	struct rc_client *c;
	int64_t to;
	char tag[32];
	size_t pad;
	int window, pace_ms, max;
	uint32_t base;
	int sent, got, nok, nfailed;
	int64_t *id;	  /* [max]: msg_id of an OK answer, 0 for a 12 or none */
	int64_t *sent_at; /* [max] */
	int64_t worst_ms; /* slowest answer */
	int64_t next_send_ms;
};

static void ft_stream_init(struct ft_stream *s, struct rc_client *c, int64_t to, const char *tag,
			   size_t pad, int window, int pace_ms, int max)
{
	*s = (struct ft_stream){
	    .c = c, .to = to, .pad = pad, .window = window, .pace_ms = pace_ms, .max = max};
	snprintf(s->tag, sizeof(s->tag), "%s", tag);
	s->base = rc_next_seq(c) + 1000000u;
	s->id = calloc((size_t)max, sizeof(*s->id));
	s->sent_at = calloc((size_t)max, sizeof(*s->sent_at));
	assert_non_null(s->id);
	assert_non_null(s->sent_at);
}

static void ft_stream_free(struct ft_stream *s)
{
	free(s->id);
	free(s->sent_at);
	s->id = s->sent_at = NULL;
}

/*
 * One step: sends one more when `more` and the window and the pace allow,
 * then takes one answer (waiting up to FT_ANSWER_MS when it must, else
 * only until the next send is due). Returns the answer's code, 0 when
 * none was due yet, or -errno when the connection is gone. Any answer but
 * OK and 12 INTERNAL, or one out of order, fails the test.
 */
static int ft_stream_step(struct ft_stream *s, bool more)
{
	bool may_send = more && s->sent < s->max && s->sent - s->got < s->window;
	struct rc_frame f;
	int64_t now = tc_now_ms();
	int rc, code;

	if (may_send && now >= s->next_send_ms) {
		char *json = ft_send_json(s->to, s->tag, s->sent, s->pad);

		rc = rc_send(s->c, CMD_MSG_SEND, s->base + (uint32_t)s->sent, json);
		free(json);
		if (rc)
			return rc;
		s->sent_at[s->sent++] = now;
		s->next_send_ms = now + s->pace_ms;
		may_send = more && s->sent < s->max && s->sent - s->got < s->window;
	}
	if (s->got == s->sent) {
		if (may_send && s->next_send_ms > now)
			tc_sleep_ms((int)(s->next_send_ms - now));
		return 0;
	}
	for (;;) {
		int wait = FT_ANSWER_MS;

		if (may_send)
			wait = s->next_send_ms > tc_now_ms() ? (int)(s->next_send_ms - tc_now_ms())
							     : 0;
		rc = rc_recv(s->c, &f, wait);
		if (rc == -ETIMEDOUT && may_send)
			return 0;
		if (rc == -ETIMEDOUT)
			fail_msg("%s: send %d of %d not answered within %d ms", s->tag, s->got,
				 s->sent, FT_ANSWER_MS);
		if (rc)
			return rc;
		if (f.hdr.seq != 0)
			break;
		rc_frame_free(&f);
	}
	if (f.hdr.seq != s->base + (uint32_t)s->got)
		fail_msg("%s: answer with seq %u came where %u was due", s->tag, f.hdr.seq,
			 s->base + (uint32_t)s->got);
	code = (int)f.hdr.code;
	if (code == ST_OK) {
		s->id[s->got] = tc_json_int(f.json, "msg_id");
		s->nok++;
	} else if (code == ST_INTERNAL) {
		s->nfailed++;
	} else {
		fail_msg("%s: send %d answered %u: %s", s->tag, s->got, f.hdr.code, f.payload);
	}
	if (tc_now_ms() - s->sent_at[s->got] > s->worst_ms)
		s->worst_ms = tc_now_ms() - s->sent_at[s->got];
	rc_frame_free(&f);
	s->got++;
	return code;
}

/* Sends until the window is full (or max is reached), reading nothing. */
static void ft_stream_fill(struct ft_stream *s)
{
	while (s->sent < s->max && s->sent - s->got < s->window) {
		char *json = ft_send_json(s->to, s->tag, s->sent, s->pad);

		assert_int_equal(rc_send(s->c, CMD_MSG_SEND, s->base + (uint32_t)s->sent, json), 0);
		free(json);
		s->sent_at[s->sent++] = tc_now_ms();
	}
}

/*
 * After the stream: every send not answered OK is sent again with its
 * client_msg_id until OK, and a few answered OK are sent again and must
 * get their first msg_id back. final receives the msg_id of every send
 * (s->sent of them). Returns how many were sent again.
 */
static int ft_stream_settle(struct ft_stream *s, int64_t *final)
{
	int again = 0;

	for (int i = 0; i < s->sent; i++) {
		if (s->id[i]) {
			final[i] = s->id[i];
			continue;
		}
		final[i] = ft_retry_until_ok(s->c, s->to, s->tag, i, s->pad);
		again++;
	}
	/* the first, one from the middle and the last answered OK */
	{
		int first = -1, middle = -1, last = -1, pick[3];

		for (int i = 0; i < s->sent; i++) {
			if (!s->id[i])
				continue;
			if (first < 0)
				first = i;
			if (middle < 0 && i >= s->sent / 2)
				middle = i;
			last = i;
		}
		pick[0] = first;
		pick[1] = middle;
		pick[2] = last;
		for (int k = 0; k < 3; k++) {
			if (pick[k] < 0)
				continue;
			if (ft_retry_until_ok(s->c, s->to, s->tag, pick[k], s->pad) !=
			    s->id[pick[k]])
				fail_msg("%s.%d sent again got a new msg_id (first %lld)", s->tag,
					 pick[k], (long long)s->id[pick[k]]);
		}
	}
	return again;
}

/*
 * The recipient b (online on n all along, never acking) has each of the
 * `count` messages in final exactly once: live pushes (read up to a last
 * "fence" message, whose push comes after every earlier one from the
 * same sender) include each send answered OK at its first try and
 * nothing twice; the pushes of b's next logins are exactly final; so is
 * HISTORY.
 */
static void ft_check_recipient(struct node *n, struct ft_user *a, struct ft_user *b,
			       const struct ft_stream *s, int64_t *final, int count)
{
	struct ft_ids live = {0}, login = {0}, hist = {0}, first_ok = {0};
	cJSON *r;
	int64_t fence;

	r = tc_call_ok(a->c, CMD_MSG_SEND, "{\"to\":%lld,\"type\":0,\"text\":\"fence\"}",
		       (long long)b->id);
	fence = tc_json_int(r, "msg_id");
	cJSON_Delete(r);
	final[count++] = fence;
	for (int64_t id = 0; id != fence;) {
		struct rc_frame f;
		int rc = rc_wait_push(b->c, CMD_PUSH_MSG, &f, FT_PUSH_MS);

		if (rc)
			fail_msg("live pushes: the fence did not come (%zu pushes came): %s",
				 live.n, strerror(-rc));
		id = tc_json_int(f.json, "msg_id");
		ft_ids_add(&live, id);
		rc_frame_free(&f);
	}
	for (int i = 0; i < s->sent; i++)
		if (s->id[i])
			ft_ids_add(&first_ok, s->id[i]);
	ft_ids_add(&first_ok, fence);
	ft_check("live pushes", &live, first_ok.v, first_ok.n, final, (size_t)count);

	ft_login_collect(n, b, &login);
	ft_check_exactly("pushes at the next login", &login, final, (size_t)count);
	ft_history(a->c, b->id, &hist);
	ft_check_exactly("HISTORY", &hist, final, (size_t)count);
	print_message("%s: %d sends, %d answered 12 and sent again; %zu pushed live, %zu at "
		      "login; slowest answer %lld ms\n",
		      s->tag, s->sent, s->nfailed, live.n, login.n, (long long)s->worst_ms);
	ft_ids_free(&live);
	ft_ids_free(&login);
	ft_ids_free(&hist);
	ft_ids_free(&first_ok);
}

/* ---- MariaDB restarted under a streaming sender ------------------------------------ */

struct ft_outage {
	int down_ms;	   /* between the end of the stop and the start */
	_Atomic int phase; /* 0 before the stop, 1 stopped, 2 started again */
	int stop_rc, start_rc;
	/* the stream's counts, kept by the sender, read by the outage thread */
	_Atomic int sent, got;
	/* taken by the outage thread: when MariaDB was down, when back */
	int sent_down, got_down, sent_up;
};

/* Stops MariaDB, waits down_ms, starts it (services.sh, see harness.h). */
static void *ft_outage_main(void *arg)
{
	struct ft_outage *o = arg;

	o->stop_rc = services_stop("mysql");
	o->got_down = atomic_load(&o->got);
	o->sent_down = atomic_load(&o->sent);
	atomic_store(&o->phase, 1);
	tc_sleep_ms(o->down_ms);
	o->start_rc = services_start("mysql");
	o->sent_up = atomic_load(&o->sent);
	atomic_store(&o->phase, 2);
	return NULL;
}

/* The stream's pace while MariaDB restarts: up to 250 sends a second. */
#define FT_PACE_MS 4
#define FT_WINDOW 16
#define FT_MAX_SENDS 40000
/* Sends answered OK before the outage starts, and after it ended. */
#define FT_WARM_OKS 100
#define FT_TAIL_OKS 50

/*
 * a streams sends to b (online, reading only at the end) while another
 * thread stops MariaDB, waits down_ms and starts it again; then every
 * send is settled and b's messages checked. Returns the number of sends
 * answered 12.
 */
/* The outage of the running test: its teardown waits for the thread (a
 * failed test leaves the function at once) and makes sure MariaDB is up
 * for what runs next. */
static struct ft_outage ft_outage;
static pthread_t ft_outage_thread;
static bool ft_outage_started;

static int ft_outage_teardown(void **state)
{
	(void)state;
	if (ft_outage_started)
		pthread_join(ft_outage_thread, NULL);
	ft_outage_started = false;
	return services_start("mysql") == 0 ? 0 : -1;
}

static int ft_mysql_restart(int down_ms, const char *prefix)
{
	struct ft_user a = {0}, b = {0}, c = {0};
	struct ft_outage *o = &ft_outage;
	struct ft_stream s;
	int ok_after = 0, nfailed;
	int64_t *final;
	struct node *n;

	*o = (struct ft_outage){.down_ms = down_ms};
	n = node_start(NULL);
	assert_non_null(n);
	a.c = tc_signup_login_as(n, prefix, a.name, &a.id);
	b.c = tc_signup_login_as(n, prefix, b.name, &b.id);
	ft_befriend(&a, &b);
	{
		char tag[32];

		snprintf(tag, sizeof(tag), "%s%lld", prefix, (long long)a.id);
		ft_stream_init(&s, a.c, b.id, tag, 0, FT_WINDOW, FT_PACE_MS, FT_MAX_SENDS);
	}
	for (;;) {
		int phase = atomic_load(&o->phase);
		bool more = ok_after < FT_TAIL_OKS;
		int code;

		if (!ft_outage_started && s.nok >= FT_WARM_OKS) {
			assert_int_equal(pthread_create(&ft_outage_thread, NULL, ft_outage_main, o),
					 0);
			ft_outage_started = true;
		}
		if (!more && s.got == s.sent)
			break;
		if (s.sent == s.max && more)
			fail_msg("%d sends and MariaDB is not back", s.max);
		code = ft_stream_step(&s, more);
		if (code < 0)
			fail_msg("the sender's connection: %s", strerror(-code));
		atomic_store(&o->sent, s.sent);
		atomic_store(&o->got, s.got);
		if (code == ST_OK && phase == 2)
			ok_after++;
		if (code == ST_INTERNAL && s.nok < FT_WARM_OKS)
			fail_msg("a send was answered 12 before MariaDB was stopped");
	}
	pthread_join(ft_outage_thread, NULL);
	ft_outage_started = false;
	assert_int_equal(o->stop_rc, 0);
	assert_int_equal(o->start_rc, 0);
	/* the outage hit the stream: sends were waiting for an answer when
	 * MariaDB was down, or were made while it was */
	if (o->sent_down == o->got_down && o->sent_up == o->sent_down)
		fail_msg("no send met the outage (%d sent and answered before, none during)",
			 o->sent_down);

	final = calloc((size_t)s.sent + 1, sizeof(*final));
	assert_non_null(final);
	ft_stream_settle(&s, final);
	ft_check_recipient(n, &a, &b, &s, final, s.sent);

	/* the node works as before: a new user signs up, logs in, talks */
	c.c = tc_signup_login_as(n, prefix, c.name, &c.id);
	ft_befriend(&c, &a);
	{
		cJSON *r = tc_call_ok(c.c, CMD_MSG_SEND, "{\"to\":%lld,\"type\":0,\"text\":\"hi\"}",
				      (long long)a.id);
		cJSON *p = tc_expect_push(a.c, CMD_PUSH_MSG, FT_PUSH_MS);

		assert_int_equal(tc_json_int(p, "msg_id"), tc_json_int(r, "msg_id"));
		cJSON_Delete(p);
		cJSON_Delete(r);
	}
	nfailed = s.nfailed;
	free(final);
	ft_stream_free(&s);
	ft_close(&a);
	ft_close(&b);
	ft_close(&c);
	assert_int_equal(node_stop(n), 0);
	return nfailed;
}

/* Stopped and started again at once: a few seconds without MariaDB. */
static void test_mysql_restart(void **state)
{
	(void)state;
	ft_mysql_restart(0, "fr");
}

/*
 * Down for twice the writer's retry bound: batches give up, so sends are
 * surely answered 12 (quickly: FT_ANSWER_MS bounds each), and all is well
 * once MariaDB is back.
 */
static void test_mysql_down_past_retry_bound(void **state)
{
	(void)state;
	assert_true(ft_mysql_restart(2 * COMMIT_RETRY_MS, "fd") > 0);
}

/* ---- SIGKILL with sends in flight ------------------------------------------------ */

#define FT_KILL_AFTER_OKS 500
#define FT_KILL_WINDOW 200
#define FT_KILL_MAX 20000

/*
 * The sender keeps FT_KILL_WINDOW sends in flight; after FT_KILL_AFTER_OKS
 * answers the node is SIGKILLed. Every answer read from the socket
 * afterwards counts too. A new node on the same database: every send
 * answered OK is stored under its msg_id, the others sent again with their
 * client_msg_id are stored once, and the recipient (online at the kill,
 * never acking) gets each exactly once at its next login.
 */
static void test_kill_mid_traffic(void **state)
{
	struct ft_user a = {0}, b = {0};
	struct ft_stream s;
	struct node *n1, *n2;
	struct ft_ids login = {0}, hist = {0};
	int64_t *final;
	int rc, answered_at_kill, again;
	char tag[32];

	(void)state;
	/* thousands of sends a second from one connection: the volume needs it */
	n1 = node_start("--rate-msgs-per-s 1000000 --rate-burst 1000000");
	assert_non_null(n1);
	a.c = tc_signup_login_as(n1, "fk", a.name, &a.id);
	b.c = tc_signup_login_as(n1, "fk", b.name, &b.id);
	ft_befriend(&a, &b);
	snprintf(tag, sizeof(tag), "fk%lld", (long long)a.id);
	ft_stream_init(&s, a.c, b.id, tag, 0, FT_KILL_WINDOW, 0, FT_KILL_MAX);
	while (s.nok < FT_KILL_AFTER_OKS) {
		rc = ft_stream_step(&s, true);
		if (rc == ST_INTERNAL)
			fail_msg("send answered 12 before the kill");
		assert_true(rc >= 0);
	}
	/* and the window full again, nothing read meanwhile */
	ft_stream_fill(&s);
	assert_int_equal(node_kill(n1), 128 + SIGKILL);
	answered_at_kill = s.got;
	/* answers the node wrote before it died are still in the socket */
	while (s.got < s.sent && (rc = ft_stream_step(&s, false)) > 0)
		if (rc != ST_OK)
			fail_msg("send answered %d before the kill", rc);
	assert_int_equal(s.nfailed, 0);
	ft_close(&b);

	n2 = node_start("--rate-msgs-per-s 1000000 --rate-burst 1000000");
	assert_non_null(n2);
	ft_login(n2, &a);
	s.c = a.c;
	final = calloc((size_t)s.sent + 1, sizeof(*final));
	assert_non_null(final);
	again = ft_stream_settle(&s, final);

	ft_login_collect(n2, &b, &login);
	ft_check_exactly("pushes at login after the kill", &login, final, (size_t)s.sent);
	ft_history(a.c, b.id, &hist);
	ft_check_exactly("HISTORY after the kill", &hist, final, (size_t)s.sent);
	print_message("kill: %d sent, %d answered by the sender's count at the kill, %d OK in "
		      "all, %d sent again\n",
		      s.sent, answered_at_kill, s.nok, again);
	ft_ids_free(&login);
	ft_ids_free(&hist);
	free(final);
	ft_stream_free(&s);
	ft_close(&a);
	ft_close(&b);
	assert_int_equal(node_stop(n2), 0);
}

/* ---- a recipient that never reads ------------------------------------------------ */

#define FT_SLOW_MSGS 10000
#define FT_SLOW_PAD 1000
/*
 * 10,000 pushes of about 1.1 KB are 11 MB: more than the node's socket
 * send buffer (tcp_wmem's 4 MB at most), the reader's (pinned at a few
 * KB) and this output limit together, so the node must give up on the
 * reader. A login pushes up to half the limit, so a dozen logins bring
 * the backlog.
 */
#define FT_SLOW_OUT_LIMIT (2 << 20)

static void test_slow_reader(void **state)
{
	struct ft_user a = {0}, b = {0};
	struct ft_stream s;
	struct ft_ids login = {0};
	struct node *n;
	int rcvbuf = 4096, rc, logins;
	char tag[32];

	(void)state;
	/* 10,000 sends at once from one connection: the volume needs it */
	n = node_start("--out-limit-bytes %d --rate-msgs-per-s 1000000 --rate-burst 1000000",
		       FT_SLOW_OUT_LIMIT);
	assert_non_null(n);
	a.c = tc_signup_login_as(n, "fs", a.name, &a.id);
	b.c = tc_signup_login_as(n, "fs", b.name, &b.id);
	ft_befriend(&a, &b);
	assert_int_equal(setsockopt(rc_fd(b.c), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);

	snprintf(tag, sizeof(tag), "fs%lld", (long long)a.id);
	ft_stream_init(&s, a.c, b.id, tag, FT_SLOW_PAD, 1000, 0, FT_SLOW_MSGS);
	while (s.got < FT_SLOW_MSGS) {
		rc = ft_stream_step(&s, true);
		if (rc != 0 && rc != ST_OK)
			fail_msg("send %d answered %d", s.got - 1, rc);
	}
	if (!node_log_wait(n, "event=out_limit", 30000))
		fail_msg("the node did not close the reader at out_limit_bytes");
	assert_int_equal(tc_metric(n, "ringchat_conn_out_limit_closed_total"), 1);
	/* the reader never reads: what sits in its socket is lost with the
	 * connection, and all of it must come at the next logins */
	ft_close(&b);
	/* the sender never noticed */
	tc_expect(a.c, CMD_PING, ST_OK, NULL);

	logins = ft_login_collect(n, &b, &login);
	ft_check_exactly("pushes at the next logins", &login, s.id, (size_t)s.sent);
	print_message("slow reader: %zu pushes at %d logins\n", login.n, logins);
	assert_int_equal(tc_metric(n, "ringchat_conn_out_limit_closed_total"), 1);
	ft_ids_free(&login);
	ft_stream_free(&s);
	ft_close(&a);
	ft_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- a peer node down for a while ------------------------------------------------ */

/*
 * A node stopped for three lease times: node_ttl_ms 1000 stands for the
 * 30 s of an operator's restart, since what matters is "longer than it
 * takes the others to see the node gone" (its lease lapses and the peers
 * count it down after node_ttl_ms, or at once after a clean stop), not
 * the wall time. 3 s keeps the test short under ASan.
 */
#define FT_CL_TTL_MS 1000
#define FT_CL_DOWN_MS (3 * FT_CL_TTL_MS)
#define FT_CL_NODES 3
#define FT_CL_SECRET "test-faults-secret-of-at-least-32-bytes"
#define FT_CL_MSGS 20

static struct node *ft_cl_start(const char *route, int id)
{
	int64_t t0 = tc_now_ms();
	struct node *n;

	/* the id's lease may not have lapsed yet: bounded retries */
	while (!(n = node_start("--cluster-route %s --node-id %d --node-ttl-ms %d "
				"--cluster-secret %s",
				route, id, FT_CL_TTL_MS, FT_CL_SECRET))) {
		if (tc_now_ms() - t0 > 4 * FT_CL_TTL_MS)
			fail_msg("node %d (%s) did not start within %d ms", id, route,
				 4 * FT_CL_TTL_MS);
		tc_sleep_ms(200);
	}
	return n;
}

/* Waits until n counts `count` peers up. */
static void ft_cl_wait_peers(struct node *n, int count)
{
	int64_t deadline = tc_now_ms() + 5 * FT_CL_TTL_MS;

	while (tc_metric(n, "ringchat_cluster_peers_up") != count) {
		if (tc_now_ms() > deadline)
			fail_msg("a node sees %lld peers up, want %d",
				 (long long)tc_metric(n, "ringchat_cluster_peers_up"), count);
		tc_sleep_ms(50);
	}
}

/* Sends text from `from` to `to` (online) and checks the push: msg_id,
 * sender, text. */
static int64_t ft_cl_send_live(struct ft_user *from, struct ft_user *to, const char *text)
{
	cJSON *r =
	    tc_call_expect(from->c, CMD_MSG_SEND, ST_OK, "{\"to\":%lld,\"type\":0,\"text\":\"%s\"}",
			   (long long)to->id, text);
	int64_t id = tc_json_int(r, "msg_id");
	cJSON *p = tc_expect_push(to->c, CMD_PUSH_MSG, FT_PUSH_MS);

	cJSON_Delete(r);
	if (tc_json_int(p, "msg_id") != id || tc_json_int(p, "from") != from->id ||
	    strcmp(cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring, text))
		fail_msg("push of \"%s\": msg_id %lld from %lld, want %lld from %lld", text,
			 (long long)tc_json_int(p, "msg_id"), (long long)tc_json_int(p, "from"),
			 (long long)id, (long long)from->id);
	cJSON_Delete(p);
	tc_expect(to->c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}", (long long)id);
	return id;
}

/* The cluster of the running test; the teardown stops what a failed test
 * left running, so that the next one's nodes count only their own peers. */
static struct node *ft_cl_nodes[FT_CL_NODES];

static int ft_cl_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < FT_CL_NODES; i++) {
		if (ft_cl_nodes[i])
			node_stop(ft_cl_nodes[i]);
		ft_cl_nodes[i] = NULL;
	}
	return 0;
}

static void ft_peer_down(const char *route, int id0)
{
	struct node **nodes = ft_cl_nodes;
	struct ft_user p = {0}, q = {0}, d = {0};
	struct ft_ids login = {0};
	int64_t stored[2 * FT_CL_MSGS], t_down;
	char text[64];
	int ns = 0;

	for (int i = 0; i < FT_CL_NODES; i++)
		nodes[i] = ft_cl_start(route, id0 + i);
	for (int i = 0; i < FT_CL_NODES; i++)
		ft_cl_wait_peers(nodes[i], FT_CL_NODES - 1);
	/* p and q stay up (nodes 0 and 1), d's node 2 goes down */
	p.c = tc_signup_login_as(nodes[0], "fcp", p.name, &p.id);
	q.c = tc_signup_login_as(nodes[1], "fcq", q.name, &q.id);
	d.c = tc_signup_login_as(nodes[2], "fcd", d.name, &d.id);
	ft_befriend(&p, &q);
	ft_befriend(&p, &d);
	ft_befriend(&q, &d);
	ft_cl_send_live(&p, &d, "before");
	ft_cl_send_live(&d, &q, "before");

	{
		int status = node_stop(nodes[2]);

		nodes[2] = NULL;
		assert_int_equal(status, 0);
	}
	ft_close(&d);
	t_down = tc_now_ms();
	ft_cl_wait_peers(nodes[0], FT_CL_NODES - 2);
	ft_cl_wait_peers(nodes[1], FT_CL_NODES - 2);

	/* the others go on across nodes, both ways; d's messages are stored */
	for (int i = 0; i < FT_CL_MSGS; i++) {
		snprintf(text, sizeof(text), "p to q %d", i);
		ft_cl_send_live(&p, &q, text);
		snprintf(text, sizeof(text), "q to p %d", i);
		ft_cl_send_live(&q, &p, text);
		for (int k = 0; k < 2; k++) {
			struct ft_user *from = k ? &q : &p;
			cJSON *r = tc_call_expect(from->c, CMD_MSG_SEND, ST_OK,
						  "{\"to\":%lld,\"type\":0,\"text\":\"to d %d\"}",
						  (long long)d.id, i);

			stored[ns++] = tc_json_int(r, "msg_id");
			cJSON_Delete(r);
		}
	}
	tc_expect_no_push(p.c, CMD_PUSH_MSG, 0);
	tc_expect_no_push(q.c, CMD_PUSH_MSG, 0);
	/* down for the time chosen above, then back with the same id */
	if (tc_now_ms() - t_down < FT_CL_DOWN_MS)
		tc_sleep_ms((int)(FT_CL_DOWN_MS - (tc_now_ms() - t_down)));
	nodes[2] = ft_cl_start(route, id0 + 2);
	for (int i = 0; i < FT_CL_NODES; i++)
		ft_cl_wait_peers(nodes[i], FT_CL_NODES - 1);

	/* d's next login (on its own node): exactly what was stored */
	ft_login_collect(nodes[2], &d, &login);
	ft_check_exactly("pushes at the login after the outage", &login, stored, (size_t)ns);
	/* and live delivery to and from the node is back */
	ft_cl_send_live(&p, &d, "p to d after");
	ft_cl_send_live(&d, &p, "d to p after");
	ft_cl_send_live(&q, &d, "q to d after");
	ft_cl_send_live(&d, &q, "d to q after");
	tc_expect_no_push(d.c, CMD_PUSH_MSG, FT_QUIET_MS);
	tc_expect_no_push(p.c, CMD_PUSH_MSG, 0);
	tc_expect_no_push(q.c, CMD_PUSH_MSG, 0);
	ft_ids_free(&login);
	ft_close(&p);
	ft_close(&q);
	ft_close(&d);
	for (int i = 0; i < FT_CL_NODES; i++) {
		int status = node_stop(nodes[i]);

		nodes[i] = NULL;
		assert_int_equal(status, 0);
	}
}

/* node ids 11..13 and 14..16: apart from the other tests' nodes */
static void test_peer_down_redis(void **state)
{
	(void)state;
	ft_peer_down("redis", 11);
}

static void test_peer_down_udp(void **state)
{
	(void)state;
	ft_peer_down("udp", 14);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_slow_reader),
	    cmocka_unit_test(test_kill_mid_traffic),
	    cmocka_unit_test_teardown(test_peer_down_redis, ft_cl_teardown),
	    cmocka_unit_test_teardown(test_peer_down_udp, ft_cl_teardown),
	    cmocka_unit_test_teardown(test_mysql_restart, ft_outage_teardown),
	    cmocka_unit_test_teardown(test_mysql_down_past_retry_bound, ft_outage_teardown),
	};

	harness_init();
	/* RINGCHAT_TEST_FILTER=test_slow* runs some of them (cmocka's pattern) */
	if (getenv("RINGCHAT_TEST_FILTER"))
		cmocka_set_test_filter(getenv("RINGCHAT_TEST_FILTER"));
	return harness_done(cmocka_run_group_tests(tests, NULL, NULL));
}
