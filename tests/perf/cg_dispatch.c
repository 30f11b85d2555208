/*
 * cg_dispatch.c - the node's codec and dispatch path in one thread, for
 * callgrind (built and run by tests/perf/callgrind.sh).
 *
 *   cg_dispatch N [ringchatd flags...]
 *
 * Each request goes the way the I/O thread and a worker hand it over,
 * minus the socket and io_uring:
 *
 *   bytes ──frame_reader_feed──► frame ──in_msg──► dispatch_in (worker)
 *        ──► reply encoded into an out_msg ──spsc──► taken and freed here
 *
 * CG_WARMUP requests run first (lazy allocations, first-touch costs),
 * then collection is switched on for exactly the N requests (callgrind
 * runs with --collect-atstart=no): the total divided by N is the
 * instruction cost of one request. The command is PING unless CG_CMD names another
 * one, with CG_PAYLOAD as its payload (e.g. CG_CMD=FRIEND_LIST measures
 * the NOT_LOGGED_IN refusal).
 *
 * Outside valgrind the client requests are no-ops, so the program also
 * runs (and reports its time) on its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <valgrind/callgrind.h>

#include "ringchat/config.h"
#include "ringchat/dispatch.h"
#include "ringchat/frame.h"
#include "ringchat/protocol.h"
#include "ringchat/spsc.h"
#include "ringchat/worker.h"

#define CG_WARMUP 1000
#define CG_MAX_ARGS 64

struct cg {
	struct worker *w;
	unsigned long replies;
	unsigned long reply_bytes;
	uint32_t last_code;
};

/* The worker's replies, taken as the I/O thread would take them. */
static void cg_drain(struct cg *cg)
{
	struct out_msg *o;

	while ((o = spsc_pop(&cg->w->lane->out))) {
		if (o->len >= FRAME_HDR_BYTES) {
			struct frame_hdr h;

			frame_hdr_decode(o->data, &h);
			cg->last_code = h.code;
		}
		cg->replies++;
		cg->reply_bytes += o->len;
		free(o);
	}
}

/* frame_reader callback: one complete frame becomes one in_msg. */
static int cg_on_frame(void *arg, const struct frame_hdr *hdr, const uint8_t *payload)
{
	struct cg *cg = arg;
	struct in_msg *m = malloc(sizeof(*m) + hdr->len);

	if (!m)
		return 1;
	memset(m, 0, sizeof(*m));
	m->conn = CONN_REF(0, 1);
	m->kind = IN_FRAME;
	m->peer_addr = 0x7f000001u;
	m->peer_port = 40000;
	m->hdr = *hdr;
	if (hdr->len)
		memcpy(m->payload, payload, hdr->len);
	dispatch_in(cg->w, m);
	cg_drain(cg);
	return 0;
}

/* Feeds n requests, one frame per feed (one recv each, the worst case). */
static int cg_run(struct cg *cg, struct frame_reader *fr, const uint8_t *frame, size_t len,
		  unsigned long n)
{
	enum frame_verdict verdict;
	struct frame_hdr bad;
	unsigned long i;

	for (i = 0; i < n; i++)
		if (frame_reader_feed(fr, frame, len, cg_on_frame, cg, &verdict, &bad) != FEED_OK)
			return -1;
	return 0;
}

static double cg_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static struct config cfg;
	struct worker_pool pool;
	struct frame_reader fr;
	struct cg cg = {0};
	const char *cmd_name = getenv("CG_CMD"), *payload = getenv("CG_PAYLOAD");
	char *args[CG_MAX_ARGS];
	unsigned long n;
	uint8_t *frame;
	size_t flen;
	bool check_only = false;
	int cmd = CMD_PING, nargs = 0, i, rc = 1;
	double t0, t1;

	if (argc < 2 || (n = strtoul(argv[1], NULL, 10)) == 0) {
		fprintf(stderr, "usage: cg_dispatch N [ringchatd flags...]\n");
		return 2;
	}
	if (cmd_name && *cmd_name && (cmd = rc_cmd_by_name(cmd_name)) < 0) {
		fprintf(stderr, "cg_dispatch: unknown command %s\n", cmd_name);
		return 2;
	}
	/* The node's own flags, and no rate limit in the way of N requests. */
	args[nargs++] = "cg_dispatch";
	for (i = 2; i < argc && nargs < CG_MAX_ARGS - 5; i++)
		args[nargs++] = argv[i];
	args[nargs++] = "--rate-msgs-per-s";
	args[nargs++] = "1000000";
	args[nargs++] = "--rate-burst";
	args[nargs++] = "1000000";
	args[nargs] = NULL;
	if (config_from_args(&cfg, nargs, args, &check_only, stdout, stderr) != 0)
		return 2;
	if (worker_pool_init(&pool, &cfg, 1, 16)) {
		fprintf(stderr, "cg_dispatch: worker_pool_init failed\n");
		return 1;
	}
	if (dispatch_global_init(&pool)) {
		fprintf(stderr, "cg_dispatch: dispatch_global_init failed\n");
		goto out_destroy;
	}
	cg.w = &pool.workers[0];
	/* This thread plays the worker: it owns the worker's storage links. */
	if (dispatch_worker_start(cg.w)) {
		fprintf(stderr, "cg_dispatch: dispatch_worker_start failed\n");
		goto out_global;
	}
	frame = frame_build((uint16_t)cmd, 0, 1, payload, payload ? (uint32_t)strlen(payload) : 0,
			    &flen);
	if (!frame)
		goto out_worker;
	frame_reader_init(&fr, cfg.max_frame);

	if (cg_run(&cg, &fr, frame, flen, CG_WARMUP))
		goto out_frame;
	/* Run with --collect-atstart=no: only the N requests are counted. */
	CALLGRIND_TOGGLE_COLLECT;
	t0 = cg_now_s();
	if (cg_run(&cg, &fr, frame, flen, n))
		goto out_frame;
	t1 = cg_now_s();
	CALLGRIND_TOGGLE_COLLECT;
	printf("cg_dispatch: %lu %s requests, %lu replies (last status %s), %.0f bytes per "
	       "reply, %.3f us per request%s\n",
	       n, rc_cmd_name((uint32_t)cmd), cg.replies - CG_WARMUP, rc_status_name(cg.last_code),
	       (double)cg.reply_bytes / (double)cg.replies, (t1 - t0) * 1e6 / (double)n,
	       RUNNING_ON_VALGRIND ? " (under valgrind)" : "");
	rc = cg.replies == n + CG_WARMUP ? 0 : 1;
out_frame:
	frame_reader_reset(&fr);
	free(frame);
out_worker:
	dispatch_worker_stop(cg.w);
out_global:
	dispatch_global_stop(&pool);
out_destroy:
	worker_pool_destroy(&pool);
	return rc;
}
