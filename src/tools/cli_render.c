/*
 * cli_render.c - what ringchat-cli prints: the output primitives every
 * other part uses (so that the line being typed is erased first), the
 * JSON field helpers, the name cache, and the rendering of pushes and of
 * frames in --json mode.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/cli.h"

/* ---------------------------------------------------------------------
 * Output. Everything printed goes through cli_out_begin(), which erases
 * the prompt line first when the editor shows one; the loops redraw it.
 * ------------------------------------------------------------------- */

void cli_out_begin(struct cli *cli)
{
	if (le_shown(&cli->le)) {
		le_hide(&cli->le);
		le_term_flush(&cli->le, stdout);
	}
}

void cli_say(struct cli *cli, const char *fmt, ...)
{
	va_list ap;

	if (cli->json)
		return;
	cli_out_begin(cli);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* A local error (usage, connection): human text, or a JSON line. */
void cli_error(struct cli *cli, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cli_out_begin(cli);
	if (cli->json) {
		cJSON *o = cJSON_CreateObject();
		char *s;

		cJSON_AddStringToObject(o, "type", "error");
		cJSON_AddStringToObject(o, "error", msg);
		s = cJSON_PrintUnformatted(o);
		if (s)
			printf("%s\n", s);
		free(s);
		cJSON_Delete(o);
		return;
	}
	printf("! %s\n", msg);
}

/* One received frame as a JSON line (--json). */
void cli_print_frame_json(struct cli *cli, const struct rc_frame *f, const char *type)
{
	const char *name = rc_cmd_name(f->hdr.cmd);
	cJSON *o = cJSON_CreateObject();
	char *s;

	cli_out_begin(cli);
	cJSON_AddStringToObject(o, "type", type);
	cJSON_AddStringToObject(o, "cmd", name ? name : "?");
	cJSON_AddNumberToObject(o, "cmd_no", f->hdr.cmd);
	cJSON_AddNumberToObject(o, "code", f->hdr.code);
	cJSON_AddStringToObject(o, "status", rc_status_name(f->hdr.code));
	cJSON_AddNumberToObject(o, "seq", f->hdr.seq);
	/* Re-printed compactly: one frame, one line, whatever the node sent. */
	if (f->json)
		cJSON_AddItemReferenceToObject(o, "payload", f->json);
	else
		cJSON_AddStringToObject(o, "payload_raw", f->payload ? f->payload : "");
	s = cJSON_PrintUnformatted(o);
	if (s)
		printf("%s\n", s);
	free(s);
	cJSON_Delete(o);
	fflush(stdout);
}

/* "HH:MM:SS" for today, "YYYY-MM-DD HH:MM" otherwise; epoch ms in. */
const char *cli_time(int64_t ms, char buf[32])
{
	time_t t = (time_t)(ms / 1000), now = time(NULL);
	struct tm tm, today;

	localtime_r(&t, &tm);
	localtime_r(&now, &today);
	if (tm.tm_year == today.tm_year && tm.tm_yday == today.tm_yday)
		strftime(buf, 32, "%H:%M:%S", &tm);
	else
		strftime(buf, 32, "%Y-%m-%d %H:%M", &tm);
	return buf;
}

/* ---------------------------------------------------------------------
 * JSON field access and payload building.
 * ------------------------------------------------------------------- */

int64_t cli_jint(const cJSON *o, const char *key, int64_t dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : dflt;
}

const char *cli_jstr(const cJSON *o, const char *key, const char *dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : dflt;
}

bool cli_jbool(const cJSON *o, const char *key)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* Ids are written as decimal text: a double would round above 2^53. */
void cli_add_id(cJSON *o, const char *key, int64_t id)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRId64, id);
	cJSON_AddRawToObject(o, key, num);
}

/* ---------------------------------------------------------------------
 * Names (for display) and the msg_ids already shown.
 * ------------------------------------------------------------------- */

void cli_name_put(struct cli *cli, int64_t id, const char *name)
{
	struct cli_name *n;

	if (id <= 0 || !name || !*name)
		return;
	n = &cli->names[(uint64_t)id % CLI_NAMES];
	n->id = id;
	snprintf(n->name, sizeof(n->name), "%s", name);
}

/* "bob (43)", "you", or "43" when the name is not known yet. */
const char *cli_who(struct cli *cli, int64_t id, char buf[64])
{
	const struct cli_name *n = &cli->names[(uint64_t)id % CLI_NAMES];

	if (id == cli->my_id && id > 0)
		return "you";
	if (n->id == id && id > 0)
		snprintf(buf, 64, "%s (%" PRId64 ")", n->name, id);
	else
		snprintf(buf, 64, "%" PRId64, id);
	return buf;
}

/* True when msg_id was shown before; remembers it otherwise. */
static bool cli_seen(struct cli *cli, int64_t msg_id)
{
	unsigned i;

	for (i = 0; i < CLI_SEEN_MAX; i++)
		if (cli->seen[i] == msg_id)
			return true;
	cli->seen[cli->seen_next] = msg_id;
	cli->seen_next = (cli->seen_next + 1) % CLI_SEEN_MAX;
	return false;
}

/* ---------------------------------------------------------------------
 * Pushes.
 * ------------------------------------------------------------------- */

void cli_print_msg(struct cli *cli, const cJSON *m, bool live)
{
	int64_t from = cli_jint(m, "from", 0), gid = cli_jint(m, "group_id", 0);
	int64_t type = cli_jint(m, "type", 0), to = cli_jint(m, "to", 0);
	char tbuf[32], who[64], whom[64];
	const char *kind = type == 1 ? "[file] " : type == 2 ? "[image] " : "";

	cli_time(cli_jint(m, "send_time", 0), tbuf);
	if (gid > 0)
		cli_say(cli, "[%s] #%" PRId64 " group %" PRId64 " | %s: %s%s\n", tbuf,
			cli_jint(m, "msg_id", 0), gid, cli_who(cli, from, who), kind,
			cli_jstr(m, "text", ""));
	else if (live)
		cli_say(cli, "[%s] #%" PRId64 " %s: %s%s\n", tbuf, cli_jint(m, "msg_id", 0),
			cli_who(cli, from, who), kind, cli_jstr(m, "text", ""));
	else
		cli_say(cli, "[%s] #%" PRId64 " %s -> %s: %s%s\n", tbuf, cli_jint(m, "msg_id", 0),
			cli_who(cli, from, who), cli_who(cli, to, whom), kind,
			cli_jstr(m, "text", ""));
}

static void cli_handle_push(struct cli *cli, const struct rc_frame *f)
{
	const cJSON *p = f->json;
	char who[64];
	int64_t id;

	if (f->hdr.cmd < CMD_MAX) {
		cli->pushes_by_cmd[f->hdr.cmd]++;
		cli->pushes_by_cmd[0]++;
	}
	if (!p) {
		cli_error(cli, "push %u with a payload that is not JSON", f->hdr.cmd);
		return;
	}
	switch (f->hdr.cmd) {
	case CMD_PUSH_MSG:
		id = cli_jint(p, "msg_id", 0);
		if (id > 0 && cli->auto_ack && cli->nacks < CLI_ACK_BATCH)
			cli->acks[cli->nacks++] = id;
		/* At least once: a redelivery is acked again but shown once. */
		if (id > 0 && cli_seen(cli, id))
			return;
		cli_print_msg(cli, p, true);
		return;
	case CMD_PUSH_FRIEND_REQUEST:
		id = cli_jint(p, "from", 0);
		cli_name_put(cli, id, cli_jstr(p, "username", NULL));
		cli_say(cli, "* friend request from %s%s%s%s: /accept %" PRId64 "\n",
			cli_who(cli, id, who), *cli_jstr(p, "remark", "") ? " \"" : "",
			cli_jstr(p, "remark", ""), *cli_jstr(p, "remark", "") ? "\"" : "", id);
		return;
	case CMD_PUSH_FRIEND_ACCEPTED:
		id = cli_jint(p, "user_id", 0);
		cli_name_put(cli, id, cli_jstr(p, "username", NULL));
		cli_say(cli, "* %s accepted your friend request: /msg %" PRId64 " <text>\n",
			cli_who(cli, id, who), id);
		return;
	case CMD_PUSH_PRESENCE:
		cli_say(cli, "* %s is %s\n", cli_who(cli, cli_jint(p, "user_id", 0), who),
			cli_jbool(p, "online") ? "online" : "offline");
		return;
	case CMD_PUSH_KICKED:
		cli_say(cli,
			"* kicked: %s (this account logged in elsewhere); the node closes "
			"the connection\n",
			cli_jstr(p, "reason", "no reason given"));
		return;
	case CMD_PUSH_GROUP_DISSOLVED:
		cli_say(cli, "* group %" PRId64 " was dissolved by its owner\n",
			cli_jint(p, "group_id", 0));
		return;
	default:
		cli_say(cli, "* push %s: %s\n",
			rc_cmd_name(f->hdr.cmd) ? rc_cmd_name(f->hdr.cmd) : "?", f->payload);
	}
}

void cli_handle_frame(struct cli *cli, struct rc_frame *f)
{
	if (f->hdr.seq == 0 && f->hdr.cmd == CMD_NONE) {
		if (cli->json)
			cli_print_frame_json(cli, f, "response");
		else
			cli_error(cli, "the node refused the stream: %s: %s",
				  rc_status_name(f->hdr.code), cli_jstr(f->json, "error", ""));
		return;
	}
	if (f->hdr.seq != 0) {
		/* The late answer to a request that timed out. */
		if (cli->json)
			cli_print_frame_json(cli, f, "late_response");
		return;
	}
	if (cli->json) {
		cli_print_frame_json(cli, f, "push");
		if (f->hdr.cmd < CMD_MAX) {
			cli->pushes_by_cmd[f->hdr.cmd]++;
			cli->pushes_by_cmd[0]++;
		}
		if (f->hdr.cmd == CMD_PUSH_MSG && cli->auto_ack && cli->nacks < CLI_ACK_BATCH &&
		    cli_jint(f->json, "msg_id", 0) > 0)
			cli->acks[cli->nacks++] = cli_jint(f->json, "msg_id", 0);
		return;
	}
	cli_handle_push(cli, f);
}
