/*
 * test_router.c - where a user is and how pushes get there (router.h):
 * users here get the frame on their connection, users on other nodes are
 * handed to the cluster layer with one copy per node for all its users,
 * offline users get nothing, and delivered[] says which got it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake_worker.h"
#include "ringchat/protocol.h"
#include "ringchat/registry.h"
#include "ringchat/router.h"

static struct worker *w;

/* The fake cluster: users 100..199 are on node 2, 200..299 on node 3;
 * node 3 refuses when `node3_full`. Every forward is recorded. */
struct fwd {
	int node;
	size_t n;
	int64_t users[16];
	uint16_t cmd;
};
static struct fwd fwds[8];
static int nfwd;
static int nlocate;
static bool node3_full;

static int fake_locate(struct worker *wk, int64_t user)
{
	(void)wk;
	nlocate++;
	if (user >= 100 && user < 200)
		return 2;
	if (user >= 200 && user < 300)
		return 3;
	return -1;
}

static int fake_forward(struct worker *wk, int node, const int64_t *users, size_t n,
			const uint8_t *frame, uint32_t len)
{
	struct frame_hdr h;

	(void)wk;
	assert_true(len >= FRAME_HDR_BYTES);
	frame_hdr_decode(frame, &h);
	assert_int_equal(h.len + FRAME_HDR_BYTES, len);
	if (node == 3 && node3_full)
		return -ENOBUFS;
	assert_true(nfwd < 8 && n <= 16);
	fwds[nfwd] = (struct fwd){ .node = node, .n = n, .cmd = h.cmd };
	memcpy(fwds[nfwd].users, users, n * sizeof(*users));
	nfwd++;
	return 0;
}

static const struct router_cluster fake_cluster = {
	.locate = fake_locate,
	.forward = fake_forward,
};

static void reset(void)
{
	nfwd = 0;
	nlocate = 0;
	node3_full = false;
}

static void test_where(void **state)
{
	uint64_t old;
	struct route r;

	(void)state;
	reset();
	assert_int_equal(registry_set(7, CONN_REF(3, 1), &old), 0);
	r = router_where(w, 7);
	assert_int_equal(r.kind, ROUTE_HERE);
	assert_int_equal(r.conn, CONN_REF(3, 1));
	assert_int_equal(nlocate, 0); /* local users never ask the cluster */
	r = router_where(w, 150);
	assert_int_equal(r.kind, ROUTE_NODE);
	assert_int_equal(r.node, 2);
	r = router_where(w, 999);
	assert_int_equal(r.kind, ROUTE_OFFLINE);
	router_set_cluster(NULL);
	r = router_where(w, 150); /* a single node knows only its own users */
	assert_int_equal(r.kind, ROUTE_OFFLINE);
	router_set_cluster(&fake_cluster);
	assert_true(registry_remove(7, CONN_REF(3, 1)));
}

static void test_push_one(void **state)
{
	struct fake_frame f;
	uint64_t old;

	(void)state;
	reset();
	assert_int_equal(registry_set(8, CONN_REF(4, 1), &old), 0);
	assert_true(router_push_user_text(w, 8, CMD_PUSH_PRESENCE, "{\"a\":1}", 7));
	assert_true(fake_take(&f));
	assert_int_equal(f.conn, CONN_REF(4, 1));
	assert_int_equal(f.hdr.cmd, CMD_PUSH_PRESENCE);
	assert_int_equal(f.hdr.seq, 0);
	assert_string_equal(f.text, "{\"a\":1}");
	fake_frame_free(&f);
	assert_int_equal(nfwd, 0);

	assert_true(router_push_user(w, 120, CMD_PUSH_KICKED, cJSON_CreateObject()));
	assert_int_equal(nfwd, 1);
	assert_int_equal(fwds[0].node, 2);
	assert_int_equal(fwds[0].n, 1);
	assert_int_equal(fwds[0].users[0], 120);
	assert_int_equal(fwds[0].cmd, CMD_PUSH_KICKED);

	assert_false(router_push_user(w, 5000, CMD_PUSH_KICKED, cJSON_CreateObject()));
	node3_full = true;
	assert_false(router_push_user_text(w, 250, CMD_PUSH_MSG, "{}", 2));
	assert_false(fake_take(&f));
	assert_true(registry_remove(8, CONN_REF(4, 1)));
}

static void test_fan_out_one_copy_per_node(void **state)
{
	int64_t users[] = { 101, 9, 201, 102, 5000, 202, 103, 10 };
	bool delivered[8];
	struct fake_frame f;
	uint64_t old;
	size_t got;
	cJSON *o = cJSON_CreateObject();

	(void)state;
	reset();
	assert_int_equal(registry_set(9, CONN_REF(5, 1), &old), 0);
	assert_int_equal(registry_set(10, CONN_REF(6, 1), &old), 0);
	/* 10 is the sender: skipped */
	got = router_push_users(w, users, 8, 10, CMD_PUSH_MSG, o, delivered);
	assert_int_equal(got, 6);
	assert_int_equal(nfwd, 2); /* one per node, never one per user */
	for (int i = 0; i < nfwd; i++) {
		if (fwds[i].node == 2) {
			assert_int_equal(fwds[i].n, 3);
			assert_int_equal(fwds[i].users[0], 101);
			assert_int_equal(fwds[i].users[2], 103);
		} else {
			assert_int_equal(fwds[i].node, 3);
			assert_int_equal(fwds[i].n, 2);
		}
	}
	bool want[] = { true, true, true, true, false, true, true, false };

	for (int i = 0; i < 8; i++)
		assert_int_equal(delivered[i], want[i]);
	assert_true(fake_take(&f)); /* user 9 here */
	assert_int_equal(f.conn, CONN_REF(5, 1));
	fake_frame_free(&f);
	assert_false(fake_take(&f));

	/* a node that cannot take it: its users are not delivered */
	reset();
	node3_full = true;
	got = router_push_users(w, users, 8, 10, CMD_PUSH_MSG, o, delivered);
	assert_int_equal(got, 4);
	assert_false(delivered[2]);
	assert_false(delivered[5]);
	assert_true(fake_take(&f));
	fake_frame_free(&f);
	cJSON_Delete(o);
	assert_true(registry_remove(9, CONN_REF(5, 1)));
	assert_true(registry_remove(10, CONN_REF(6, 1)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_where),
		cmocka_unit_test(test_push_one),
		cmocka_unit_test(test_fan_out_one_copy_per_node),
	};
	int rc;

	w = fake_worker_new(1, NULL);
	if (registry_init())
		return 1;
	router_set_cluster(&fake_cluster);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	registry_destroy();
	fake_worker_free();
	return rc;
}
