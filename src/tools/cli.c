/*
 * cli.c - ringchat-cli: an interactive terminal client for protocol v1.
 *
 *   ringchat-cli [--host H] [--port P] [--exec FILE|-] [--wait-push MS]
 *                [--json] [--no-auto-ack] [--timeout MS]
 *
 * Three ways to run, one command interpreter (cli_run_line):
 *
 *   stdin is a TTY, no --exec   line editor in raw mode (cli_tty_loop)
 *   stdin is not a TTY          lines read as they come (cli_line_loop)
 *   --exec FILE|-               the same line loop, commands echoed, exit
 *                               status 0 only if every command succeeded
 *
 * Each loop polls the input and the socket together, so pushes are printed
 * the moment they arrive. A command is one blocking rc_call(): pushes that
 * arrive while it waits are queued inside the client and printed before
 * its response (they came first).
 *
 * Pushes and the line being typed: before anything is printed while the
 * editor shows a prompt, cli_out_begin() erases the line (le_hide); after
 * the event is handled the loop draws the prompt and the partial line
 * again (le_redraw), with the cursor where it was. The terminal keeps
 * OPOST, so "\n" still returns the carriage and ordinary printf output
 * works unchanged.
 *
 * Received PUSH_MSG are acknowledged automatically (unless --no-auto-ack):
 * their ids are collected and sent in one MSG_ACK once the frames at hand
 * are handled, so the node stops pushing them again.
 *
 * This file holds main, the connection and the loops; the commands are in
 * cli_cmds.c, the printing in cli_render.c, the editor in lineedit.c (see
 * cli.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tools/cli.h"

#define CLI_DEFAULT_PORT 7700
#define CLI_DEFAULT_TIMEOUT_MS 10000
#define CLI_CONNECT_TIMEOUT_MS 5000

static struct cli *cli_for_signals;

/* ---------------------------------------------------------------------
 * Connection and requests.
 * ------------------------------------------------------------------- */

void cli_disconnect(struct cli *cli)
{
	rc_close(cli->c);
	cli->c = NULL;
	cli->nacks = 0; /* the node pushes unacked messages again at the next login */
}

int cli_connect(struct cli *cli, bool quiet)
{
	cli->c = rc_connect(cli->host, cli->port, CLI_CONNECT_TIMEOUT_MS);
	if (!cli->c) {
		cli_error(cli,
			  "cannot connect to %s:%u: %s (is ringchatd running? see --host/--port)",
			  cli->host, cli->port, strerror(errno));
		return -1;
	}
	if (!quiet)
		cli_say(cli, "connected to %s:%u\n", cli->host, cli->port);
	return 0;
}

/* The node hung up, or the socket failed: say so once and forget it. */
void cli_lost(struct cli *cli, int err)
{
	if (!cli->c)
		return;
	if (err == -ENOTCONN)
		cli_error(cli, "the node closed the connection (the next command reconnects)");
	else
		cli_error(cli, "connection lost: %s (the next command reconnects)", strerror(-err));
	cli_disconnect(cli);
	cli->my_id = 0;
	cli->my_name[0] = '\0';
}

static void cli_flush_acks(struct cli *cli);

/*
 * Handles every frame waiting in the client or on the socket, waiting up
 * to wait_ms for the first one, then sends the acks they called for.
 */
void cli_pump(struct cli *cli, int wait_ms)
{
	struct rc_frame f;
	int rc, t = wait_ms;

	while (cli->c) {
		rc = rc_recv(cli->c, &f, t);
		t = 0;
		if (rc == -ETIMEDOUT) {
			if (cli->nacks == 0)
				break;
			cli_flush_acks(cli);
			continue;
		}
		if (rc) {
			cli_lost(cli, rc);
			break;
		}
		cli_handle_frame(cli, &f);
		rc_frame_free(&f);
		if (cli->nacks >= CLI_ACK_BATCH)
			cli_flush_acks(cli);
	}
	fflush(stdout);
}

/*
 * Sends cmd with payload (consumed; NULL = {}) and waits for the answer.
 * Pushes that came first are handled before it returns. Returns 0 with
 * the response in *resp (any status), or -1 after printing why nothing
 * came back.
 */
int cli_request(struct cli *cli, uint16_t cmd, cJSON *payload, struct rc_frame *resp)
{
	char *json = NULL;
	struct rc_frame f;
	int rc;

	memset(resp, 0, sizeof(*resp));
	if (payload) {
		json = cJSON_PrintUnformatted(payload);
		cJSON_Delete(payload);
		if (!json) {
			cli_error(cli, "out of memory");
			return -1;
		}
	}
	if (!cli->c && cli_connect(cli, cli->json) < 0) {
		free(json);
		return -1;
	}
	rc = rc_call(cli->c, cmd, json, resp, cli->timeout_ms);
	free(json);
	/* Pushes queued during the call arrived before the response. */
	while (cli->c && rc_pending(cli->c) > 0 && rc_recv(cli->c, &f, 0) == 0) {
		cli_handle_frame(cli, &f);
		rc_frame_free(&f);
	}
	if (rc == -ETIMEDOUT) {
		cli_error(cli, "no answer from the node in %d ms (--timeout)", cli->timeout_ms);
		return -1;
	}
	if (rc) {
		cli_lost(cli, rc);
		return -1;
	}
	if (cli->json)
		cli_print_frame_json(cli, resp, "response");
	if (resp->hdr.cmd == CMD_NONE && resp->hdr.seq == 0) {
		/* BAD_FRAME / FRAME_TOO_LARGE: the node closes after it. */
		cli_disconnect(cli);
	}
	return 0;
}

static void cli_flush_acks(struct cli *cli)
{
	struct rc_frame f;
	cJSON *o, *arr;
	size_t i;
	char *json;
	int rc;

	if (!cli->c || cli->nacks == 0)
		return;
	o = cJSON_CreateObject();
	arr = cJSON_AddArrayToObject(o, "msg_ids");
	for (i = 0; i < cli->nacks; i++) {
		char num[24];

		snprintf(num, sizeof(num), "%" PRId64, cli->acks[i]);
		cJSON_AddItemToArray(arr, cJSON_CreateRaw(num));
	}
	cli->nacks = 0;
	json = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!json)
		return;
	/* Pushes read meanwhile stay queued; cli_pump handles them next. */
	rc = rc_call(cli->c, CMD_MSG_ACK, json, &f, cli->timeout_ms);
	free(json);
	if (rc == -ETIMEDOUT) {
		cli_error(cli, "auto-ack: no answer in %d ms", cli->timeout_ms);
		return;
	}
	if (rc) {
		cli_lost(cli, rc);
		return;
	}
	if (cli->json) {
		cli_print_frame_json(cli, &f, "auto_ack");
	} else if (f.hdr.code != ST_OK) {
		cli_error(cli, "auto-ack failed: %s: %s", rc_status_name(f.hdr.code),
			  cli_jstr(f.json, "error", ""));
	}
	rc_frame_free(&f);
}

/* ---------------------------------------------------------------------
 * Interactive mode: the line editor (lineedit.h) on the terminal.
 * ------------------------------------------------------------------- */

static void cli_on_signal(int sig)
{
	/* Only async-signal-safe calls: tcsetattr and _exit are. */
	if (cli_for_signals)
		le_term_restore(&cli_for_signals->term);
	_exit(128 + sig);
}

/* The prompt names who is logged in; a command may just have changed it. */
static void cli_prompt_sync(struct cli *cli)
{
	char prompt[LE_PROMPT_MAX];

	snprintf(prompt, sizeof(prompt), "%s> ", cli->my_name[0] ? cli->my_name : "ringchat");
	le_set_prompt(&cli->le, prompt);
}

/* Keys from one read: edits, and the lines they finish run one by one. */
static void cli_keys(struct cli *cli, const char *buf, size_t n)
{
	size_t used;

	while (n > 0 && !cli->quit) {
		cli_prompt_sync(cli);
		switch (le_feed(&cli->le, buf, n, &used)) {
		case LE_LINE:
			/* The echoed line goes out before what the command prints. */
			le_term_flush(&cli->le, stdout);
			cli_run_line(cli, le_line(&cli->le));
			if (cli->c)
				cli_pump(cli, 0);
			break;
		case LE_QUIT:
			cli->quit = true;
			break;
		case LE_NONE:
			break;
		}
		buf += used;
		n -= used;
	}
	le_term_flush(&cli->le, stdout);
}

static int cli_tty_loop(struct cli *cli)
{
	struct pollfd pfd[2];
	char buf[256];
	ssize_t n;
	int rc;

	rc = le_term_raw(&cli->term, STDIN_FILENO);
	if (rc) {
		fprintf(stderr, "ringchat-cli: cannot set up the terminal: %s\n", strerror(-rc));
		return 1;
	}
	cli_say(cli, "connected to %s:%u; /help lists the commands, /quit leaves\n", cli->host,
		cli->port);
	cli_prompt_sync(cli);
	le_redraw(&cli->le, le_term_cols(STDOUT_FILENO));
	le_term_flush(&cli->le, stdout);
	while (!cli->quit) {
		pfd[0] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
		pfd[1] = (struct pollfd){.fd = cli->c ? rc_fd(cli->c) : -1, .events = POLLIN};
		if (cli->c && rc_pending(cli->c) > 0)
			cli_pump(cli, 0);
		if (poll(pfd, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			cli_pump(cli, 0);
		if (pfd[0].revents) {
			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n == 0 || (n == -1 && errno != EINTR && errno != EAGAIN))
				break;
			if (n > 0)
				cli_keys(cli, buf, (size_t)n);
		}
		if (!cli->quit) {
			cli_prompt_sync(cli);
			le_redraw(&cli->le, le_term_cols(STDOUT_FILENO));
			le_term_flush(&cli->le, stdout);
		}
	}
	cli_out_begin(cli);
	fflush(stdout);
	le_term_restore(&cli->term);
	return 0;
}

/* ---------------------------------------------------------------------
 * Line mode: --exec, or stdin that is not a terminal.
 * ------------------------------------------------------------------- */

static int cli_line_loop(struct cli *cli, int in_fd, int wait_push_ms)
{
	static char buf[CLI_LINE_MAX + 1];
	size_t have = 0;
	bool eof = false, skipping = false;
	int failures = 0, rc;

	while (!cli->quit) {
		char *nl = memchr(buf, '\n', have);
		struct pollfd pfd[2];
		ssize_t r;

		if (nl || (eof && have > 0)) {
			size_t n = nl ? (size_t)(nl - buf) + 1 : have;
			char line[CLI_LINE_MAX + 1];

			memcpy(line, buf, n);
			line[nl ? n - 1 : n] = '\0';
			memmove(buf, buf + n, have - n);
			have -= n;
			if (skipping) {
				/* The tail of an over-long line. */
				skipping = false;
				continue;
			}
			rc = cli_run_line(cli, line);
			if (rc != CLI_OK)
				failures++;
			if (cli->c)
				cli_pump(cli, 0);
			fflush(stdout);
			continue;
		}
		if (eof)
			break;
		if (have == CLI_LINE_MAX) {
			cli_error(cli, "line longer than %d bytes: skipped", CLI_LINE_MAX);
			failures++;
			have = 0;
			skipping = true;
		}
		pfd[0] = (struct pollfd){.fd = in_fd, .events = POLLIN};
		pfd[1] = (struct pollfd){.fd = cli->c ? rc_fd(cli->c) : -1, .events = POLLIN};
		if (poll(pfd, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			cli_pump(cli, 0);
		if (pfd[0].revents) {
			r = read(in_fd, buf + have, CLI_LINE_MAX - have);
			if (r > 0)
				have += (size_t)r;
			else if (r == 0 || (errno != EINTR && errno != EAGAIN))
				eof = true;
		}
	}
	if (wait_push_ms > 0 && !cli->quit)
		cli_wait_pushes(cli, wait_push_ms);
	if (cli->c)
		cli_pump(cli, 0);
	fflush(stdout);
	return failures ? 1 : 0;
}

/* ---------------------------------------------------------------------
 * Command line.
 * ------------------------------------------------------------------- */

static void cli_usage_exit(FILE *out, int status)
{
	fprintf(out,
		"usage: ringchat-cli [--host H] [--port P] [--exec FILE|-] [--wait-push MS]\n"
		"                    [--json] [--no-auto-ack] [--timeout MS]\n"
		"  --host H         node address (127.0.0.1)\n"
		"  --port P         node client port (%d)\n"
		"  --exec FILE|-    run the commands in FILE (- = stdin), one per line, # for\n"
		"                   comments; exit 0 only if every command succeeded\n"
		"  --wait-push MS   after the last command, show pushes for MS milliseconds\n"
		"  --json           print every frame received as one JSON line\n"
		"  --no-auto-ack    do not acknowledge received messages (use /ack)\n"
		"  --timeout MS     wait this long for each answer (%d)\n"
		"Interactive when stdin is a terminal; /help lists the commands.\n",
		CLI_DEFAULT_PORT, CLI_DEFAULT_TIMEOUT_MS);
	exit(status);
}

static long cli_opt_int(const char *name, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "ringchat-cli: --%s: '%s' is not an integer in %ld..%ld\n", name, s,
			min, max);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"host", required_argument, NULL, 'h'},
	    {"port", required_argument, NULL, 'p'},
	    {"exec", required_argument, NULL, 'e'},
	    {"wait-push", required_argument, NULL, 'w'},
	    {"json", no_argument, NULL, 'j'},
	    {"no-auto-ack", no_argument, NULL, 'A'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, '?' + 256},
	    {NULL, 0, NULL, 0},
	};
	static struct cli cli;
	const char *exec = NULL;
	int opt, in_fd = STDIN_FILENO, rc, wait_push_ms = 0;

	cli.host = "127.0.0.1";
	cli.port = CLI_DEFAULT_PORT;
	cli.timeout_ms = CLI_DEFAULT_TIMEOUT_MS;
	cli.auto_ack = true;
	le_init(&cli.le);
	le_set_words(&cli.le, cli.words, cli_cmd_words(&cli));
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			cli.host = optarg;
			break;
		case 'p':
			cli.port = (uint16_t)cli_opt_int("port", optarg, 1, 65535);
			break;
		case 'e':
			exec = optarg;
			break;
		case 'w':
			wait_push_ms = (int)cli_opt_int("wait-push", optarg, 0, CLI_WAIT_MAX_MS);
			break;
		case 'j':
			cli.json = true;
			break;
		case 'A':
			cli.auto_ack = false;
			break;
		case 't':
			cli.timeout_ms = (int)cli_opt_int("timeout", optarg, 1, 3600000);
			break;
		case '?' + 256:
			cli_usage_exit(stdout, 0);
			break;
		default:
			cli_usage_exit(stderr, 2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ringchat-cli: unexpected argument '%s'\n", argv[optind]);
		cli_usage_exit(stderr, 2);
	}
	if (exec && strcmp(exec, "-")) {
		in_fd = open(exec, O_RDONLY | O_CLOEXEC);
		if (in_fd == -1) {
			fprintf(stderr, "ringchat-cli: %s: %s\n", exec, strerror(errno));
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	cli.tty = !exec && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
	cli.echo = !cli.tty;
	cli_for_signals = &cli;
	signal(SIGTERM, cli_on_signal);
	signal(SIGHUP, cli_on_signal);
	signal(SIGINT, cli_on_signal);

	if (cli_connect(&cli, true) < 0)
		return 1;
	if (cli.tty)
		rc = cli_tty_loop(&cli);
	else
		rc = cli_line_loop(&cli, in_fd, wait_push_ms);
	if (cli.c)
		cli_flush_acks(&cli);
	rc_close(cli.c);
	le_free(&cli.le);
	if (in_fd != STDIN_FILENO)
		close(in_fd);
	return rc;
}
