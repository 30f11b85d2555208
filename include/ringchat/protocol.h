/*
 * protocol.h - numbers of the client protocol v1 (docs/protocol.md): command
 * numbers and status codes, shared by the node, the CLI and the bench tool.
 */
#ifndef RINGCHAT_PROTOCOL_H
#define RINGCHAT_PROTOCOL_H

#include <stdint.h>

enum rc_cmd {
	CMD_NONE = 0, /* only in BAD_FRAME / FRAME_TOO_LARGE replies */
	CMD_PING = 1,
	CMD_SIGNUP = 10,
	CMD_LOGIN = 11,
	CMD_LOGOUT = 12,
	CMD_RESUME = 13,
	CMD_FRIEND_REQUEST = 20,
	CMD_FRIEND_ACCEPT = 21,
	CMD_FRIEND_DELETE = 22,
	CMD_FRIEND_LIST = 23,
	CMD_FRIEND_UPDATE = 24,
	CMD_GROUP_CREATE = 30,
	CMD_GROUP_DISSOLVE = 31,
	CMD_GROUP_JOIN = 32,
	CMD_GROUP_QUIT = 33,
	CMD_GROUP_MEMBERS = 34,
	CMD_GROUP_LIST = 35,
	CMD_MSG_SEND = 40,
	CMD_GROUP_SEND = 41,
	CMD_MSG_ACK = 42,
	CMD_HISTORY = 43,
	CMD_PUSH_MSG = 100,
	CMD_PUSH_FRIEND_REQUEST = 101,
	CMD_PUSH_FRIEND_ACCEPTED = 102,
	CMD_PUSH_PRESENCE = 103,
	CMD_PUSH_KICKED = 104,
	CMD_PUSH_GROUP_DISSOLVED = 105,
	CMD_MAX = 106 /* one past the largest command number */
};

enum rc_status {
	ST_OK = 0,
	ST_BAD_REQUEST = 1,
	ST_NOT_LOGGED_IN = 2,
	ST_AUTH_FAILED = 3,
	ST_ALREADY_EXISTS = 4,
	ST_NOT_FOUND = 5,
	ST_FORBIDDEN = 6,
	ST_FRAME_TOO_LARGE = 7,
	ST_RATE_LIMITED = 8,
	ST_UNKNOWN_CMD = 9,
	ST_UNSUPPORTED_VERSION = 10,
	ST_BAD_FRAME = 11,
	ST_INTERNAL = 12,
	ST_COUNT = 13
};

/* Name of a status code ("BAD_REQUEST"), "?" when out of range. */
const char *rc_status_name(uint32_t code);
/* Name of a command ("MSG_SEND"), NULL when the number is not a command. */
const char *rc_cmd_name(uint32_t cmd);
/* Command number for a name, case-insensitive; -1 when unknown. */
int rc_cmd_by_name(const char *name);

#endif
