/*
 * scenario.h - the scenarios of ringchat-bench, one file each.
 *
 * Contract of every scenario_*(): takes the parsed options (read-only,
 * --port or --nodes already checked by main), sets up what it needs, runs
 * the load on the calling thread (starting load threads or child
 * processes of its own and joining them before it returns), prints its
 * summary (text on stdout; with --json, text on stderr and exactly one
 * JSON line per run on stdout; progress and set-up notes on stderr), and
 * releases everything it acquired. Returns the process exit status: 0 on
 * success, 1 when the load failed or its result shows failures (named in
 * each comment), 2 for a usage error.
 */
#ifndef RINGCHAT_BENCH_SCENARIO_H
#define RINGCHAT_BENCH_SCENARIO_H

#include "bench.h"

/* PINGs pipelined on --connections, --window in flight each (ping.c).
 * 1 when nothing was answered, a connection was lost or an answer was
 * out of order. */
int scenario_ping(const struct bench_opts *o);

/* --users in pairs sending 1:1 messages, on --target (chat.c; msg.h).
 * 1 when a run delivered nothing or lost a connection. */
int scenario_chat(const struct bench_opts *o);

/* --groups of --members, one sender each (group.c; msg.h). As chat. */
int scenario_group(const struct bench_opts *o);

/* A login storm of --users, --connections in flight, with a PING probe
 * (login.c). 1 on a failed set-up or login, or a failed probe PING. */
int scenario_login(const struct bench_opts *o);

/* --users signups over --connections connections (signup.c). 1 when a
 * signup failed. */
int scenario_signup(const struct bench_opts *o);

/* --connections idle connections held --duration s, and the node's memory
 * per connection (connections.c). 1 unless every one opened and
 * answered its PING. */
int scenario_connections(const struct bench_opts *o);

/* --messages stored for an offline user, then the drain at its login
 * (offline.c). 1 when a send or the drain failed. */
int scenario_offline(const struct bench_opts *o);

#endif
