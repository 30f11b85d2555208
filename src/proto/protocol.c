#include <stddef.h>
#include <strings.h>

#include "ringchat/protocol.h"

static const char *const status_names[ST_COUNT] = {
	"OK", "BAD_REQUEST", "NOT_LOGGED_IN", "AUTH_FAILED", "ALREADY_EXISTS",
	"NOT_FOUND", "FORBIDDEN", "FRAME_TOO_LARGE", "RATE_LIMITED", "UNKNOWN_CMD",
	"UNSUPPORTED_VERSION", "BAD_FRAME", "INTERNAL",
};

static const char *const cmd_names[CMD_MAX] = {
	[CMD_PING] = "PING",
	[CMD_SIGNUP] = "SIGNUP",
	[CMD_LOGIN] = "LOGIN",
	[CMD_LOGOUT] = "LOGOUT",
	[CMD_RESUME] = "RESUME",
	[CMD_FRIEND_REQUEST] = "FRIEND_REQUEST",
	[CMD_FRIEND_ACCEPT] = "FRIEND_ACCEPT",
	[CMD_FRIEND_DELETE] = "FRIEND_DELETE",
	[CMD_FRIEND_LIST] = "FRIEND_LIST",
	[CMD_FRIEND_UPDATE] = "FRIEND_UPDATE",
	[CMD_GROUP_CREATE] = "GROUP_CREATE",
	[CMD_GROUP_DISSOLVE] = "GROUP_DISSOLVE",
	[CMD_GROUP_JOIN] = "GROUP_JOIN",
	[CMD_GROUP_QUIT] = "GROUP_QUIT",
	[CMD_GROUP_MEMBERS] = "GROUP_MEMBERS",
	[CMD_GROUP_LIST] = "GROUP_LIST",
	[CMD_MSG_SEND] = "MSG_SEND",
	[CMD_GROUP_SEND] = "GROUP_SEND",
	[CMD_MSG_ACK] = "MSG_ACK",
	[CMD_HISTORY] = "HISTORY",
	[CMD_PUSH_MSG] = "PUSH_MSG",
	[CMD_PUSH_FRIEND_REQUEST] = "PUSH_FRIEND_REQUEST",
	[CMD_PUSH_FRIEND_ACCEPTED] = "PUSH_FRIEND_ACCEPTED",
	[CMD_PUSH_PRESENCE] = "PUSH_PRESENCE",
	[CMD_PUSH_KICKED] = "PUSH_KICKED",
	[CMD_PUSH_GROUP_DISSOLVED] = "PUSH_GROUP_DISSOLVED",
};

const char *rc_status_name(uint32_t code)
{
	return code < ST_COUNT ? status_names[code] : "?";
}

const char *rc_cmd_name(uint32_t cmd)
{
	return cmd < CMD_MAX ? cmd_names[cmd] : NULL;
}

int rc_cmd_by_name(const char *name)
{
	for (int i = 0; i < CMD_MAX; i++)
		if (cmd_names[i] && strcasecmp(cmd_names[i], name) == 0)
			return i;
	return -1;
}
