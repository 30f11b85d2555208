/*
 * cli.h - the parts of ringchat-cli and what they share (internal to the
 * program; the protocol client it uses is ringchat/client.h).
 *
 *   cli.c          main: options, the connection, the input loops
 *   cli_cmds.c     the commands: table, parsing, requests, hints
 *   cli_render.c   what is printed: output primitives, pushes, --json
 *   lineedit.c     the line editor (ringchat/lineedit.h)
 *
 * One struct cli holds the whole program's state; every function takes it
 * and runs on the one thread the program has.
 */
#ifndef RINGCHAT_TOOLS_CLI_H
#define RINGCHAT_TOOLS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ringchat/client.h"
#include "ringchat/lineedit.h"
#include "ringchat/protocol.h"

/* Longest command line: a full 4096-byte text plus the command. */
#define CLI_LINE_MAX LE_LINE_MAX
/* Tab completes the command names: room for all of them. */
#define CLI_WORDS_MAX 32
#define CLI_WORD_BYTES 24
/* ids per MSG_ACK (the node takes up to 1000). */
#define CLI_ACK_BATCH 500
/* Recent msg_ids remembered to print a redelivered message only once. */
#define CLI_SEEN_MAX 1024
/* user_id -> username cache, direct-mapped. */
#define CLI_NAMES 1024
#define CLI_NAME_BYTES 33
#define CLI_TOKEN_BYTES 256
/* A larger /wait is surely a typo. */
#define CLI_WAIT_MAX_MS 3600000

/* Outcome of one command line. */
enum cli_result {
	CLI_OK = 0,
	CLI_FAILED = 1, /* the node said no, or the connection failed */
	CLI_USAGE = 2,	/* the line itself was wrong; nothing was sent */
};

struct cli_name {
	int64_t id;
	char name[CLI_NAME_BYTES];
};

struct cli {
	/* Options. */
	const char *host;
	uint16_t port;
	int timeout_ms;
	bool json;
	bool auto_ack;
	bool echo; /* print "> line" before each command (not a TTY) */

	struct rc_client *c; /* NULL when disconnected; reconnects on demand */
	int64_t my_id;
	char my_name[CLI_NAME_BYTES];
	char token[CLI_TOKEN_BYTES];
	bool quit;

	/* Terminal and line editor (TTY mode only). */
	bool tty;
	struct le_term term;
	struct le le;
	/* "/name" of every command, for Tab. */
	const char *words[CLI_WORDS_MAX];
	char word_buf[CLI_WORDS_MAX][CLI_WORD_BYTES];

	/* Pushes: counters for /wait, dedup, pending acks, names. */
	/* Pushes received and pushes a /wait counted, by cmd; [0]: all kinds. */
	unsigned long pushes_by_cmd[CMD_MAX];
	unsigned long waited_by_cmd[CMD_MAX];
	int64_t seen[CLI_SEEN_MAX];
	unsigned seen_next;
	int64_t acks[CLI_ACK_BATCH];
	size_t nacks;
	struct cli_name names[CLI_NAMES];
};

/* ---------------------------------------------------------------------
 * cli_render.c: output. Everything printed goes through cli_out_begin(),
 * which erases the prompt line first when the editor shows one; the
 * interactive loop draws it again afterwards.
 * ------------------------------------------------------------------- */

/* Erases the prompt and the partial line if they are on the screen. */
void cli_out_begin(struct cli *cli);

/* Human text to stdout; nothing in --json mode. */
void cli_say(struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A local error (usage, connection): "! text", or a JSON line in --json. */
void cli_error(struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One received frame as a JSON line (--json); type names its role:
 * "response", "push", "late_response", "auto_ack". */
void cli_print_frame_json(struct cli *cli, const struct rc_frame *f, const char *type);

/* "HH:MM:SS" for today, "YYYY-MM-DD HH:MM" otherwise; epoch ms in.
 * Returns buf. */
const char *cli_time(int64_t ms, char buf[32]);

/* Field access that tolerates a missing or mistyped field: dflt then. */
int64_t cli_jint(const cJSON *o, const char *key, int64_t dflt);
const char *cli_jstr(const cJSON *o, const char *key, const char *dflt);
bool cli_jbool(const cJSON *o, const char *key);

/* Adds id as a decimal number (a double would round above 2^53). */
void cli_add_id(cJSON *o, const char *key, int64_t id);

/* Remembers the username of a user id for display (copied). */
void cli_name_put(struct cli *cli, int64_t id, const char *name);

/* "bob (43)", "you", or "43" when the name is not known yet. Returns buf
 * or a constant string. */
const char *cli_who(struct cli *cli, int64_t id, char buf[64]);

/* One message: live (a push) or from a history listing (with "-> to"). */
void cli_print_msg(struct cli *cli, const cJSON *m, bool live);

/*
 * One frame that is not the response being waited for: a push (printed,
 * counted for /wait, its msg_id queued for the automatic ack), a late
 * response, or the node's refusal of the stream. f stays the caller's.
 */
void cli_handle_frame(struct cli *cli, struct rc_frame *f);

/* ---------------------------------------------------------------------
 * cli.c: the connection.
 * ------------------------------------------------------------------- */

/* Closes the connection, quietly; pending acks are dropped. */
void cli_disconnect(struct cli *cli);

/* Connects to --host/--port ("connected to" unless quiet). Returns 0, or
 * -1 after printing why not. */
int cli_connect(struct cli *cli, bool quiet);

/* The node hung up or the socket failed (err: -errno): says so once and
 * forgets the connection and the login. */
void cli_lost(struct cli *cli, int err);

/* Handles every frame waiting, waiting up to wait_ms for the first one,
 * then sends the acks they called for. */
void cli_pump(struct cli *cli, int wait_ms);

/*
 * Sends cmd with payload (consumed; NULL = {}) and waits for the answer,
 * connecting first if needed. Pushes that came first are handled before
 * it returns. Returns 0 with the response in *resp (any status; the
 * caller frees it), or -1 after printing why nothing came back.
 */
int cli_request(struct cli *cli, uint16_t cmd, cJSON *payload, struct rc_frame *resp);

/* ---------------------------------------------------------------------
 * cli_cmds.c: the commands.
 * ------------------------------------------------------------------- */

/* Runs one line (modified in place). Blank lines and # comments do
 * nothing. Returns a cli_result. */
int cli_run_line(struct cli *cli, char *line);

/* /wait ms: shows pushes for ms milliseconds. Returns a cli_result. */
int cli_wait_pushes(struct cli *cli, int ms);

/* Fills cli->words with "/name" of every command, for Tab; returns how
 * many. */
size_t cli_cmd_words(struct cli *cli);

#endif
