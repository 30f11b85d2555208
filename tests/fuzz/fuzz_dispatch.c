/*
 * fuzz_dispatch.c - libFuzzer target for the request path on a worker:
 * dispatch_worker_ops.handle with frames of every command, on a worker
 * whose storage points nowhere (MariaDB and Redis unix sockets that do
 * not exist, so every storage call fails fast: commands that need it
 * answer 12 INTERNAL, or 2 before login).
 *
 * Input: byte 0: bit 0 = the connection counts as logged in (user 1), so
 * the handlers' own validation runs too. Then records until the input
 * ends: cmd selector (1 byte: < 0x80 indexes the command list, else
 * a raw cmd), kind (1 byte: 0..249 frame, 250.. IN_BAD_FRAME), payload
 * length (1 byte, up to what is left), payload. Finally IN_CLOSED.
 *
 * Oracle, besides ASan/UBSan: every frame the worker sends is well
 * formed (magic, version, len matching the bytes; a JSON object payload;
 * an error code carries "error"); replies echo the seq of a request that
 * was sent, never more replies than requests.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/fake_worker.h"
#include "ringchat/dispatch.h"
#include "ringchat/log.h"
#include "ringchat/messages.h"
#include "ringchat/protocol.h"
#include "ringchat/registry.h"
#include "ringchat/session.h"

#define FUZZ_SLOTS 8

static struct worker *w;

static const uint16_t cmds[] = {
	CMD_PING,	     CMD_SIGNUP,	CMD_LOGIN,	   CMD_LOGOUT,
	CMD_RESUME,	     CMD_FRIEND_REQUEST, CMD_FRIEND_ACCEPT, CMD_FRIEND_DELETE,
	CMD_FRIEND_LIST,     CMD_FRIEND_UPDATE,	CMD_GROUP_CREATE,  CMD_GROUP_DISSOLVE,
	CMD_GROUP_JOIN,	     CMD_GROUP_QUIT,	CMD_GROUP_MEMBERS, CMD_GROUP_LIST,
	CMD_MSG_SEND,	     CMD_GROUP_SEND,	CMD_MSG_ACK,	   CMD_HISTORY,
	CMD_PUSH_MSG,
};

static void wake_noop(int lane)
{
	(void)lane;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	w = fake_worker_new(1, &dispatch_worker_ops);
	snprintf(fake_cfg.mysql_socket, sizeof(fake_cfg.mysql_socket), "/nonexistent/my.sock");
	snprintf(fake_cfg.redis_socket, sizeof(fake_cfg.redis_socket), "/nonexistent/rd.sock");
	fake_cfg.rate_msgs_per_s = 1000000; /* the rate limit is not what is fuzzed */
	fake_cfg.rate_burst = 1000000;
	log_min_level = (enum log_level)(LOG_ERROR + 1); /* storage failures are expected */
	/* the messaging handlers' per-worker state and the group-commit
	 * writer (whose thread keeps failing to reach MariaDB: completions
	 * come back as errors through dispatch_worker_ops.poll) */
	if (session_table_init(FUZZ_SLOTS, 1) || registry_init() ||
	    messages_start(&fake_cfg, 1, wake_noop) || dispatch_worker_ops.start(w))
		abort();
	return 0;
}

static void check_out(uint32_t nreq, const uint32_t *seqs)
{
	struct out_msg *m;

	while ((m = spsc_pop(&w->lane->out))) {
		struct frame_hdr h;
		cJSON *json;

		if (m->len) {
			if (m->len < FRAME_HDR_BYTES)
				abort();
			frame_hdr_decode(m->data, &h);
			if (h.magic != FRAME_MAGIC || h.version != FRAME_VERSION ||
			    h.len != m->len - FRAME_HDR_BYTES)
				abort();
			json = cJSON_ParseWithLength((const char *)m->data + FRAME_HDR_BYTES,
						     h.len);
			if (!cJSON_IsObject(json))
				abort();
			if (h.code != ST_OK && h.cmd < CMD_PUSH_MSG &&
			    !cJSON_IsString(cJSON_GetObjectItem(json, "error")))
				abort();
			cJSON_Delete(json);
			if (m->flags & OUT_REPLY) {
				bool known = false;

				for (uint32_t i = 0; i < nreq && !known; i++)
					known = seqs[i] == h.seq;
				if (!known)
					abort(); /* a reply to nothing that was asked */
			}
		}
		free(m);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint32_t gen;
	uint64_t conn;
	uint32_t seqs[4096], nreq = 0;
	size_t pos = 1;
	struct in_msg *m;

	if (size < 1)
		return 0;
	gen = (gen + 1) & 0xffffff;
	conn = CONN_REF(1, gen ? gen : 1);
	if (data[0] & 1) {
		struct session *s = session_of(conn);

		if (s->conn != conn)
			session_open(s, conn, 0x7f000001, 1);
		s->user_id = 1;
	}
	while (pos + 3 <= size && nreq < sizeof(seqs) / sizeof(seqs[0])) {
		uint8_t sel = data[pos], kind = data[pos + 1];
		size_t len = data[pos + 2];
		uint16_t cmd = sel < 0x80 ? cmds[sel % (sizeof(cmds) / sizeof(cmds[0]))]
					  : (uint16_t)(sel << 3);

		pos += 3;
		if (len > size - pos)
			len = size - pos;
		m = calloc(1, sizeof(*m) + len);
		if (!m)
			abort();
		m->conn = conn;
		m->kind = kind < 250 ? IN_FRAME : IN_BAD_FRAME;
		m->peer_addr = 0x7f000001;
		m->hdr.magic = FRAME_MAGIC;
		m->hdr.version = FRAME_VERSION;
		m->hdr.cmd = cmd;
		m->hdr.seq = nreq + 1;
		m->hdr.len = m->kind == IN_FRAME ? (uint32_t)len : 0;
		if (m->kind == IN_BAD_FRAME) {
			static const uint32_t codes[] = { ST_BAD_FRAME, ST_FRAME_TOO_LARGE,
							  ST_UNSUPPORTED_VERSION };

			m->hdr.code = codes[kind % 3];
		}
		if (m->hdr.len)
			memcpy(m->payload, data + pos, len);
		pos += len;
		seqs[nreq++] = m->hdr.seq;
		dispatch_worker_ops.handle(w, m);
		dispatch_worker_ops.poll(w);
	}
	check_out(nreq, seqs);
	m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	m->conn = conn;
	m->kind = IN_CLOSED;
	dispatch_worker_ops.handle(w, m);
	dispatch_worker_ops.poll(w);
	check_out(nreq, seqs);
	return 0;
}
