/*
 * ids.c - the msg_id generator (layout and guarantees in ids.h).
 *
 * The shared state is one 64-bit word, (ms << IDS_SEQ_BITS) | seq, ms
 * counted from IDS_EPOCH_MS. The next state is max(now << 8, last + 1):
 * last + 1 is (ms, seq + 1) and, once seq is 255, carries into
 * (ms + 1, 0), which is exactly the borrow of the next millisecond; a
 * clock behind last (stepped back, or behind after a burst of borrowing)
 * simply loses the max. One CAS publishes it, so workers never lock.
 */
#include <errno.h>
#include <stdatomic.h>

#include "ringchat/clock.h"
#include "ringchat/ids.h"
#include "ringchat/log.h"

#define IDS_STATE_MAX ((UINT64_C(1) << (IDS_TIME_BITS + IDS_SEQ_BITS)) - 1)

static _Atomic uint64_t ids_state;
static uint64_t ids_node_bits;

int ids_init(int node_id)
{
	if (node_id < 0 || node_id > IDS_NODE_MAX) {
		log_error("node_id %d does not fit the %d bits msg_ids have for it (0..%d)",
			  node_id, IDS_NODE_BITS, IDS_NODE_MAX);
		return -EINVAL;
	}
	ids_node_bits = (uint64_t)node_id << IDS_SEQ_BITS;
	atomic_store_explicit(&ids_state, 0, memory_order_relaxed);
	return 0;
}

int64_t ids_next_at(uint64_t epoch_ms)
{
	uint64_t rel = epoch_ms > IDS_EPOCH_MS ? epoch_ms - IDS_EPOCH_MS : 0;
	uint64_t now = rel << IDS_SEQ_BITS;
	/* relaxed is enough: the CAS on this one word orders all updates of
	 * it, and nothing else is published through it */
	uint64_t old = atomic_load_explicit(&ids_state, memory_order_relaxed);
	uint64_t next;

	do {
		next = now > old + 1 ? now : old + 1;
		if (next > IDS_STATE_MAX)
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(
	    &ids_state, &old, next, memory_order_relaxed, memory_order_relaxed));
	return (int64_t)(((next >> IDS_SEQ_BITS) << (IDS_SEQ_BITS + IDS_NODE_BITS)) |
			 ids_node_bits | (next & ((1u << IDS_SEQ_BITS) - 1)));
}

int64_t ids_next(void)
{
	return ids_next_at(clock_epoch_ms());
}
