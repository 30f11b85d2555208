/*
 * group.c - the group scenario: --groups groups of --members members, the
 * first member of each sends GROUP_SEND and every other member receives
 * it (fan-out; see msg.h and load.h).
 */
#include <stdio.h>

#include "msg.h"
#include "scenario.h"

int scenario_group(const struct bench_opts *o)
{
	struct msg_setup ms = {.n = o->groups * o->members, .members = o->members, .group = true};

	if (o->members < 2) {
		fprintf(stderr, "ringchat-bench: group needs --members 2 or more\n");
		return 2;
	}
	return msg_scenario(o, &ms);
}
