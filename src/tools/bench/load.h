/*
 * load.h - the message load of chat, group and offline's sender, on
 * Ringchat or on Redis pub/sub.
 *
 * Sender: keeps `window` messages in flight. Closed loop: a new one goes
 * out as soon as an answer comes back, stamped now. Open loop (rate): a
 * sender's message k is due at first_due + k * interval and is stamped
 * with that time whenever it really leaves (a full window delays it; the
 * delay shows in the latency, no coordinated omission). Answers come back
 * in order, so the FIFO of stamps gives send→OK (Ringchat: MSG_SEND or
 * GROUP_SEND OK, i.e. stored; Redis: PUBLISH's reply).
 *
 * Recipient: every PUSH_MSG (Redis: every "message") gives send→delivery
 * from the stamp in its text; Ringchat recipients ack with MSG_ACK every
 * BENCH_ACK_BATCH messages or BENCH_ACK_NS, as a client would.
 *
 * Timeline of a run (not quota mode):
 *
 *   t0 ── warm-up ── start ── measured ── end ── drain ── stop
 *
 * Events count in the measured figures when they happen inside
 * [start, end). At end the senders stop; the drain then waits until every
 * answer is in and every message answered OK has reached its recipients
 * (fanout each), or until no delivery came for LOAD_DRAIN_QUIET_NS with
 * every answer in (a message that cannot arrive), or LOAD_DRAIN_MAX_NS.
 * The whole-run counts (the *_all fields) include warm-up and drain, so a
 * closed-loop run can be checked exactly: delivered_all == ok_all * fanout.
 *
 * Threads own disjoint sets of connections, each with its own engine
 * (epoll or io_uring, see engine.h), so nothing is shared while the load
 * runs but relaxed progress counters; histograms are merged at the end.
 */
#ifndef RINGCHAT_BENCH_LOAD_H
#define RINGCHAT_BENCH_LOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "bconn.h"
#include "bench.h"
#include "hist.h"
#include "procstat.h"

/* The drain after the measured interval (see above). */
#define LOAD_DRAIN_QUIET_NS (1000 * 1000000ull)
#define LOAD_DRAIN_MAX_NS (10 * 1000000000ull)

struct load_spec {
	bool redis;
	bool group; /* GROUP_SEND to peer as group_id */
	int window;
	int size;
	uint64_t tick_ns;	 /* open loop: see bench_opts.tick_us */
	bool uring;		 /* the io_uring engine instead of epoll */
	const char *chan_prefix; /* Redis channel names: prefix:<peer> */
	int fanout;		 /* deliveries per message: chat 1, group members - 1 */
};

/* The merged result of a load run. */
struct load_result {
	struct hist ok_hist, dlv_hist;
	/* Measured interval; sent counts every message put on the wire, in
	 * the whole run (a RATE_LIMITED one sent again counts twice). */
	uint64_t sent, ok, errors, rate_limited, delivered, ack_errors, lost, bad;
	/* Whole run, warm-up and drain included. delivered_all counts each
	 * msg_id once per recipient; duplicates are the pushes of an id the
	 * recipient had already; out_of_order the new ids that came after a
	 * higher one of the same recipient (late, not repeated). */
	uint64_t ok_all, delivered_all, duplicates, out_of_order;
	bool drained; /* every answer and every expected delivery came */
	double seconds;
	struct procstat_span cpu; /* server and generator cost of [start, end) */
};

/*
 * Runs the load on conns[0..n) (senders and recipients, role and peer
 * set; each sender's quota set in quota_mode): thread k of
 * min(--threads, n) gets conns[i] for i % nthreads == k, warm-up, then
 * --duration measured and the drain, or (quota_mode) until every sender
 * has sent its quota, measured from the start. rate (msgs/s over all
 * senders, 0 = closed loop) spreads the senders' first messages evenly
 * over one interval. The CPU span covers the server pids of o.
 *
 * Runs on the calling thread, which waits for the load threads; conns
 * stay the caller's (their sockets are made blocking for io_uring, and
 * each sender gets its sent_ns window). Returns 0 with *res filled, or -1
 * (a thread or engine could not be set up).
 */
int load_run(const struct bench_opts *o, const struct load_spec *sp, struct bconn *conns, int n,
	     double rate, bool quota_mode, struct load_result *res);

#endif
