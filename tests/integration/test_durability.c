/*
 * test_durability.c - what an OK to a sender promises, tested by breaking
 * things: a node SIGKILLed right after the last OK (every OK'd message is
 * delivered by a new node), a node stopped with sends in flight (each gets
 * its answer, each OK'd one is stored), MariaDB stopped under a sender (12
 * INTERNAL within seconds, never a hang, and OK again once it is back),
 * the relay durability mode, a stop that must end within a bound
 * although the workers' last frames find full queues and no I/O thread,
 * and a database made by an older schema (client_msg_ids in messages,
 * under a unique key): sql/schema.sql migrates it, and a retry of a
 * message stored before the migration is still recognised.
 *
 * Needs the services (scripts/services.sh start; RINGCHAT_MYSQL_SOCKET and
 * RINGCHAT_REDIS_SOCKET from `services.sh env`). The outage test stops and
 * restarts this tree's MariaDB, so it runs last.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DUR_PUSH_MS 5000
#define DUR_NO_PUSH_MS 500
#define DUR_BURST_MS 60000
#define DUR_WINDOW 1000
/* Rate limits out of the way, for the tests that pipeline thousands of
 * sends on one connection (the others run with the defaults). */
#define DUR_BULK_FLAGS "--rate-msgs-per-s 1000000 --rate-burst 1000000"

struct dur_user {
	struct rc_client *c;
	int64_t id;
	char name[TC_NAME_MAX];
};

static void dur_user_close(struct dur_user *u)
{
	if (u->c)
		rc_close(u->c);
	u->c = NULL;
}

/* A new connection to n, logged in as u. */
static void dur_login(struct node *n, struct dur_user *u)
{
	cJSON *r;

	dur_user_close(u);
	u->c = tc_connect(n);
	r = tc_call_ok(u->c, CMD_LOGIN, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name,
		       TC_PASSWORD);
	assert_int_equal(tc_json_int(r, "user_id"), u->id);
	cJSON_Delete(r);
}

static void dur_expect(struct rc_client *c, uint16_t cmd, uint32_t want, const char *json)
{
	uint32_t code;
	cJSON *r = tc_call(c, cmd, json, &code);

	if (code != want) {
		char *text = cJSON_PrintUnformatted(r);

		fail_msg("%s %s: expected %u, got %u: %s", rc_cmd_name(cmd), json, want, code,
			 text ? text : "?");
	}
	cJSON_Delete(r);
}

static void dur_befriend(struct dur_user *a, struct dur_user *b)
{
	char json[64];

	snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)b->id);
	dur_expect(a->c, CMD_FRIEND_REQUEST, ST_OK, json);
	cJSON_Delete(tc_expect_push(b->c, CMD_PUSH_FRIEND_REQUEST, DUR_PUSH_MS));
	snprintf(json, sizeof(json), "{\"user_id\":%lld}", (long long)a->id);
	dur_expect(b->c, CMD_FRIEND_ACCEPT, ST_OK, json);
	cJSON_Delete(tc_expect_push(a->c, CMD_PUSH_FRIEND_ACCEPTED, DUR_PUSH_MS));
}

/* Two friends on n; b is left logged out. */
static void dur_pair(struct node *n, struct dur_user *a, struct dur_user *b, const char *prefix)
{
	a->c = tc_signup_login_as(n, prefix, a->name, &a->id);
	b->c = tc_signup_login_as(n, prefix, b->name, &b->id);
	dur_befriend(a, b);
	dur_user_close(b);
	tc_sleep_ms(200);
}

/* The JSON of send i: every third one carries a client_msg_id (such
 * messages take the "held" path). */
static void dur_send_json(char *buf, size_t n, int64_t to, const char *prefix, int i)
{
	if (i % 3 == 0)
		snprintf(buf, n,
			 "{\"to\":%lld,\"type\":0,\"text\":\"%s%d\",\"client_msg_id\":\"%s-%d\"}",
			 (long long)to, prefix, i, prefix, i);
	else
		snprintf(buf, n, "{\"to\":%lld,\"type\":0,\"text\":\"%s%d\"}", (long long)to,
			 prefix, i);
}

/* Pipelines n sends, reads every response (all must be OK, in order) into
 * ids[]. */
static void dur_send_many(struct rc_client *c, int64_t to, int n, const char *prefix, int64_t *ids)
{
	uint32_t base = rc_next_seq(c) + 1000000u;
	int64_t deadline = tc_now_ms() + DUR_BURST_MS;
	int sent = 0, got = 0;
	char json[256];

	while (got < n) {
		while (sent < n && sent - got < DUR_WINDOW) {
			dur_send_json(json, sizeof(json), to, prefix, sent);
			assert_int_equal(rc_send(c, CMD_MSG_SEND, base + (uint32_t)sent, json), 0);
			sent++;
		}
		struct rc_frame f;
		int rc = rc_recv(c, &f, (int)(deadline - tc_now_ms()));

		if (rc)
			fail_msg("response %d of %d did not come: %s", got, n, strerror(-rc));
		if (f.hdr.seq == 0) {
			rc_frame_free(&f);
			continue;
		}
		assert_int_equal(f.hdr.seq, base + (uint32_t)got);
		if (f.hdr.code != ST_OK)
			fail_msg("send %d answered %u: %s", got, f.hdr.code, f.payload);
		ids[got++] = tc_json_int(f.json, "msg_id");
		rc_frame_free(&f);
	}
}

/* Reads n PUSH_MSGs: texts "<prefix>0".. in order, msg_ids equal ids[]. */
static void dur_expect_pushes(struct rc_client *c, int n, const char *prefix, const int64_t *ids)
{
	char want[64];

	for (int i = 0; i < n; i++) {
		struct rc_frame f;
		const cJSON *t;
		int rc = rc_wait_push(c, CMD_PUSH_MSG, &f, DUR_PUSH_MS);

		if (rc)
			fail_msg("push %d of %d did not come: %s", i, n, strerror(-rc));
		snprintf(want, sizeof(want), "%s%d", prefix, i);
		t = cJSON_GetObjectItemCaseSensitive(f.json, "text");
		if (!cJSON_IsString(t) || strcmp(t->valuestring, want) != 0)
			fail_msg("push %d: %s, expected text %s", i, f.payload, want);
		if (tc_json_int(f.json, "msg_id") != ids[i])
			fail_msg("push %d: msg_id %lld, the send answered %lld", i,
				 (long long)tc_json_int(f.json, "msg_id"), (long long)ids[i]);
		rc_frame_free(&f);
	}
}

/* SIGKILL right after the last OK: a new node delivers every OK'd
 * message, in order, under the msg_id the sender was given. */
static void test_kill_after_ok(void **state)
{
	enum { N = 3000 };
	struct dur_user a = {0}, b = {0};
	struct node *n1, *n2;
	int64_t *ids = calloc(N, sizeof(*ids));

	(void)state;
	assert_non_null(ids);
	n1 = node_start(DUR_BULK_FLAGS);
	assert_non_null(n1);
	dur_pair(n1, &a, &b, "ka");
	dur_send_many(a.c, b.id, N, "k", ids);
	node_kill(n1);
	dur_user_close(&a);

	n2 = node_start(DUR_BULK_FLAGS);
	assert_non_null(n2);
	dur_login(n2, &b);
	dur_expect_pushes(b.c, N, "k", ids);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, DUR_NO_PUSH_MS);

	/* the retry of a message OK'd by the dead node is recognised by the
	 * new one (the database, not memory, decides) */
	dur_login(n2, &a);
	{
		char json[256];
		cJSON *r;
		uint32_t code;

		dur_send_json(json, sizeof(json), b.id, "k", 0);
		r = tc_call(a.c, CMD_MSG_SEND, json, &code);
		assert_int_equal(code, ST_OK);
		assert_int_equal(tc_json_int(r, "msg_id"), ids[0]);
		cJSON_Delete(r);
	}
	tc_expect_no_push(b.c, CMD_PUSH_MSG, DUR_NO_PUSH_MS);
	dur_user_close(&a);
	dur_user_close(&b);
	assert_int_equal(node_stop(n2), 0);
	free(ids);
}

/* SIGTERM with sends in flight: every request gets its answer before the
 * node closes, and every OK'd message is there afterwards. */
static void test_stop_drains(void **state)
{
	enum { N = 2000 };
	struct dur_user a = {0}, b = {0};
	struct node *n1, *n2;
	uint32_t base;
	int64_t *ok_ids = calloc(N, sizeof(*ok_ids));
	int nok = 0, answered = 0;
	char json[256];

	(void)state;
	assert_non_null(ok_ids);
	n1 = node_start(DUR_BULK_FLAGS);
	assert_non_null(n1);
	dur_pair(n1, &a, &b, "sa");
	base = rc_next_seq(a.c) + 1000000u;
	for (int i = 0; i < N; i++) {
		dur_send_json(json, sizeof(json), b.id, "s", i);
		assert_int_equal(rc_send(a.c, CMD_MSG_SEND, base + (uint32_t)i, json), 0);
	}
	assert_int_equal(node_stop(n1), 0);
	/* everything the node answered is still readable from the socket */
	for (;;) {
		struct rc_frame f;
		int rc = rc_recv(a.c, &f, 2000);

		if (rc)
			break;
		if (f.hdr.seq == 0) {
			rc_frame_free(&f);
			continue;
		}
		assert_int_equal(f.hdr.seq, base + (uint32_t)answered);
		answered++;
		if (f.hdr.code == ST_OK)
			ok_ids[nok++] = tc_json_int(f.json, "msg_id");
		rc_frame_free(&f);
	}
	/* a request the node read was answered; it may have stopped reading
	 * before the end, but not before the first */
	assert_true(answered > 0);
	assert_true(nok > 0);
	dur_user_close(&a);

	n2 = node_start(DUR_BULK_FLAGS);
	assert_non_null(n2);
	dur_login(n2, &b);
	for (int i = 0; i < nok; i++) {
		cJSON *p = tc_expect_push(b.c, CMD_PUSH_MSG, DUR_PUSH_MS);

		assert_int_equal(tc_json_int(p, "msg_id"), ok_ids[i]);
		cJSON_Delete(p);
	}
	dur_user_close(&b);
	assert_int_equal(node_stop(n2), 0);
	free(ok_ids);
}

/* Relay: online recipients get the push, offline ones get it at login. */
static void test_relay_mode(void **state)
{
	struct dur_user a = {0}, b = {0};
	struct node *n;
	char json[128];
	cJSON *r, *p;
	uint32_t code;
	int64_t id;

	(void)state;
	n = node_start("--durability relay");
	assert_non_null(n);
	dur_pair(n, &a, &b, "ra");
	dur_login(n, &b);

	snprintf(json, sizeof(json), "{\"to\":%lld,\"type\":0,\"text\":\"live\"}", (long long)b.id);
	r = tc_call(a.c, CMD_MSG_SEND, json, &code);
	assert_int_equal(code, ST_OK);
	id = tc_json_int(r, "msg_id");
	assert_true(tc_json_int(r, "conversation_id") > 0);
	cJSON_Delete(r);
	p = tc_expect_push(b.c, CMD_PUSH_MSG, DUR_PUSH_MS);
	assert_int_equal(tc_json_int(p, "msg_id"), id);
	cJSON_Delete(p);
	/* acked: never written (an unacked one would come again at login,
	 * see test_relay_hold.c) */
	tc_expect(b.c, CMD_MSG_ACK, ST_OK, "{\"msg_ids\":[%lld]}", (long long)id);

	/* offline: stored, pushed at login; the live one is not pushed again */
	dur_user_close(&b);
	tc_sleep_ms(200);
	snprintf(json, sizeof(json), "{\"to\":%lld,\"type\":0,\"text\":\"later\"}",
		 (long long)b.id);
	r = tc_call(a.c, CMD_MSG_SEND, json, &code);
	assert_int_equal(code, ST_OK);
	id = tc_json_int(r, "msg_id");
	cJSON_Delete(r);
	/* the write is in the background: give it a moment */
	tc_sleep_ms(500);
	dur_login(n, &b);
	p = tc_expect_push(b.c, CMD_PUSH_MSG, DUR_PUSH_MS);
	assert_int_equal(tc_json_int(p, "msg_id"), id);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring, "later");
	cJSON_Delete(p);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, DUR_NO_PUSH_MS);
	dur_user_close(&a);
	dur_user_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/*
 * SIGTERM with many friends online and tiny worker queues: at stop every
 * worker ends its sessions and tells each online friend "offline", after
 * the I/O thread is gone. Those frames must not wait for a queue nobody
 * drains: the node exits 0 within a bound.
 */
static void test_stop_bounded_with_full_queues(void **state)
{
	enum { FRIENDS = 120 };
	struct dur_user hub = {0}, *f;
	struct node *n;
	int64_t t0, took;
	int rc;

	(void)state;
	f = calloc(FRIENDS, sizeof(*f));
	assert_non_null(f);
	n = node_start("--queue-depth 16 --workers 2 --hash-cost 1");
	assert_non_null(n);
	hub.c = tc_signup_login_as(n, "sb", hub.name, &hub.id);
	for (int i = 0; i < FRIENDS; i++) {
		f[i].c = tc_signup_login_as(n, "sb", f[i].name, &f[i].id);
		dur_befriend(&f[i], &hub);
	}
	/* every pair online: each ended session owes its friends a push */
	t0 = tc_now_ms();
	rc = node_stop(n);
	took = tc_now_ms() - t0;
	if (took > 10000)
		fail_msg("the stop took %lld ms", (long long)took);
	assert_int_equal(rc, 0);
	dur_user_close(&hub);
	for (int i = 0; i < FRIENDS; i++)
		dur_user_close(&f[i]);
	free(f);
}

/* Scratch database of test_old_schema_migrated (ringchat_*: the node's
 * account may use it). */
#define DUR_MIG_DB "ringchat_migtest"

/*
 * Runs the mariadb client as root on the private server (the unix socket
 * of RINGCHAT_MYSQL_SOCKET, as scripts/services.sh does) against db, with
 * sql (may be NULL) and then the file at path (may be NULL) on its
 * standard input. Returns its exit status, -1 when it could not run.
 */
static int dur_mysql_root(const char *db, const char *sql, const char *path)
{
	const char *sock = getenv("RINGCHAT_MYSQL_SOCKET");
	char cmd[1024], buf[4096];
	FILE *p, *f = NULL;
	size_t n;
	int st;

	if (!sock || !sock[0])
		return -1;
	snprintf(cmd, sizeof(cmd), "mariadb --no-defaults --socket='%s' --user=root %s", sock,
		 db ? db : "");
	p = popen(cmd, "w");
	if (!p)
		return -1;
	if (sql)
		fputs(sql, p);
	if (path && (f = fopen(path, "r"))) {
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
			fwrite(buf, 1, n, p);
		fclose(f);
	}
	st = pclose(p);
	if (path && !f)
		return -1;
	return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/*
 * A database made by the schema before message_client_ids: its messages
 * table had client_msg_id and UNIQUE KEY uk_messages_client. Applying
 * sql/schema.sql (twice: it must stay idempotent) migrates it; a node
 * started on it answers a retry of a message stored before the migration
 * with that message's msg_id, conversation_id and send_time, pushes
 * nothing, and stores and recognises new client_msg_ids.
 */
static void test_old_schema_migrated(void **state)
{
	/* the old table, as sql/schema.sql created it */
	static const char old_messages[] =
	    "CREATE TABLE messages ("
	    " msg_id BIGINT UNSIGNED NOT NULL, conversation_id BIGINT UNSIGNED NOT NULL,"
	    " from_id BIGINT UNSIGNED NOT NULL, to_id BIGINT UNSIGNED NOT NULL DEFAULT 0,"
	    " group_id BIGINT UNSIGNED NOT NULL DEFAULT 0,"
	    " type TINYINT UNSIGNED NOT NULL DEFAULT 0, text MEDIUMBLOB NOT NULL,"
	    " send_time BIGINT NOT NULL, client_msg_id VARBINARY(64) NULL DEFAULT NULL,"
	    " PRIMARY KEY (msg_id), KEY idx_messages_conv (conversation_id, msg_id),"
	    " UNIQUE KEY uk_messages_client (from_id, client_msg_id)"
	    ") ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;\n";
	/* the ids the two users will get (far above the main database's, so
	 * their presence in the shared Redis is theirs alone) */
	const int64_t uid = ((int64_t)1 << 44) + ((int64_t)(getpid() & 0xffff) << 16) +
			    (int64_t)(time(NULL) & 0xfff) * 2;
	const int64_t old_id = ((int64_t)1 << 50) + 12345, old_conv = 777, old_time = 1700000000123;
	const char *src = getenv("RINGCHAT_SRCDIR");
	char sql[1024], path[512], json[256];
	struct dur_user a = {0}, b = {0};
	struct node *n;
	int64_t new_id;
	uint32_t code;
	cJSON *r, *p;

	(void)state;
	if (!src || dur_mysql_root(NULL, "SELECT 1;\n", NULL) != 0)
		skip(); /* no private server to make a scratch database on */
	snprintf(path, sizeof(path), "%s/sql/schema.sql", src);
	snprintf(sql, sizeof(sql),
		 "DROP DATABASE IF EXISTS " DUR_MIG_DB ";\n"
		 "CREATE DATABASE " DUR_MIG_DB " CHARACTER SET utf8mb4;\n");
	assert_int_equal(dur_mysql_root(NULL, sql, NULL), 0);
	assert_int_equal(dur_mysql_root(DUR_MIG_DB, old_messages, NULL), 0);
	/* a message with a client_msg_id, and one without */
	snprintf(sql, sizeof(sql),
		 "INSERT INTO messages (msg_id, conversation_id, from_id, to_id, text, send_time, "
		 "client_msg_id) VALUES (%lld, %lld, %lld, %lld, 'before', %lld, 'old-1'), "
		 "(%lld, %lld, %lld, %lld, 'plain', %lld, NULL);\n",
		 (long long)old_id, (long long)old_conv, (long long)uid, (long long)(uid + 1),
		 (long long)old_time, (long long)(old_id + 1), (long long)old_conv, (long long)uid,
		 (long long)(uid + 1), (long long)old_time + 1);
	assert_int_equal(dur_mysql_root(DUR_MIG_DB, sql, NULL), 0);
	assert_int_equal(dur_mysql_root(DUR_MIG_DB, NULL, path), 0);
	assert_int_equal(dur_mysql_root(DUR_MIG_DB, NULL, path), 0);
	/* the users' ids, and their conversation as the old node had made it */
	snprintf(sql, sizeof(sql),
		 "ALTER TABLE users AUTO_INCREMENT = %lld;\n"
		 "INSERT INTO conversations (id, kind, a, b) VALUES (%lld, 1, %lld, %lld);\n",
		 (long long)uid, (long long)old_conv, (long long)uid, (long long)(uid + 1));
	assert_int_equal(dur_mysql_root(DUR_MIG_DB, sql, NULL), 0);

	n = node_start("--mysql-db " DUR_MIG_DB);
	assert_non_null(n);
	dur_pair(n, &a, &b, "mg");
	assert_int_equal(a.id, uid);
	assert_int_equal(b.id, uid + 1);
	dur_login(n, &b);

	/* the retry of the message stored before the migration */
	snprintf(json, sizeof(json),
		 "{\"to\":%lld,\"type\":0,\"text\":\"before\",\"client_msg_id\":\"old-1\"}",
		 (long long)b.id);
	r = tc_call(a.c, CMD_MSG_SEND, json, &code);
	assert_int_equal(code, ST_OK);
	assert_int_equal(tc_json_int(r, "msg_id"), old_id);
	assert_int_equal(tc_json_int(r, "conversation_id"), old_conv);
	assert_int_equal(tc_json_int(r, "send_time"), old_time);
	cJSON_Delete(r);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, DUR_NO_PUSH_MS);

	/* a new client_msg_id: stored and pushed once; its retry on a new
	 * node (no worker cache) answers the same msg_id */
	snprintf(json, sizeof(json),
		 "{\"to\":%lld,\"type\":0,\"text\":\"after\",\"client_msg_id\":\"new-1\"}",
		 (long long)b.id);
	r = tc_call(a.c, CMD_MSG_SEND, json, &code);
	assert_int_equal(code, ST_OK);
	new_id = tc_json_int(r, "msg_id");
	assert_int_not_equal(new_id, old_id);
	cJSON_Delete(r);
	p = tc_expect_push(b.c, CMD_PUSH_MSG, DUR_PUSH_MS);
	assert_int_equal(tc_json_int(p, "msg_id"), new_id);
	cJSON_Delete(p);
	dur_user_close(&a);
	dur_user_close(&b);
	assert_int_equal(node_stop(n), 0);

	n = node_start("--mysql-db " DUR_MIG_DB);
	assert_non_null(n);
	dur_login(n, &a);
	r = tc_call(a.c, CMD_MSG_SEND, json, &code);
	assert_int_equal(code, ST_OK);
	assert_int_equal(tc_json_int(r, "msg_id"), new_id);
	cJSON_Delete(r);
	/* one row each: HISTORY has the three */
	snprintf(json, sizeof(json), "{\"with\":%lld}", (long long)b.id);
	r = tc_call(a.c, CMD_HISTORY, json, &code);
	assert_int_equal(code, ST_OK);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "messages")), 3);
	cJSON_Delete(r);
	dur_user_close(&a);
	assert_int_equal(node_stop(n), 0);
	assert_int_equal(dur_mysql_root(NULL, "DROP DATABASE " DUR_MIG_DB ";\n", NULL), 0);
}

/*
 * A recipient online while MariaDB stops around a send (no client_msg_id):
 * whatever it is shown must be stored under the msg_id it was shown with,
 * and its sender must hear OK for that msg_id, not 12 (a 12 makes the
 * client send it again, a second message with a new id).
 */
static void test_seen_is_stored(void **state)
{
	struct dur_user a = {0}, b = {0};
	struct node *n;
	int64_t ok_id = 0;
	char json[128];
	uint32_t code, codes[3];
	struct rc_frame f;
	int seen;
	cJSON *r, *p;

	(void)state;
	n = node_start(NULL);
	assert_non_null(n);
	a.c = tc_signup_login_as(n, "ss", a.name, &a.id);
	b.c = tc_signup_login_as(n, "ss", b.name, &b.id);
	dur_befriend(&a, &b);
	snprintf(json, sizeof(json), "{\"to\":%lld,\"type\":0,\"text\":\"warm\"}",
		 (long long)b.id);
	cJSON_Delete(tc_call_ok(a.c, CMD_MSG_SEND, "%s", json));
	cJSON_Delete(tc_expect_push(b.c, CMD_PUSH_MSG, DUR_PUSH_MS));

	assert_int_equal(services_stop("mysql"), 0);
	snprintf(json, sizeof(json), "{\"to\":%lld,\"type\":0,\"text\":\"down\"}",
		 (long long)b.id);
	for (int k = 0; k < 3; k++) {
		r = tc_call(a.c, CMD_MSG_SEND, json, &code);
		codes[k] = code;
		cJSON_Delete(r);
	}
	/* MariaDB back before any verdict, so later tests find it */
	seen = rc_wait_push(b.c, CMD_PUSH_MSG, &f, DUR_NO_PUSH_MS);
	assert_int_equal(services_start("mysql"), 0);
	if (seen == 0) {
		int64_t id = tc_json_int(f.json, "msg_id");

		fail_msg("msg_id %lld was pushed (%s) although every send was answered "
			 "%u/%u/%u",
			 (long long)id, f.payload, codes[0], codes[1], codes[2]);
	}
	for (int k = 0; k < 3; k++)
		if (codes[k] == ST_OK)
			fail_msg("a send while MariaDB was down was answered OK");
		else
			assert_int_equal(codes[k], ST_INTERNAL);

	snprintf(json, sizeof(json), "{\"to\":%lld,\"type\":0,\"text\":\"back\"}",
		 (long long)b.id);
	for (int64_t deadline = tc_now_ms() + 30000; !ok_id && tc_now_ms() < deadline;) {
		r = tc_call(a.c, CMD_MSG_SEND, json, &code);
		if (code == ST_OK)
			ok_id = tc_json_int(r, "msg_id");
		else
			tc_sleep_ms(250);
		cJSON_Delete(r);
	}
	assert_true(ok_id > 0);
	p = tc_expect_push(b.c, CMD_PUSH_MSG, DUR_PUSH_MS);
	assert_int_equal(tc_json_int(p, "msg_id"), ok_id);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring, "back");
	cJSON_Delete(p);
	tc_expect_no_push(b.c, CMD_PUSH_MSG, DUR_NO_PUSH_MS);
	dur_user_close(&a);
	dur_user_close(&b);
	assert_int_equal(node_stop(n), 0);
}

/*
 * MariaDB stops under a steady sender: every send is answered within a
 * few seconds (OK before the outage bites, 12 INTERNAL during it), and
 * once MariaDB is back sends succeed again. Every OK'd message reaches the
 * recipient.
 */
static void test_storage_outage(void **state)
{
	enum { MAX_OK = 4096 };
	struct dur_user a = {0}, b = {0};
	struct node *n;
	int64_t ok_ids[MAX_OK], worst_ms = 0;
	int nok = 0, nfailed = 0, i = 0, ok_after = 0;
	char json[256];

	(void)state;
	n = node_start(NULL);
	assert_non_null(n);
	dur_pair(n, &a, &b, "oa");

	/* warm up: the send path works and its caches are filled */
	for (; i < 3; i++) {
		uint32_t code;
		cJSON *r;

		dur_send_json(json, sizeof(json), b.id, "o", i);
		r = tc_call(a.c, CMD_MSG_SEND, json, &code);
		assert_int_equal(code, ST_OK);
		ok_ids[nok++] = tc_json_int(r, "msg_id");
		cJSON_Delete(r);
	}
	assert_int_equal(services_stop("mysql"), 0);
	/* while it is down: answered, and answered 12, quickly */
	for (int k = 0; k < 5; k++, i++) {
		int64_t t0 = tc_now_ms(), took;
		uint32_t code;
		cJSON *r;

		dur_send_json(json, sizeof(json), b.id, "o", i);
		r = tc_call(a.c, CMD_MSG_SEND, json, &code);
		took = tc_now_ms() - t0;
		if (took > worst_ms)
			worst_ms = took;
		if (code == ST_OK) {
			ok_ids[nok++] = tc_json_int(r, "msg_id");
		} else {
			assert_int_equal(code, ST_INTERNAL);
			nfailed++;
		}
		cJSON_Delete(r);
	}
	assert_true(nfailed > 0);
	if (worst_ms > 8000)
		fail_msg("a send during the outage took %lld ms to be answered",
			 (long long)worst_ms);
	assert_int_equal(services_start("mysql"), 0);

	/* back: within a bounded time, sends are OK again */
	for (int64_t deadline = tc_now_ms() + 30000; tc_now_ms() < deadline && ok_after < 3; i++) {
		uint32_t code;
		cJSON *r;

		dur_send_json(json, sizeof(json), b.id, "o", i);
		r = tc_call(a.c, CMD_MSG_SEND, json, &code);
		if (code == ST_OK) {
			ok_ids[nok++] = tc_json_int(r, "msg_id");
			ok_after++;
		} else {
			assert_int_equal(code, ST_INTERNAL);
			tc_sleep_ms(250);
		}
		cJSON_Delete(r);
	}
	assert_int_equal(ok_after, 3);

	/* every OK'd message is stored: all reach b at login, in order. A
	 * send answered 12 may still have been stored (its COMMIT's outcome
	 * can be unknown when the link drops); the client would send it
	 * again, so such a message may show up too, but nothing else. */
	dur_login(n, &b);
	for (int k = 0; k < nok;) {
		cJSON *p = tc_expect_push(b.c, CMD_PUSH_MSG, DUR_PUSH_MS);
		int64_t id = tc_json_int(p, "msg_id");
		const char *text = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;

		if (id == ok_ids[k]) {
			k++;
		} else {
			int idx = atoi(text + 1);

			if (text[0] != 'o' || idx < 3 || idx >= i)
				fail_msg("unexpected message %s", text);
			fprintf(stderr, "note: %s was answered 12 but stored\n", text);
		}
		cJSON_Delete(p);
	}
	tc_expect_no_push(b.c, CMD_PUSH_MSG, DUR_NO_PUSH_MS);
	dur_user_close(&a);
	dur_user_close(&b);
	assert_int_equal(node_stop(n), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kill_after_ok),
	    cmocka_unit_test(test_stop_drains),
	    cmocka_unit_test(test_relay_mode),
	    cmocka_unit_test(test_stop_bounded_with_full_queues),
	    cmocka_unit_test(test_seen_is_stored),
	    cmocka_unit_test(test_old_schema_migrated),
	    cmocka_unit_test(test_storage_outage),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, NULL, NULL));
}
