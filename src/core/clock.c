#include <time.h>

#include "ringchat/clock.h"

static uint64_t ts_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t clock_epoch_ms(void)
{
	return ts_ns(CLOCK_REALTIME) / 1000000ull;
}

uint64_t clock_mono_ms(void)
{
	return ts_ns(CLOCK_MONOTONIC) / 1000000ull;
}

uint64_t clock_mono_ns(void)
{
	return ts_ns(CLOCK_MONOTONIC);
}
