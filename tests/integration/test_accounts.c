/*
 * test_accounts.c - SIGNUP, LOGIN, RESUME and LOGOUT against a real
 * ringchatd with real MariaDB and Redis: validation, tokens, kicks, the
 * failed-login limit, requests pipelined behind a LOGIN or SIGNUP whose
 * password is hashed off the worker, login admission control and the
 * hasher's queue bound, and storage outages (the last tests stop and
 * restart the services).
 *
 * Failed logins are counted per client address in Redis, which every node
 * and every test program shares. Tests that fail logins on purpose
 * therefore connect from addresses of their own (127.x.y.z, any of which
 * is loopback), so they neither see nor leave counts that other tests
 * from 127.0.0.1 would meet.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringchat/frame.h"

/* Node with the default limits, shared by most tests. */
static struct node *acc_node;

#define ACC_RECOVERY_MS 30000 /* bound on waiting for a restarted service */

/* ---- helpers ------------------------------------------------------------- */

/* {"username": name, "password": password} built by cJSON, so any bytes
 * travel exactly (quotes, backslashes). Caller frees. */
static char *acc_creds(const char *name, const char *password)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (name)
		cJSON_AddStringToObject(o, "username", name);
	if (password)
		cJSON_AddStringToObject(o, "password", password);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	assert_non_null(s);
	return s;
}

static char *acc_token_json(const char *token)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	cJSON_AddStringToObject(o, "token", token);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	assert_non_null(s);
	return s;
}

/* Sends cmd with json and returns the status; the payload is dropped. */
static uint32_t acc_code(struct rc_client *c, uint16_t cmd, const char *json)
{
	uint32_t code;
	cJSON *r = tc_call(c, cmd, json, &code);

	cJSON_Delete(r);
	return code;
}

/* SIGNUP name/password; asserts the answer and returns user_id (or 0). */
static int64_t acc_signup(struct rc_client *c, const char *name, const char *password,
			  uint32_t want)
{
	char *j = acc_creds(name, password);
	uint32_t code;
	cJSON *r = tc_call(c, CMD_SIGNUP, j, &code);
	int64_t id = 0;

	if (code != want)
		fail_msg("SIGNUP %s: code %u, expected %u", j, code, want);
	if (code == ST_OK) {
		id = tc_json_int(r, "user_id");
		assert_true(id > 0);
	}
	cJSON_Delete(r);
	free(j);
	return id;
}

/* LOGIN; returns the response payload (caller frees) and *code. */
static cJSON *acc_login(struct rc_client *c, const char *name, const char *password, uint32_t *code)
{
	char *j = acc_creds(name, password);
	cJSON *r = tc_call(c, CMD_LOGIN, j, code);

	free(j);
	return r;
}

static uint32_t acc_login_code(struct rc_client *c, const char *name, const char *password)
{
	uint32_t code;

	cJSON_Delete(acc_login(c, name, password, &code));
	return code;
}

/* LOGIN that must succeed; copies the token (33 bytes) when asked. */
static int64_t acc_login_ok(struct rc_client *c, const char *name, const char *password,
			    char *token)
{
	uint32_t code;
	cJSON *r = acc_login(c, name, password, &code);
	const cJSON *t;
	int64_t id;

	if (code != ST_OK)
		fail_msg("LOGIN %s: code %u", name, code);
	id = tc_json_int(r, "user_id");
	t = cJSON_GetObjectItemCaseSensitive(r, "token");
	assert_true(cJSON_IsString(t));
	if (token) {
		assert_true(strlen(t->valuestring) < 33);
		strcpy(token, t->valuestring);
	}
	cJSON_Delete(r);
	return id;
}

static void acc_assert_ping(struct rc_client *c)
{
	cJSON_Delete(tc_call_ok(c, CMD_PING, NULL));
}

/* True when c is logged in: FRIEND_LIST is not refused with NOT_LOGGED_IN
 * (whatever else it answers, e.g. UNKNOWN_CMD in a build without it). */
static bool acc_logged_in(struct rc_client *c)
{
	return acc_code(c, CMD_FRIEND_LIST, NULL) != ST_NOT_LOGGED_IN;
}

/* Expects the node to close c (after any frames still on their way). */
static void acc_expect_closed(struct rc_client *c)
{
	struct rc_frame f;
	int rc, i;

	for (i = 0; i < 16; i++) {
		rc = rc_recv(c, &f, 5000);
		if (rc == 0) {
			rc_frame_free(&f);
			continue;
		}
		if (rc == -ETIMEDOUT)
			fail_msg("the connection stayed open");
		assert_true(rc == -ENOTCONN || rc == -ECONNRESET);
		return;
	}
	fail_msg("the connection kept sending frames instead of closing");
}

/*
 * A client whose connection comes from an address no other test uses
 * (127.b.c.d from the pid and a counter). The client library has no
 * source-address option, so this connects one more socket from that
 * address and puts it in place of the client's own (dup2): the node sees
 * the first connection close, and the client talks over the new one.
 */
static struct rc_client *acc_connect_fresh_addr(struct node *n)
{
	static unsigned counter;
	struct rc_client *c = tc_connect(n);
	struct sockaddr_in src = {.sin_family = AF_INET};
	struct sockaddr_in dst = {.sin_family = AF_INET};
	unsigned pid = (unsigned)getpid();
	int fd, one = 1;

	counter++;
	assert_true(counter < 255);
	src.sin_addr.s_addr =
	    htonl(0x7f000000u | ((1 + (pid >> 8) % 254) << 16) | ((pid & 0xff) << 8) | counter);
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	dst.sin_port = htons(node_port(n));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)))
		fail_msg("connect from 127.x.y.%u: %s", counter, strerror(errno));
	assert_int_equal(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
	assert_true(dup2(fd, rc_fd(c)) == rc_fd(c));
	close(fd);
	return c;
}

/* Reads retry_after_ms of a RATE_LIMITED payload; asserts lo..hi. */
static int64_t acc_retry_ms(const cJSON *r, int64_t lo, int64_t hi)
{
	int64_t ms = tc_json_int(r, "retry_after_ms");

	if (ms < lo || ms > hi)
		fail_msg("retry_after_ms %lld not in %lld..%lld", (long long)ms, (long long)lo,
			 (long long)hi);
	return ms;
}

static bool acc_is_hex_token(const char *t)
{
	size_t i;

	for (i = 0; t[i]; i++)
		if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
			return false;
	return i == 32;
}

static const char *acc_error_text(const cJSON *r)
{
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");

	assert_true(cJSON_IsString(e));
	return e->valuestring;
}

/* ---- SIGNUP -------------------------------------------------------------- */

static void test_signup_ok_and_duplicate(void **state)
{
	struct rc_client *c = tc_connect(acc_node);
	char name[TC_NAME_MAX], other[TC_NAME_MAX];
	int64_t id1, id2;
	cJSON *r;

	(void)state;
	tc_unique_name("acc", name);
	r = tc_call_ok(c, CMD_SIGNUP,
		       "{\"username\":\"%s\",\"password\":\"%s\",\"phone\":\"+1 555 0100\","
		       "\"avatar_url\":\"https://example.com/a.png\"}",
		       name, TC_PASSWORD);
	id1 = tc_json_int(r, "user_id");
	assert_true(id1 > 0);
	cJSON_Delete(r);

	/* Taken, whatever the password. */
	acc_signup(c, name, TC_PASSWORD, ST_ALREADY_EXISTS);
	acc_signup(c, name, "another-password", ST_ALREADY_EXISTS);

	/* Names are case sensitive: "Name" is another user. */
	snprintf(other, sizeof(other), "%s", name);
	other[0] = 'A';
	id2 = acc_signup(c, other, TC_PASSWORD, ST_OK);
	assert_true(id2 != id1);

	/* SIGNUP does not log in. */
	assert_false(acc_logged_in(c));
	assert_int_equal(acc_login_ok(c, name, TC_PASSWORD, NULL), id1);
	rc_close(c);
}

struct acc_bad_case {
	const char *what;
	const char *json; /* %1$s = a fresh valid name */
};

static void test_signup_validation(void **state)
{
	static const struct acc_bad_case cases[] = {
	    {"missing username", "{\"password\":\"password1\"}"},
	    {"null username", "{\"username\":null,\"password\":\"password1\"}"},
	    {"empty username", "{\"username\":\"\",\"password\":\"password1\"}"},
	    {"2-byte username", "{\"username\":\"ab\",\"password\":\"password1\"}"},
	    {"33-byte username",
	     "{\"username\":\"abcdefghijklmnopqrstuvwxyz0123456\",\"password\":\"password1\"}"},
	    {"space in username", "{\"username\":\"bad name\",\"password\":\"password1\"}"},
	    {"quote in username", "{\"username\":\"a'--\",\"password\":\"password1\"}"},
	    {"SQL in username", "{\"username\":\"x' OR '1'='1\",\"password\":\"password1\"}"},
	    {"slash in username", "{\"username\":\"a/b/c\",\"password\":\"password1\"}"},
	    {"non-ASCII username", "{\"username\":\"j\\u00fcrgen\",\"password\":\"password1\"}"},
	    {"number username", "{\"username\":12345,\"password\":\"password1\"}"},
	    {"bool username", "{\"username\":true,\"password\":\"password1\"}"},
	    {"missing password", "{\"username\":\"%1$s\"}"},
	    {"7-byte password", "{\"username\":\"%1$s\",\"password\":\"1234567\"}"},
	    /* 3 two-byte characters + 1 = 7 bytes: lengths count bytes */
	    {"7-byte UTF-8 password",
	     "{\"username\":\"%1$s\",\"password\":\"\\u00e9\\u00e9\\u00e9x\"}"},
	    {"129-byte password",
	     "{\"username\":\"%1$s\",\"password\":\""
	     "0123456789012345678901234567890123456789012345678901234567890123"
	     "01234567890123456789012345678901234567890123456789012345678901234\"}"},
	    {"number password", "{\"username\":\"%1$s\",\"password\":12345678}"},
	    {"array password", "{\"username\":\"%1$s\",\"password\":[\"password1\"]}"},
	    {"33-byte phone", "{\"username\":\"%1$s\",\"password\":\"password1\","
			      "\"phone\":\"012345678901234567890123456789012\"}"},
	    /* 16 two-byte characters + 1 = 33 bytes */
	    {"33-byte UTF-8 phone", "{\"username\":\"%1$s\",\"password\":\"password1\",\"phone\":\""
				    "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
				    "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9x\"}"},
	    {"number phone",
	     "{\"username\":\"%1$s\",\"password\":\"password1\",\"phone\":5550100}"},
	    {"256-byte avatar", NULL}, /* built below */
	    {"object avatar",
	     "{\"username\":\"%1$s\",\"password\":\"password1\",\"avatar_url\":{}}"},
	    {"payload is an array", "[\"%1$s\",\"password1\"]"},
	    {"payload is a string", "\"%1$s\""},
	};
	struct rc_client *c = tc_connect(acc_node);
	char name[TC_NAME_MAX], json[1024], avatar[257];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint32_t code;
		cJSON *r;

		/* A fresh name per case: a payload wrongly accepted shows as
		 * OK, not as ALREADY_EXISTS. */
		tc_unique_name("val", name);
		if (cases[i].json) {
			snprintf(json, sizeof(json), cases[i].json, name);
		} else {
			memset(avatar, 'a', 256);
			avatar[256] = '\0';
			snprintf(json, sizeof(json),
				 "{\"username\":\"%s\",\"password\":\"password1\","
				 "\"avatar_url\":\"%s\"}",
				 name, avatar);
		}
		r = tc_call(c, CMD_SIGNUP, json, &code);
		if (code != ST_BAD_REQUEST)
			fail_msg("%s: code %u, expected 1 BAD_REQUEST: %s", cases[i].what, code,
				 json);
		cJSON_Delete(r);
	}
	/* LOGIN validates its fields too. */
	assert_int_equal(acc_code(c, CMD_LOGIN, "{\"password\":\"password1\"}"), ST_BAD_REQUEST);
	assert_int_equal(acc_code(c, CMD_LOGIN, "{\"username\":\"abc\"}"), ST_BAD_REQUEST);
	assert_int_equal(acc_code(c, CMD_LOGIN, "{\"username\":7,\"password\":\"password1\"}"),
			 ST_BAD_REQUEST);
	assert_int_equal(acc_code(c, CMD_LOGIN, "{\"username\":\"a'--\",\"password\":\"x\"}"),
			 ST_BAD_REQUEST);
	assert_int_equal(acc_code(c, CMD_LOGIN, "{\"username\":\"abc\",\"password\":\"\"}"),
			 ST_BAD_REQUEST);
	/* The connection survived every refusal. */
	acc_assert_ping(c);
	rc_close(c);
}

static void test_signup_limits_accepted(void **state)
{
	struct rc_client *c = tc_connect(acc_node);
	char name[TC_NAME_MAX], name32[33], pw128[129], phone[33], avatar[256], json[1024];
	const char *utf8_pw = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"; /* 4 chars, 8 bytes */
	uint32_t code;
	int64_t id;
	size_t n;
	cJSON *r;

	(void)state;
	/* 32 bytes exactly, with every allowed punctuation. */
	tc_unique_name("Lim.-", name);
	n = strlen(name);
	memcpy(name32, name, n);
	memset(name32 + n, 'z', 32 - n);
	name32[32] = '\0';
	memset(pw128, 'p', 128);
	pw128[128] = '\0';
	memset(phone, '5', 32);
	phone[32] = '\0';
	memset(avatar, 'v', 255);
	avatar[255] = '\0';
	snprintf(json, sizeof(json),
		 "{\"username\":\"%s\",\"password\":\"%s\",\"phone\":\"%s\",\"avatar_url\":\"%s\"}",
		 name32, pw128, phone, avatar);
	r = tc_call_ok(c, CMD_SIGNUP, "%s", json);
	id = tc_json_int(r, "user_id");
	cJSON_Delete(r);
	assert_int_equal(acc_login_ok(c, name32, pw128, NULL), id);
	rc_close(c);

	/* 8 bytes of 2-byte characters is long enough. */
	c = tc_connect(acc_node);
	tc_unique_name("utf", name);
	id = acc_signup(c, name, utf8_pw, ST_OK);
	assert_int_equal(acc_login_ok(c, name, utf8_pw, NULL), id);
	rc_close(c);

	/* 3 bytes is long enough; such a short name exists after the first
	 * run, so ALREADY_EXISTS also shows the name passed validation. */
	c = tc_connect(acc_node);
	r = tc_call(c, CMD_SIGNUP, "{\"username\":\"a.b\",\"password\":\"password1\"}", &code);
	cJSON_Delete(r);
	if (code != ST_OK && code != ST_ALREADY_EXISTS)
		fail_msg("3-byte name: code %u", code);
	rc_close(c);
}

/* ---- LOGIN, RESUME, LOGOUT ---------------------------------------------- */

static void test_login_token_and_resume(void **state)
{
	char name[TC_NAME_MAX], tok1[33], tok2[33];
	struct rc_client *c1 = tc_connect(acc_node), *c2, *c3;
	int64_t id;
	char *j;
	cJSON *r;

	(void)state;
	tc_unique_name("tok", name);
	id = acc_signup(c1, name, TC_PASSWORD, ST_OK);
	assert_false(acc_logged_in(c1));
	assert_int_equal(acc_login_ok(c1, name, TC_PASSWORD, tok1), id);
	assert_true(acc_is_hex_token(tok1));
	assert_true(acc_logged_in(c1));

	/* Another login makes another token (and kicks c1). */
	c2 = tc_connect(acc_node);
	assert_int_equal(acc_login_ok(c2, name, TC_PASSWORD, tok2), id);
	assert_true(acc_is_hex_token(tok2));
	assert_string_not_equal(tok1, tok2);

	/* RESUME with either token logs in as the same user. */
	c3 = tc_connect(acc_node);
	assert_false(acc_logged_in(c3));
	j = acc_token_json(tok1);
	r = tc_call_ok(c3, CMD_RESUME, "%s", j);
	free(j);
	assert_int_equal(tc_json_int(r, "user_id"), id);
	assert_null(cJSON_GetObjectItemCaseSensitive(r, "token"));
	cJSON_Delete(r);
	assert_true(acc_logged_in(c3));
	rc_close(c1);
	rc_close(c2);
	rc_close(c3);
}

static void test_resume_bad_tokens(void **state)
{
	struct rc_client *c = tc_connect(acc_node);
	uint32_t code;
	cJSON *r;

	(void)state;
	/* Well-formed but never issued. */
	r = tc_call(c, CMD_RESUME, "{\"token\":\"0123456789abcdef0123456789abcdef\"}", &code);
	assert_int_equal(code, ST_AUTH_FAILED);
	cJSON_Delete(r);
	/* Tokens are opaque: anything else is merely unknown. */
	assert_int_equal(acc_code(c, CMD_RESUME, "{\"token\":\"xyz\"}"), ST_AUTH_FAILED);
	assert_int_equal(acc_code(c, CMD_RESUME, "{\"token\":\"rc:tok:*\"}"), ST_AUTH_FAILED);
	/* A missing or mistyped token is a bad request. */
	assert_int_equal(acc_code(c, CMD_RESUME, NULL), ST_BAD_REQUEST);
	assert_int_equal(acc_code(c, CMD_RESUME, "{\"token\":42}"), ST_BAD_REQUEST);
	assert_int_equal(acc_code(c, CMD_RESUME, "{\"token\":\"\"}"), ST_BAD_REQUEST);
	assert_false(acc_logged_in(c));
	acc_assert_ping(c);
	rc_close(c);
}

static void test_wrong_password_and_unknown_user(void **state)
{
	struct rc_client *c = acc_connect_fresh_addr(acc_node);
	char name[TC_NAME_MAX], ghost[TC_NAME_MAX], wrong_text[256];
	uint32_t code;
	int64_t id;
	cJSON *r;
	int i;

	(void)state;
	tc_unique_name("pw", name);
	tc_unique_name("ghost", ghost);
	id = acc_signup(c, name, TC_PASSWORD, ST_OK);

	r = acc_login(c, name, "not-the-password", &code);
	assert_int_equal(code, ST_AUTH_FAILED);
	snprintf(wrong_text, sizeof(wrong_text), "%s", acc_error_text(r));
	cJSON_Delete(r);
	/* A prefix, and the password with one more byte, are wrong too. */
	assert_int_equal(acc_login_code(c, name, "correct-horse"), ST_AUTH_FAILED);

	/* An unknown user reads exactly like a wrong password. */
	r = acc_login(c, ghost, TC_PASSWORD, &code);
	assert_int_equal(code, ST_AUTH_FAILED);
	assert_string_equal(acc_error_text(r), wrong_text);
	cJSON_Delete(r);

	/* After 3 (and more) AUTH_FAILED the connection stays open and
	 * logged out; the right password still works on it. */
	for (i = 0; i < 2; i++)
		assert_int_equal(acc_login_code(c, name, TC_PASSWORD "x"), ST_AUTH_FAILED);
	acc_assert_ping(c);
	assert_false(acc_logged_in(c));
	assert_int_equal(acc_login_ok(c, name, TC_PASSWORD, NULL), id);
	assert_true(acc_logged_in(c));
	rc_close(c);
}

static void test_logout(void **state)
{
	struct rc_client *c = tc_connect(acc_node);
	char name[TC_NAME_MAX], tok[33], *j;
	cJSON *r;

	(void)state;
	/* Only a session can log out. */
	assert_int_equal(acc_code(c, CMD_LOGOUT, NULL), ST_NOT_LOGGED_IN);
	tc_unique_name("out", name);
	acc_signup(c, name, TC_PASSWORD, ST_OK);
	acc_login_ok(c, name, TC_PASSWORD, tok);

	r = tc_call_ok(c, CMD_LOGOUT, NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);
	acc_expect_closed(c);
	rc_close(c);

	/* The token is revoked. */
	c = tc_connect(acc_node);
	j = acc_token_json(tok);
	assert_int_equal(acc_code(c, CMD_RESUME, j), ST_AUTH_FAILED);
	free(j);
	assert_false(acc_logged_in(c));
	/* The account itself is fine. */
	acc_login_ok(c, name, TC_PASSWORD, NULL);
	rc_close(c);
}

static void test_kick_on_second_login(void **state)
{
	char name[TC_NAME_MAX], tok[33], *j;
	struct rc_client *c1 = tc_connect(acc_node), *c2, *c3;
	int64_t id;
	cJSON *r;

	(void)state;
	tc_unique_name("kick", name);
	id = acc_signup(c1, name, TC_PASSWORD, ST_OK);
	acc_login_ok(c1, name, TC_PASSWORD, NULL);

	c2 = tc_connect(acc_node);
	assert_int_equal(acc_login_ok(c2, name, TC_PASSWORD, tok), id);
	r = tc_expect_push(c1, CMD_PUSH_KICKED, 5000);
	assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r, "reason")));
	cJSON_Delete(r);
	acc_expect_closed(c1);
	rc_close(c1);
	/* The newer session works and was not kicked itself. */
	acc_assert_ping(c2);
	assert_true(acc_logged_in(c2));
	tc_expect_no_push(c2, CMD_PUSH_KICKED, 200);

	/* RESUME kicks the same way. */
	c3 = tc_connect(acc_node);
	j = acc_token_json(tok);
	r = tc_call_ok(c3, CMD_RESUME, "%s", j);
	free(j);
	assert_int_equal(tc_json_int(r, "user_id"), id);
	cJSON_Delete(r);
	cJSON_Delete(tc_expect_push(c2, CMD_PUSH_KICKED, 5000));
	acc_expect_closed(c2);
	rc_close(c2);
	assert_true(acc_logged_in(c3));
	rc_close(c3);
}

/* One connection carries one user: a second LOGIN/RESUME is refused and
 * leaves the first session as it was. */
static void test_second_login_on_connection_refused(void **state)
{
	char a[TC_NAME_MAX], b[TC_NAME_MAX], tok_a[33], *j;
	struct rc_client *c1 = tc_connect(acc_node), *c2, *c3;
	int64_t id_a;

	(void)state;
	tc_unique_name("relogA", a);
	tc_unique_name("relogB", b);
	id_a = acc_signup(c1, a, TC_PASSWORD, ST_OK);
	acc_signup(c1, b, TC_PASSWORD, ST_OK);
	acc_login_ok(c1, a, TC_PASSWORD, tok_a);

	assert_int_equal(acc_login_code(c1, b, TC_PASSWORD), ST_FORBIDDEN);
	assert_int_equal(acc_login_code(c1, a, TC_PASSWORD), ST_FORBIDDEN);
	j = acc_token_json(tok_a);
	assert_int_equal(acc_code(c1, CMD_RESUME, j), ST_FORBIDDEN);
	free(j);
	/* Validation still comes first. */
	assert_int_equal(acc_code(c1, CMD_LOGIN, "{\"username\":\"a\"}"), ST_BAD_REQUEST);
	assert_true(acc_logged_in(c1));

	/* B was not logged in on c1: its login elsewhere kicks nobody. */
	c2 = tc_connect(acc_node);
	acc_login_ok(c2, b, TC_PASSWORD, NULL);
	tc_expect_no_push(c1, CMD_PUSH_KICKED, 300);
	/* c1 still is A's session: A's login elsewhere kicks it. */
	c3 = tc_connect(acc_node);
	assert_int_equal(acc_login_ok(c3, a, TC_PASSWORD, NULL), id_a);
	cJSON_Delete(tc_expect_push(c1, CMD_PUSH_KICKED, 5000));
	acc_expect_closed(c1);
	rc_close(c1);
	rc_close(c2);
	rc_close(c3);
}

static void test_sql_shaped_input(void **state)
{
	static const char *const pw = "x' OR '1'='1";
	static const char *const odd_pw = "q\"uo\\te'; DROP TABLE users; --";
	struct rc_client *c = acc_connect_fresh_addr(acc_node);
	char name[TC_NAME_MAX], name2[TC_NAME_MAX];
	int64_t id, id2;

	(void)state;
	/* Quote characters are not allowed in names at all. */
	acc_signup(c, "a'--", TC_PASSWORD, ST_BAD_REQUEST);
	assert_int_equal(acc_login_code(c, "admin'--", "x"), ST_BAD_REQUEST);
	assert_int_equal(acc_login_code(c, "x' OR 1=1 #", "x"), ST_BAD_REQUEST);

	/* Passwords are stored verbatim: only the exact bytes log in. */
	tc_unique_name("sqli", name);
	id = acc_signup(c, name, pw, ST_OK);
	assert_int_equal(acc_login_code(c, name, "x' OR '1'='2"), ST_AUTH_FAILED);
	assert_int_equal(acc_login_code(c, name, "' OR ''='"), ST_AUTH_FAILED);
	assert_int_equal(acc_login_ok(c, name, pw, NULL), id);
	rc_close(c);

	c = tc_connect(acc_node);
	tc_unique_name("sqli", name2);
	id2 = acc_signup(c, name2, odd_pw, ST_OK);
	assert_int_equal(acc_login_ok(c, name2, odd_pw, NULL), id2);
	rc_close(c);
	/* ... and the table is still there. */
	c = tc_connect(acc_node);
	assert_int_equal(acc_login_ok(c, name, pw, NULL), id);
	rc_close(c);
}

/* ---- hashing off the workers ---------------------------------------------- */

/* How many times text occurs in the node's log. */
static int acc_log_count(struct node *n, const char *text)
{
	FILE *f = fopen(node_log_path(n), "r");
	char *buf, *p;
	long size;
	int count = 0;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	size = ftell(f);
	assert_true(size >= 0);
	rewind(f);
	buf = malloc((size_t)size + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
	buf[size] = '\0';
	fclose(f);
	for (p = buf; (p = strstr(p, text)); p += strlen(text))
		count++;
	free(buf);
	return count;
}

/* Appends one request frame to buf (at *off, cap bytes) for a pipelined
 * write. */
static void acc_put_frame(uint8_t *buf, size_t cap, size_t *off, uint16_t cmd, uint32_t seq,
			  const char *json)
{
	struct frame_hdr h = {.magic = FRAME_MAGIC, .version = FRAME_VERSION, .cmd = cmd,
			      .seq = seq};
	size_t jlen = json ? strlen(json) : 0;

	assert_true(*off + FRAME_HDR_BYTES + jlen <= cap);
	h.len = (uint32_t)jlen;
	frame_hdr_encode(buf + *off, &h);
	if (jlen)
		memcpy(buf + *off + FRAME_HDR_BYTES, json, jlen);
	*off += FRAME_HDR_BYTES + jlen;
}

/* The next response (pushes, seq 0, are skipped); asserts its cmd and seq,
 * so responses must come in request order. Returns its code; the payload
 * goes to *json when json is not NULL (caller frees). */
static uint32_t acc_next_response(struct rc_client *c, uint16_t cmd, uint32_t seq, cJSON **json)
{
	struct rc_frame f;
	uint32_t code;

	for (;;) {
		assert_int_equal(rc_recv(c, &f, TC_CALL_TIMEOUT_MS), 0);
		if (f.hdr.seq != 0 || f.hdr.cmd < CMD_PUSH_MSG)
			break;
		rc_frame_free(&f);
	}
	if (f.hdr.cmd != cmd || f.hdr.seq != seq)
		fail_msg("expected the answer to %s seq %u, got cmd %u seq %u code %u: %s",
			 rc_cmd_name(cmd), seq, f.hdr.cmd, f.hdr.seq, f.hdr.code, f.payload);
	code = f.hdr.code;
	if (json) {
		*json = f.json;
		f.json = NULL;
	}
	rc_frame_free(&f);
	return code;
}

/*
 * A FRIEND_LIST written together with the LOGIN before it (no waiting in
 * between) runs after the login took effect, although the password is
 * checked off the worker meanwhile: LOGIN OK, then FRIEND_LIST OK, not
 * NOT_LOGGED_IN. Same for a PING, which needs no login, behind them: the
 * answers keep the request order.
 */
static void test_login_pipelined(void **state)
{
	struct rc_client *c = tc_connect(acc_node);
	char name[TC_NAME_MAX], *j;
	uint8_t buf[1024];
	size_t off = 0;
	uint32_t code;
	int64_t id;
	cJSON *r;

	(void)state;
	tc_unique_name("pipe", name);
	id = acc_signup(c, name, TC_PASSWORD, ST_OK);
	rc_close(c);

	c = tc_connect(acc_node);
	j = acc_creds(name, TC_PASSWORD);
	acc_put_frame(buf, sizeof(buf), &off, CMD_LOGIN, 1, j);
	acc_put_frame(buf, sizeof(buf), &off, CMD_FRIEND_LIST, 2, NULL);
	acc_put_frame(buf, sizeof(buf), &off, CMD_PING, 3, NULL);
	assert_int_equal(rc_send_raw(c, buf, off), 0);

	code = acc_next_response(c, CMD_LOGIN, 1, &r);
	if (code != ST_OK)
		fail_msg("pipelined LOGIN: code %u", code);
	assert_int_equal(tc_json_int(r, "user_id"), id);
	cJSON_Delete(r);
	code = acc_next_response(c, CMD_FRIEND_LIST, 2, &r);
	if (code != ST_OK)
		fail_msg("FRIEND_LIST pipelined behind LOGIN: code %u", code);
	assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r, "friends")));
	cJSON_Delete(r);
	assert_int_equal(acc_next_response(c, CMD_PING, 3, NULL), ST_OK);
	rc_close(c);

	/* A wrong password pipelined the same way: the request behind it is
	 * refused as not logged in, and the right password then works. */
	c = acc_connect_fresh_addr(acc_node);
	off = 0;
	free(j);
	j = acc_creds(name, "not-the-password");
	acc_put_frame(buf, sizeof(buf), &off, CMD_LOGIN, 1, j);
	acc_put_frame(buf, sizeof(buf), &off, CMD_FRIEND_LIST, 2, NULL);
	assert_int_equal(rc_send_raw(c, buf, off), 0);
	assert_int_equal(acc_next_response(c, CMD_LOGIN, 1, NULL), ST_AUTH_FAILED);
	assert_int_equal(acc_next_response(c, CMD_FRIEND_LIST, 2, NULL), ST_NOT_LOGGED_IN);
	free(j);
	rc_close(c);
}

/* SIGNUP and LOGIN of the new user in one write: the LOGIN finds the
 * account the SIGNUP made, and a second SIGNUP of the same name behind
 * them is ALREADY_EXISTS. */
static void test_signup_login_pipelined(void **state)
{
	struct rc_client *c = tc_connect(acc_node);
	char name[TC_NAME_MAX], *j;
	uint8_t buf[1024];
	size_t off = 0;
	uint32_t code;
	int64_t id;
	cJSON *r;

	(void)state;
	tc_unique_name("pipesu", name);
	j = acc_creds(name, TC_PASSWORD);
	acc_put_frame(buf, sizeof(buf), &off, CMD_SIGNUP, 1, j);
	acc_put_frame(buf, sizeof(buf), &off, CMD_LOGIN, 2, j);
	acc_put_frame(buf, sizeof(buf), &off, CMD_SIGNUP, 3, j);
	acc_put_frame(buf, sizeof(buf), &off, CMD_FRIEND_LIST, 4, NULL);
	free(j);
	assert_int_equal(rc_send_raw(c, buf, off), 0);

	code = acc_next_response(c, CMD_SIGNUP, 1, &r);
	if (code != ST_OK)
		fail_msg("pipelined SIGNUP: code %u", code);
	id = tc_json_int(r, "user_id");
	cJSON_Delete(r);
	code = acc_next_response(c, CMD_LOGIN, 2, &r);
	if (code != ST_OK)
		fail_msg("LOGIN pipelined behind its SIGNUP: code %u", code);
	assert_int_equal(tc_json_int(r, "user_id"), id);
	cJSON_Delete(r);
	assert_int_equal(acc_next_response(c, CMD_SIGNUP, 3, NULL), ST_ALREADY_EXISTS);
	assert_int_equal(acc_next_response(c, CMD_FRIEND_LIST, 4, NULL), ST_OK);
	rc_close(c);
}

#define ACC_HASH_QUEUE_AHEAD 16

/*
 * A LOGIN whose connection closes while its password waits for the
 * hasher: the node forgets it (the user is not logged in, no session is
 * left behind, nothing leaks or crashes) and goes on serving. The hasher
 * has ACC_HASH_QUEUE_AHEAD slow verifications queued ahead of that LOGIN,
 * so the close reaches the node long before the hash is done. The node's
 * exit status (0) also covers leaks in a sanitizer build, and its counter
 * dump at exit shows the hasher did run that LOGIN's job.
 */
static void test_login_closed_while_hashing(void **state)
{
	struct node *n = node_start("--hash-cost 4 --hash-threads 1");
	struct rc_client *c, *ahead[ACC_HASH_QUEUE_AHEAD + 1], *watch;
	char name[TC_NAME_MAX], ghost[TC_NAME_MAX], last[128], line[96], *j;
	int64_t id;
	int i;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	tc_unique_name("gone", name);
	id = acc_signup(c, name, TC_PASSWORD, ST_OK);
	rc_close(c);
	/* The user is logged in here: a LOGIN that took effect would kick it. */
	watch = tc_connect(n);
	acc_login_ok(watch, name, TC_PASSWORD, NULL);

	/* Unknown users: each costs a full verification all the same. Each
	 * from a name and an address of its own, so that these failures
	 * reach no failed-login limit (now or in later runs). */
	for (i = 0; i < ACC_HASH_QUEUE_AHEAD + 1; i++) {
		tc_unique_name("ghost", ghost);
		j = acc_creds(ghost, "not-a-password");
		ahead[i] = acc_connect_fresh_addr(n);
		if (i < ACC_HASH_QUEUE_AHEAD)
			assert_int_equal(rc_send(ahead[i], CMD_LOGIN, 1, j), 0);
		else
			snprintf(last, sizeof(last), "%s", j);
		free(j);
	}
	c = tc_connect(n);
	j = acc_creds(name, TC_PASSWORD);
	assert_int_equal(rc_send(c, CMD_LOGIN, 1, j), 0);
	free(j);
	rc_close(c);

	/* Every LOGIN ahead is answered, in full, and the node serves on. */
	for (i = 0; i < ACC_HASH_QUEUE_AHEAD; i++) {
		assert_int_equal(acc_next_response(ahead[i], CMD_LOGIN, 1, NULL), ST_AUTH_FAILED);
		rc_close(ahead[i]);
	}
	acc_assert_ping(watch);
	assert_true(acc_logged_in(watch));
	assert_int_equal(acc_code(ahead[ACC_HASH_QUEUE_AHEAD], CMD_LOGIN, last), ST_AUTH_FAILED);
	rc_close(ahead[ACC_HASH_QUEUE_AHEAD]);
	rc_close(watch);

	/* Exit status 0: no crash, and no leak in a sanitizer build. */
	assert_int_equal(node_stop(n), 0);
	/* The hasher ran every job: the signup, the watch's login, the queue,
	 * the closed LOGIN and the last one. */
	snprintf(line, sizeof(line), " hash_jobs=%d ", 1 + 1 + ACC_HASH_QUEUE_AHEAD + 1 + 1);
	if (!node_log_contains(n, line))
		fail_msg("the node's counters at exit do not say \"%s\"", line);
	/* ... yet the closed LOGIN did not log the user in: the watch's login
	 * is the only one ("user=ID conn=..."), and nobody was kicked. */
	snprintf(line, sizeof(line), "event=login user=%lld ", (long long)id);
	assert_int_equal(acc_log_count(n, line), 1);
	assert_int_equal(acc_log_count(n, "event=kick"), 0);
}

#define ACC_HASHER_FLOOD 96 /* well over HASHER_QUEUE_PER_THREAD (64) */

/*
 * With login_concurrency far above what one hasher thread queues, the
 * hasher's own bound refuses the excess: 8 RATE_LIMITED at once with a
 * retry hint (about the time its queue takes to drain), and every refused
 * client that retries gets in.
 */
static void test_hasher_full(void **state)
{
	struct node *n = node_start("--hash-cost 4 --hash-threads 1 --login-concurrency 10000");
	struct rc_client *c[ACC_HASHER_FLOOD];
	char names[ACC_HASHER_FLOOD][TC_NAME_MAX];
	bool refused[ACC_HASHER_FLOOD];
	int ok = 0, busy = 0, i;

	(void)state;
	assert_non_null(n);
	c[0] = tc_connect(n);
	for (i = 0; i < ACC_HASHER_FLOOD; i++) {
		tc_unique_name("flood", names[i]);
		acc_signup(c[0], names[i], TC_PASSWORD, ST_OK);
	}
	rc_close(c[0]);
	for (i = 0; i < ACC_HASHER_FLOOD; i++)
		c[i] = tc_connect(n);
	for (i = 0; i < ACC_HASHER_FLOOD; i++) {
		char *j = acc_creds(names[i], TC_PASSWORD);

		assert_int_equal(rc_send(c[i], CMD_LOGIN, 1, j), 0);
		free(j);
	}
	for (i = 0; i < ACC_HASHER_FLOOD; i++) {
		cJSON *r = NULL;
		uint32_t code = acc_next_response(c[i], CMD_LOGIN, 1, &r);

		refused[i] = code == ST_RATE_LIMITED;
		if (code == ST_OK) {
			ok++;
		} else if (refused[i]) {
			busy++;
			assert_true(acc_error_text(r)[0] != '\0');
			acc_retry_ms(r, 1, 60000);
		} else {
			fail_msg("login %d: code %u", i, code);
		}
		cJSON_Delete(r);
	}
	if (ok < 64 || !busy)
		fail_msg("%d logins succeeded and %d were refused; expected 64+ and some", ok,
			 busy);
	assert_true(node_log_wait(n, "hasher queue full", 2000));
	/* Every answer is in, so the queue is empty: retries all get in. */
	for (i = 0; i < ACC_HASHER_FLOOD; i++) {
		if (refused[i])
			acc_login_ok(c[i], names[i], TC_PASSWORD, NULL);
		assert_true(acc_logged_in(c[i]));
		rc_close(c[i]);
	}
	assert_int_equal(node_stop(n), 0);
}

/* ---- failed-login limit --------------------------------------------------- */

#define ACC_FAIL_LIMIT 3
#define ACC_FAIL_WINDOW_S 3

static void test_failed_login_limit(void **state)
{
	struct node *n = node_start("--login-fail-limit %d --login-fail-addr-limit %d "
				    "--login-fail-window-s %d",
				    ACC_FAIL_LIMIT, 2 * ACC_FAIL_LIMIT, ACC_FAIL_WINDOW_S);
	char u[TC_NAME_MAX], v[TC_NAME_MAX], ghost[TC_NAME_MAX];
	struct rc_client *c, *a1, *a2, *a3, *a4;
	int64_t id_u, retry;
	uint32_t code;
	cJSON *r;
	int i;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	tc_unique_name("limU", u);
	tc_unique_name("limV", v);
	id_u = acc_signup(c, u, TC_PASSWORD, ST_OK);
	acc_signup(c, v, TC_PASSWORD, ST_OK);
	rc_close(c);

	/* limit failures of u from a1 are answered AUTH_FAILED, the next
	 * one of u from a1 is refused. */
	a1 = acc_connect_fresh_addr(n);
	for (i = 0; i < ACC_FAIL_LIMIT; i++)
		assert_int_equal(acc_login_code(a1, u, "wrong-password"), ST_AUTH_FAILED);
	r = acc_login(a1, u, "wrong-password", &code);
	assert_int_equal(code, ST_RATE_LIMITED);
	retry = acc_retry_ms(r, 1, ACC_FAIL_WINDOW_S * 1000);
	cJSON_Delete(r);
	/* Refused before the password is looked at: the right one too. */
	assert_int_equal(acc_login_code(a1, u, TC_PASSWORD), ST_RATE_LIMITED);
	acc_assert_ping(a1);

	/* Not per username: from another address u logs in. */
	a2 = acc_connect_fresh_addr(n);
	assert_int_equal(acc_login_ok(a2, u, TC_PASSWORD, NULL), id_u);
	rc_close(a2);
	/* Per address: a1 fails other names up to its address limit ... */
	for (i = 0; i < ACC_FAIL_LIMIT; i++) {
		tc_unique_name("limG", ghost);
		assert_int_equal(acc_login_code(a1, ghost, "wrong-password"), ST_AUTH_FAILED);
	}
	/* ... and is then refused for any user. */
	r = acc_login(a1, v, TC_PASSWORD, &code);
	assert_int_equal(code, ST_RATE_LIMITED);
	assert_non_null(strstr(acc_error_text(r), "address"));
	cJSON_Delete(r);

	/* The window ends: everything is allowed again. */
	tc_sleep_ms((int)retry + 500);
	assert_int_equal(acc_login_ok(a1, u, TC_PASSWORD, NULL), id_u);
	rc_close(a1);

	/* A success resets the pair's count: limit - 1 failures, a success,
	 * then limit - 1 more are all plain AUTH_FAILED. */
	a3 = acc_connect_fresh_addr(n);
	for (i = 0; i < ACC_FAIL_LIMIT - 1; i++)
		assert_int_equal(acc_login_code(a3, v, "wrong-password"), ST_AUTH_FAILED);
	acc_login_ok(a3, v, TC_PASSWORD, NULL);
	rc_close(a3);
	a4 = acc_connect_fresh_addr(n);
	for (i = 0; i < ACC_FAIL_LIMIT - 1; i++)
		assert_int_equal(acc_login_code(a4, v, "wrong-password"), ST_AUTH_FAILED);
	/* The limit is reached again now. */
	assert_int_equal(acc_login_code(a4, v, "wrong-password"), ST_AUTH_FAILED);
	assert_int_equal(acc_login_code(a4, v, TC_PASSWORD), ST_RATE_LIMITED);
	rc_close(a4);
	assert_int_equal(node_stop(n), 0);
}

/*
 * The lockout an attacker could cause: wrong passwords for u from
 * 127.0.0.2 must not stop u's owner logging in from 127.0.0.1, while
 * 127.0.0.2 itself is refused (for u, and past its address limit for any
 * name). The window is short, so a rerun soon after starts clean.
 */
#define ACC_LOCK_WINDOW_S 10
#define ACC_LOCK_PAIR 3
#define ACC_LOCK_ADDR 8

static void test_no_lockout_from_another_address(void **state)
{
	struct node *n = node_start("--login-fail-limit %d --login-fail-addr-limit %d "
				    "--login-fail-window-s %d",
				    ACC_LOCK_PAIR, ACC_LOCK_ADDR, ACC_LOCK_WINDOW_S);
	char u[TC_NAME_MAX], v[TC_NAME_MAX], ghost[TC_NAME_MAX];
	struct rc_client *c, *attacker, *owner;
	int64_t id_u;
	uint32_t code;
	cJSON *r;
	int i;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	tc_unique_name("lockU", u);
	tc_unique_name("lockV", v);
	id_u = acc_signup(c, u, TC_PASSWORD, ST_OK);
	acc_signup(c, v, TC_PASSWORD, ST_OK);
	rc_close(c);

	attacker = tc_connect_from(n, "127.0.0.2");
	for (i = 0; i < ACC_LOCK_PAIR; i++)
		assert_int_equal(acc_login_code(attacker, u, "guess-guess"), ST_AUTH_FAILED);
	r = acc_login(attacker, u, "guess-guess", &code);
	assert_int_equal(code, ST_RATE_LIMITED);
	acc_retry_ms(r, 1, ACC_LOCK_WINDOW_S * 1000);
	cJSON_Delete(r);
	/* Refused before the password is looked at, even the right one. */
	assert_int_equal(acc_login_code(attacker, u, TC_PASSWORD), ST_RATE_LIMITED);

	/* The owner, from 127.0.0.1, is not affected. */
	owner = tc_connect(n);
	assert_int_equal(acc_login_ok(owner, u, TC_PASSWORD, NULL), id_u);
	rc_close(owner);

	/* The attacker keeps guessing other names until the address limit. */
	for (i = ACC_LOCK_PAIR; i < ACC_LOCK_ADDR; i++) {
		tc_unique_name("lockG", ghost);
		assert_int_equal(acc_login_code(attacker, ghost, "guess-guess"), ST_AUTH_FAILED);
	}
	r = acc_login(attacker, v, TC_PASSWORD, &code);
	assert_int_equal(code, ST_RATE_LIMITED);
	acc_retry_ms(r, 1, ACC_LOCK_WINDOW_S * 1000);
	cJSON_Delete(r);
	rc_close(attacker);
	/* A new connection from there is refused too: the count is the
	 * address's, not the connection's. */
	attacker = tc_connect_from(n, "127.0.0.2");
	assert_int_equal(acc_login_code(attacker, v, TC_PASSWORD), ST_RATE_LIMITED);
	rc_close(attacker);

	/* The owner still logs in, and so does v from 127.0.0.1. */
	owner = tc_connect(n);
	assert_int_equal(acc_login_ok(owner, u, TC_PASSWORD, NULL), id_u);
	rc_close(owner);
	owner = tc_connect(n);
	acc_login_ok(owner, v, TC_PASSWORD, NULL);
	rc_close(owner);
	assert_int_equal(node_stop(n), 0);
}

/*
 * Guesses at one name from many addresses slow that name down but never
 * lock it: past login_fail_user_limit one attempt per gap goes on (the
 * rest are told to retry within the gap), and an address the user logged
 * in from before is not slowed at all.
 */
#define ACC_SLOW_GAP_MS 3000

static void test_name_slowed_not_locked(void **state)
{
	struct node *n = node_start("--login-fail-limit 2 --login-fail-addr-limit 100 "
				    "--login-fail-user-limit 4 --login-fail-user-gap-ms %d "
				    "--login-fail-window-s 30",
				    ACC_SLOW_GAP_MS);
	char u[TC_NAME_MAX];
	struct rc_client *c, *home, *f[4];
	int64_t id_u, retry;
	uint32_t code;
	cJSON *r;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	tc_unique_name("slowU", u);
	id_u = acc_signup(c, u, TC_PASSWORD, ST_OK);
	rc_close(c);
	/* The owner's usual address: one success there. */
	home = tc_connect_from(n, "127.0.0.3");
	assert_int_equal(acc_login_ok(home, u, TC_PASSWORD, NULL), id_u);
	rc_close(home);

	/* Two addresses, two failures each: the name is at its limit. */
	for (int i = 0; i < 2; i++) {
		f[i] = acc_connect_fresh_addr(n);
		assert_int_equal(acc_login_code(f[i], u, "guess-guess"), ST_AUTH_FAILED);
		assert_int_equal(acc_login_code(f[i], u, "guess-guess"), ST_AUTH_FAILED);
	}
	/* A third address takes the name's slot ... */
	f[2] = acc_connect_fresh_addr(n);
	assert_int_equal(acc_login_code(f[2], u, "guess-guess"), ST_AUTH_FAILED);
	/* ... so a fourth, with the right password, is told to come back
	 * within the gap (not refused for the window) ... */
	f[3] = acc_connect_fresh_addr(n);
	r = acc_login(f[3], u, TC_PASSWORD, &code);
	assert_int_equal(code, ST_RATE_LIMITED);
	retry = acc_retry_ms(r, 1, ACC_SLOW_GAP_MS);
	cJSON_Delete(r);
	/* ... while the owner's usual address is not slowed at all (and
	 * its success clears the name's count). */
	home = tc_connect_from(n, "127.0.0.3");
	assert_int_equal(acc_login_ok(home, u, TC_PASSWORD, NULL), id_u);
	rc_close(home);
	tc_sleep_ms((int)retry + 100);
	assert_int_equal(acc_login_ok(f[3], u, TC_PASSWORD, NULL), id_u);
	for (int i = 0; i < 4; i++)
		rc_close(f[i]);
	assert_int_equal(node_stop(n), 0);
}

/*
 * Redis holds the SHA-256 of a token, never the token: a copy of Redis's
 * data gives no session away. RESUME and LOGOUT still find it.
 */
static void test_token_stored_hashed(void **state)
{
	struct rc_client *c = tc_connect(acc_node), *c2;
	char name[TC_NAME_MAX], tok[33], out[256], cmd[128], digest[65];
	FILE *p;
	char *j;

	(void)state;
	tc_unique_name("tokh", name);
	acc_signup(c, name, TC_PASSWORD, ST_OK);
	acc_login_ok(c, name, TC_PASSWORD, tok);
	if (tc_redis_cli(out, sizeof(out), "EXISTS rc:tok:%s", tok) != 0)
		skip();
	assert_string_equal(out, "0");

	snprintf(cmd, sizeof(cmd), "printf %%s '%s' | sha256sum", tok);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(out, sizeof(out), p));
	pclose(p);
	memcpy(digest, out, 64);
	digest[64] = '\0';
	assert_int_equal(tc_redis_cli(out, sizeof(out), "EXISTS rc:tok:%s", digest), 0);
	assert_string_equal(out, "1");

	c2 = tc_connect(acc_node);
	j = acc_token_json(tok);
	tc_expect(c2, CMD_RESUME, ST_OK, "%s", j);
	tc_expect(c2, CMD_LOGOUT, ST_OK, NULL);
	assert_int_equal(tc_redis_cli(out, sizeof(out), "EXISTS rc:tok:%s", digest), 0);
	assert_string_equal(out, "0");
	free(j);
	rc_close(c2);
	rc_close(c);
}

/* SIGNUP is limited per address: signup_addr_limit per window. */
static void test_signup_addr_limit(void **state)
{
	struct node *n = node_start("--signup-addr-limit 3 --signup-window-s 20");
	struct rc_client *a = acc_connect_fresh_addr(n), *b = acc_connect_fresh_addr(n);
	char name[TC_NAME_MAX];
	uint32_t code;
	cJSON *r;
	char *j;

	(void)state;
	assert_non_null(n);
	for (int i = 0; i < 3; i++) {
		tc_unique_name("suLim", name);
		acc_signup(a, name, TC_PASSWORD, ST_OK);
	}
	tc_unique_name("suLim", name);
	j = acc_creds(name, TC_PASSWORD);
	r = tc_call(a, CMD_SIGNUP, j, &code);
	free(j);
	assert_int_equal(code, ST_RATE_LIMITED);
	acc_retry_ms(r, 1, 20000);
	cJSON_Delete(r);
	/* The refused name was not made; another address makes it. */
	acc_signup(b, name, TC_PASSWORD, ST_OK);
	rc_close(a);
	rc_close(b);
	assert_int_equal(node_stop(n), 0);
}

/* ---- admission control ---------------------------------------------------- */

#define ACC_STORM 8
#define ACC_QUEUE_DEPTH 64 /* the node sheds logins above half of it queued */
#define ACC_BACKLOG_PINGS 100

/*
 * A LOGIN with a backlog behind it on its worker is shed even though no
 * other login runs: one write carries the LOGIN and then
 * ACC_BACKLOG_PINGS PINGs, so the worker finds far more than half of
 * ACC_QUEUE_DEPTH frames queued behind the LOGIN. The PINGs are all
 * answered, in order, and the LOGIN alone later succeeds.
 */
static void acc_backlog_sheds_login(struct node *n)
{
	struct rc_client *c = tc_connect(n);
	char name[TC_NAME_MAX], *j;
	size_t jlen, off, total;
	struct frame_hdr h = {.magic = FRAME_MAGIC, .version = FRAME_VERSION};
	struct rc_frame f;
	uint8_t *buf;
	int i;

	tc_unique_name("backlog", name);
	acc_signup(c, name, TC_PASSWORD, ST_OK);
	j = acc_creds(name, TC_PASSWORD);
	jlen = strlen(j);
	total = FRAME_HDR_BYTES + jlen + (size_t)ACC_BACKLOG_PINGS * FRAME_HDR_BYTES;
	buf = malloc(total);
	assert_non_null(buf);
	h.cmd = CMD_LOGIN;
	h.seq = 1000;
	h.len = (uint32_t)jlen;
	frame_hdr_encode(buf, &h);
	memcpy(buf + FRAME_HDR_BYTES, j, jlen);
	off = FRAME_HDR_BYTES + jlen;
	for (i = 0; i < ACC_BACKLOG_PINGS; i++, off += FRAME_HDR_BYTES) {
		h.cmd = CMD_PING;
		h.seq = 1001 + (uint32_t)i;
		h.len = 0;
		frame_hdr_encode(buf + off, &h);
	}
	assert_int_equal(rc_send_raw(c, buf, total), 0);
	free(buf);

	assert_int_equal(rc_recv(c, &f, 10000), 0);
	if (f.hdr.cmd != CMD_LOGIN || f.hdr.seq != 1000 || f.hdr.code != ST_RATE_LIMITED)
		fail_msg("LOGIN ahead of a backlog: cmd %u seq %u code %u: %s", f.hdr.cmd,
			 f.hdr.seq, f.hdr.code, f.payload);
	acc_retry_ms(f.json, 100, 1000);
	rc_frame_free(&f);
	for (i = 0; i < ACC_BACKLOG_PINGS; i++) {
		assert_int_equal(rc_recv(c, &f, 10000), 0);
		assert_int_equal(f.hdr.cmd, CMD_PING);
		assert_int_equal(f.hdr.seq, 1001 + (uint32_t)i);
		assert_int_equal(f.hdr.code, ST_OK);
		rc_frame_free(&f);
	}
	assert_false(acc_logged_in(c));
	acc_login_ok(c, name, TC_PASSWORD, NULL);
	free(j);
	rc_close(c);
}

/* A node that runs one login at a time, with hashes slow enough (cost 4,
 * tens of ms) that logins on its two workers overlap: the excess is
 * refused at once with a retry hint, and every login succeeds when its
 * client retries as told. */
static void test_login_admission(void **state)
{
	struct node *n =
	    node_start("--login-concurrency 1 --hash-cost 4 --queue-depth %d", ACC_QUEUE_DEPTH);
	struct rc_client *c[ACC_STORM], *pinger;
	char names[ACC_STORM][TC_NAME_MAX];
	int64_t retry[ACC_STORM];
	int ok = 0, shed = 0, i, k;

	(void)state;
	assert_non_null(n);
	pinger = tc_connect(n);
	for (i = 0; i < ACC_STORM; i++) {
		tc_unique_name("storm", names[i]);
		acc_signup(pinger, names[i], TC_PASSWORD, ST_OK);
	}
	for (i = 0; i < ACC_STORM; i++)
		c[i] = tc_connect(n);
	for (i = 0; i < ACC_STORM; i++) {
		char *j = acc_creds(names[i], TC_PASSWORD);

		assert_int_equal(rc_send(c[i], CMD_LOGIN, 1, j), 0);
		free(j);
	}
	/* Other traffic keeps flowing meanwhile. */
	acc_assert_ping(pinger);
	for (i = 0; i < ACC_STORM; i++) {
		struct rc_frame f;

		retry[i] = 0;
		assert_int_equal(rc_recv(c[i], &f, 10000), 0);
		assert_int_equal(f.hdr.seq, 1);
		if (f.hdr.code == ST_OK) {
			ok++;
		} else if (f.hdr.code == ST_RATE_LIMITED) {
			shed++;
			retry[i] = acc_retry_ms(f.json, 100, 1000);
			assert_true(acc_error_text(f.json)[0] != '\0');
		} else {
			fail_msg("login %d: code %u: %s", i, f.hdr.code, f.payload);
		}
		rc_frame_free(&f);
	}
	if (!ok || !shed)
		fail_msg("%d logins succeeded and %d were shed; expected some of each", ok, shed);
	assert_true(node_log_wait(n, "login shed", 2000));

	/* Clients that retry as told all get in. */
	for (i = 0; i < ACC_STORM; i++) {
		for (k = 0; retry[i] && k < 50; k++) {
			uint32_t code;
			cJSON *r;

			tc_sleep_ms((int)retry[i]);
			r = acc_login(c[i], names[i], TC_PASSWORD, &code);
			retry[i] = code == ST_RATE_LIMITED ? acc_retry_ms(r, 100, 1000) : 0;
			if (code != ST_OK && code != ST_RATE_LIMITED)
				fail_msg("retried login %d: code %u", i, code);
			cJSON_Delete(r);
		}
		assert_int_equal(retry[i], 0);
		assert_true(acc_logged_in(c[i]));
		rc_close(c[i]);
	}
	rc_close(pinger);
	acc_backlog_sheds_login(n);
	assert_int_equal(node_stop(n), 0);
}

/* ---- storage outages (stop and restart the shared services) --------------- */

static int acc_restart_mysql(void **state)
{
	(void)state;
	return services_start("mysql") == 0 ? 0 : -1;
}

static int acc_restart_redis(void **state)
{
	(void)state;
	return services_start("redis") == 0 ? 0 : -1;
}

/* Asserts code 12 with the storage text. */
static void acc_expect_storage_error(struct rc_client *c, uint16_t cmd, const char *json)
{
	uint32_t code;
	cJSON *r = tc_call(c, cmd, json, &code);

	if (code != ST_INTERNAL)
		fail_msg("%s during an outage: code %u, expected 12", rc_cmd_name(cmd), code);
	assert_non_null(strstr(acc_error_text(r), "storage unavailable"));
	cJSON_Delete(r);
}

/* Repeats cmd until it answers OK, for at most ACC_RECOVERY_MS; only
 * INTERNAL is allowed meanwhile. Returns the OK payload. */
static cJSON *acc_until_ok(struct rc_client *c, uint16_t cmd, const char *json)
{
	int64_t deadline = tc_now_ms() + ACC_RECOVERY_MS;
	uint32_t code;

	for (;;) {
		cJSON *r = tc_call(c, cmd, json, &code);

		if (code == ST_OK)
			return r;
		cJSON_Delete(r);
		if (code != ST_INTERNAL)
			fail_msg("%s while storage recovers: code %u", rc_cmd_name(cmd), code);
		if (tc_now_ms() > deadline)
			fail_msg("%s still failing %d ms after the restart", rc_cmd_name(cmd),
				 ACC_RECOVERY_MS);
		tc_sleep_ms(200);
	}
}

static void test_mysql_outage(void **state)
{
	struct rc_client *c = tc_connect(acc_node);
	char name[TC_NAME_MAX], fresh[TC_NAME_MAX], *login, *signup, tok[33], *resume;

	(void)state;
	tc_unique_name("mydown", name);
	tc_unique_name("mynew", fresh);
	acc_signup(c, name, TC_PASSWORD, ST_OK);
	acc_login_ok(c, name, TC_PASSWORD, tok);
	rc_close(c);
	login = acc_creds(name, TC_PASSWORD);
	signup = acc_creds(fresh, TC_PASSWORD);
	resume = acc_token_json(tok);

	assert_int_equal(services_stop("mysql"), 0);
	c = tc_connect(acc_node);
	acc_expect_storage_error(c, CMD_SIGNUP, signup);
	acc_expect_storage_error(c, CMD_LOGIN, login);
	acc_expect_storage_error(c, CMD_RESUME, resume);
	/* The node itself is fine. */
	acc_assert_ping(c);
	assert_false(acc_logged_in(c));

	assert_int_equal(services_start("mysql"), 0);
	cJSON_Delete(acc_until_ok(c, CMD_SIGNUP, signup));
	cJSON_Delete(acc_until_ok(c, CMD_LOGIN, login));
	assert_true(acc_logged_in(c));
	rc_close(c);
	/* The account made after the outage logs in too. */
	c = tc_connect(acc_node);
	acc_login_ok(c, fresh, TC_PASSWORD, NULL);
	rc_close(c);
	free(login);
	free(signup);
	free(resume);
}

static void test_redis_outage(void **state)
{
	struct rc_client *c = tc_connect(acc_node), *session;
	char name[TC_NAME_MAX], fresh[TC_NAME_MAX], tok[33], *login, *login_fresh, *resume;
	cJSON *r;

	(void)state;
	tc_unique_name("rddown", name);
	tc_unique_name("rdnew", fresh);
	acc_signup(c, name, TC_PASSWORD, ST_OK);
	session = tc_connect(acc_node);
	acc_login_ok(session, name, TC_PASSWORD, tok);
	login = acc_creds(name, TC_PASSWORD);
	resume = acc_token_json(tok);

	assert_int_equal(services_stop("redis"), 0);
	acc_expect_storage_error(c, CMD_LOGIN, login);
	acc_expect_storage_error(c, CMD_RESUME, resume);
	assert_false(acc_logged_in(c));
	/* LOGOUT cannot revoke the token: it says so and the session stays. */
	acc_expect_storage_error(session, CMD_LOGOUT, NULL);
	acc_assert_ping(session);
	assert_true(acc_logged_in(session));
	/* SIGNUP needs only MySQL. */
	acc_signup(c, fresh, TC_PASSWORD, ST_OK);
	acc_assert_ping(c);

	assert_int_equal(services_start("redis"), 0);
	/* The user made during the outage (logging in as name would kick
	 * the session). */
	login_fresh = acc_creds(fresh, TC_PASSWORD);
	r = acc_until_ok(c, CMD_LOGIN, login_fresh);
	cJSON_Delete(r);
	assert_true(acc_logged_in(c));
	/* The session still logs out once Redis is back. */
	cJSON_Delete(acc_until_ok(session, CMD_LOGOUT, NULL));
	acc_expect_closed(session);
	rc_close(session);
	rc_close(c);
	free(login);
	free(login_fresh);
	free(resume);
}

/* ---- Redis AUTH and MariaDB TLS ---------------------------------------------- */

#define ACC_REDIS_PW "rc-test-redis-pw"

/* Takes the password off the shared Redis again, whatever the test did. */
static int acc_redis_no_password(void **state)
{
	(void)state;
	tc_redis_cli(NULL, 0, "-a %s --no-auth-warning CONFIG SET requirepass ''", ACC_REDIS_PW);
	return tc_redis_cli(NULL, 0, "PING") == 0 ? 0 : -1;
}

/*
 * With requirepass on Redis, a node given redis_password logs in (the
 * token goes to Redis) and a node without it answers 12 and says why in
 * its log.
 */
static void test_redis_password(void **state)
{
	struct node *with, *without;
	struct rc_client *c;
	char name[TC_NAME_MAX], out[128], *login;

	(void)state;
	c = tc_connect(acc_node);
	tc_unique_name("rdpw", name);
	acc_signup(c, name, TC_PASSWORD, ST_OK);
	rc_close(c);
	login = acc_creds(name, TC_PASSWORD);
	if (tc_redis_cli(out, sizeof(out), "CONFIG SET requirepass %s", ACC_REDIS_PW) != 0 ||
	    strcmp(out, "OK") != 0)
		skip();

	with = node_start("--cluster-route off --redis-password %s", ACC_REDIS_PW);
	without = node_start("--cluster-route off");
	assert_non_null(with);
	assert_non_null(without);
	c = tc_connect(without);
	acc_expect_storage_error(c, CMD_LOGIN, login);
	rc_close(c);
	/* NOAUTH, or for a long command "unauthenticated multibulk" */
	assert_true(node_log_wait(without, "check failed: Redis", 2000));
	c = tc_connect(with);
	cJSON_Delete(tc_call_ok(c, CMD_LOGIN, "%s", login));
	rc_close(c);
	assert_int_equal(node_stop(with), 0);
	assert_int_equal(node_stop(without), 0);
	free(login);
}

/* mysql_tls on against the private server, which has no TLS: refused
 * cleanly (12, a log line naming TLS/SSL), never in clear text, and the
 * node itself keeps answering. */
static void test_mysql_tls_required(void **state)
{
	/* Over TCP: TLS is for MariaDB across a network (a unix socket is
	 * local and is not wrapped in TLS). */
	struct node *n = node_start("--cluster-route off --mysql-tls on --mysql-socket= "
				    "--mysql-host 127.0.0.1 --mysql-port %s",
				    getenv("RINGCHAT_MYSQL_PORT") ? getenv("RINGCHAT_MYSQL_PORT")
								  : "13306");
	struct rc_client *c;
	char name[TC_NAME_MAX], *signup;

	(void)state;
	assert_non_null(n);
	c = tc_connect(n);
	tc_unique_name("tls", name);
	signup = acc_creds(name, TC_PASSWORD);
	acc_expect_storage_error(c, CMD_SIGNUP, signup);
	acc_assert_ping(c);
	assert_true(node_log_wait(n, "SSL", 2000) || node_log_contains(n, "TLS"));
	rc_close(c);
	/* The name was not taken. */
	c = tc_connect(acc_node);
	acc_signup(c, name, TC_PASSWORD, ST_OK);
	rc_close(c);
	assert_int_equal(node_stop(n), 0);
	free(signup);
}

/* ---- main ------------------------------------------------------------------ */

static int acc_setup(void **state)
{
	(void)state;
	acc_node = node_start(NULL);
	return acc_node ? 0 : -1;
}

static int acc_teardown(void **state)
{
	(void)state;
	return node_stop(acc_node) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_signup_ok_and_duplicate),
	    cmocka_unit_test(test_signup_validation),
	    cmocka_unit_test(test_signup_limits_accepted),
	    cmocka_unit_test(test_login_token_and_resume),
	    cmocka_unit_test(test_resume_bad_tokens),
	    cmocka_unit_test(test_wrong_password_and_unknown_user),
	    cmocka_unit_test(test_logout),
	    cmocka_unit_test(test_kick_on_second_login),
	    cmocka_unit_test(test_second_login_on_connection_refused),
	    cmocka_unit_test(test_sql_shaped_input),
	    cmocka_unit_test(test_login_pipelined),
	    cmocka_unit_test(test_signup_login_pipelined),
	    cmocka_unit_test(test_login_closed_while_hashing),
	    cmocka_unit_test(test_hasher_full),
	    cmocka_unit_test(test_failed_login_limit),
	    cmocka_unit_test(test_no_lockout_from_another_address),
	    cmocka_unit_test(test_name_slowed_not_locked),
	    cmocka_unit_test(test_signup_addr_limit),
	    cmocka_unit_test(test_token_stored_hashed),
	    cmocka_unit_test(test_login_admission),
	    cmocka_unit_test(test_mysql_tls_required),
	    cmocka_unit_test_teardown(test_redis_password, acc_redis_no_password),
	    /* Last: they stop the shared services (the teardown restarts
	     * them even when the test fails). */
	    cmocka_unit_test_teardown(test_mysql_outage, acc_restart_mysql),
	    cmocka_unit_test_teardown(test_redis_outage, acc_restart_redis),
	};

	harness_init();
	return harness_done(cmocka_run_group_tests(tests, acc_setup, acc_teardown));
}
