/*
 * chat.c - the chat scenario: users in pairs, each pair's first user
 * sends 1:1 messages to the second (see msg.h for placement on --nodes
 * and load.h for the load).
 */
#include <stdio.h>

#include "msg.h"
#include "scenario.h"

int scenario_chat(const struct bench_opts *o)
{
	struct msg_setup ms = {.n = o->users & ~1, .members = 2, .group = false};

	if (ms.n < 2) {
		fprintf(stderr, "ringchat-bench: chat needs --users 2 or more\n");
		return 2;
	}
	return msg_scenario(o, &ms);
}
