#include "ringchat/counters.h"

struct counters counters;

static uint64_t get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

void counters_dump(FILE *out)
{
#define COUNTER_DUMP(name, help) fprintf(out, "%s=%llu ", #name, (unsigned long long)get(&counters.name));
	fprintf(out, "counters: conn_open=%llu ", (unsigned long long)get(&counters.conn_open));
	COUNTERS(COUNTER_DUMP)
#undef COUNTER_DUMP
	fputc('\n', out);
	fflush(out);
}
