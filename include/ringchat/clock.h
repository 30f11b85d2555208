/* clock.h - wall-clock and monotonic time in the units the node uses. */
#ifndef RINGCHAT_CLOCK_H
#define RINGCHAT_CLOCK_H

#include <stdint.h>

/* Epoch milliseconds (CLOCK_REALTIME): send_time, time_ms in PING. */
uint64_t clock_epoch_ms(void);
/* Monotonic milliseconds: timeouts, rate limits. */
uint64_t clock_mono_ms(void);
/* Monotonic nanoseconds: latency measurement. */
uint64_t clock_mono_ns(void);

#endif
