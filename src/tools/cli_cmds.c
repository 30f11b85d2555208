/*
 * cli_cmds.c - the commands of ringchat-cli: the table /help and Tab use,
 * the parsing of each command line, the request it becomes and the text
 * printed for the answer, and the hints that follow a failure.
 *
 * A command returns a cli_result: CLI_USAGE when the line was wrong and
 * nothing was sent, CLI_FAILED when the node said no or the connection
 * failed (both printed already), CLI_OK otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tools/cli.h"

/* ---------------------------------------------------------------------
 * Helpful errors: the node's status and text, then what to do about it.
 * ------------------------------------------------------------------- */

/* What the failing command was about, for the hints. */
struct cli_ctx {
	const char *cmd; /* the CLI command, "msg", "group send", ... */
	int64_t id;	 /* its user or group id, 0 if none */
};

static void cli_hint(char *out, size_t n, const struct cli_ctx *x, const struct rc_frame *f)
{
	const char *c = x->cmd;
	int64_t id = x->id;

	switch (f->hdr.code) {
	case ST_BAD_REQUEST:
		if (!strcmp(c, "signup"))
			snprintf(out, n,
				 "usernames are 3..32 of A-Z a-z 0-9 _ . - and passwords "
				 "8..128 bytes");
		else if (!strcmp(c, "add") || !strcmp(c, "remark"))
			snprintf(out, n,
				 "a remark is at most 30 bytes; you cannot befriend yourself");
		else if (!strcmp(c, "msg") || !strcmp(c, "file") || !strcmp(c, "image") ||
			 !strcmp(c, "group send"))
			snprintf(out, n,
				 "a message text is 1..4096 bytes of UTF-8 (the node's "
				 "text_max)");
		else if (!strcmp(c, "group create"))
			snprintf(out, n, "a group name is 1..64 bytes");
		else if (!strcmp(c, "history") || !strcmp(c, "group history"))
			snprintf(out, n, "limit is 1..200; before_id is a msg_id");
		else
			snprintf(out, n, "the node rejected the fields: see /help %s", c);
		return;
	case ST_NOT_LOGGED_IN:
		snprintf(out, n, "log in first: /login <user> <pass> (or /signup <user> <pass>)");
		return;
	case ST_AUTH_FAILED:
		if (!strcmp(c, "resume"))
			snprintf(out, n,
				 "that token is unknown, expired or revoked: /login <user> "
				 "<pass>");
		else
			snprintf(out, n,
				 "wrong username or password (no account? /signup <user> "
				 "<pass>)");
		return;
	case ST_ALREADY_EXISTS:
		if (!strcmp(c, "signup"))
			snprintf(out, n, "that username is taken: pick another one");
		else if (!strcmp(c, "group join"))
			snprintf(out, n, "you are already a member of group %" PRId64, id);
		else if (!strcmp(c, "add") || !strcmp(c, "accept"))
			snprintf(out, n,
				 "you are already friends with %" PRId64
				 ", or a request is pending: /friends",
				 id);
		else
			snprintf(out, n, "it exists already");
		return;
	case ST_NOT_FOUND:
		if (!strncmp(c, "group", 5))
			snprintf(out, n,
				 "there is no group %" PRId64
				 " (or it was dissolved): /group list shows yours",
				 id);
		else if (!strcmp(c, "accept"))
			snprintf(out, n,
				 "no pending friend request from %" PRId64
				 ": /friends lists pending requests",
				 id);
		else if (!strcmp(c, "unfriend") || !strcmp(c, "remark") || !strcmp(c, "fgroup"))
			snprintf(out, n, "%" PRId64 " is not your friend: /friends", id);
		else if (!strcmp(c, "add") || !strcmp(c, "msg") || !strcmp(c, "file") ||
			 !strcmp(c, "image") || !strcmp(c, "history"))
			snprintf(out, n, "there is no user %" PRId64, id);
		else
			snprintf(out, n, "no such thing on the node");
		return;
	case ST_FORBIDDEN:
		if (!strcmp(c, "msg") || !strcmp(c, "file") || !strcmp(c, "image"))
			snprintf(out, n, "you can only message friends: /add %" PRId64 " first",
				 id);
		else if (!strcmp(c, "history"))
			snprintf(out, n,
				 "you can only read your history with friends: /add %" PRId64
				 " first",
				 id);
		else if (!strcmp(c, "group dissolve"))
			snprintf(out, n, "only the owner of group %" PRId64 " can dissolve it", id);
		else if (!strncmp(c, "group", 5))
			snprintf(out, n,
				 "you are not a member of group %" PRId64 ": /group join %" PRId64
				 " first",
				 id, id);
		else
			snprintf(out, n, "you are not allowed to do that");
		return;
	case ST_FRAME_TOO_LARGE:
		snprintf(out, n,
			 "the request is larger than the node's max_frame; the node closed "
			 "the connection");
		return;
	case ST_RATE_LIMITED:
		snprintf(out, n, "slow down: retry in %" PRId64 " ms",
			 cli_jint(f->json, "retry_after_ms", 1000));
		return;
	case ST_UNKNOWN_CMD:
		snprintf(out, n, "the node does not know this command (an older node?)");
		return;
	case ST_UNSUPPORTED_VERSION:
		snprintf(out, n, "the node speaks another protocol version");
		return;
	case ST_BAD_FRAME:
		snprintf(out, n, "the node could not read the frame and closed the connection");
		return;
	case ST_INTERNAL:
		snprintf(out, n, "the node's storage had a problem: retry in a moment");
		return;
	default:
		snprintf(out, n, "unexpected status %u", f->hdr.code);
	}
}

/* Prints a non-OK response: the status, the node's text, then the hint. */
static void cli_print_failure(struct cli *cli, const struct cli_ctx *x, const struct rc_frame *f)
{
	char hint[256];

	if (cli->json)
		return; /* the frame itself was printed */
	cli_hint(hint, sizeof(hint), x, f);
	cli_say(cli, "! %s: %s\n  %s\n", rc_status_name(f->hdr.code),
		cli_jstr(f->json, "error", "(no error text)"), hint);
}

/*
 * Runs one request; on a non-OK status prints the failure. Returns the
 * response (OK) through *resp and CLI_OK, or CLI_FAILED.
 */
static int cli_do(struct cli *cli, const struct cli_ctx *x, uint16_t cmd, cJSON *payload,
		  struct rc_frame *resp)
{
	if (cli_request(cli, cmd, payload, resp) < 0)
		return CLI_FAILED;
	if (resp->hdr.code != ST_OK) {
		cli_print_failure(cli, x, resp);
		rc_frame_free(resp);
		return CLI_FAILED;
	}
	if (!resp->json) {
		cli_error(cli, "the node's answer is not JSON: %.200s", resp->payload);
		rc_frame_free(resp);
		return CLI_FAILED;
	}
	return CLI_OK;
}

/* ---------------------------------------------------------------------
 * Argument parsing.
 * ------------------------------------------------------------------- */

/* Next blank-separated word of *p (NUL-terminated in place), or NULL. */
static char *cli_word(char **p)
{
	char *s = *p, *w;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s) {
		*p = s;
		return NULL;
	}
	w = s;
	while (*s && *s != ' ' && *s != '\t')
		s++;
	if (*s)
		*s++ = '\0';
	*p = s;
	return w;
}

/* The rest of the line after blanks, possibly "". */
static char *cli_rest(char **p)
{
	char *s = *p;

	while (*s == ' ' || *s == '\t')
		s++;
	*p = s + strlen(s);
	return s;
}

/* A positive decimal id; false when s is missing or not one. */
static bool cli_parse_id(const char *s, int64_t *out)
{
	char *end;
	long long v;

	if (!s || !*s)
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v <= 0)
		return false;
	*out = v;
	return true;
}

static bool cli_parse_int(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (!s || !*s)
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* ---------------------------------------------------------------------
 * Commands.
 * ------------------------------------------------------------------- */

struct cli_cmd {
	const char *name;
	const char *usage;
	const char *help;
	int (*run)(struct cli *cli, const struct cli_cmd *cmd, char *args);
};

static int cli_usage(struct cli *cli, const struct cli_cmd *cmd)
{
	cli_error(cli, "usage: %s  (%s)", cmd->usage, cmd->help);
	return CLI_USAGE;
}

static int cmd_ping(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"ping", 0};
	struct timespec t0, t1;
	struct rc_frame f;
	char tbuf[32];
	int rc;

	if (cli_word(&args))
		return cli_usage(cli, cmd);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = cli_do(cli, &x, CMD_PING, NULL, &f);
	if (rc)
		return rc;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cli_say(cli, "pong: node time %s, round trip %.2f ms\n",
		cli_time(cli_jint(f.json, "time_ms", 0), tbuf),
		(double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
	rc_frame_free(&f);
	return CLI_OK;
}

static int cmd_signup(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"signup", 0};
	char *user = cli_word(&args), *pass = cli_word(&args);
	struct rc_frame f;
	cJSON *o;
	int rc;

	if (!user || !pass || cli_word(&args))
		return cli_usage(cli, cmd);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "username", user);
	cJSON_AddStringToObject(o, "password", pass);
	rc = cli_do(cli, &x, CMD_SIGNUP, o, &f);
	if (rc)
		return rc;
	cli_name_put(cli, cli_jint(f.json, "user_id", 0), user);
	cli_say(cli, "signed up %s: user_id %" PRId64 "; now /login %s <pass>\n", user,
		cli_jint(f.json, "user_id", 0), user);
	rc_frame_free(&f);
	return CLI_OK;
}

static void cli_logged_in(struct cli *cli, int64_t id, const char *name)
{
	cli->my_id = id;
	snprintf(cli->my_name, sizeof(cli->my_name), "%s", name ? name : "");
	cli_name_put(cli, id, name);
}

static int cmd_login(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"login", 0};
	char *user = cli_word(&args), *pass = cli_word(&args);
	struct rc_frame f;
	cJSON *o;
	int rc;

	if (!user || !pass || cli_word(&args))
		return cli_usage(cli, cmd);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "username", user);
	cJSON_AddStringToObject(o, "password", pass);
	rc = cli_do(cli, &x, CMD_LOGIN, o, &f);
	if (rc)
		return rc;
	cli_logged_in(cli, cli_jint(f.json, "user_id", 0), user);
	snprintf(cli->token, sizeof(cli->token), "%s", cli_jstr(f.json, "token", ""));
	cli_say(cli, "logged in as %s (user_id %" PRId64 "); token %s (/resume later)\n", user,
		cli->my_id, cli->token);
	rc_frame_free(&f);
	return CLI_OK;
}

static int cmd_resume(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"resume", 0};
	char *token = cli_word(&args);
	struct rc_frame f;
	cJSON *o;
	int rc;

	if (cli_word(&args))
		return cli_usage(cli, cmd);
	if (!token) {
		if (!cli->token[0]) {
			cli_error(cli, "no token yet: /resume <token>, or /login <user> <pass>");
			return CLI_USAGE;
		}
		token = cli->token;
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "token", token);
	rc = cli_do(cli, &x, CMD_RESUME, o, &f);
	if (rc)
		return rc;
	if (token != cli->token)
		snprintf(cli->token, sizeof(cli->token), "%s", token);
	cli_logged_in(cli, cli_jint(f.json, "user_id", 0), NULL);
	cli_say(cli, "resumed the session of user_id %" PRId64 "\n", cli->my_id);
	rc_frame_free(&f);
	return CLI_OK;
}

static int cmd_logout(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"logout", 0};
	struct rc_frame f;
	int rc;

	if (cli_word(&args))
		return cli_usage(cli, cmd);
	rc = cli_do(cli, &x, CMD_LOGOUT, NULL, &f);
	if (rc)
		return rc;
	rc_frame_free(&f);
	/* The node closes the connection after LOGOUT; do it first, quietly. */
	cli_disconnect(cli);
	cli->my_id = 0;
	cli->my_name[0] = '\0';
	cli->token[0] = '\0';
	cli_say(cli, "logged out; the token is revoked (the next command reconnects)\n");
	return CLI_OK;
}

/* /add, /accept, /unfriend: one user id (and /add's remark). */
static int cmd_friend_op(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {cmd->name, 0};
	char *ids = cli_word(&args), *remark = NULL, who[64];
	uint16_t op;
	struct rc_frame f;
	cJSON *o;
	int rc;

	if (!strcmp(cmd->name, "add")) {
		op = CMD_FRIEND_REQUEST;
		remark = cli_rest(&args);
	} else {
		op = !strcmp(cmd->name, "accept") ? CMD_FRIEND_ACCEPT : CMD_FRIEND_DELETE;
		if (cli_word(&args))
			return cli_usage(cli, cmd);
	}
	if (!cli_parse_id(ids, &x.id))
		return cli_usage(cli, cmd);
	o = cJSON_CreateObject();
	cli_add_id(o, "user_id", x.id);
	if (remark && *remark)
		cJSON_AddStringToObject(o, "remark", remark);
	rc = cli_do(cli, &x, op, o, &f);
	if (rc)
		return rc;
	rc_frame_free(&f);
	cli_who(cli, x.id, who);
	if (op == CMD_FRIEND_REQUEST)
		cli_say(cli, "friend request sent to %s\n", who);
	else if (op == CMD_FRIEND_ACCEPT)
		cli_say(cli, "you and %s are now friends: /msg %" PRId64 " <text>\n", who, x.id);
	else
		cli_say(cli, "%s is no longer your friend\n", who);
	return CLI_OK;
}

static int cmd_friends(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"friends", 0};
	const cJSON *friends, *pending, *e;
	struct rc_frame f;
	int rc, n;

	if (cli_word(&args))
		return cli_usage(cli, cmd);
	rc = cli_do(cli, &x, CMD_FRIEND_LIST, NULL, &f);
	if (rc)
		return rc;
	friends = cJSON_GetObjectItemCaseSensitive(f.json, "friends");
	pending = cJSON_GetObjectItemCaseSensitive(f.json, "pending");
	cJSON_ArrayForEach(e, friends)
	    cli_name_put(cli, cli_jint(e, "user_id", 0), cli_jstr(e, "username", NULL));
	cJSON_ArrayForEach(e, pending)
	    cli_name_put(cli, cli_jint(e, "user_id", 0), cli_jstr(e, "username", NULL));
	n = cJSON_GetArraySize(friends);
	if (n == 0) {
		cli_say(cli, "no friends yet: /add <user_id> [remark]\n");
	} else {
		cli_say(cli, "friends (%d):\n  %-12s %-32s %-7s %-6s %s\n", n, "user_id",
			"username", "online", "group", "remark");
		cJSON_ArrayForEach(e, friends)
		    cli_say(cli, "  %-12" PRId64 " %-32s %-7s %-6" PRId64 " %s\n",
			    cli_jint(e, "user_id", 0), cli_jstr(e, "username", "?"),
			    cli_jbool(e, "online") ? "yes" : "no", cli_jint(e, "group", 0),
			    cli_jstr(e, "remark", ""));
	}
	n = cJSON_GetArraySize(pending);
	if (n > 0) {
		cli_say(cli, "pending requests (%d), answer with /accept <user_id>:\n  %-12s %s\n",
			n, "user_id", "username");
		cJSON_ArrayForEach(e, pending)
		    cli_say(cli, "  %-12" PRId64 " %s\n", cli_jint(e, "user_id", 0),
			    cli_jstr(e, "username", "?"));
	}
	rc_frame_free(&f);
	return CLI_OK;
}

/* /remark <id> <text> and /fgroup <id> <n>: FRIEND_UPDATE. */
static int cmd_friend_update(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {cmd->name, 0};
	bool remark = !strcmp(cmd->name, "remark");
	char *ids = cli_word(&args), *val, who[64];
	long long group = 0;
	struct rc_frame f;
	cJSON *o;
	int rc;

	if (!cli_parse_id(ids, &x.id))
		return cli_usage(cli, cmd);
	if (remark) {
		val = cli_rest(&args);
	} else {
		val = cli_word(&args);
		if (!cli_parse_int(val, INT32_MIN, INT32_MAX, &group) || cli_word(&args))
			return cli_usage(cli, cmd);
	}
	o = cJSON_CreateObject();
	cli_add_id(o, "user_id", x.id);
	if (remark)
		cJSON_AddStringToObject(o, "remark", val);
	else
		cJSON_AddNumberToObject(o, "group", (double)group);
	rc = cli_do(cli, &x, CMD_FRIEND_UPDATE, o, &f);
	if (rc)
		return rc;
	rc_frame_free(&f);
	if (remark)
		cli_say(cli, "remark of %s %s\n", cli_who(cli, x.id, who),
			*val ? "set" : "cleared");
	else
		cli_say(cli, "%s is now in friend group %lld\n", cli_who(cli, x.id, who), group);
	return CLI_OK;
}

/* Sends a message: to a user (group_id 0) or to a group. */
static int cli_send(struct cli *cli, const struct cli_ctx *x, bool group, int type,
		    const char *text)
{
	struct rc_frame f;
	char tbuf[32], who[64];
	cJSON *o = cJSON_CreateObject();
	int rc;

	cli_add_id(o, group ? "group_id" : "to", x->id);
	cJSON_AddNumberToObject(o, "type", type);
	cJSON_AddStringToObject(o, "text", text);
	rc = cli_do(cli, x, group ? CMD_GROUP_SEND : CMD_MSG_SEND, o, &f);
	if (rc)
		return rc;
	if (group)
		snprintf(who, sizeof(who), "group %" PRId64, x->id);
	else
		cli_who(cli, x->id, who);
	cli_say(cli, "sent #%" PRId64 " to %s at %s\n", cli_jint(f.json, "msg_id", 0), who,
		cli_time(cli_jint(f.json, "send_time", 0), tbuf));
	rc_frame_free(&f);
	return CLI_OK;
}

/* /msg, /file, /image <user_id> <text|url> */
static int cmd_msg(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {cmd->name, 0};
	int type = !strcmp(cmd->name, "file") ? 1 : !strcmp(cmd->name, "image") ? 2 : 0;
	char *ids = cli_word(&args), *text;

	if (!cli_parse_id(ids, &x.id))
		return cli_usage(cli, cmd);
	text = type ? cli_word(&args) : cli_rest(&args);
	if (!text || !*text || (type && cli_word(&args)))
		return cli_usage(cli, cmd);
	return cli_send(cli, &x, false, type, text);
}

static int cmd_ack(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"ack", 0};
	cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "msg_ids");
	struct rc_frame f;
	char *w;
	int n = 0, rc;
	int64_t id;

	while ((w = cli_word(&args))) {
		char num[24];

		if (!cli_parse_id(w, &id) || n >= 1000) {
			cJSON_Delete(o);
			return cli_usage(cli, cmd);
		}
		snprintf(num, sizeof(num), "%" PRId64, id);
		cJSON_AddItemToArray(arr, cJSON_CreateRaw(num));
		n++;
	}
	if (n == 0) {
		cJSON_Delete(o);
		return cli_usage(cli, cmd);
	}
	rc = cli_do(cli, &x, CMD_MSG_ACK, o, &f);
	if (rc)
		return rc;
	rc_frame_free(&f);
	cli_say(cli, "acknowledged %d message%s\n", n, n == 1 ? "" : "s");
	return CLI_OK;
}

/* HISTORY of a friend or a group: "[limit] [before_id]" in args. */
static int cli_history(struct cli *cli, const struct cli_cmd *cmd, const struct cli_ctx *x,
		       bool group, char *args)
{
	char *ls = cli_word(&args), *bs = cli_word(&args);
	const cJSON *msgs, *m;
	long long limit = 0;
	int64_t before = 0, oldest = 0;
	struct rc_frame f;
	cJSON *o;
	int rc, n, i;

	if ((ls && !cli_parse_int(ls, 1, 200, &limit)) || (bs && !cli_parse_id(bs, &before)) ||
	    cli_word(&args))
		return cli_usage(cli, cmd);
	o = cJSON_CreateObject();
	cli_add_id(o, group ? "group_id" : "with", x->id);
	if (limit)
		cJSON_AddNumberToObject(o, "limit", (double)limit);
	if (before)
		cli_add_id(o, "before_id", before);
	rc = cli_do(cli, x, CMD_HISTORY, o, &f);
	if (rc)
		return rc;
	msgs = cJSON_GetObjectItemCaseSensitive(f.json, "messages");
	n = cJSON_GetArraySize(msgs);
	if (n == 0) {
		cli_say(cli, "no %smessages\n", before ? "older " : "");
	} else {
		/* The node sends newest first; a transcript reads oldest first. */
		for (i = n - 1; i >= 0; i--) {
			m = cJSON_GetArrayItem(msgs, i);
			cli_print_msg(cli, m, false);
			if (i == n - 1)
				oldest = cli_jint(m, "msg_id", 0);
		}
		cli_say(cli, "(%d message%s; older: /%s%s %" PRId64 " %lld %" PRId64 ")\n", n,
			n == 1 ? "" : "s", group ? "group " : "", "history", x->id,
			limit ? limit : 50, oldest);
	}
	rc_frame_free(&f);
	return CLI_OK;
}

static int cmd_history(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	struct cli_ctx x = {"history", 0};

	if (!cli_parse_id(cli_word(&args), &x.id))
		return cli_usage(cli, cmd);
	return cli_history(cli, cmd, &x, false, args);
}

static const struct cli_cmd cli_group_cmds[] = {
    {"create", "/group create <name>", "make a group; you become its owner", NULL},
    {"dissolve", "/group dissolve <group_id>", "end a group you own", NULL},
    {"join", "/group join <group_id>", "become a member", NULL},
    {"quit", "/group quit <group_id>", "leave a group", NULL},
    {"members", "/group members <group_id>", "list members with online flags", NULL},
    {"list", "/group list", "the groups you are in", NULL},
    {"send", "/group send <group_id> <text>", "message every other member", NULL},
    {"history", "/group history <group_id> [limit] [before_id]", "older group messages", NULL},
};

static int cmd_group(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	char *sub = cli_word(&args), ctxname[32], who[64];
	const struct cli_cmd *g = NULL;
	struct cli_ctx x = {ctxname, 0};
	const cJSON *e;
	struct rc_frame f;
	size_t i;
	cJSON *o;
	int rc;

	for (i = 0; sub && i < sizeof(cli_group_cmds) / sizeof(cli_group_cmds[0]); i++)
		if (!strcmp(sub, cli_group_cmds[i].name))
			g = &cli_group_cmds[i];
	if (!g) {
		if (sub)
			cli_error(cli, "unknown /group subcommand '%s'", sub);
		return cli_usage(cli, cmd);
	}
	snprintf(ctxname, sizeof(ctxname), "group %s", g->name);
	if (!strcmp(g->name, "create")) {
		char *name = cli_rest(&args);

		if (!*name)
			return cli_usage(cli, g);
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", name);
		rc = cli_do(cli, &x, CMD_GROUP_CREATE, o, &f);
		if (rc)
			return rc;
		cli_say(cli, "created group %" PRId64 " \"%s\"; you are its owner\n",
			cli_jint(f.json, "group_id", 0), name);
		rc_frame_free(&f);
		return CLI_OK;
	}
	if (!strcmp(g->name, "list")) {
		if (cli_word(&args))
			return cli_usage(cli, g);
		rc = cli_do(cli, &x, CMD_GROUP_LIST, NULL, &f);
		if (rc)
			return rc;
		e = cJSON_GetObjectItemCaseSensitive(f.json, "groups");
		if (cJSON_GetArraySize(e) == 0) {
			cli_say(cli,
				"you are in no group: /group create <name> or /group join <id>\n");
		} else {
			const cJSON *groups = e;

			cli_say(cli, "groups (%d):\n  %-12s %-24s %s\n", cJSON_GetArraySize(groups),
				"group_id", "owner", "name");
			cJSON_ArrayForEach(e, groups) cli_say(
			    cli, "  %-12" PRId64 " %-24s %s\n", cli_jint(e, "group_id", 0),
			    cli_who(cli, cli_jint(e, "owner", 0), who), cli_jstr(e, "name", ""));
		}
		rc_frame_free(&f);
		return CLI_OK;
	}
	if (!cli_parse_id(cli_word(&args), &x.id))
		return cli_usage(cli, g);
	if (!strcmp(g->name, "send")) {
		char *text = cli_rest(&args);

		if (!*text)
			return cli_usage(cli, g);
		return cli_send(cli, &x, true, 0, text);
	}
	if (!strcmp(g->name, "history"))
		return cli_history(cli, g, &x, true, args);
	if (cli_word(&args))
		return cli_usage(cli, g);
	o = cJSON_CreateObject();
	cli_add_id(o, "group_id", x.id);
	if (!strcmp(g->name, "members")) {
		const cJSON *members;

		rc = cli_do(cli, &x, CMD_GROUP_MEMBERS, o, &f);
		if (rc)
			return rc;
		members = cJSON_GetObjectItemCaseSensitive(f.json, "members");
		cli_say(cli, "group %" PRId64 ", %d member%s:\n  %-12s %-32s %s\n", x.id,
			cJSON_GetArraySize(members), cJSON_GetArraySize(members) == 1 ? "" : "s",
			"user_id", "username", "online");
		cJSON_ArrayForEach(e, members)
		{
			int64_t uid = cli_jint(e, "user_id", 0);

			cli_name_put(cli, uid, cli_jstr(e, "username", NULL));
			cli_say(cli, "  %-12" PRId64 " %-32s %s%s\n", uid,
				cli_jstr(e, "username", "?"), cli_jbool(e, "online") ? "yes" : "no",
				uid == cli->my_id ? " (you)" : "");
		}
		rc_frame_free(&f);
		return CLI_OK;
	}
	rc = cli_do(cli, &x,
		    !strcmp(g->name, "dissolve") ? CMD_GROUP_DISSOLVE
		    : !strcmp(g->name, "join")	 ? CMD_GROUP_JOIN
						 : CMD_GROUP_QUIT,
		    o, &f);
	if (rc)
		return rc;
	rc_frame_free(&f);
	if (!strcmp(g->name, "dissolve"))
		cli_say(cli, "group %" PRId64 " dissolved\n", x.id);
	else if (!strcmp(g->name, "join"))
		cli_say(cli, "joined group %" PRId64 ": /group send %" PRId64 " <text>\n", x.id,
			x.id);
	else
		cli_say(cli, "left group %" PRId64 "\n", x.id);
	return CLI_OK;
}

static int cmd_raw(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	char *name = cli_word(&args), *json = cli_rest(&args), *out;
	struct rc_frame f;
	long long num;
	int cmdno, rc;
	char *payload = NULL;

	if (!name)
		return cli_usage(cli, cmd);
	if (cli_parse_int(name, 0, 65535, &num))
		cmdno = (int)num;
	else if ((cmdno = rc_cmd_by_name(name)) < 0) {
		cli_error(cli, "unknown command name '%s' (a number works too, e.g. /raw 1 {})",
			  name);
		return CLI_USAGE;
	}
	/* Sent exactly as typed: /raw exists to try what the node makes of it. */
	if (*json)
		payload = json;
	if (!cli->c && cli_connect(cli, cli->json) < 0)
		return CLI_FAILED;
	rc = rc_call(cli->c, (uint16_t)cmdno, payload, &f, cli->timeout_ms);
	{
		struct rc_frame p;

		while (cli->c && rc_pending(cli->c) > 0 && rc_recv(cli->c, &p, 0) == 0) {
			cli_handle_frame(cli, &p);
			rc_frame_free(&p);
		}
	}
	if (rc == -ETIMEDOUT) {
		cli_error(cli, "no answer from the node in %d ms (--timeout)", cli->timeout_ms);
		return CLI_FAILED;
	}
	if (rc) {
		cli_lost(cli, rc);
		return CLI_FAILED;
	}
	if (cli->json) {
		cli_print_frame_json(cli, &f, "response");
	} else {
		out = f.json ? cJSON_Print(f.json) : NULL;
		cli_say(cli, "%s %s (%u) seq %u:\n%s\n",
			rc_cmd_name(f.hdr.cmd) ? rc_cmd_name(f.hdr.cmd) : "?",
			rc_status_name(f.hdr.code), f.hdr.code, f.hdr.seq, out ? out : f.payload);
		free(out);
	}
	rc = f.hdr.code == ST_OK ? CLI_OK : CLI_FAILED;
	if (f.hdr.cmd == CMD_NONE && f.hdr.seq == 0)
		cli_disconnect(cli);
	rc_frame_free(&f);
	return rc;
}

/*
 * /wait <ms> [count] [kind]: handles pushes for ms; with a count, returns
 * as soon as count pushes (of kind) arrived that no earlier /wait counted,
 * so a push that came during the previous command is not missed.
 */
static int cmd_wait(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	char *ms_s = cli_word(&args), *count_s = cli_word(&args), *kind = cli_word(&args);
	long long ms, count = 0;
	struct timespec ts;
	int64_t deadline, now;
	int kcmd = 0; /* 0: any push (slot 0 holds the totals) */

	if (!cli_parse_int(ms_s, 0, CLI_WAIT_MAX_MS, &ms) ||
	    (count_s && !cli_parse_int(count_s, 1, 1000000, &count)) || cli_word(&args))
		return cli_usage(cli, cmd);
	if (kind) {
		static const char *const shortnames[][2] = {
		    {"msg", "PUSH_MSG"},
		    {"request", "PUSH_FRIEND_REQUEST"},
		    {"accepted", "PUSH_FRIEND_ACCEPTED"},
		    {"presence", "PUSH_PRESENCE"},
		    {"kicked", "PUSH_KICKED"},
		    {"dissolved", "PUSH_GROUP_DISSOLVED"},
		};
		size_t i;

		for (i = 0; i < sizeof(shortnames) / sizeof(shortnames[0]); i++)
			if (!strcasecmp(kind, shortnames[i][0]))
				kind = (char *)shortnames[i][1];
		kcmd = rc_cmd_by_name(kind);
		if (kcmd < CMD_PUSH_MSG) {
			cli_error(cli,
				  "unknown push kind '%s': msg, request, accepted, presence, "
				  "kicked or dissolved",
				  kind);
			return CLI_USAGE;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + ms;
	for (;;) {
		if (count &&
		    cli->pushes_by_cmd[kcmd] - cli->waited_by_cmd[kcmd] >= (unsigned long)count) {
			cli->waited_by_cmd[kcmd] += (unsigned long)count;
			cli_pump(cli, 0); /* acks go out before the next command */
			return CLI_OK;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		if (now >= deadline)
			break;
		if (!cli->c) {
			/* Nothing can arrive without a connection. */
			struct timespec nap = {.tv_sec = 0, .tv_nsec = 50000000};

			nanosleep(&nap, NULL);
			continue;
		}
		cli_pump(cli, (int)(deadline - now));
	}
	if (count) {
		cli_error(cli, "waited %lld ms: %lu of %lld %s push%s arrived", ms,
			  cli->pushes_by_cmd[kcmd] - cli->waited_by_cmd[kcmd], count,
			  kcmd ? rc_cmd_name((uint32_t)kcmd) : "", count == 1 ? "" : "es");
		/* What did come counts as waited for. */
		cli->waited_by_cmd[kcmd] = cli->pushes_by_cmd[kcmd];
		return CLI_FAILED;
	}
	return CLI_OK;
}

static int cmd_quit(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	(void)cmd;
	(void)args;
	cli->quit = true;
	return CLI_OK;
}

static int cmd_help(struct cli *cli, const struct cli_cmd *cmd, char *args);

static const struct cli_cmd cli_cmds[] = {
    {"signup", "/signup <user> <pass>", "create an account", cmd_signup},
    {"login", "/login <user> <pass>", "log in; unread messages and requests follow", cmd_login},
    {"resume", "/resume [token]", "log in with a token from /login", cmd_resume},
    {"logout", "/logout", "revoke the token and disconnect", cmd_logout},
    {"ping", "/ping", "round trip to the node", cmd_ping},
    {"add", "/add <user_id> [remark]", "send a friend request", cmd_friend_op},
    {"accept", "/accept <user_id>", "accept a friend request", cmd_friend_op},
    {"unfriend", "/unfriend <user_id>", "end a friendship", cmd_friend_op},
    {"friends", "/friends", "friends with online flags, and pending requests", cmd_friends},
    {"remark", "/remark <user_id> <text>", "your note on a friend (empty clears it)",
     cmd_friend_update},
    {"fgroup", "/fgroup <user_id> <n>", "put a friend into friend group n", cmd_friend_update},
    {"msg", "/msg <user_id> <text>", "send a text to a friend", cmd_msg},
    {"file", "/file <user_id> <url>", "send a file address to a friend", cmd_msg},
    {"image", "/image <user_id> <url>", "send an image address to a friend", cmd_msg},
    {"ack", "/ack <msg_id>...", "mark messages read (received ones are acked for you)", cmd_ack},
    {"history", "/history <user_id> [limit] [before_id]", "messages with a friend", cmd_history},
    {"group", "/group create|dissolve|join|quit|members|list|send|history ...",
     "groups: /help group", cmd_group},
    {"raw", "/raw <cmd> [json]", "send any command (name or number) with a raw payload", cmd_raw},
    {"wait", "/wait <ms> [count] [msg|request|accepted|presence|kicked|dissolved]",
     "show pushes for ms, or until count more of them came", cmd_wait},
    {"help", "/help [command]", "this list", cmd_help},
    {"quit", "/quit", "leave", cmd_quit},
    {"exit", "/exit", "leave", cmd_quit},
};

#define CLI_NCMDS (sizeof(cli_cmds) / sizeof(cli_cmds[0]))

_Static_assert(CLI_NCMDS <= CLI_WORDS_MAX, "CLI_WORDS_MAX: room for every command");

size_t cli_cmd_words(struct cli *cli)
{
	size_t i;

	for (i = 0; i < CLI_NCMDS; i++) {
		snprintf(cli->word_buf[i], CLI_WORD_BYTES, "/%s", cli_cmds[i].name);
		cli->words[i] = cli->word_buf[i];
	}
	return CLI_NCMDS;
}

static int cmd_help(struct cli *cli, const struct cli_cmd *cmd, char *args)
{
	char *topic = cli_word(&args);
	size_t i;

	(void)cmd;
	if (topic && *topic == '/')
		topic++;
	if (cli->json) {
		/* Help is for people: print it even in --json mode, to stderr. */
		for (i = 0; i < CLI_NCMDS; i++)
			fprintf(stderr, "  %-48s %s\n", cli_cmds[i].usage, cli_cmds[i].help);
		return CLI_OK;
	}
	if (topic && !strcmp(topic, "group")) {
		for (i = 0; i < sizeof(cli_group_cmds) / sizeof(cli_group_cmds[0]); i++)
			cli_say(cli, "  %-48s %s\n", cli_group_cmds[i].usage,
				cli_group_cmds[i].help);
		return CLI_OK;
	}
	if (topic) {
		for (i = 0; i < CLI_NCMDS; i++)
			if (!strcmp(topic, cli_cmds[i].name)) {
				cli_say(cli, "  %-48s %s\n", cli_cmds[i].usage, cli_cmds[i].help);
				return CLI_OK;
			}
		cli_error(cli, "no command /%s: /help lists them", topic);
		return CLI_USAGE;
	}
	cli_say(cli, "commands:\n");
	for (i = 0; i < CLI_NCMDS; i++)
		if (strcmp(cli_cmds[i].name, "exit"))
			cli_say(cli, "  %-48s %s\n", cli_cmds[i].usage, cli_cmds[i].help);
	cli_say(cli,
		"\nIncoming messages, friend requests, presence changes, kicks and dissolved\n"
		"groups are printed as they arrive. Received messages are acknowledged\n"
		"automatically (MSG_ACK), so the node does not push them again%s.\n",
		cli->auto_ack ? "" : " (turned off by --no-auto-ack: use /ack)");
	return CLI_OK;
}

/* Runs one line. Blank lines and # comments do nothing. */
int cli_run_line(struct cli *cli, char *line)
{
	size_t n = strlen(line), i;
	char *p, *name;

	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
			 line[n - 1] == '\t'))
		line[--n] = '\0';
	p = line;
	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p || *p == '#')
		return CLI_OK;
	if (cli->echo && !cli->json) {
		cli_out_begin(cli);
		printf("> %s\n", p);
	}
	if (*p != '/') {
		cli_error(cli, "commands start with '/': /msg <user_id> <text> sends a message, "
			       "/help lists the rest");
		return CLI_USAGE;
	}
	p++;
	name = cli_word(&p);
	if (!name) {
		cli_error(cli, "a command name must follow '/': /help lists them");
		return CLI_USAGE;
	}
	for (i = 0; i < CLI_NCMDS; i++)
		if (!strcmp(name, cli_cmds[i].name))
			return cli_cmds[i].run(cli, &cli_cmds[i], p);
	cli_error(cli, "unknown command /%s: /help lists the commands", name);
	return CLI_USAGE;
}

int cli_wait_pushes(struct cli *cli, int ms)
{
	const struct cli_cmd *wait = NULL;
	char w[32];
	size_t i;

	/* Its table entry words the usage message, should ms be out of range. */
	for (i = 0; i < CLI_NCMDS; i++)
		if (cli_cmds[i].run == cmd_wait)
			wait = &cli_cmds[i];
	snprintf(w, sizeof(w), "%d", ms);
	return cmd_wait(cli, wait, w);
}
