/*
 * test_core.c - the node core against a real ringchatd: PING, framing over
 * a byte stream, pipelining, every bad-input row of the protocol, many
 * connections, a client that never reads, shutdown and config errors.
 * None of this needs MySQL or Redis.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringchat/frame.h"

/* Node shared by the tests that do not need flags of their own. */
static struct node *core_node;

static int64_t core_epoch_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void core_put_hdr(uint8_t *out, uint32_t magic, uint16_t version, uint16_t cmd, uint32_t seq,
			 uint32_t len)
{
	struct frame_hdr h = {
	    .magic = magic,
	    .version = version,
	    .cmd = cmd,
	    .seq = seq,
	    .len = len,
	};

	frame_hdr_encode(out, &h);
}

/* Asserts a non-zero response carries a non-empty "error" string. */
static void core_assert_error_text(const struct rc_frame *f)
{
	const cJSON *err;

	assert_non_null(f->json);
	err = cJSON_GetObjectItemCaseSensitive(f->json, "error");
	if (!cJSON_IsString(err) || !err->valuestring[0])
		fail_msg("code %u without an \"error\" string: %s", f->hdr.code, f->payload);
}

/* PING on c answers OK with time_ms within a second of now. */
static void core_assert_ping(struct rc_client *c)
{
	int64_t before = core_epoch_ms(), after, t;
	cJSON *r = tc_call_ok(c, CMD_PING, NULL);

	after = core_epoch_ms();
	t = tc_json_int(r, "time_ms");
	if (t < before - 1000 || t > after + 1000)
		fail_msg("time_ms %lld is not close to now (%lld..%lld)", (long long)t,
			 (long long)before, (long long)after);
	cJSON_Delete(r);
}

/* A fresh connection still gets PING answered: the node is unharmed. */
static void core_assert_node_serves(struct node *n)
{
	struct rc_client *c = tc_connect(n);

	core_assert_ping(c);
	rc_close(c);
}

/*
 * Expects one error frame (cmd, code; seq checked when want_seq is not
 * UINT32_MAX), version 1, with an "error" text, then the end of the
 * connection and nothing else.
 */
static void core_expect_error_then_close(struct rc_client *c, uint16_t cmd, uint32_t want_seq,
					 uint32_t code)
{
	struct rc_frame f;
	int rc;

	rc = rc_recv(c, &f, 5000);
	if (rc)
		fail_msg("expected an error frame with code %u, got %s", code, strerror(-rc));
	if (f.hdr.cmd != cmd || f.hdr.code != code)
		fail_msg("expected cmd %u code %u, got cmd %u code %u: %s", cmd, code, f.hdr.cmd,
			 f.hdr.code, f.payload);
	assert_int_equal(f.hdr.version, FRAME_VERSION);
	if (want_seq != UINT32_MAX)
		assert_int_equal(f.hdr.seq, want_seq);
	core_assert_error_text(&f);
	rc_frame_free(&f);

	rc = rc_recv(c, &f, 5000);
	if (rc == 0)
		fail_msg("expected the connection to close, got cmd %u code %u: %s", f.hdr.cmd,
			 f.hdr.code, f.payload);
	if (rc == -ETIMEDOUT)
		fail_msg("the connection stayed open after error code %u", code);
	/* Closed: EOF, or a reset when unread bytes were left at the node. */
	assert_true(rc == -ENOTCONN || rc == -ECONNRESET);
}

static int core_setup(void **state)
{
	(void)state;
	/* test_many_connections opens 2000 connections from 127.0.0.1 that never
	 * log in: more than the default per-address caps allow */
	core_node = node_start("--max-conns-per-addr 4000 --max-unauth-per-addr 4000");
	return core_node ? 0 : -1;
}

static int core_teardown(void **state)
{
	(void)state;
	/* An orderly stop of the node that served every test is a check too. */
	return node_stop(core_node) == 0 ? 0 : -1;
}

static void test_ping_time(void **state)
{
	struct rc_client *c = tc_connect(core_node);
	struct rc_frame f;

	(void)state;
	core_assert_ping(c);
	/* An explicit {} payload means the same as an empty one. */
	assert_int_equal(rc_call(c, CMD_PING, "{}", &f, 5000), 0);
	assert_int_equal(f.hdr.magic, FRAME_MAGIC);
	assert_int_equal(f.hdr.version, FRAME_VERSION);
	assert_int_equal(f.hdr.cmd, CMD_PING);
	assert_int_equal(f.hdr.code, ST_OK);
	assert_int_equal(f.hdr.seq, rc_next_seq(c) - 1);
	assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(f.json, "time_ms")));
	rc_frame_free(&f);
	rc_close(c);
}

static void test_ping_one_byte_at_a_time(void **state)
{
	struct rc_client *c = tc_connect(core_node);
	uint8_t frame[FRAME_HDR_BYTES + 2];
	struct rc_frame f;
	size_t i;

	(void)state;
	core_put_hdr(frame, FRAME_MAGIC, FRAME_VERSION, CMD_PING, 4711, 2);
	memcpy(frame + FRAME_HDR_BYTES, "{}", 2);
	/* TCP_NODELAY and a pause: each byte travels in its own segment. */
	for (i = 0; i < sizeof(frame); i++) {
		assert_int_equal(rc_send_raw(c, frame + i, 1), 0);
		tc_sleep_ms(5);
	}
	assert_int_equal(rc_recv(c, &f, 5000), 0);
	assert_int_equal(f.hdr.cmd, CMD_PING);
	assert_int_equal(f.hdr.seq, 4711);
	assert_int_equal(f.hdr.code, ST_OK);
	assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(f.json, "time_ms")));
	rc_frame_free(&f);
	rc_close(c);
}

#define CORE_PIPELINE 1000

static void test_pipelined_pings_in_order(void **state)
{
	struct rc_client *c = tc_connect(core_node);
	uint8_t *buf = malloc(CORE_PIPELINE * FRAME_HDR_BYTES);
	struct rc_frame f;
	uint32_t i;

	(void)state;
	assert_non_null(buf);
	/* Distinct, non-consecutive seqs: an echo of the wrong one shows. */
	for (i = 0; i < CORE_PIPELINE; i++)
		core_put_hdr(buf + i * FRAME_HDR_BYTES, FRAME_MAGIC, FRAME_VERSION, CMD_PING,
			     7 * i + 3, 0);
	assert_int_equal(rc_send_raw(c, buf, CORE_PIPELINE * FRAME_HDR_BYTES), 0);
	for (i = 0; i < CORE_PIPELINE; i++) {
		int rc = rc_recv(c, &f, 10000);

		if (rc)
			fail_msg("response %u of %u: %s", i, CORE_PIPELINE, strerror(-rc));
		if (f.hdr.seq != 7 * i + 3 || f.hdr.code != ST_OK || f.hdr.cmd != CMD_PING)
			fail_msg(
			    "response %u: expected PING seq %u OK, got cmd %u seq %u code %u: %s",
			    i, 7 * i + 3, f.hdr.cmd, f.hdr.seq, f.hdr.code, f.payload);
		rc_frame_free(&f);
	}
	free(buf);
	rc_close(c);
}

static void test_bad_magic_closes(void **state)
{
	static const char http[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t frame[FRAME_HDR_BYTES];
	struct rc_client *c;

	(void)state;
	/* "IMP2": one byte off. */
	c = tc_connect(core_node);
	core_put_hdr(frame, 0x494D5032u, FRAME_VERSION, CMD_PING, 5, 0);
	assert_int_equal(rc_send_raw(c, frame, FRAME_HDR_BYTES), 0);
	core_expect_error_then_close(c, CMD_NONE, UINT32_MAX, ST_BAD_FRAME);
	rc_close(c);
	core_assert_node_serves(core_node);

	/* Someone speaking HTTP to the client port. */
	c = tc_connect(core_node);
	assert_int_equal(rc_send_raw(c, http, sizeof(http) - 1), 0);
	core_expect_error_then_close(c, CMD_NONE, UINT32_MAX, ST_BAD_FRAME);
	rc_close(c);
	core_assert_node_serves(core_node);
}

static void test_frame_too_large_closes(void **state)
{
	uint8_t hdr[FRAME_HDR_BYTES];
	struct rc_client *c;
	char *json;

	(void)state;
	/* The header alone must be enough: the node may not wait for 64 KiB. */
	c = tc_connect(core_node);
	core_put_hdr(hdr, FRAME_MAGIC, FRAME_VERSION, CMD_PING, 9, FRAME_DEFAULT_MAX_BYTES + 1);
	assert_int_equal(rc_send_raw(c, hdr, sizeof(hdr)), 0);
	core_expect_error_then_close(c, CMD_NONE, UINT32_MAX, ST_FRAME_TOO_LARGE);
	rc_close(c);
	core_assert_node_serves(core_node);

	c = tc_connect(core_node);
	core_put_hdr(hdr, FRAME_MAGIC, FRAME_VERSION, CMD_PING, 10, UINT32_MAX);
	assert_int_equal(rc_send_raw(c, hdr, sizeof(hdr)), 0);
	core_expect_error_then_close(c, CMD_NONE, UINT32_MAX, ST_FRAME_TOO_LARGE);
	rc_close(c);
	core_assert_node_serves(core_node);

	/* Exactly max_frame is allowed: a JSON object padded with blanks. */
	json = malloc(FRAME_DEFAULT_MAX_BYTES + 1);
	assert_non_null(json);
	memset(json, ' ', FRAME_DEFAULT_MAX_BYTES);
	json[0] = '{';
	json[FRAME_DEFAULT_MAX_BYTES - 1] = '}';
	json[FRAME_DEFAULT_MAX_BYTES] = '\0';
	c = tc_connect(core_node);
	assert_int_equal(tc_call_code(c, CMD_PING, json), ST_OK);
	core_assert_ping(c);
	rc_close(c);
	free(json);
}

/* A configured --max-frame is the limit, whole frames included. */
static void test_max_frame_configured(void **state)
{
	struct node *n = node_start("--max-frame 1024");
	char json[1026];
	struct rc_client *c;
	uint8_t *frame;
	size_t flen;

	(void)state;
	assert_non_null(n);
	memset(json, ' ', sizeof(json) - 1);
	json[sizeof(json) - 1] = '\0';
	json[0] = '{';

	/* 1024 bytes: accepted. */
	json[1023] = '}';
	json[1024] = '\0';
	c = tc_connect(n);
	assert_int_equal(tc_call_code(c, CMD_PING, json), ST_OK);

	/* 1025 bytes, header and payload in one write: refused, closed. */
	json[1023] = ' ';
	json[1024] = '}';
	frame = frame_build(CMD_PING, 0, 77, json, 1025, &flen);
	assert_non_null(frame);
	assert_int_equal(rc_send_raw(c, frame, flen), 0);
	free(frame);
	core_expect_error_then_close(c, CMD_NONE, UINT32_MAX, ST_FRAME_TOO_LARGE);
	rc_close(c);
	core_assert_node_serves(n);
	assert_int_equal(node_stop(n), 0);
}

static void test_bad_version_closes(void **state)
{
	static const uint16_t versions[] = {2, 0, 0xffff};
	uint8_t hdr[FRAME_HDR_BYTES];
	struct rc_client *c;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		c = tc_connect(core_node);
		core_put_hdr(hdr, FRAME_MAGIC, versions[i], CMD_PING, 4242, 0);
		assert_int_equal(rc_send_raw(c, hdr, sizeof(hdr)), 0);
		/* Same cmd and seq, version field 1. */
		core_expect_error_then_close(c, CMD_PING, 4242, ST_UNSUPPORTED_VERSION);
		rc_close(c);
		core_assert_node_serves(core_node);
	}
}

/*
 * A valid request, then a bad frame, in one write: requests are answered
 * in order, so the PING's answer comes first, then the error, then the
 * close.
 */
static void test_bad_frame_after_good_request(void **state)
{
	static const struct {
		uint32_t magic, len;
		uint16_t version, err_cmd;
		uint32_t code;
	} cases[] = {
	    {0xDEADBEEFu, 0, FRAME_VERSION, CMD_NONE, ST_BAD_FRAME},
	    {FRAME_MAGIC, FRAME_DEFAULT_MAX_BYTES + 1, FRAME_VERSION, CMD_NONE, ST_FRAME_TOO_LARGE},
	    {FRAME_MAGIC, 0, 2, CMD_PING, ST_UNSUPPORTED_VERSION},
	};
	uint8_t frames[2 * FRAME_HDR_BYTES];
	char failed[512] = "";
	size_t i, off = 0;
	struct rc_client *c;
	struct rc_frame f;
	int rc;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = tc_connect(core_node);
		core_put_hdr(frames, FRAME_MAGIC, FRAME_VERSION, CMD_PING, 41, 0);
		core_put_hdr(frames + FRAME_HDR_BYTES, cases[i].magic, cases[i].version, CMD_PING,
			     42, cases[i].len);
		assert_int_equal(rc_send_raw(c, frames, sizeof(frames)), 0);
		rc = rc_recv(c, &f, 5000);
		if (rc)
			fail_msg("PING seq 41 before a bad frame (code %u case): %s", cases[i].code,
				 strerror(-rc));
		if (f.hdr.seq != 41 || f.hdr.code != ST_OK) {
			/* Every case is tried; the failure lists each that failed. */
			if (off < sizeof(failed))
				off += (size_t)snprintf(failed + off, sizeof(failed) - off,
							" [case code %u: got cmd %u seq %u code %u "
							"first]",
							cases[i].code, f.hdr.cmd, f.hdr.seq,
							f.hdr.code);
			rc_frame_free(&f);
			rc_close(c);
			continue;
		}
		rc_frame_free(&f);
		core_expect_error_then_close(c, cases[i].err_cmd,
					     cases[i].err_cmd ? 42 : UINT32_MAX, cases[i].code);
		rc_close(c);
	}
	if (failed[0])
		fail_msg("PING seq 41 then a bad frame in one write: expected the PING answered "
			 "(OK), then the error frame, then the close:%s",
			 failed);
	core_assert_node_serves(core_node);
}

static void test_payload_not_object_keeps_connection(void **state)
{
	static const char *const bad[] = {
	    "[1]",
	    "\"x\"",
	    "{bad",
	    "null",
	    "42",
	    "true",
	    "{\"a\":1",
	    /* One object and then more is not one object. */
	    "{} {}",
	    "{}x",
	};
	struct rc_client *c = tc_connect(core_node);
	char failed[512] = "";
	size_t i, off = 0;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint32_t code = tc_call_code(c, CMD_PING, bad[i]);

		/* Every payload is tried; the failure lists all that passed. */
		if (code != ST_BAD_REQUEST && off < sizeof(failed))
			off += (size_t)snprintf(failed + off, sizeof(failed) - off,
						" [%s -> code %u]", bad[i], code);
		/* Still open and in step. */
		core_assert_ping(c);
	}
	rc_close(c);
	if (failed[0])
		fail_msg("PING payloads that are not one JSON object, expected code 1:%s", failed);
	core_assert_node_serves(core_node);
}

static void test_unknown_cmd_keeps_connection(void **state)
{
	static const uint16_t cmds[] = {999, 77, 2, 65535};
	struct rc_client *c = tc_connect(core_node);
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		uint32_t code = tc_call_code(c, cmds[i], NULL);

		if (code != ST_UNKNOWN_CMD)
			fail_msg("cmd %u: expected code 9, got %u", cmds[i], code);
		core_assert_ping(c);
	}
	/* Unknown cmd is checked before the payload. */
	assert_int_equal(tc_call_code(c, 999, "[1]"), ST_UNKNOWN_CMD);
	core_assert_ping(c);
	rc_close(c);
	core_assert_node_serves(core_node);
}

static void test_not_logged_in(void **state)
{
	static const struct {
		uint16_t cmd;
		const char *json;
	} reqs[] = {
	    {CMD_FRIEND_LIST, NULL},
	    {CMD_LOGOUT, NULL},
	    {CMD_MSG_SEND, "{\"to\":1,\"type\":0,\"text\":\"hi\"}"},
	    {CMD_GROUP_CREATE, "{\"name\":\"g\"}"},
	    {CMD_HISTORY, "{\"with\":1}"},
	    /* Not logged in is checked before the payload. */
	    {CMD_MSG_SEND, "[1]"},
	    {CMD_FRIEND_LIST, "{bad"},
	};
	struct rc_client *c = tc_connect(core_node);
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		uint32_t code = tc_call_code(c, reqs[i].cmd, reqs[i].json);

		if (code != ST_NOT_LOGGED_IN)
			fail_msg("%s %s before login: expected code 2, got %u",
				 rc_cmd_name(reqs[i].cmd), reqs[i].json ? reqs[i].json : "{}",
				 code);
	}
	core_assert_ping(c);
	rc_close(c);
	core_assert_node_serves(core_node);
}

#define CORE_MANY_CONNS 2000

static void test_many_connections(void **state)
{
	struct rc_client **cs = calloc(CORE_MANY_CONNS, sizeof(*cs));
	struct rc_frame f;
	int i, rc;

	(void)state;
	assert_non_null(cs);
	for (i = 0; i < CORE_MANY_CONNS; i++) {
		cs[i] = rc_connect("127.0.0.1", node_port(core_node), 5000);
		if (!cs[i])
			fail_msg("connection %d of %d: %s", i, CORE_MANY_CONNS, strerror(errno));
	}
	/* All requests first, so all connections are busy at once. */
	for (i = 0; i < CORE_MANY_CONNS; i++)
		assert_int_equal(rc_send(cs[i], CMD_PING, (uint32_t)i + 1, NULL), 0);
	for (i = 0; i < CORE_MANY_CONNS; i++) {
		rc = rc_recv(cs[i], &f, 10000);
		if (rc)
			fail_msg("connection %d: no PING answer: %s", i, strerror(-rc));
		assert_int_equal(f.hdr.seq, (uint32_t)i + 1);
		assert_int_equal(f.hdr.code, ST_OK);
		rc_frame_free(&f);
	}
	for (i = 0; i < CORE_MANY_CONNS; i++)
		rc_close(cs[i]);
	free(cs);
	core_assert_node_serves(core_node);
}

/*
 * Clients that never read. A thread floods pipelined PINGs on a
 * connection whose receive window is tiny, so the node's answers pile up
 * at the node. When the node drops it, the thread opens another one and
 * goes on, until FLOOD_BYTES are sent in all, the send buffer of a
 * connection stays full FLOOD_STALL_MS (the node neither reads nor drops
 * it; that connection is left to flood_wait_dropped), or the test says
 * stop. The thread makes no cmocka assertion: it only counts.
 */
#define FLOOD_BYTES (50u << 20)
#define FLOOD_CHUNK_FRAMES 16384u
#define FLOOD_STALL_MS 1500

struct flood {
	uint16_t port;
	int fd; /* the connection being flooded, -1 when none */
	atomic_size_t sent;
	atomic_uint drops; /* connections the node closed or reset */
	atomic_bool done;  /* the thread stopped writing */
	atomic_bool stop;
	bool stalled;
	int error; /* errno of a failed connect, 0 if none */
};

/* A connection with a small receive window, or -errno. */
static int flood_connect(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), small = 4096, err;

	if (fd == -1)
		return -errno;
	/* Set before connect, so the advertised window starts small. */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* Floods fl->fd; returns true when the node dropped it. */
static bool flood_one(struct flood *fl, const uint8_t *buf, size_t chunk)
{
	int64_t last_progress = tc_now_ms();
	size_t off = 0;

	while (!atomic_load(&fl->stop) && atomic_load(&fl->sent) < FLOOD_BYTES) {
		ssize_t w = send(fl->fd, buf + off, chunk - off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w > 0) {
			atomic_fetch_add(&fl->sent, (size_t)w);
			off = (off + (size_t)w) % chunk;
			last_progress = tc_now_ms();
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd p = {.fd = fl->fd, .events = POLLOUT};

			if (tc_now_ms() - last_progress > FLOOD_STALL_MS) {
				fl->stalled = true;
				return false;
			}
			poll(&p, 1, 100);
			continue;
		}
		return true;
	}
	return false;
}

static void *flood_main(void *arg)
{
	struct flood *fl = arg;
	size_t chunk = FLOOD_CHUNK_FRAMES * FRAME_HDR_BYTES;
	uint8_t *buf = malloc(chunk);
	uint32_t i;
	int fd;

	if (!buf) {
		fl->error = ENOMEM;
		goto out;
	}
	for (i = 0; i < FLOOD_CHUNK_FRAMES; i++)
		core_put_hdr(buf + i * FRAME_HDR_BYTES, FRAME_MAGIC, FRAME_VERSION, CMD_PING, i + 1,
			     0);
	while (!atomic_load(&fl->stop) && atomic_load(&fl->sent) < FLOOD_BYTES) {
		fd = flood_connect(fl->port);
		if (fd < 0) {
			fl->error = -fd;
			break;
		}
		fl->fd = fd;
		if (!flood_one(fl, buf, chunk))
			break;
		atomic_fetch_add(&fl->drops, 1);
		close(fl->fd);
		fl->fd = -1;
	}
out:
	free(buf);
	atomic_store(&fl->done, true);
	return NULL;
}

/*
 * After the flood: was the last connection dropped? First without
 * reading (a reset shows as POLLERR/POLLHUP), then by reading what is
 * queued: only a node that closed the connection ends the stream with
 * EOF or a reset; one that kept it would leave it silent and open.
 */
static bool flood_wait_dropped(int fd, int timeout_ms)
{
	int64_t deadline = tc_now_ms() + timeout_ms, quiet_since;
	static uint8_t sink[1 << 16];

	while (tc_now_ms() < deadline - timeout_ms + 2000) {
		struct pollfd p = {.fd = fd, .events = POLLRDHUP};

		if (poll(&p, 1, 100) > 0 && (p.revents & (POLLERR | POLLHUP | POLLRDHUP)))
			return true;
	}
	quiet_since = tc_now_ms();
	while (tc_now_ms() < deadline && tc_now_ms() - quiet_since < 3000) {
		ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (r == 0)
			return true;
		if (r > 0) {
			quiet_since = tc_now_ms();
			continue;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return true;
		poll(&p, 1, 100);
	}
	return false;
}

static void test_non_reader_does_not_stall_others(void **state)
{
	struct node *n = node_start("--out-limit-bytes 65536");
	struct rc_client *others[3];
	/* Static: a failed assertion leaves this frame while the thread runs. */
	static struct flood fl;
	int64_t t0, start;
	pthread_t th;
	int i, probes = 0;

	(void)state;
	assert_non_null(n);
	for (i = 0; i < 3; i++)
		others[i] = tc_connect(n);
	fl.port = node_port(n);
	fl.fd = -1;
	assert_int_equal(pthread_create(&th, NULL, flood_main, &fl), 0);

	/* Let the pressure build: a few MB in, or the flooder done. */
	start = tc_now_ms();
	while (atomic_load(&fl.sent) < (4u << 20) && !atomic_load(&fl.done) &&
	       tc_now_ms() - start < 5000)
		tc_sleep_ms(10);

	/* Others get answers within a second while the flood goes on. */
	start = tc_now_ms();
	while (tc_now_ms() - start < 2500 ||
	       (!atomic_load(&fl.done) && tc_now_ms() - start < 8000)) {
		for (i = 0; i < 3; i++) {
			struct rc_frame f;
			int rc;

			t0 = tc_now_ms();
			rc = rc_call(others[i], CMD_PING, NULL, &f, 1000);
			if (rc)
				fail_msg("PING of another client after %lld ms of flood (%zu bytes "
					 "sent): %s",
					 (long long)(t0 - start), atomic_load(&fl.sent),
					 strerror(-rc));
			assert_int_equal(f.hdr.code, ST_OK);
			rc_frame_free(&f);
			probes++;
		}
		/* New connections are accepted and served too. */
		t0 = tc_now_ms();
		core_assert_node_serves(n);
		if (tc_now_ms() - t0 > 1000)
			fail_msg("a new connection waited %lld ms for PING",
				 (long long)(tc_now_ms() - t0));
		tc_sleep_ms(50);
	}
	assert_true(probes > 0);

	atomic_store(&fl.stop, true);
	pthread_join(th, NULL);
	if (fl.error)
		fail_msg("flood connection: %s", strerror(fl.error));
	if (atomic_load(&fl.drops) == 0 && !flood_wait_dropped(fl.fd, 15000))
		fail_msg("a client that never reads was not disconnected (%zu bytes of PINGs "
			 "sent, send buffer %s) with --out-limit-bytes 65536",
			 atomic_load(&fl.sent), fl.stalled ? "full" : "not full");
	if (fl.fd >= 0)
		close(fl.fd);

	for (i = 0; i < 3; i++) {
		core_assert_ping(others[i]);
		rc_close(others[i]);
	}
	core_assert_node_serves(n);
	print_message("flood: %zu bytes of PINGs sent, %u connections dropped by the node, "
		      "%d PINGs of others answered meanwhile\n",
		      atomic_load(&fl.sent), atomic_load(&fl.drops), probes);
	assert_int_equal(node_stop(n), 0);
}

static void test_sigterm_exits_zero(void **state)
{
	struct node *n = node_start(NULL);
	struct rc_client *c;
	struct rc_frame f;
	int rc;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	core_assert_ping(c);
	/* A connection open at SIGTERM is closed, and the exit is clean. */
	assert_int_equal(node_stop(n), 0);
	rc = rc_recv(c, &f, 2000);
	if (rc == 0)
		fail_msg("unexpected frame after shutdown: cmd %u: %s", f.hdr.cmd, f.payload);
	assert_true(rc == -ENOTCONN || rc == -ECONNRESET);
	rc_close(c);
}

static void test_starts_without_storage(void **state)
{
	/* Sockets that do not exist: MySQL and Redis are both "down". */
	struct node *n = node_start("--mysql-socket /nonexistent/ringchat-mysql.sock "
				    "--redis-socket /nonexistent/ringchat-redis.sock");
	struct rc_client *c;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	core_assert_ping(c);
	rc_close(c);
	assert_int_equal(node_stop(n), 0);
}

static void test_config_errors_exit_2(void **state)
{
	char out[4096];
	int status;

	(void)state;
	status = node_run(out, sizeof(out), 10000, "--check-config --bogus 1");
	if (status != 2 || !strstr(out, "bogus"))
		fail_msg("--check-config --bogus 1: expected status 2 naming \"bogus\", got %d: %s",
			 status, out);

	/* Not only --check-config: a normal start refuses the bad value too. */
	status = node_run(out, sizeof(out), 10000,
			  "--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --max-frame abc");
	if (status != 2 || (!strstr(out, "max_frame") && !strstr(out, "max-frame")))
		fail_msg("--max-frame abc: expected status 2 naming max_frame, got %d: %s", status,
			 out);

	status = node_run(out, sizeof(out), 10000, "--check-config --max-frame abc");
	if (status != 2 || (!strstr(out, "max_frame") && !strstr(out, "max-frame")))
		fail_msg("--check-config --max-frame abc: expected status 2 naming max_frame, "
			 "got %d: %s",
			 status, out);

	/* The default route is the node link, which needs the cluster key:
	 * without one the node refuses, naming it. */
	status = node_run(out, sizeof(out), 10000, "--check-config --max-frame 1024");
	if (status != 2 || !strstr(out, "cluster_secret"))
		fail_msg("--check-config without a cluster secret: expected status 2 naming "
			 "cluster_secret, got %d: %s",
			 status, out);

	/* And a good configuration checks out. */
	status = node_run(out, sizeof(out), 10000,
			  "--check-config --max-frame 1024 "
			  "--cluster-secret test-cluster-secret-of-at-least-32-bytes");
	if (status != 0)
		fail_msg("--check-config --max-frame 1024 with a secret: expected status 0, got "
			 "%d: %s",
			 status, out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ping_time),
	    cmocka_unit_test(test_ping_one_byte_at_a_time),
	    cmocka_unit_test(test_pipelined_pings_in_order),
	    cmocka_unit_test(test_bad_magic_closes),
	    cmocka_unit_test(test_frame_too_large_closes),
	    cmocka_unit_test(test_max_frame_configured),
	    cmocka_unit_test(test_bad_version_closes),
	    cmocka_unit_test(test_bad_frame_after_good_request),
	    cmocka_unit_test(test_payload_not_object_keeps_connection),
	    cmocka_unit_test(test_unknown_cmd_keeps_connection),
	    cmocka_unit_test(test_not_logged_in),
	    cmocka_unit_test(test_many_connections),
	    cmocka_unit_test(test_non_reader_does_not_stall_others),
	    cmocka_unit_test(test_sigterm_exits_zero),
	    cmocka_unit_test(test_starts_without_storage),
	    cmocka_unit_test(test_config_errors_exit_2),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, core_setup, core_teardown));
}
