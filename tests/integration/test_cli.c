/*
 * test_cli.c - ringchat-cli against a real ringchatd, driven the way a
 * person or a script drives it: commands through stdin with --exec, the
 * printed text read back; and once in its interactive mode inside tmux,
 * where a push must not disturb the line being typed.
 *
 * The cli binary sits next to $RINGCHATD in the build tree.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLI_OUT_MAX 65536
#define CLI_ARGS_MAX 32
/* One cli run: a few commands, a /wait or two. */
#define CLI_RUN_TIMEOUT_MS 30000

struct cli_state {
	struct node *node;
};

static char cli_bin[4096];

/* A running ringchat-cli: stdout and stderr together in out. */
struct cli_proc {
	pid_t pid;
	int out_fd;
	size_t len;
	char out[CLI_OUT_MAX];
};

static void cli_find_binary(void)
{
	char dir[sizeof(cli_bin)];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", getenv("RINGCHATD"));
	snprintf(cli_bin, sizeof(cli_bin), "%s/ringchat-cli", dirname(dir));
	if (stat(cli_bin, &st) == -1) {
		/* meson test builds only a test's own dependencies. */
		fprintf(stderr, "%s: %s: skipping (build it first: ninja src/ringchat-cli)\n",
			cli_bin, strerror(errno));
		exit(77);
	}
}

/*
 * Starts the cli with "--port P" plus args (split on blanks) and writes
 * input to its stdin, which is then closed (EOF ends an --exec - script).
 */
static void cliproc_start(struct cli_proc *p, struct node *n, const char *args, const char *input)
{
	char *argv[CLI_ARGS_MAX], argbuf[1024], port[16], *save = NULL, *tok;
	int in[2], out[2], argc = 0;
	size_t left = strlen(input);
	pid_t parent = getpid();

	memset(p, 0, sizeof(*p));
	snprintf(port, sizeof(port), "%u", node_port(n));
	snprintf(argbuf, sizeof(argbuf), "%s", args);
	argv[argc++] = cli_bin;
	argv[argc++] = "--port";
	argv[argc++] = port;
	for (tok = strtok_r(argbuf, " ", &save); tok && argc < CLI_ARGS_MAX - 1;
	     tok = strtok_r(NULL, " ", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	p->out_fd = out[0];
	/* Scripts here are far below a pipe's 64 KiB: one write, no deadlock. */
	while (left > 0) {
		ssize_t w = write(in[1], input, left);

		if (w == -1 && errno == EINTR)
			continue;
		assert_true(w > 0);
		input += w;
		left -= (size_t)w;
	}
	close(in[1]);
}

/* Reads output until text shows up (true), or EOF / timeout (false). */
static bool cliproc_read_until(struct cli_proc *p, const char *text, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;

	for (;;) {
		struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
		int64_t left = deadline - tc_now_ms();
		ssize_t r;

		p->out[p->len] = '\0';
		if (text && strstr(p->out, text))
			return true;
		if (left <= 0 || p->out_fd < 0)
			return false;
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		r = read(p->out_fd, p->out + p->len, sizeof(p->out) - 1 - p->len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			close(p->out_fd);
			p->out_fd = -1;
			p->out[p->len] = '\0';
			return text && strstr(p->out, text);
		}
		p->len += (size_t)r;
		if (p->len >= sizeof(p->out) - 1)
			fail_msg("cli printed more than %d bytes", CLI_OUT_MAX);
	}
}

/* Reads to EOF and reaps the cli; returns its exit status (-1: killed). */
static int cliproc_finish(struct cli_proc *p, int timeout_ms)
{
	int wstatus;

	cliproc_read_until(p, NULL, timeout_ms);
	if (p->out_fd >= 0) {
		fprintf(stderr, "cli still running after %d ms; output so far:\n%s\n", timeout_ms,
			p->out);
		kill(p->pid, SIGKILL);
		close(p->out_fd);
		p->out_fd = -1;
		waitpid(p->pid, &wstatus, 0);
		return -1;
	}
	while (waitpid(p->pid, &wstatus, 0) == -1)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

/* Runs one cli to completion; its output stays in p->out. */
static int cli_run(struct cli_proc *p, struct node *n, const char *args, const char *input)
{
	cliproc_start(p, n, args, input);
	return cliproc_finish(p, CLI_RUN_TIMEOUT_MS);
}

static void cli_expect(const struct cli_proc *p, const char *text)
{
	if (!strstr(p->out, text))
		fail_msg("cli output lacks \"%s\"; it was:\n%s", text, p->out);
}

static void cli_expect_not(const struct cli_proc *p, const char *text)
{
	if (strstr(p->out, text))
		fail_msg("cli output has \"%s\" but should not; it was:\n%s", text, p->out);
}

static void cli_expect_status(const struct cli_proc *p, int got, int want)
{
	if (got != want)
		fail_msg("cli exited %d, expected %d; output:\n%s", got, want, p->out);
}

/* Signs a user up through the library; the cli then logs in as it. */
static int64_t cli_make_user(struct node *n, char name[TC_NAME_MAX])
{
	struct rc_client *c = tc_connect(n);
	char json[128];
	cJSON *r;
	int64_t id;

	tc_unique_name("cli", name);
	snprintf(json, sizeof(json), "{\"username\":\"%s\",\"password\":\"%s\"}", name,
		 TC_PASSWORD);
	r = tc_call_ok(c, CMD_SIGNUP, "%s", json);
	id = tc_json_int(r, "user_id");
	cJSON_Delete(r);
	rc_close(c);
	return id;
}

static int cli_setup(void **state)
{
	struct cli_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	cli_find_binary();
	s->node = node_start(NULL);
	if (!s->node) {
		free(s);
		return -1;
	}
	*state = s;
	return 0;
}

static int cli_teardown(void **state)
{
	struct cli_state *s = *state;
	int status = s && s->node ? node_stop(s->node) : 0;

	free(s);
	/* a node that ends badly (a leak under ASan, a crash at stop) fails */
	return status == 0 ? 0 : -1;
}

static void test_cli_signup_login_ping(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *p = calloc(1, sizeof(*p));
	char name[TC_NAME_MAX], input[512], want[128];
	int st;

	assert_non_null(p);
	tc_unique_name("cli", name);
	snprintf(input, sizeof(input),
		 "# a comment, then a blank line\n\n/signup %s %s\n/login %s %s\n/ping\n", name,
		 TC_PASSWORD, name, TC_PASSWORD);
	st = cli_run(p, s->node, "--exec -", input);
	cli_expect_status(p, st, 0);
	snprintf(want, sizeof(want), "signed up %s: user_id ", name);
	cli_expect(p, want);
	snprintf(want, sizeof(want), "logged in as %s (user_id ", name);
	cli_expect(p, want);
	cli_expect(p, "pong: node time ");
	/* The comment is not a command: nothing complained about it. */
	cli_expect_not(p, "! ");
	free(p);
}

static void test_cli_json_lines(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *p = calloc(1, sizeof(*p));
	cJSON *line;
	int st;

	assert_non_null(p);
	st = cli_run(p, s->node, "--json --exec -", "/ping\n");
	cli_expect_status(p, st, 0);
	line = cJSON_Parse(p->out);
	if (!line)
		fail_msg("--json output is not one JSON object: %s", p->out);
	assert_string_equal(cJSON_GetObjectItem(line, "cmd")->valuestring, "PING");
	assert_string_equal(cJSON_GetObjectItem(line, "status")->valuestring, "OK");
	assert_true(
	    cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(line, "payload"), "time_ms")));
	cJSON_Delete(line);
	free(p);
}

/* Errors show the node's status and text, then what to do about it. */
static void test_cli_helpful_errors(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *p = calloc(1, sizeof(*p));
	struct rc_client *c = tc_connect(s->node);
	char a[TC_NAME_MAX], b[TC_NAME_MAX], input[512], want[256];
	const cJSON *err;
	uint32_t code;
	int64_t bid;
	cJSON *r;
	int st;

	assert_non_null(p);
	/* The node's own words for "not logged in", to find them in the output. */
	r = tc_call(c, CMD_FRIEND_LIST, NULL, &code);
	assert_int_equal(code, ST_NOT_LOGGED_IN);
	err = cJSON_GetObjectItem(r, "error");
	rc_close(c);

	st = cli_run(p, s->node, "--exec -", "/friends\n");
	cli_expect_status(p, st, 1);
	snprintf(want, sizeof(want), "! NOT_LOGGED_IN: %s\n", err->valuestring);
	cli_expect(p, want);
	cli_expect(p, "log in first: /login <user> <pass>");
	cJSON_Delete(r);

	/* Messaging a stranger: FORBIDDEN, and the way out. */
	cli_make_user(s->node, a);
	bid = cli_make_user(s->node, b);
	snprintf(input, sizeof(input), "/login %s %s\n/msg %lld hello?\n", a, TC_PASSWORD,
		 (long long)bid);
	st = cli_run(p, s->node, "--exec -", input);
	cli_expect_status(p, st, 1);
	cli_expect(p, "! FORBIDDEN: ");
	snprintf(want, sizeof(want), "you can only message friends: /add %lld first",
		 (long long)bid);
	cli_expect(p, want);

	/* A wrong password. */
	snprintf(input, sizeof(input), "/login %s wrong-password\n", a);
	st = cli_run(p, s->node, "--exec -", input);
	cli_expect_status(p, st, 1);
	cli_expect(p, "! AUTH_FAILED: ");
	cli_expect(p, "wrong username or password");
	free(p);
}

/* Bad lines: a usage line or a pointer to /help, and exit status 1. */
static void test_cli_bad_commands(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *p = calloc(1, sizeof(*p));
	int st;

	assert_non_null(p);
	st = cli_run(p, s->node, "--exec -", "/frobnicate now\n/ping\n");
	cli_expect_status(p, st, 1);
	cli_expect(p, "unknown command /frobnicate: /help lists the commands");
	/* The script went on after the bad line. */
	cli_expect(p, "pong: node time ");

	st = cli_run(p, s->node, "--exec -", "/msg abc\n");
	cli_expect_status(p, st, 1);
	cli_expect(p, "usage: /msg <user_id> <text>");

	st = cli_run(p, s->node, "--exec -", "/group frob 1\n");
	cli_expect_status(p, st, 1);
	cli_expect(p, "unknown /group subcommand 'frob'");

	st = cli_run(p, s->node, "--exec -", "hello without a slash\n");
	cli_expect_status(p, st, 1);
	cli_expect(p, "commands start with '/'");

	/* Every good line: exit 0. */
	st = cli_run(p, s->node, "--exec -", "/ping\n/help\n");
	cli_expect_status(p, st, 0);
	cli_expect(p, "automatically (MSG_ACK)");
	free(p);
}

/*
 * Two people: b waits in its own cli for a's friend request, accepts and
 * waits for a message; a sends the request, waits for the acceptance and
 * sends the message. Each side sees the other's pushes as they come.
 */
static void test_cli_befriend_and_message(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *pa = calloc(1, sizeof(*pa)), *pb = calloc(1, sizeof(*pb));
	char a[TC_NAME_MAX], b[TC_NAME_MAX], input[1024], want[256];
	int64_t aid, bid;
	int st;

	assert_non_null(pa);
	assert_non_null(pb);
	aid = cli_make_user(s->node, a);
	bid = cli_make_user(s->node, b);

	snprintf(input, sizeof(input),
		 "/login %s %s\n/wait 15000 1 request\n/accept %lld\n/wait 15000 2 msg\n"
		 "/friends\n",
		 b, TC_PASSWORD, (long long)aid);
	cliproc_start(pb, s->node, "--exec -", input);
	if (!cliproc_read_until(pb, "logged in as", 10000))
		fail_msg("b did not log in:\n%s", pb->out);

	snprintf(input, sizeof(input),
		 "/login %s %s\n/add %lld see you\n/wait 15000 1 accepted\n"
		 "/msg %lld hello from a\n/image %lld http://example.invalid/cat.png\n",
		 a, TC_PASSWORD, (long long)bid, (long long)bid, (long long)bid);
	st = cli_run(pa, s->node, "--exec -", input);
	cli_expect_status(pa, st, 0);
	snprintf(want, sizeof(want), "friend request sent to %lld", (long long)bid);
	cli_expect(pa, want);
	snprintf(want, sizeof(want), "* %s (%lld) accepted your friend request", b, (long long)bid);
	cli_expect(pa, want);
	cli_expect(pa, "sent #");

	st = cliproc_finish(pb, CLI_RUN_TIMEOUT_MS);
	cli_expect_status(pb, st, 0);
	snprintf(want, sizeof(want), "* friend request from %s (%lld) \"see you\": /accept %lld", a,
		 (long long)aid, (long long)aid);
	cli_expect(pb, want);
	snprintf(want, sizeof(want), "you and %s (%lld) are now friends", a, (long long)aid);
	cli_expect(pb, want);
	snprintf(want, sizeof(want), "%s (%lld): hello from a\n", a, (long long)aid);
	cli_expect(pb, want);
	cli_expect(pb, ": [image] http://example.invalid/cat.png\n");
	/* The friend table has a row for a. */
	snprintf(want, sizeof(want), "friends (1):");
	cli_expect(pb, want);
	cli_expect(pb, a);
	free(pa);
	free(pb);
}

/*
 * Auto-ack: a message shown once is not pushed again at the next login;
 * with --no-auto-ack it is (and /ack stops that).
 */
static void test_cli_auto_ack(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *p = calloc(1, sizeof(*p));
	char a[TC_NAME_MAX], b[TC_NAME_MAX], input[512];
	struct rc_client *ca = NULL, *cb = NULL;
	int64_t aid, bid, msg_id;
	cJSON *r;
	int st;

	assert_non_null(p);
	ca = tc_signup_login_as(s->node, "cliack", a, &aid);
	cb = tc_signup_login_as(s->node, "cliack", b, &bid);
	cJSON_Delete(tc_call_ok(ca, CMD_FRIEND_REQUEST, "{\"user_id\":%lld}", (long long)bid));
	cJSON_Delete(tc_call_ok(cb, CMD_FRIEND_ACCEPT, "{\"user_id\":%lld}", (long long)aid));
	rc_close(cb); /* b is offline: the message waits for its login */
	tc_sleep_ms(200);
	r = tc_call_ok(ca, CMD_MSG_SEND, "{\"to\":%lld,\"type\":0,\"text\":\"unread one\"}",
		       (long long)bid);
	msg_id = tc_json_int(r, "msg_id");
	cJSON_Delete(r);

	/* Not acked: shown, and shown again at the next login. */
	snprintf(input, sizeof(input), "/login %s %s\n/wait 10000 1 msg\n", b, TC_PASSWORD);
	st = cli_run(p, s->node, "--no-auto-ack --exec -", input);
	cli_expect_status(p, st, 0);
	cli_expect(p, ": unread one\n");
	st = cli_run(p, s->node, "--exec -", input);
	cli_expect_status(p, st, 0);
	cli_expect(p, ": unread one\n");

	/* That run acked it: the next login brings nothing. */
	snprintf(input, sizeof(input), "/login %s %s\n/wait 1500\n/ping\n", b, TC_PASSWORD);
	st = cli_run(p, s->node, "--exec -", input);
	cli_expect_status(p, st, 0);
	cli_expect_not(p, "unread one");

	/* /ack by hand. */
	r = tc_call_ok(ca, CMD_MSG_SEND, "{\"to\":%lld,\"type\":0,\"text\":\"second\"}",
		       (long long)bid);
	msg_id = tc_json_int(r, "msg_id");
	cJSON_Delete(r);
	snprintf(input, sizeof(input), "/login %s %s\n/wait 10000 1 msg\n/ack %lld\n", b,
		 TC_PASSWORD, (long long)msg_id);
	st = cli_run(p, s->node, "--no-auto-ack --exec -", input);
	cli_expect_status(p, st, 0);
	cli_expect(p, "acknowledged 1 message");
	snprintf(input, sizeof(input), "/login %s %s\n/wait 1500\n", b, TC_PASSWORD);
	st = cli_run(p, s->node, "--no-auto-ack --exec -", input);
	cli_expect_status(p, st, 0);
	cli_expect_not(p, "second");
	rc_close(ca);
	free(p);
}

/* /wait with a count fails when the pushes do not come. */
static void test_cli_wait_count_fails(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *p = calloc(1, sizeof(*p));
	int64_t t0;
	int st;

	assert_non_null(p);
	t0 = tc_now_ms();
	st = cli_run(p, s->node, "--exec -", "/wait 300 1 msg\n");
	cli_expect_status(p, st, 1);
	cli_expect(p, "0 of 1 PUSH_MSG push arrived");
	assert_true(tc_now_ms() - t0 >= 300);
	free(p);
}

/* Groups through the cli: create, members, send, history. */
static void test_cli_groups(void **state)
{
	struct cli_state *s = *state;
	struct cli_proc *p = calloc(1, sizeof(*p));
	char a[TC_NAME_MAX], input[1024], *at;
	long long gid;
	int st;

	assert_non_null(p);
	cli_make_user(s->node, a);
	snprintf(input, sizeof(input), "/login %s %s\n/group create cli test room\n", a,
		 TC_PASSWORD);
	st = cli_run(p, s->node, "--exec -", input);
	cli_expect_status(p, st, 0);
	at = strstr(p->out, "created group ");
	assert_non_null(at);
	gid = strtoll(at + strlen("created group "), NULL, 10);
	assert_true(gid > 0);
	snprintf(input, sizeof(input),
		 "/login %s %s\n/group list\n/group members %lld\n/group send %lld hi room\n"
		 "/group history %lld\n/group join %lld\n",
		 a, TC_PASSWORD, gid, gid, gid, gid);
	st = cli_run(p, s->node, "--exec -", input);
	/* Joining a group one is in is ALREADY_EXISTS: the last line fails. */
	cli_expect_status(p, st, 1);
	cli_expect(p, "cli test room");
	cli_expect(p, "(you)");
	cli_expect(p, "| you: hi room");
	{
		char want[128];

		snprintf(want, sizeof(want), "you are already a member of group %lld", gid);
		cli_expect(p, want);
	}
	free(p);
}

/* ---- interactive mode under tmux ---------------------------------------- */

static char tmux_socket[64];

static int tmux(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int tmux(const char *fmt, ...)
{
	char cmd[4096], args[3072];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "tmux -L %s %s", tmux_socket, args);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The visible screen of the session, lines joined with '\n'. */
static void tmux_screen(char *out, size_t n)
{
	char cmd[256];
	size_t used = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "tmux -L %s capture-pane -p -t clitest", tmux_socket);
	f = popen(cmd, "r");
	assert_non_null(f);
	used = fread(out, 1, n - 1, f);
	out[used] = '\0';
	pclose(f);
}

static bool tmux_wait_text(const char *text, char *screen, size_t n, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms;

	for (;;) {
		tmux_screen(screen, n);
		if (strstr(screen, text))
			return true;
		if (tc_now_ms() >= deadline)
			return false;
		tc_sleep_ms(50);
	}
}

/* The last line of the screen that is not blank. */
static void tmux_last_line(const char *screen, char *out, size_t n)
{
	const char *end = screen + strlen(screen), *start;

	while (end > screen && (end[-1] == '\n' || end[-1] == ' '))
		end--;
	start = end;
	while (start > screen && start[-1] != '\n')
		start--;
	snprintf(out, n, "%.*s", (int)(end - start), start);
}

static void test_cli_tty_push_keeps_partial_line(void **state)
{
	struct cli_state *s = *state;
	char a[TC_NAME_MAX], b[TC_NAME_MAX], screen[16384], last[512], want[512];
	struct rc_client *ca, *cb;
	int64_t aid, bid;
	cJSON *push;

	if (system("tmux -V >/dev/null 2>&1") != 0) {
		fprintf(stderr, "tmux is not installed: skipping the interactive test\n");
		skip();
	}
	snprintf(tmux_socket, sizeof(tmux_socket), "ringchat-cli-test-%d", (int)getpid());
	ca = tc_signup_login_as(s->node, "clitty", a, &aid);
	cb = tc_signup_login_as(s->node, "clitty", b, &bid);
	cJSON_Delete(tc_call_ok(ca, CMD_FRIEND_REQUEST, "{\"user_id\":%lld}", (long long)bid));
	cJSON_Delete(tc_call_ok(cb, CMD_FRIEND_ACCEPT, "{\"user_id\":%lld}", (long long)aid));
	rc_close(cb);

	assert_int_equal(tmux("new-session -d -s clitest -x 120 -y 30 '%s --port %u'", cli_bin,
			      node_port(s->node)),
			 0);
	if (!tmux_wait_text("ringchat>", screen, sizeof(screen), 10000)) {
		tmux("kill-server");
		fail_msg("no prompt in tmux:\n%s", screen);
	}
	tmux("send-keys -t clitest '/login %s %s' Enter", b, TC_PASSWORD);
	/* capture-pane drops trailing blanks: the prompt shows as "name>". */
	snprintf(want, sizeof(want), "%s>", b);
	if (!tmux_wait_text("logged in as", screen, sizeof(screen), 10000) ||
	    !tmux_wait_text(want, screen, sizeof(screen), 5000)) {
		tmux("kill-server");
		fail_msg("no login in tmux:\n%s", screen);
	}
	/* Type half a command, with an edit in it, and leave it unfinished. */
	tmux("send-keys -t clitest '/msg %lld typing this slowlx' BSpace 'y'", (long long)aid);
	snprintf(want, sizeof(want), "%s> /msg %lld typing this slowly", b, (long long)aid);
	if (!tmux_wait_text(want, screen, sizeof(screen), 5000)) {
		tmux("kill-server");
		fail_msg("the typed line is not on screen:\n%s", screen);
	}

	cJSON_Delete(tc_call_ok(ca, CMD_MSG_SEND,
				"{\"to\":%lld,\"type\":0,\"text\":\"a push while you type\"}",
				(long long)bid));
	if (!tmux_wait_text(": a push while you type", screen, sizeof(screen), 10000)) {
		tmux("kill-server");
		fail_msg("the push never showed:\n%s", screen);
	}
	/* The push is above, and the partial line is back below it, intact. */
	tc_sleep_ms(100);
	tmux_screen(screen, sizeof(screen));
	tmux_last_line(screen, last, sizeof(last));
	if (strcmp(last, want) != 0) {
		tmux("kill-server");
		fail_msg("after the push the last line is \"%s\", expected \"%s\"; screen:\n%s",
			 last, want, screen);
	}
	assert_true(strstr(screen, ": a push while you type") < strstr(screen, want));

	/* Finishing the line sends what was typed, edits and all. */
	tmux("send-keys -t clitest ' indeed' Enter");
	push = tc_expect_push(ca, CMD_PUSH_MSG, 10000);
	assert_string_equal(cJSON_GetObjectItem(push, "text")->valuestring,
			    "typing this slowly indeed");
	cJSON_Delete(push);
	tmux("send-keys -t clitest '/quit' Enter");
	tc_sleep_ms(200);
	tmux("kill-server >/dev/null 2>&1");
	rc_close(ca);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cli_signup_login_ping),
	    cmocka_unit_test(test_cli_json_lines),
	    cmocka_unit_test(test_cli_helpful_errors),
	    cmocka_unit_test(test_cli_bad_commands),
	    cmocka_unit_test(test_cli_befriend_and_message),
	    cmocka_unit_test(test_cli_auto_ack),
	    cmocka_unit_test(test_cli_wait_count_fails),
	    cmocka_unit_test(test_cli_groups),
	    cmocka_unit_test(test_cli_tty_push_keeps_partial_line),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, cli_setup, cli_teardown));
}
