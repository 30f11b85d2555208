#include <errno.h>
#include <stdlib.h>

#include "ringchat/spsc.h"

int spsc_init(struct spsc *q, uint32_t cap)
{
	uint32_t n = 2;

	while (n < cap && n < (1u << 30))
		n <<= 1;
	q->slots = calloc(n, sizeof(*q->slots));
	if (!q->slots)
		return -ENOMEM;
	q->mask = n - 1;
	q->tail_cache = 0;
	q->head_cache = 0;
	atomic_init(&q->head, 0);
	atomic_init(&q->tail, 0);
	return 0;
}

void spsc_destroy(struct spsc *q)
{
	free(q->slots);
	q->slots = NULL;
}
