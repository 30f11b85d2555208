/*
 * main.c - ringchat-bench: load scenarios against a node (or a cluster).
 *
 *   ringchat-bench SCENARIO [--host H] [--port P | --nodes H:P,...] [options] [--json]
 *
 *   ping         PINGs pipelined on every connection (window in flight)
 *   chat         users in pairs, senders keep a window of MSG_SEND in flight
 *                (or --rate msgs/s, open loop); delivery counted at the
 *                recipients; --target redis runs the same load on Redis
 *                pub/sub as a reference, --target both runs the two in turn;
 *                --nodes puts each pair's two users on different nodes
 *   group        G groups of N members, one sender per group (fan-out)
 *   login        a login storm: U users log in at once, C at a time, while a
 *                probe connection PINGs
 *   signup       signups per second
 *   connections  N idle connections (in several processes past 15000) and
 *                the node's memory per connection
 *   offline      M messages stored for an offline user, then the drain at
 *                its login
 *
 * This file parses the options once into struct bench_opts (bench.h) and
 * hands them to the scenario (scenario.h), which sets up, runs the load
 * and prints its result (text, or text on stderr and one JSON line on
 * stdout with --json). The modules beside it, one job each:
 *
 *   hist.c      latency histogram        procstat.c  server CPU, context
 *   clock.c     time, progress line                  switches, RSS (/proc)
 *   net.c       batched connects         bconn.c     buffered connections
 *   text.c      message texts            steps.c     set-up step engine
 *   users.c     signup/login/link        load.c      message load core
 *   engine_epoll.c, engine_uring.c       msg.c       chat/group set-up, report
 *   ping.c chat.c group.c login.c signup.c connections.c offline.c
 *
 * Latency: every scenario measures from the moment a request was meant to
 * go out. Closed loop (a window of requests in flight) sends at once; the
 * open loop of chat/group (--rate) stamps each message with its scheduled
 * time, so a stalled node shows as latency instead of silently slowing
 * the senders down (no coordinated omission). Message texts carry their
 * stamp ("t=<ns>;"), which is how a recipient knows the send→delivery
 * latency; sender and recipients share one process, so one monotonic
 * clock serves both.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "scenario.h"

struct bench_scenario {
	const char *name;
	const char *help;
	int (*run)(const struct bench_opts *o);
	/* Defaults where the global ones do not fit (0: keep the global). */
	int window, connections, duration_s;
};

static const struct bench_scenario bench_scenarios[] = {
    {"ping", "PINGs pipelined on every connection (window in flight)", scenario_ping, 0, 0, 0},
    {"chat", "users in pairs sending 1:1 messages (--target redis: the same on pub/sub)",
     scenario_chat, 4, 0, 0},
    {"group", "groups of members, one sender per group (fan-out)", scenario_group, 4, 0, 0},
    {"login", "login storm of --users over --connections in flight, with a PING probe",
     scenario_login, 0, 200, 0},
    {"signup", "--users signups over --connections connections", scenario_signup, 0, 64, 0},
    {"connections", "--connections idle connections, the node's memory per connection",
     scenario_connections, 0, 10000, 5},
    {"offline", "--messages stored for an offline user, then the drain at its login",
     scenario_offline, 64, 0, 0},
};

static void bench_usage(FILE *out)
{
	size_t i;

	fprintf(out, "usage: ringchat-bench SCENARIO [options]\n"
		     "scenarios:\n");
	for (i = 0; i < sizeof(bench_scenarios) / sizeof(bench_scenarios[0]); i++)
		fprintf(out, "  %-12s %s\n", bench_scenarios[i].name, bench_scenarios[i].help);
	fprintf(
	    out,
	    "options:\n"
	    "  --host H            node address (127.0.0.1)\n"
	    "  --port P            node client port (required but for --target redis\n"
	    "                      and --nodes)\n"
	    "  --nodes H:P,H:P...  chat/group: a cluster's nodes instead of --host/--port;\n"
	    "                      member k of pair/group g on node (g + k) mod count: with\n"
	    "                      two nodes or more every 1:1 message crosses (at most %d)\n"
	    "  --connections N     ping: connections (1000); login: logins in flight (200);\n"
	    "                      signup: connections (64); connections: how many (10000)\n"
	    "  --window W          requests in flight per connection (ping 16, chat/group 4,\n"
	    "                      offline 64)\n"
	    "  --duration S        measured seconds (10; connections: seconds held, 5)\n"
	    "  --warmup S          seconds before measuring (1)\n"
	    "  --threads T         load threads (2)\n"
	    "  --requests N        ping: stop after N PINGs in all (--duration still caps)\n"
	    "  --users U           chat: users, in pairs (1000); login, signup: users (1000)\n"
	    "  --groups G          group: groups (10)\n"
	    "  --members N         group: members per group, the sender included (50)\n"
	    "  --messages M        offline: messages stored (10000)\n"
	    "  --size B            message text bytes, %d..%d (64)\n"
	    "  --rate R            chat/group: R msgs/s in all, open loop (default closed loop)\n"
	    "  --tick-us U         with --rate: wake every U us and send what is due, stamped\n"
	    "                      with its due time (0: wake at each due time)\n"
	    "  --engine E          chat/group: epoll (a system call per send and receive) or\n"
	    "                      uring (one io_uring_enter per loop turn) (uring)\n"
	    "  --target T          chat/group: ringchat, redis or both (ringchat)\n"
	    "  --redis-host H      --target redis: Redis address (127.0.0.1)\n"
	    "  --redis-port P      --target redis: Redis port (16379)\n"
	    "  --redis-pid PID     --target redis/both: redis-server's CPU for the Redis run\n"
	    "  --prefix S          usernames are S_<n> (default: unique per run)\n"
	    "  --server-pid P[,P]  report the CPU time and context switches of these\n"
	    "                      processes while measuring, in all and per message\n"
	    "                      (connections: the first one's RSS)\n"
	    "  --json              the summary on stderr, one JSON line on stdout\n",
	    BENCH_MAX_NODES, BENCH_STAMP_BYTES + 1, BENCH_TEXT_MAX);
}

/* Parses an integer option in [min, max]; exits 2 naming it otherwise. */
static long bench_int_arg(const char *name, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "ringchat-bench: --%s: '%s' is not an integer in %ld..%ld\n", name,
			s, min, max);
		exit(2);
	}
	return v;
}

static void bench_pids_arg(struct bench_opts *o, const char *s)
{
	char buf[256], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", s);
	o->nserver_pids = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->nserver_pids == BENCH_MAX_PIDS) {
			fprintf(stderr, "ringchat-bench: --server-pid: at most %d pids\n",
				BENCH_MAX_PIDS);
			exit(2);
		}
		o->server_pids[o->nserver_pids++] = bench_int_arg("server-pid", tok, 1, 1L << 30);
	}
}

/*
 * --nodes host:port,host:port,...: the port after the last colon, so an
 * IPv6 address may be given in brackets ([::1]:7700, brackets dropped).
 * Exits 2 naming the option on a malformed list.
 */
static void bench_nodes_arg(struct bench_opts *o, const char *s)
{
	char buf[BENCH_MAX_NODES * (BENCH_HOST_MAX + 8)], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf)) {
		fprintf(stderr, "ringchat-bench: --nodes: list too long\n");
		exit(2);
	}
	/* strtok_r would skip an empty entry: refuse it here instead. */
	if (!*s || s[0] == ',' || s[strlen(s) - 1] == ',' || strstr(s, ",,")) {
		fprintf(stderr, "ringchat-bench: --nodes: an empty entry in '%s'\n", s);
		exit(2);
	}
	snprintf(buf, sizeof(buf), "%s", s);
	o->nnodes = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct bench_endpoint *e;
		char *colon = strrchr(tok, ':');
		size_t hl;

		if (o->nnodes == BENCH_MAX_NODES) {
			fprintf(stderr, "ringchat-bench: --nodes: at most %d nodes\n",
				BENCH_MAX_NODES);
			exit(2);
		}
		if (!colon || colon == tok) {
			fprintf(stderr, "ringchat-bench: --nodes: '%s' is not host:port\n", tok);
			exit(2);
		}
		*colon = '\0';
		if (tok[0] == '[' && colon[-1] == ']') {
			tok++;
			colon[-1] = '\0';
		}
		hl = strlen(tok);
		e = &o->nodes[o->nnodes++];
		if (hl == 0 || hl >= sizeof(e->host)) {
			fprintf(stderr, "ringchat-bench: --nodes: bad host '%s'\n", tok);
			exit(2);
		}
		memcpy(e->host, tok, hl + 1);
		e->port = (uint16_t)bench_int_arg("nodes", colon + 1, 1, 65535);
	}
	if (o->nnodes == 0) {
		fprintf(stderr, "ringchat-bench: --nodes: no node given\n");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"host", required_argument, NULL, 'h'},
	    {"port", required_argument, NULL, 'p'},
	    {"connections", required_argument, NULL, 'c'},
	    {"window", required_argument, NULL, 'w'},
	    {"duration", required_argument, NULL, 'd'},
	    {"warmup", required_argument, NULL, 'W'},
	    {"threads", required_argument, NULL, 't'},
	    {"server-pid", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, 'j'},
	    {"requests", required_argument, NULL, 'n'},
	    {"users", required_argument, NULL, 'u'},
	    {"groups", required_argument, NULL, 'g'},
	    {"members", required_argument, NULL, 'm'},
	    {"messages", required_argument, NULL, 'M'},
	    {"size", required_argument, NULL, 'S'},
	    {"rate", required_argument, NULL, 'r'},
	    {"tick-us", required_argument, NULL, 'k'},
	    {"engine", required_argument, NULL, 'e'},
	    {"target", required_argument, NULL, 'T'},
	    {"redis-host", required_argument, NULL, 'H'},
	    {"redis-port", required_argument, NULL, 'P'},
	    {"redis-pid", required_argument, NULL, 'R'},
	    {"prefix", required_argument, NULL, 'x'},
	    {"nodes", required_argument, NULL, 'N'},
	    {"help", no_argument, NULL, '?'},
	    {NULL, 0, NULL, 0},
	};
	struct bench_opts o = {
	    .host = "127.0.0.1",
	    .connections = 1000,
	    .window = 16,
	    .duration_s = 10,
	    .warmup_s = 1,
	    .threads = 2,
	    .users = 1000,
	    .groups = 10,
	    .members = 50,
	    .messages = 10000,
	    .size = 64,
	    .uring = true,
	    .redis_host = "127.0.0.1",
	    .redis_port = 16379,
	};
	const struct bench_scenario *sc = NULL;
	bool host_given = false;
	char *end;
	size_t i;
	int opt;

	if (argc < 2 || argv[1][0] == '-') {
		bench_usage(argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
		return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
	}
	o.scenario = argv[1];
	for (i = 0; i < sizeof(bench_scenarios) / sizeof(bench_scenarios[0]); i++)
		if (!strcmp(bench_scenarios[i].name, o.scenario))
			sc = &bench_scenarios[i];
	if (!sc) {
		fprintf(stderr, "ringchat-bench: unknown scenario '%s'\n", o.scenario);
		bench_usage(stderr);
		return 2;
	}
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			o.host = optarg;
			host_given = true;
			break;
		case 'p':
			o.port = (uint16_t)bench_int_arg("port", optarg, 1, 65535);
			break;
		case 'c':
			o.connections =
			    (int)bench_int_arg("connections", optarg, 1, BENCH_MAX_CONNECTIONS);
			o.set_connections = true;
			break;
		case 'w':
			o.window = (int)bench_int_arg("window", optarg, 1, BENCH_MAX_WINDOW);
			o.set_window = true;
			break;
		case 'd':
			o.duration_s = (int)bench_int_arg("duration", optarg, 1, 86400);
			o.set_duration = true;
			break;
		case 'W':
			o.warmup_s = (int)bench_int_arg("warmup", optarg, 0, 3600);
			o.set_warmup = true;
			break;
		case 't':
			o.threads = (int)bench_int_arg("threads", optarg, 1, BENCH_MAX_THREADS);
			break;
		case 's':
			bench_pids_arg(&o, optarg);
			break;
		case 'j':
			o.json = true;
			break;
		case 'n':
			o.requests = bench_int_arg("requests", optarg, 1, 1L << 40);
			break;
		case 'u':
			o.users = (int)bench_int_arg("users", optarg, 1, BENCH_MAX_CONNECTIONS);
			break;
		case 'g':
			o.groups = (int)bench_int_arg("groups", optarg, 1, 10000);
			break;
		case 'm':
			o.members = (int)bench_int_arg("members", optarg, 1, 10000);
			break;
		case 'M':
			o.messages = (int)bench_int_arg("messages", optarg, 1, 10000000);
			break;
		case 'S':
			o.size = (int)bench_int_arg("size", optarg, BENCH_STAMP_BYTES + 1,
						    BENCH_TEXT_MAX);
			break;
		case 'r':
			errno = 0;
			o.rate = strtod(optarg, &end);
			if (errno || end == optarg || *end || o.rate <= 0 || o.rate > 1e8) {
				fprintf(stderr,
					"ringchat-bench: --rate: '%s' is not a rate in "
					"msgs/s\n",
					optarg);
				return 2;
			}
			break;
		case 'k':
			o.tick_us = bench_int_arg("tick-us", optarg, 0, 100000);
			break;
		case 'e':
			if (!strcmp(optarg, "uring") || !strcmp(optarg, "epoll")) {
				o.uring = optarg[0] == 'u';
			} else {
				fprintf(stderr,
					"ringchat-bench: --engine: '%s' is not uring or epoll\n",
					optarg);
				return 2;
			}
			break;
		case 'T':
			if (!strcmp(optarg, "ringchat"))
				o.target = TARGET_RINGCHAT;
			else if (!strcmp(optarg, "redis"))
				o.target = TARGET_REDIS;
			else if (!strcmp(optarg, "both"))
				o.target = TARGET_BOTH;
			else {
				fprintf(stderr,
					"ringchat-bench: --target: ringchat, redis or both\n");
				return 2;
			}
			break;
		case 'H':
			o.redis_host = optarg;
			break;
		case 'P':
			o.redis_port = (uint16_t)bench_int_arg("redis-port", optarg, 1, 65535);
			break;
		case 'R':
			o.redis_pid = bench_int_arg("redis-pid", optarg, 1, 1L << 30);
			break;
		case 'x':
			if (strlen(optarg) < 1 || strlen(optarg) > 12 ||
			    strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					   "0123456789_.-") != strlen(optarg)) {
				fprintf(stderr,
					"ringchat-bench: --prefix: 1..12 of A-Z a-z 0-9 _ . -\n");
				return 2;
			}
			snprintf(o.prefix, sizeof(o.prefix), "%s", optarg);
			break;
		case 'N':
			bench_nodes_arg(&o, optarg);
			break;
		default:
			bench_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ringchat-bench: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (o.nnodes > 0) {
		if (strcmp(o.scenario, "chat") && strcmp(o.scenario, "group")) {
			fprintf(stderr, "ringchat-bench: --nodes is for chat and group only\n");
			return 2;
		}
		if (o.port != 0 || host_given) {
			fprintf(stderr, "ringchat-bench: --nodes replaces --host and --port\n");
			return 2;
		}
		/* Whatever reads host:port alone gets the first node. */
		o.host = o.nodes[0].host;
		o.port = o.nodes[0].port;
	}
	if (o.port == 0 && !(o.target == TARGET_REDIS &&
			     (!strcmp(o.scenario, "chat") || !strcmp(o.scenario, "group")))) {
		fprintf(stderr, "ringchat-bench: --port is required\n");
		return 2;
	}
	if (!o.set_window && sc->window)
		o.window = sc->window;
	if (!o.set_connections && sc->connections)
		o.connections = sc->connections;
	if (!o.set_duration && sc->duration_s)
		o.duration_s = sc->duration_s;
	if (o.requests && !o.set_warmup)
		o.warmup_s = 0; /* a fixed count: measure every one of them */
	if (!o.prefix[0])
		/* Unique per run: names never collide with an earlier run's users. */
		snprintf(o.prefix, sizeof(o.prefix), "b%08lx",
			 ((unsigned long)time(NULL) * 2654435761ul ^ (unsigned long)getpid()) &
			     0xfffffffful);
	if (o.threads > o.connections && !strcmp(o.scenario, "ping"))
		o.threads = o.connections;
	signal(SIGPIPE, SIG_IGN);
	return sc->run(&o);
}
