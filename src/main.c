/*
 * main.c - ringchatd: parse the configuration, start the workers, run the
 * I/O loop on this thread until SIGINT/SIGTERM, then shut down in order.
 *
 * Exit status: 0 after an orderly shutdown, 1 when start-up fails (the
 * log says why), 2 for a bad configuration (one line names the key).
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringchat/cluster.h"
#include "ringchat/config.h"
#include "ringchat/link_io.h"
#include "ringchat/sock.h"
#include "ringchat/membership.h"
#include "ringchat/conn.h"
#include "ringchat/counters.h"
#include "ringchat/dispatch.h"
#include "ringchat/log.h"
#include "ringchat/metrics.h"
#include "ringchat/ring.h"
#include "ringchat/worker.h"

static struct worker_pool pool;

/* The group-commit writer's hand-back: wakes the worker it gave work to. */
static void wake_worker(int id)
{
	worker_wake(&pool.workers[id]);
}

static bool pool_idle(void *ctx)
{
	return worker_pool_idle(ctx);
}

/*
 * The I/O thread: the ring, the client connections and the admin endpoint
 * on it, run until a signal drains them. Returns 0 after an orderly
 * shutdown, -1 when set-up failed (logged).
 */
static int run_io(const struct config *cfg, struct worker_pool *pool)
{
	struct ring_hooks hooks = { .idle = pool_idle, .ctx = pool };
	struct conn_table *conns = NULL;
	struct metrics *metrics = NULL;
	struct ring *ring;
	int ret = -1;

	ring = ring_create(cfg);
	if (!ring)
		return -1;
	conns = conn_table_create(ring, cfg, &pool->handoff);
	if (!conns)
		goto out;
	if (cfg->admin_listen[0]) {
		metrics = metrics_create(ring, cfg, &pool->handoff);
		if (!metrics)
			goto out;
	}
	if (cluster_link_io() && link_io_attach(cluster_link_io(), ring, &pool->handoff)) {
		log_error("cannot attach the node link to the ring");
		goto out;
	}
	if (cluster_attach_ring(ring, conns, &pool->handoff)) {
		log_error("cannot attach the cluster to the ring");
		goto out;
	}
	ret = ring_run(ring, &hooks);
out:
	/* the ring first: no CQE or timer reaches the modules afterwards */
	ring_destroy(ring);
	if (metrics)
		metrics_destroy(metrics);
	if (conns)
		conn_table_destroy(conns);
	return ret;
}

#define CLUSTER_SECRET_MIN_BYTES 32
#define CLUSTER_SECRET_MAX_BYTES 4096

/*
 * The cluster secret of cfg (the value, or the contents of the file named
 * after '@', without a final newline) into buf. Returns its length, or -1
 * after printing one line naming the key (the node exits 2).
 */
static ssize_t cluster_secret_load(const struct config *cfg, uint8_t *buf, size_t cap)
{
	const char *v = cfg->cluster_secret;
	size_t n;

	if (v[0] == '@') {
		FILE *f = fopen(v + 1, "rb");

		if (!f) {
			fprintf(stderr, "ringchatd: config: key 'cluster_secret': cannot read %s: %s\n",
				v + 1, strerror(errno));
			return -1;
		}
		n = fread(buf, 1, cap, f);
		fclose(f);
		while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			n--;
	} else {
		n = strlen(v);
		memcpy(buf, v, n);
	}
	if (n < CLUSTER_SECRET_MIN_BYTES) {
		fprintf(stderr,
			"ringchatd: config: key 'cluster_secret': %zu bytes; cluster_route udp needs "
			"at least %d (the same on every node)\n",
			n, CLUSTER_SECRET_MIN_BYTES);
		return -1;
	}
	return (ssize_t)n;
}

struct io_args {
	const struct config *cfg;
	struct worker_pool *pool;
	int ret;
};

static void *io_main(void *arg)
{
	struct io_args *a = arg;

	a->ret = run_io(a->cfg, a->pool);
	return NULL;
}

/*
 * The I/O thread gets a thread of its own (named "ring" by ring_run) so
 * that the process keeps its name: pidof, pgrep -x and top still show
 * ringchatd. The ring is created on that thread, as SINGLE_ISSUER needs.
 */
static int run_io_thread(const struct config *cfg, struct worker_pool *pool)
{
	struct io_args a = { .cfg = cfg, .pool = pool, .ret = -1 };
	pthread_t t;
	int ret = pthread_create(&t, NULL, io_main, &a);

	if (ret) {
		log_error("cannot start the I/O thread: %s", strerror(ret));
		return -1;
	}
	pthread_join(t, NULL);
	return a.ret;
}

int main(int argc, char **argv)
{
	static struct config cfg;
	static uint8_t secret[CLUSTER_SECRET_MAX_BYTES];
	struct node_info holder = { 0 };
	struct cluster_link link = { .fd = -1 };
	char advertise[128];
	ssize_t secret_len = 0;
	bool check_only = false;
	sigset_t mask;
	int nworkers, ret, lvl;

	ret = config_from_args(&cfg, argc, argv, &check_only, stdout, stderr);
	if (ret == 1)
		return 0; /* --help */
	if (ret < 0)
		return 2;
	lvl = log_level_parse(cfg.log_level);
	if (lvl < 0) {
		fprintf(stderr, "ringchatd: config: key 'log_level': bad value '%s'\n",
			cfg.log_level);
		return 2;
	}
	if (cfg.cluster_route == CLUSTER_ROUTE_UDP &&
	    (secret_len = cluster_secret_load(&cfg, secret, sizeof(secret))) < 0)
		return 2;
	if (check_only) {
		printf("configuration OK\n");
		return 0;
	}
	log_min_level = (enum log_level)lvl;

	/* Signals are taken by the ring's signalfd; block them in every
	 * thread (threads inherit this mask). SIGPIPE: sends use
	 * MSG_NOSIGNAL, but libraries' sockets may not. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* Frames are malloc'd on one thread and freed on another; without
	 * this glibc gives memory back to the kernel (madvise) and faults it
	 * in again many times a second under load, as profiles showed. */
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	mallopt(M_TOP_PAD, 16 << 20);

	nworkers = cfg.workers > 0 ? cfg.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (nworkers < 1)
		nworkers = 1;
	if (worker_pool_init(&pool, &cfg, nworkers, &dispatch_worker_ops)) {
		log_error("cannot allocate %d workers for %d connections", nworkers,
			  cfg.max_connections);
		return 1;
	}
	if (dispatch_start(&cfg, nworkers, (uint32_t)cfg.max_connections, worker_post,
			   wake_worker)) {
		log_error("start-up failed");
		worker_pool_destroy(&pool);
		return 1;
	}
	if (cfg.cluster_route == CLUSTER_ROUTE_UDP) {
		char bound[64];

		link.fd = sock_bind_udp(cfg.link_listen, bound, sizeof(bound));
		if (link.fd < 0) {
			log_error("cannot bind the node link to %s: %s", cfg.link_listen,
				  strerror(-link.fd));
			dispatch_stop();
			worker_pool_destroy(&pool);
			return 1;
		}
		log_info("link listening on %s", bound);
		snprintf(advertise, sizeof(advertise), "%s",
			 cfg.link_advertise[0] ? cfg.link_advertise : bound);
		/* the default link address suits nodes of one machine; clients
		 * served from a real interface suggest nodes on several */
		if (!strncmp(advertise, "127.", 4) && strncmp(cfg.listen, "127.", 4))
			log_warn("the node link advertises %s, a loopback address, while clients "
				 "connect on %s: nodes on other hosts cannot reach this one; "
				 "set link_listen (or link_advertise)",
				 advertise, cfg.listen);
		link.advertise = advertise;
		link.secret = secret;
		link.secret_len = (size_t)secret_len;
	}
	ret = cluster_start(&cfg, nworkers, cfg.listen, cfg.admin_listen,
			    cfg.cluster_route == CLUSTER_ROUTE_UDP ? &link : NULL, wake_worker,
			    &dispatch_cluster_hooks, &holder);
	if (ret == -EADDRINUSE) {
		char who[512];

		membership_format_holder(who, sizeof(who), &holder, cfg.node_ttl_ms);
		fprintf(stderr, "ringchatd: config: key 'node_id': %s\n", who);
		dispatch_stop();
		worker_pool_destroy(&pool);
		return 2;
	}
	if (ret) {
		log_error("cannot join the cluster: %s", strerror(-ret));
		dispatch_stop();
		worker_pool_destroy(&pool);
		return 1;
	}
	if (worker_pool_start(&pool)) {
		worker_pool_stop(&pool);
		cluster_stop();
		dispatch_stop();
		worker_pool_destroy(&pool);
		return 1;
	}
	log_info("ringchatd starting: node_id=%d workers=%d durability=%s", cfg.node_id,
		 nworkers, cfg.durability == DURABILITY_RELAY ? "relay" : "stored");

	ret = run_io_thread(&cfg, &pool);

	worker_pool_stop(&pool);
	cluster_stop();
	dispatch_stop();
	counters_dump(stderr);
	worker_pool_destroy(&pool);
	log_info("ringchatd stopped");
	return ret ? 1 : 0;
}
