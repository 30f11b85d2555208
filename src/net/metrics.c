/*
 * metrics.c - a deliberately tiny HTTP/1.0 responder for GET /metrics.
 *
 * Each admin client: accept ─► recv until the end of the request head
 * ─► one send of the whole response ─► close. A request head larger than
 * ADMIN_REQ_MAX is answered 400. This is for a scraper on loopback, not a
 * general web server, but it must not be blockable:
 *  - at most admin_max_clients at once; the accept is armed only while a
 *    place is free, so more clients wait in the listen backlog;
 *  - each client has admin_timeout_ms for its whole exchange: then its
 *    socket is shut down, which ends the recv or send in flight, and the
 *    client is closed when that completes (a slot is reused only after
 *    its operation ended; user_data carries the slot's generation);
 *  - a failed accept (EMFILE, ...) is retried on a ring timer (doubling,
 *    at most 1 s) with a rate-limited log line, never left unarmed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringchat/cluster.h"
#include "ringchat/commit.h"
#include "ringchat/counters.h"
#include "ringchat/log.h"
#include "ringchat/metrics.h"
#include "ringchat/ring.h"
#include "ringchat/sock.h"

#define ADMIN_REQ_MAX 4096
#define ADMIN_RETRY_MS 10      /* first pause after a failed accept */
#define ADMIN_RETRY_MAX_MS 1000

/* Sub-operations, carried in the generation field of RING_OP_ADMIN
 * user_data (ring.h); the index field is client | generation << 16. */
enum admin_op { A_ACCEPT = 1, A_RECV, A_SEND };

struct admin_client {
	struct metrics *m;
	int fd;            /* -1: free */
	uint16_t gen;      /* bumped at each accept into this slot */
	bool op_inflight;  /* a recv or send has not completed yet */
	bool timed_out;
	uint32_t len;
	char req[ADMIN_REQ_MAX];
	char *resp;
	size_t resp_len, resp_off;
	struct ring_timer deadline;
};

struct metrics {
	struct ring *ring;
	struct handoff *h;
	int listen_fd;
	bool accept_armed;
	bool accept_backoff;
	uint32_t backoff_ms;
	struct ring_timer accept_retry;
	uint64_t timeout_ms;
	int max;      /* admin_max_clients */
	int nclients; /* places taken */
	struct admin_client *clients;
	char bound[SOCK_ADDR_STRLEN];
};

static uint32_t client_idx(const struct metrics *m, const struct admin_client *a)
{
	return (uint32_t)(a - m->clients) | (uint32_t)a->gen << 16;
}

static void arm_accept(struct metrics *m)
{
	struct io_uring_sqe *sqe;

	if (m->accept_armed || m->accept_backoff || m->nclients >= m->max)
		return;
	sqe = ring_get_sqe(m->ring);
	if (!sqe)
		return; /* retried when a client closes or the next accept fails */
	io_uring_prep_accept(sqe, m->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	ring_sqe_tag(sqe, RING_OP_ADMIN, A_ACCEPT, 0);
	m->accept_armed = true;
}

static void on_accept_retry(void *ctx, struct ring_timer *t)
{
	struct metrics *m = ctx;

	(void)t;
	m->accept_backoff = false;
	arm_accept(m);
}

static void arm_recv(struct metrics *m, struct admin_client *a)
{
	struct io_uring_sqe *sqe = ring_get_sqe(m->ring);

	if (!sqe)
		return; /* the deadline closes the client */
	io_uring_prep_recv(sqe, a->fd, a->req + a->len, ADMIN_REQ_MAX - 1 - a->len, 0);
	ring_sqe_tag(sqe, RING_OP_ADMIN, A_RECV, client_idx(m, a));
	a->op_inflight = true;
}

static void arm_send(struct metrics *m, struct admin_client *a)
{
	struct io_uring_sqe *sqe = ring_get_sqe(m->ring);

	if (!sqe)
		return; /* the deadline closes the client */
	io_uring_prep_send(sqe, a->fd, a->resp + a->resp_off, a->resp_len - a->resp_off,
			   MSG_NOSIGNAL);
	ring_sqe_tag(sqe, RING_OP_ADMIN, A_SEND, client_idx(m, a));
	a->op_inflight = true;
}

/* Frees the place of a (no operation of it in flight). */
static void client_close(struct metrics *m, struct admin_client *a)
{
	ring_timer_cancel(m->ring, &a->deadline);
	close(a->fd);
	a->fd = -1;
	free(a->resp);
	a->resp = NULL;
	m->nclients--;
	arm_accept(m);
}

static void on_client_deadline(void *ctx, struct ring_timer *t)
{
	struct admin_client *a = ctx;

	(void)t;
	counter_inc(admin_timeouts);
	if (!a->op_inflight) {
		client_close(a->m, a);
		return;
	}
	/* ends the recv or send in flight; its completion closes */
	a->timed_out = true;
	shutdown(a->fd, SHUT_RDWR);
}

static void put_counter(FILE *out, const char *name, const char *help, uint64_t v)
{
	fprintf(out, "# HELP ringchat_%s_total %s\n# TYPE ringchat_%s_total counter\n"
		     "ringchat_%s_total %llu\n",
		name, help, name, name, (unsigned long long)v);
}

void metrics_render(FILE *out, struct handoff *h)
{
#define COUNTER_OUT(name, help)                                                \
	put_counter(out, #name, help,                                          \
		    atomic_load_explicit(&counters.name, memory_order_relaxed));
	COUNTERS(COUNTER_OUT)
#undef COUNTER_OUT
	fprintf(out, "# HELP ringchat_connections Open client connections.\n"
		     "# TYPE ringchat_connections gauge\nringchat_connections %llu\n",
		(unsigned long long)atomic_load_explicit(&counters.conn_open,
							 memory_order_relaxed));
	fprintf(out, "# HELP ringchat_requests_total Requests received, by command.\n"
		     "# TYPE ringchat_requests_total counter\n");
	for (int c = 0; c < CMD_MAX; c++) {
		uint64_t v = atomic_load_explicit(&counters.req_by_cmd[c], memory_order_relaxed);

		if (v || (rc_cmd_name((uint32_t)c) && c < CMD_PUSH_MSG))
			fprintf(out, "ringchat_requests_total{cmd=\"%s\"} %llu\n",
				rc_cmd_name((uint32_t)c) ? rc_cmd_name((uint32_t)c) : "unknown",
				(unsigned long long)v);
	}
	fprintf(out, "# HELP ringchat_responses_total Responses sent, by status.\n"
		     "# TYPE ringchat_responses_total counter\n");
	for (int s = 0; s < ST_COUNT; s++)
		fprintf(out, "ringchat_responses_total{status=\"%s\"} %llu\n",
			rc_status_name((uint32_t)s),
			(unsigned long long)atomic_load_explicit(&counters.resp_by_status[s],
								 memory_order_relaxed));
	{
		struct commit_stats cs;

		commit_stats_get(&cs);
		fprintf(out,
			"# HELP ringchat_commit_latency_seconds_total Time from gathering a batch to handing its completions back, summed.\n"
			"# TYPE ringchat_commit_latency_seconds_total counter\n"
			"ringchat_commit_latency_seconds_total %.6f\n"
			"# HELP ringchat_commit_latency_seconds_max Slowest group-commit batch.\n"
			"# TYPE ringchat_commit_latency_seconds_max gauge\n"
			"ringchat_commit_latency_seconds_max %.6f\n"
			"# HELP ringchat_commit_batch_items Items in the last and the largest batch.\n"
			"# TYPE ringchat_commit_batch_items gauge\n"
			"ringchat_commit_batch_items{which=\"last\"} %llu\n"
			"ringchat_commit_batch_items{which=\"max\"} %llu\n"
			"# HELP ringchat_commit_failed_items_total Items answered INTERNAL because storage failed.\n"
			"# TYPE ringchat_commit_failed_items_total counter\n"
			"ringchat_commit_failed_items_total %llu\n"
			"# HELP ringchat_commit_acks_total Acks written by the group-commit writer.\n"
			"# TYPE ringchat_commit_acks_total counter\n"
			"ringchat_commit_acks_total %llu\n"
			"# HELP ringchat_commit_cursor_moves_total Group read cursors moved by primary key for acks of recently written group messages.\n"
			"# TYPE ringchat_commit_cursor_moves_total counter\n"
			"ringchat_commit_cursor_moves_total %llu\n",
			(double)cs.latency_ns_total / 1e9, (double)cs.latency_ns_max / 1e9,
			(unsigned long long)cs.last_batch_items,
			(unsigned long long)cs.max_batch_items,
			(unsigned long long)cs.failed_items, (unsigned long long)cs.acks,
			(unsigned long long)cs.cursor_moves);
		fprintf(out, "# HELP ringchat_commit_batch_seconds Group-commit batches by latency, from gathering to handing the completions back.\n"
			     "# TYPE ringchat_commit_batch_seconds histogram\n");
		for (int i = 0; i < COMMIT_LAT_BUCKETS; i++)
			fprintf(out, "ringchat_commit_batch_seconds_bucket{le=\"%g\"} %llu\n",
				commit_lat_bucket_us[i] / 1e6,
				(unsigned long long)cs.latency_le[i]);
		fprintf(out,
			"ringchat_commit_batch_seconds_bucket{le=\"+Inf\"} %llu\n"
			"ringchat_commit_batch_seconds_sum %.6f\n"
			"ringchat_commit_batch_seconds_count %llu\n",
			(unsigned long long)cs.turns, (double)cs.latency_ns_total / 1e9,
			(unsigned long long)cs.turns);
	}
	if (h) {
		fprintf(out, "# HELP ringchat_queue_depth Items waiting in a worker queue.\n"
			     "# TYPE ringchat_queue_depth gauge\n");
		for (int i = 0; i < h->n; i++) {
			fprintf(out, "ringchat_queue_depth{worker=\"%d\",dir=\"in\"} %u\n", i,
				spsc_size(&h->lanes[i].in));
			fprintf(out, "ringchat_queue_depth{worker=\"%d\",dir=\"out\"} %u\n", i,
				spsc_size(&h->lanes[i].out));
		}
	}
	cluster_metrics(out);
}

static void respond(struct metrics *m, struct admin_client *a)
{
	char *body = NULL;
	size_t body_len = 0;
	const char *status = "200 OK";
	FILE *f;

	a->req[a->len] = '\0';
	if (a->len >= ADMIN_REQ_MAX - 1 && !strstr(a->req, "\r\n\r\n") && !strstr(a->req, "\n\n")) {
		status = "400 Bad Request";
		body = strdup("request head too large\n");
		body_len = body ? strlen(body) : 0;
	} else if (strncmp(a->req, "GET /metrics", 12) != 0 ||
		   (a->req[12] != ' ' && a->req[12] != '?')) {
		status = "404 Not Found";
		body = strdup("only GET /metrics is served here\n");
		body_len = body ? strlen(body) : 0;
	} else {
		f = open_memstream(&body, &body_len);
		if (f) {
			metrics_render(f, m->h);
			fclose(f);
		}
	}
	f = open_memstream(&a->resp, &a->resp_len);
	if (!f) {
		free(body);
		client_close(m, a);
		return;
	}
	fprintf(f, "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
		   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		status, body_len);
	if (body)
		fwrite(body, 1, body_len, f);
	fclose(f);
	free(body);
	a->resp_off = 0;
	arm_send(m, a);
}

static void on_accept(struct metrics *m, int res)
{
	static struct log_gate gate;
	struct admin_client *a = NULL;

	m->accept_armed = false;
	if (res < 0) {
		if (res == -ECANCELED)
			return;
		counter_inc(admin_accept_errors);
		m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : ADMIN_RETRY_MS;
		if (m->backoff_ms > ADMIN_RETRY_MAX_MS)
			m->backoff_ms = ADMIN_RETRY_MAX_MS;
		log_limited(&gate, LOG_WARN, "admin accept failed: %s; retrying in %u ms",
			    strerror(-res), m->backoff_ms);
		if (ring_timer_arm(m->ring, &m->accept_retry, ring_now_ms(m->ring) + m->backoff_ms,
				   on_accept_retry, m) == 0)
			m->accept_backoff = true;
		else
			arm_accept(m); /* no timer: at least do not stay deaf */
		return;
	}
	m->backoff_ms = 0;
	for (int i = 0; i < m->max && !a; i++)
		if (m->clients[i].fd < 0)
			a = &m->clients[i];
	if (!a) { /* cannot happen: armed only with a free place */
		close(res);
		return;
	}
	a->fd = res;
	a->gen++;
	a->len = 0;
	a->op_inflight = false;
	a->timed_out = false;
	m->nclients++;
	if (ring_timer_arm(m->ring, &a->deadline, ring_now_ms(m->ring) + m->timeout_ms,
			   on_client_deadline, a)) {
		client_close(m, a);
		return;
	}
	arm_recv(m, a);
	arm_accept(m);
}

static void metrics_on_cqe(void *ctx, struct io_uring_cqe *cqe)
{
	struct metrics *m = ctx;
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned sub = ring_ud_gen(ud);
	uint32_t idx = ring_ud_idx(ud) & 0xffff;
	uint16_t gen = (uint16_t)(ring_ud_idx(ud) >> 16);
	struct admin_client *a;

	if (sub == A_ACCEPT) {
		on_accept(m, cqe->res);
		return;
	}
	if (idx >= (uint32_t)m->max || m->clients[idx].fd < 0 || m->clients[idx].gen != gen)
		return;
	a = &m->clients[idx];
	a->op_inflight = false;
	if (cqe->res <= 0 || a->timed_out) {
		client_close(m, a);
		return;
	}
	if (sub == A_RECV) {
		a->len += (uint32_t)cqe->res;
		a->req[a->len] = '\0';
		if (strstr(a->req, "\r\n\r\n") || strstr(a->req, "\n\n") ||
		    a->len >= ADMIN_REQ_MAX - 1)
			respond(m, a);
		else
			arm_recv(m, a);
		return;
	}
	a->resp_off += (size_t)cqe->res;
	if (a->resp_off < a->resp_len)
		arm_send(m, a);
	else
		client_close(m, a);
}

struct metrics *metrics_create(struct ring *ring, const struct config *cfg, struct handoff *h)
{
	struct metrics *m = calloc(1, sizeof(*m));
	int ret;

	if (!m)
		return NULL;
	m->ring = ring;
	m->h = h;
	m->max = cfg->admin_max_clients;
	m->timeout_ms = (uint64_t)cfg->admin_timeout_ms;
	m->clients = calloc((size_t)m->max, sizeof(*m->clients));
	if (!m->clients) {
		free(m);
		return NULL;
	}
	for (int i = 0; i < m->max; i++) {
		m->clients[i].fd = -1;
		m->clients[i].m = m;
	}
	m->listen_fd = sock_listen_tcp(cfg->admin_listen, 64, m->bound, sizeof(m->bound));
	if (m->listen_fd < 0) {
		log_error("cannot listen on admin_listen %s: %s", cfg->admin_listen,
			  strerror(-m->listen_fd));
		goto out_free;
	}
	ret = ring_register_op(ring, RING_OP_ADMIN, metrics_on_cqe, m);
	if (ret) {
		log_error("cannot register the admin op kind: %s", strerror(-ret));
		close(m->listen_fd);
		goto out_free;
	}
	log_info("admin listening on %s (GET /metrics)", m->bound);
	arm_accept(m);
	return m;

out_free:
	free(m->clients);
	free(m);
	return NULL;
}

const char *metrics_bound(const struct metrics *m)
{
	return m->bound;
}

void metrics_destroy(struct metrics *m)
{
	for (int i = 0; i < m->max; i++)
		if (m->clients[i].fd >= 0) {
			close(m->clients[i].fd);
			free(m->clients[i].resp);
		}
	close(m->listen_fd);
	free(m->clients);
	free(m);
}
