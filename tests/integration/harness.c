/*
 * harness.c - start, watch and stop real ringchatd processes for the
 * integration tests (see harness.h).
 *
 * Life of a node:
 *
 *   node_start ──fork/exec──► child (stdout+stderr → pipe)
 *       │ main thread reads the pipe, copies it into the log file and
 *       │ parses lines until "listening on 127.0.0.1:PORT"
 *       ▼
 *   drain thread: pipe → log file until EOF (the node exited), and notes
 *       the admin listener's port when its line shows up
 *       │
 *   node_stop / node_kill: signal, reap, join the drain thread
 *       │
 *   harness_done: kill leftovers, print logs when a test failed
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NODE_MAX_ARGS 64
#define NODE_LINE_MAX 1024
/* Bytes of log node_log_contains looks at; test logs are far smaller. */
#define NODE_LOG_SCAN_MAX (64u << 20)

struct node {
	struct node *next;
	pid_t pid;
	bool running;
	uint16_t port;
	uint16_t link_port; /* the node link (cluster_route udp), 0 = none */
	_Atomic uint16_t admin_port;
	int pipe_fd; /* read end of the node's stdout+stderr */
	int log_fd;  /* the log file, append-only */
	char log_path[256];
	pthread_t drain;
	bool drain_started;
	char line[NODE_LINE_MAX];
	size_t line_len;
};

static struct node *harness_nodes;
static unsigned harness_node_seq;

int64_t tc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tc_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static const char *harness_binary(void)
{
	const char *bin = getenv("RINGCHATD");

	return bin && *bin ? bin : NULL;
}

static void harness_kill_all(void)
{
	struct node *n;

	for (n = harness_nodes; n; n = n->next)
		if (n->running)
			kill(n->pid, SIGKILL);
}

void harness_init(void)
{
	if (!harness_binary()) {
		fprintf(stderr, "RINGCHATD is not set: skipping\n");
		exit(77);
	}
	signal(SIGPIPE, SIG_IGN);
	atexit(harness_kill_all);
}

/* Status as the header describes it: exit code or 128 + signal. */
static int harness_status(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return -1;
}

/* Splits a formatted argument string on blanks into argv[*argc..]. */
static int harness_split_args(char *s, char **argv, int *argc, int max)
{
	char *save = NULL, *tok;

	for (tok = strtok_r(s, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (*argc >= max - 1)
			return -E2BIG;
		argv[(*argc)++] = tok;
	}
	argv[*argc] = NULL;
	return 0;
}

/*
 * Forks and execs argv with stdout+stderr into a new pipe whose read end
 * goes to *pipe_fd, or into our own stderr when pipe_fd is NULL. Returns
 * the pid or -errno. Between fork and exec the child only makes
 * async-signal-safe calls (drain threads may be running).
 */
static pid_t harness_spawn(char **argv, int *pipe_fd)
{
	pid_t parent = getpid(), pid;
	int p[2] = {-1, 2}, devnull;

	if (pipe_fd && pipe2(p, O_CLOEXEC) == -1)
		return -errno;
	pid = fork();
	if (pid == -1) {
		int err = -errno;

		if (pipe_fd) {
			close(p[0]);
			close(p[1]);
		}
		return err;
	}
	if (pid == 0) {
		/* The node must not outlive a crashed test. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	if (pipe_fd) {
		close(p[1]);
		*pipe_fd = p[0];
	}
	return pid;
}

static void node_parse_line(struct node *n, const char *line)
{
	const char *p = strstr(line, "listening on "), *colon;
	long port;

	if (!p)
		return;
	p += strlen("listening on ");
	/* host:port, the port after the last colon of the token. */
	colon = NULL;
	for (; *p && *p != ' ' && *p != '\n'; p++)
		if (*p == ':')
			colon = p;
	if (!colon)
		return;
	port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535)
		return;
	if (strstr(line, "admin") || strstr(line, "metrics"))
		atomic_store(&n->admin_port, (uint16_t)port);
	else if (strstr(line, "link listening on"))
		n->link_port = (uint16_t)port;
	else if (n->port == 0)
		n->port = (uint16_t)port;
}

/* Copies output into the log and feeds complete lines to the parser. */
static void node_consume(struct node *n, const char *buf, size_t len)
{
	size_t i;
	ssize_t w;
	const char *p = buf;
	size_t left = len;

	while (left > 0) {
		w = write(n->log_fd, p, left);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		p += w;
		left -= (size_t)w;
	}
	for (i = 0; i < len; i++) {
		if (buf[i] == '\n') {
			n->line[n->line_len] = '\0';
			node_parse_line(n, n->line);
			n->line_len = 0;
		} else if (n->line_len < sizeof(n->line) - 1) {
			n->line[n->line_len++] = buf[i];
		}
	}
}

static void *node_drain_main(void *arg)
{
	struct node *n = arg;
	char buf[8192];
	ssize_t r;

	for (;;) {
		r = read(n->pipe_fd, buf, sizeof(buf));
		if (r > 0) {
			node_consume(n, buf, (size_t)r);
			continue;
		}
		if (r == -1 && errno == EINTR)
			continue;
		break;
	}
	return NULL;
}

static int node_reap(struct node *n, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;
	int wstatus, status = -1;
	pid_t r;

	for (;;) {
		r = waitpid(n->pid, &wstatus, timeout_ms > 0 ? WNOHANG : 0);
		if (r == n->pid) {
			status = harness_status(wstatus);
			break;
		}
		if (r == -1 && errno != EINTR)
			break;
		if (r == 0 && tc_now_ms() >= deadline) {
			fprintf(stderr, "node %d: no exit %d ms after SIGTERM, killing it\n",
				(int)n->pid, timeout_ms);
			kill(n->pid, SIGKILL);
			waitpid(n->pid, &wstatus, 0);
			status = -1;
			break;
		}
		if (r == 0)
			tc_sleep_ms(10);
	}
	n->running = false;
	if (n->drain_started) {
		pthread_join(n->drain, NULL);
		n->drain_started = false;
	}
	close(n->pipe_fd);
	n->pipe_fd = -1;
	return status;
}

struct node *node_start(const char *extra_args_fmt, ...)
{
	char *argv[NODE_MAX_ARGS], *extra = NULL;
	const char *dir = getenv("RINGCHAT_TEST_LOGDIR");
	const char *mysql = getenv("RINGCHAT_MYSQL_SOCKET");
	const char *redis = getenv("RINGCHAT_REDIS_SOCKET");
	const char *wrapper = getenv("RINGCHAT_NODE_WRAPPER");
	char *wrap = NULL;
	int argc = 0, err;
	int64_t deadline;
	struct node *n;
	va_list ap;

	if (!harness_binary()) {
		fprintf(stderr, "RINGCHATD is not set: skipping\n");
		exit(77);
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->pipe_fd = -1;

	/* a wrapper (valgrind, strace, ...) goes first, split like extra */
	if (wrapper && *wrapper) {
		wrap = strdup(wrapper);
		if (!wrap || harness_split_args(wrap, argv, &argc, NODE_MAX_ARGS / 2)) {
			fprintf(stderr, "node_start: RINGCHAT_NODE_WRAPPER: too many words\n");
			goto out_free_wrap;
		}
		/* exec without a PATH search (see harness_spawn) */
		if (argc && argv[0][0] != '/') {
			fprintf(stderr, "node_start: RINGCHAT_NODE_WRAPPER must start with an "
					"absolute path: %s\n", wrapper);
			goto out_free_wrap;
		}
	}
	argv[argc++] = (char *)harness_binary();
	argv[argc++] = "--listen";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--admin-listen";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--workers";
	argv[argc++] = "2";
	if (mysql && *mysql) {
		argv[argc++] = "--mysql-socket";
		argv[argc++] = (char *)mysql;
	}
	if (redis && *redis) {
		argv[argc++] = "--redis-socket";
		argv[argc++] = (char *)redis;
	}
	argv[argc++] = "--hash-cost";
	argv[argc++] = "1";
	/* a single node unless the test makes a cluster (later flags win) */
	argv[argc++] = "--cluster-route";
	argv[argc++] = "off";
	argv[argc] = NULL;
	if (extra_args_fmt && *extra_args_fmt) {
		va_start(ap, extra_args_fmt);
		err = vasprintf(&extra, extra_args_fmt, ap);
		va_end(ap);
		if (err < 0)
			goto out_free_wrap;
		if (harness_split_args(extra, argv, &argc, NODE_MAX_ARGS)) {
			fprintf(stderr, "node_start: too many arguments\n");
			goto out_free_extra;
		}
	}

	snprintf(n->log_path, sizeof(n->log_path), "%s/ringchat-itest-%d-%u.log",
		 dir && *dir ? dir : "/tmp", (int)getpid(), ++harness_node_seq);
	n->log_fd = open(n->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (n->log_fd == -1) {
		fprintf(stderr, "node_start: %s: %s\n", n->log_path, strerror(errno));
		goto out_free_extra;
	}
	{
		/* The command line opens the log: a failure shows what ran. */
		char cmdline[2048];
		size_t off = 0;

		for (int i = 0; i < argc && off < sizeof(cmdline) - 1; i++)
			off += (size_t)snprintf(cmdline + off, sizeof(cmdline) - off, "%s%s",
						i ? " " : "$ ", argv[i]);
		if (off > sizeof(cmdline) - 2)
			off = sizeof(cmdline) - 2;
		cmdline[off++] = '\n';
		node_consume(n, cmdline, off);
	}

	n->pid = harness_spawn(argv, &n->pipe_fd);
	if (n->pid < 0) {
		fprintf(stderr, "node_start: spawn %s: %s\n", argv[0], strerror(-n->pid));
		goto out_close_log;
	}
	n->running = true;
	n->next = harness_nodes;
	harness_nodes = n;

	deadline = tc_now_ms() + NODE_START_TIMEOUT_MS;
	while (n->port == 0) {
		struct pollfd p = {.fd = n->pipe_fd, .events = POLLIN};
		int64_t left = deadline - tc_now_ms();
		char buf[4096];
		ssize_t r;

		if (left <= 0) {
			fprintf(stderr, "node %d: no \"listening on\" line in %d ms\n", (int)n->pid,
				NODE_START_TIMEOUT_MS);
			node_kill(n);
			goto out_failed;
		}
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		r = read(n->pipe_fd, buf, sizeof(buf));
		if (r > 0) {
			node_consume(n, buf, (size_t)r);
			continue;
		}
		if (r == -1 && errno == EINTR)
			continue;
		fprintf(stderr, "node %d: exited during start-up, status %d\n", (int)n->pid,
			node_reap(n, 0));
		goto out_failed;
	}
	if (pthread_create(&n->drain, NULL, node_drain_main, n) != 0) {
		fprintf(stderr, "node_start: cannot start the log thread\n");
		node_kill(n);
		goto out_failed;
	}
	n->drain_started = true;
	free(extra);
	free(wrap);
	return n;

out_failed:
	/* The node stays listed (its log is printed by harness_done). */
	node_dump_log(n, stderr, 80);
	free(extra);
	free(wrap);
	return NULL;
out_close_log:
	close(n->log_fd);
	unlink(n->log_path);
out_free_extra:
	free(extra);
out_free_wrap:
	free(wrap);
	free(n);
	return NULL;
}

uint16_t node_link_port(const struct node *n)
{
	return n->link_port;
}

uint16_t node_port(const struct node *n)
{
	return n->port;
}

pid_t node_pid(const struct node *n)
{
	return n->pid;
}

const char *node_log_path(const struct node *n)
{
	return n->log_path;
}

uint16_t node_admin_port(struct node *n)
{
	int64_t deadline = tc_now_ms() + 2000;
	uint16_t port;

	while ((port = atomic_load(&n->admin_port)) == 0 && tc_now_ms() < deadline)
		tc_sleep_ms(10);
	return port;
}

int node_stop(struct node *n)
{
	int status;

	if (!n->running)
		return -1;
	kill(n->pid, SIGTERM);
	status = node_reap(n, NODE_STOP_TIMEOUT_MS);
	if (status != 0) {
		fprintf(stderr, "node %d: stopped with status %d\n", (int)n->pid, status);
		node_dump_log(n, stderr, 40);
	}
	return status;
}

int node_kill(struct node *n)
{
	if (!n->running)
		return -1;
	kill(n->pid, SIGKILL);
	return node_reap(n, 0);
}

/* Reads the whole log (bounded) into a malloc'd NUL-terminated buffer. */
static char *node_read_log(const struct node *n, size_t *len)
{
	int fd = open(n->log_path, O_RDONLY | O_CLOEXEC);
	size_t cap = 8192, used = 0;
	char *buf = NULL, *nb;
	ssize_t r;

	if (fd == -1)
		return NULL;
	for (;;) {
		if (!buf || used + 1 >= cap) {
			if (buf)
				cap *= 2;
			if (cap > NODE_LOG_SCAN_MAX)
				break;
			nb = realloc(buf, cap);
			if (!nb)
				break;
			buf = nb;
		}
		r = read(fd, buf + used, cap - used - 1);
		if (r > 0) {
			used += (size_t)r;
			continue;
		}
		if (r == -1 && errno == EINTR)
			continue;
		break;
	}
	close(fd);
	if (buf)
		buf[used] = '\0';
	*len = used;
	return buf;
}

bool node_log_contains(struct node *n, const char *text)
{
	size_t len;
	char *log = node_read_log(n, &len);
	bool found;

	if (!log)
		return false;
	found = memmem(log, len, text, strlen(text)) != NULL;
	free(log);
	return found;
}

bool node_log_wait(struct node *n, const char *text, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;

	for (;;) {
		if (node_log_contains(n, text))
			return true;
		if (tc_now_ms() >= deadline)
			return false;
		tc_sleep_ms(20);
	}
}

void node_dump_log(struct node *n, FILE *out, int max_lines)
{
	size_t len, i;
	char *log = node_read_log(n, &len);
	int lines = 0;

	fprintf(out, "---- log of node %d (%s) ----\n", (int)n->pid, n->log_path);
	if (!log) {
		fprintf(out, "(unreadable)\n");
		return;
	}
	/* Walk back max_lines newlines (the last one ends the last line). */
	i = len;
	while (i > 0) {
		if (log[i - 1] == '\n' && i != len && ++lines >= max_lines)
			break;
		i--;
	}
	fwrite(log + i, 1, len - i, out);
	if (len && log[len - 1] != '\n')
		fputc('\n', out);
	fprintf(out, "---- end of log ----\n");
	free(log);
}

int harness_done(int failures)
{
	struct node *n, *next;
	bool keep = failures > 0 || getenv("RINGCHAT_KEEP_LOGS");

	for (n = harness_nodes; n; n = n->next)
		if (n->running)
			node_kill(n);
	for (n = harness_nodes; n; n = next) {
		next = n->next;
		if (failures > 0)
			node_dump_log(n, stderr, 60);
		close(n->log_fd);
		if (!keep)
			unlink(n->log_path);
		free(n);
	}
	harness_nodes = NULL;
	return failures > 0 ? 1 : 0;
}

int node_run(char *out, size_t out_size, int timeout_ms, const char *args_fmt, ...)
{
	char *argv[NODE_MAX_ARGS], *args = NULL;
	int64_t deadline = tc_now_ms() + timeout_ms;
	size_t used = 0;
	int argc = 0, fd, wstatus, status;
	pid_t pid;
	va_list ap;

	if (out_size)
		out[0] = '\0';
	if (!harness_binary())
		exit(77);
	va_start(ap, args_fmt);
	status = vasprintf(&args, args_fmt, ap);
	va_end(ap);
	if (status < 0)
		return -1;
	argv[argc++] = (char *)harness_binary();
	if (harness_split_args(args, argv, &argc, NODE_MAX_ARGS)) {
		free(args);
		return -1;
	}
	pid = harness_spawn(argv, &fd);
	free(args);
	if (pid < 0)
		return -1;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - tc_now_ms();
		char sink[4096];
		ssize_t r;

		if (left <= 0) {
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		/* Past out_size the output is read and dropped. */
		if (used + 1 < out_size)
			r = read(fd, out + used, out_size - used - 1);
		else
			r = read(fd, sink, sizeof(sink));
		if (r > 0) {
			if (used + 1 < out_size)
				used += (size_t)r;
			continue;
		}
		if (r == -1 && errno == EINTR)
			continue;
		break;
	}
	if (out_size)
		out[used] = '\0';
	close(fd);
	while (waitpid(pid, &wstatus, 0) == -1)
		if (errno != EINTR)
			return -1;
	return harness_status(wstatus);
}

struct rc_client *tc_connect(struct node *n)
{
	struct rc_client *c = rc_connect("127.0.0.1", n->port, 5000);

	if (!c)
		fail_msg("connect to 127.0.0.1:%u: %s", n->port, strerror(errno));
	return c;
}

struct rc_client *tc_connect_from(struct node *n, const char *src_ip)
{
	struct rc_client *c = tc_connect(n);
	struct sockaddr_in src = {.sin_family = AF_INET};
	struct sockaddr_in dst = {.sin_family = AF_INET};
	int fd, one = 1;

	if (inet_pton(AF_INET, src_ip, &src.sin_addr) != 1)
		fail_msg("tc_connect_from: %s is not an IPv4 address", src_ip);
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	dst.sin_port = htons(n->port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fail_msg("socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)))
		fail_msg("connect from %s: %s", src_ip, strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1 ||
	    dup2(fd, rc_fd(c)) != rc_fd(c))
		fail_msg("tc_connect_from: %s", strerror(errno));
	close(fd);
	return c;
}

int tc_redis_cli(char *out, size_t out_size, const char *args_fmt, ...)
{
	const char *sock = getenv("RINGCHAT_REDIS_SOCKET");
	char args[1024], cmd[1400];
	size_t used = 0;
	va_list ap;
	FILE *p;
	int status;

	va_start(ap, args_fmt);
	vsnprintf(args, sizeof(args), args_fmt, ap);
	va_end(ap);
	if (sock && *sock)
		snprintf(cmd, sizeof(cmd), "redis-cli -s '%s' %s 2>&1", sock, args);
	else
		snprintf(cmd, sizeof(cmd), "redis-cli %s 2>&1", args);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (out && out_size) {
		used = fread(out, 1, out_size - 1, p);
		out[used] = '\0';
		while (used && (out[used - 1] == '\n' || out[used - 1] == '\r'))
			out[--used] = '\0';
	}
	status = pclose(p);
	return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

cJSON *tc_call(struct rc_client *c, uint16_t cmd, const char *json, uint32_t *code)
{
	struct rc_frame f;
	const cJSON *err;
	cJSON *body;
	int rc;

	rc = rc_call(c, cmd, json, &f, TC_CALL_TIMEOUT_MS);
	if (rc)
		fail_msg("%s (%u) %s: no response: %s", rc_cmd_name(cmd) ? rc_cmd_name(cmd) : "?",
			 cmd, json ? json : "", strerror(-rc));
	if (!f.json || !cJSON_IsObject(f.json))
		fail_msg("%s: response payload is not a JSON object: %s",
			 rc_cmd_name(cmd) ? rc_cmd_name(cmd) : "?", f.payload);
	if (f.hdr.code != ST_OK) {
		err = cJSON_GetObjectItemCaseSensitive(f.json, "error");
		if (!cJSON_IsString(err) || !err->valuestring[0])
			fail_msg("%s: code %u without an \"error\" string: %s",
				 rc_cmd_name(cmd) ? rc_cmd_name(cmd) : "?", f.hdr.code, f.payload);
	}
	*code = f.hdr.code;
	body = f.json;
	f.json = NULL;
	rc_frame_free(&f);
	return body;
}

uint32_t tc_call_code(struct rc_client *c, uint16_t cmd, const char *json)
{
	uint32_t code;

	cJSON_Delete(tc_call(c, cmd, json, &code));
	return code;
}

/* tc_call_ok and tc_call_expect: one request, fail unless its code is want. */
static cJSON *call_expect_v(struct rc_client *c, uint16_t cmd, uint32_t want, const char *fmt,
			    va_list ap)
{
	char *json = NULL;
	uint32_t code;
	cJSON *body;

	if (fmt && vasprintf(&json, fmt, ap) < 0)
		fail_msg("out of memory");
	body = tc_call(c, cmd, json, &code);
	if (code != want) {
		char *text = cJSON_PrintUnformatted(body);

		fail_msg("%s %s: expected %u %s, got %u %s: %s",
			 rc_cmd_name(cmd) ? rc_cmd_name(cmd) : "?", json ? json : "{}", want,
			 rc_status_name(want), code, rc_status_name(code), text ? text : "?");
	}
	free(json);
	return body;
}

cJSON *tc_call_ok(struct rc_client *c, uint16_t cmd, const char *json_fmt, ...)
{
	va_list ap;
	cJSON *body;

	va_start(ap, json_fmt);
	body = call_expect_v(c, cmd, ST_OK, json_fmt, ap);
	va_end(ap);
	return body;
}

void tc_unique_name(const char *prefix, char name[TC_NAME_MAX])
{
	static unsigned counter;
	static char tag[16];

	/* Time and pid: names stay unique across runs on one database. */
	if (!tag[0])
		snprintf(tag, sizeof(tag), "%06lx%05x", (unsigned long)time(NULL) & 0xffffffu,
			 (unsigned)getpid() & 0xfffffu);
	snprintf(name, TC_NAME_MAX, "%.12s_%s_%u", prefix, tag, ++counter);
}

int64_t tc_json_int(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsNumber(v))
		fail_msg("field \"%s\" missing or not a number", key);
	return (int64_t)v->valuedouble;
}

struct rc_client *tc_signup_login_as(struct node *n, const char *prefix, char name[TC_NAME_MAX],
				     int64_t *user_id)
{
	struct rc_client *c = tc_connect(n);
	int64_t id_signup, id_login;
	cJSON *r;

	tc_unique_name(prefix, name);
	r = tc_call_ok(c, CMD_SIGNUP, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		       TC_PASSWORD);
	id_signup = tc_json_int(r, "user_id");
	cJSON_Delete(r);
	r = tc_call_ok(c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		       TC_PASSWORD);
	id_login = tc_json_int(r, "user_id");
	cJSON_Delete(r);
	assert_true(id_signup > 0);
	assert_int_equal(id_signup, id_login);
	if (user_id)
		*user_id = id_login;
	return c;
}

struct rc_client *tc_signup_login(struct node *n, const char *prefix, int64_t *user_id)
{
	char name[TC_NAME_MAX];

	return tc_signup_login_as(n, prefix, name, user_id);
}

cJSON *tc_expect_push(struct rc_client *c, uint16_t cmd, int timeout_ms)
{
	struct rc_frame f;
	cJSON *body;
	int rc;

	rc = rc_wait_push(c, cmd, &f, timeout_ms);
	if (rc)
		fail_msg("expected push %s (%u) within %d ms: %s",
			 rc_cmd_name(cmd) ? rc_cmd_name(cmd) : "?", cmd, timeout_ms, strerror(-rc));
	if (!f.json)
		fail_msg("push %u: payload is not JSON: %s", cmd, f.payload);
	body = f.json;
	f.json = NULL;
	rc_frame_free(&f);
	return body;
}

void tc_expect_no_push(struct rc_client *c, uint16_t cmd, int wait_ms)
{
	struct rc_frame f;
	int rc;

	rc = rc_wait_push(c, cmd, &f, wait_ms);
	if (rc == 0)
		fail_msg("unexpected push %s (%u): %s", rc_cmd_name(cmd) ? rc_cmd_name(cmd) : "?",
			 cmd, f.payload);
	if (rc != -ETIMEDOUT)
		fail_msg("connection lost while checking for push %u: %s", cmd, strerror(-rc));
}

static int services_run(const char *verb, const char *name)
{
	const char *src = getenv("RINGCHAT_SRCDIR");
	char script[512], *argv[5];
	int status;
	pid_t pid;

	if (!src || !*src) {
		fprintf(stderr, "services: RINGCHAT_SRCDIR is not set\n");
		return -1;
	}
	snprintf(script, sizeof(script), "%s/scripts/services.sh", src);
	/* Through bash, as scripts/test.sh does: no need for the exec bit. */
	argv[0] = "/bin/bash";
	argv[1] = script;
	argv[2] = (char *)verb;
	argv[3] = (char *)name;
	argv[4] = NULL;
	/*
	 * No pipe: daemons the script starts would inherit it and keep it
	 * open, so its end would never be seen. Output goes to our stderr.
	 */
	pid = harness_spawn(argv, NULL);
	if (pid < 0)
		return -1;
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -1;
	status = harness_status(status);
	if (status != 0)
		fprintf(stderr, "services.sh %s %s: status %d\n", verb, name, status);
	return status;
}

int services_stop(const char *name)
{
	return services_run("stop", name);
}

int services_start(const char *name)
{
	return services_run("start", name);
}

cJSON *tc_call_expect(struct rc_client *c, uint16_t cmd, uint32_t want, const char *fmt, ...)
{
	va_list ap;
	cJSON *body;

	va_start(ap, fmt);
	body = call_expect_v(c, cmd, want, fmt, ap);
	va_end(ap);
	return body;
}

void tc_send_many(struct rc_client *c, int64_t to, bool group, int n, const char *prefix,
		  int64_t *ids)
{
	uint32_t base = rc_next_seq(c) + 1000000u;
	int64_t deadline = tc_now_ms() + TC_SEND_MS;
	int sent = 0, got = 0;
	char json[256];

	while (got < n) {
		while (sent < n && sent - got < TC_SEND_WINDOW) {
			snprintf(json, sizeof(json), "{\"%s\":%lld,\"type\":0,\"text\":\"%s%d\"}",
				 group ? "group_id" : "to", (long long)to, prefix, sent);
			assert_int_equal(rc_send(c, group ? CMD_GROUP_SEND : CMD_MSG_SEND,
						 base + (uint32_t)sent, json),
					 0);
			sent++;
		}
		struct rc_frame f;
		int rc = rc_recv(c, &f, (int)(deadline - tc_now_ms()));

		if (rc)
			fail_msg("response %d of %d did not come: %s", got, n, strerror(-rc));
		if (f.hdr.seq == 0) {
			rc_frame_free(&f);
			continue;
		}
		if (f.hdr.seq != base + (uint32_t)got)
			fail_msg("response with seq %u came where %u was due", f.hdr.seq,
				 base + (uint32_t)got);
		if (f.hdr.code != ST_OK)
			fail_msg("send %d answered %u: %s", got, f.hdr.code, f.payload);
		if (ids)
			ids[got] = tc_json_int(f.json, "msg_id");
		rc_frame_free(&f);
		got++;
	}
}

/*
 * Sends request (verbatim) to the admin port and reads until the node
 * closes. Returns the malloc'd NUL-terminated response; fails the test on
 * any socket error or timeout.
 */
char *tc_admin_http(struct node *n, const char *request)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int64_t deadline = tc_now_ms() + TC_ADMIN_TIMEOUT_MS;
	size_t used = 0, left = strlen(request);
	const char *p = request;
	char *buf;
	int fd;

	sa.sin_port = htons(node_admin_port(n));
	if (sa.sin_port == 0)
		fail_msg("the node never logged its admin listener");
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		fail_msg("connect to the admin port %u: %s", ntohs(sa.sin_port), strerror(errno));
	while (left > 0) {
		ssize_t w = send(fd, p, left, MSG_NOSIGNAL);

		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			fail_msg("send to the admin port: %s", strerror(errno));
		p += w;
		left -= (size_t)w;
	}
	buf = malloc(TC_ADMIN_RESP_MAX);
	assert_non_null(buf);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int64_t wait = deadline - tc_now_ms();
		ssize_t r;

		if (wait <= 0)
			fail_msg("no complete response in %d ms (got %zu bytes)",
				 TC_ADMIN_TIMEOUT_MS, used);
		if (poll(&pfd, 1, (int)wait) <= 0)
			continue;
		r = recv(fd, buf + used, TC_ADMIN_RESP_MAX - 1 - used, 0);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			fail_msg("recv from the admin port: %s", strerror(errno));
		if (r == 0)
			break;
		used += (size_t)r;
		if (used >= TC_ADMIN_RESP_MAX - 1)
			fail_msg("response larger than %u bytes", TC_ADMIN_RESP_MAX);
	}
	close(fd);
	buf[used] = '\0';
	return buf;
}

int64_t tc_metric(struct node *n, const char *name)
{
	char *resp = tc_admin_http(n, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
	size_t len = strlen(name);
	int64_t v = -1;

	for (const char *p = resp; (p = strstr(p, name)); p += len) {
		if ((p == resp || p[-1] == '\n') && p[len] == ' ') {
			v = strtoll(p + len + 1, NULL, 10);
			break;
		}
	}
	free(resp);
	return v;
}
