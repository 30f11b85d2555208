/*
 * test_db.c - the MariaDB layer against a real server: parameter and
 * result round trips (NULLs, integers at their limits, binary, UTF-8,
 * long text, injection-shaped strings), duplicate keys, multi-row inserts,
 * transactions, the statement cache under eviction, transparent reconnect
 * after KILL, and failing fast while the server does not answer.
 *
 * Needs RINGCHAT_MYSQL_SOCKET (scripts/test.sh sets it from
 * scripts/services.sh); RINGCHAT_MYSQL_USER/_PASSWORD/_DB override the
 * "ringchat" defaults. Without a reachable server it exits 77 (skip).
 * RINGCHAT_MYSQL_PORT, when set, adds the reconnect test over TCP to
 * 127.0.0.1 (the same server).
 * Tables are TEMPORARY, so parallel runs and other data are untouched.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "ringchat/config.h"
#include "ringchat/db.h"

#define SKIP 77

static struct config cfg;
static struct db *db;

static const char SQL_CREATE[] = "CREATE TEMPORARY TABLE store_test ("
				 " id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,"
				 " name VARCHAR(64) NOT NULL UNIQUE,"
				 " note MEDIUMTEXT NULL,"
				 " data MEDIUMBLOB NULL,"
				 " n INT NULL,"
				 " s64 BIGINT NULL,"
				 " u64 BIGINT UNSIGNED NULL"
				 ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
static const char SQL_DROP[] = "DROP TEMPORARY TABLE IF EXISTS store_test";
static const char SQL_COUNT[] = "SELECT COUNT(*) FROM store_test";
static const char SQL_INS_NAME[] = "INSERT INTO store_test (name) VALUES (?)";
static const char SQL_INS_NOTE[] = "INSERT INTO store_test (name, note) VALUES (?, ?)";
static const char SQL_GET_NOTE[] = "SELECT note FROM store_test WHERE name = ?";

static int64_t elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static void config_for_tests(struct config *c, const char *socket)
{
	const char *user = getenv("RINGCHAT_MYSQL_USER");
	const char *pass = getenv("RINGCHAT_MYSQL_PASSWORD");
	const char *name = getenv("RINGCHAT_MYSQL_DB");

	memset(c, 0, sizeof(*c));
	snprintf(c->mysql_socket, sizeof(c->mysql_socket), "%s", socket);
	snprintf(c->mysql_user, sizeof(c->mysql_user), "%s", user ? user : "ringchat");
	snprintf(c->mysql_password, sizeof(c->mysql_password), "%s", pass ? pass : "ringchat");
	snprintf(c->mysql_db, sizeof(c->mysql_db), "%s", name ? name : "ringchat");
}

static int64_t count_rows(void)
{
	struct db_rows *r = db_query(db, SQL_COUNT, NULL);
	int64_t n;

	if (!r)
		fail_msg("count: %s", db_errmsg(db));
	assert_int_equal(db_rows_count(r), 1);
	n = db_cell_i64(r, 0, 0);
	db_rows_free(r);
	return n;
}

static int64_t connection_id(struct db *d)
{
	struct db_rows *r = db_query(d, "SELECT CONNECTION_ID()", NULL);
	int64_t id;

	if (!r)
		fail_msg("CONNECTION_ID: %s", db_errmsg(d));
	id = db_cell_i64(r, 0, 0);
	db_rows_free(r);
	return id;
}

/*
 * Kills d's connection from a second connection made as via says, as an
 * operator would. Only the same account may KILL, and 'user'@'localhost'
 * (socket) and 'user'@'127.0.0.1' (TCP) are different accounts.
 */
static void kill_from_outside_via(struct db *d, const struct config *via)
{
	struct db *killer = db_open(via);
	int64_t id = connection_id(d);

	assert_non_null(killer);
	if (db_exec(killer, "KILL ?", "l", id) < 0)
		fail_msg("KILL %" PRId64 ": %s", id, db_errmsg(killer));
	db_close(killer);
	usleep(50 * 1000); /* let the server finish closing it */
}

static void kill_from_outside(struct db *d)
{
	kill_from_outside_via(d, &cfg);
}

static int table_setup(void **state)
{
	(void)state;
	if (db_exec(db, SQL_DROP, NULL) < 0 || db_exec(db, SQL_CREATE, NULL) < 0) {
		fprintf(stderr, "create table: %s\n", db_errmsg(db));
		return -1;
	}
	return 0;
}

static int table_teardown(void **state)
{
	(void)state;
	db_rollback(db);
	db_exec(db, SQL_DROP, NULL);
	return 0;
}

static void test_roundtrip_types_and_nulls(void **state)
{
	static const unsigned char blob[] = {0x00, 0xff, 0x01, 0x00, '\'', '"', '\\', 0x80, 0x00};
	struct db_rows *r;
	uint64_t id1, id2;

	(void)state;
	assert_int_equal(db_exec(db,
				 "INSERT INTO store_test (name, note, data, n, s64, u64)"
				 " VALUES (?, ?, ?, ?, ?, ?)",
				 "ssbilu", "full", "some text", (const void *)blob, sizeof(blob),
				 INT_MIN, INT64_MIN, UINT64_MAX),
			 1);
	id1 = db_insert_id(db);
	assert_true(id1 > 0);
	assert_int_equal(db_exec(db,
				 "INSERT INTO store_test (name, note, data, n, s64, u64)"
				 " VALUES (?, ?, ?, ?, ?, ?)",
				 "ssbilu", "nulls", (const char *)NULL, (const void *)NULL,
				 (size_t)0, INT_MAX, INT64_MAX, (uint64_t)0),
			 1);
	id2 = db_insert_id(db);
	assert_true(id2 > id1);

	r = db_query(db,
		     "SELECT id, name, note, data, n, s64, u64 FROM store_test"
		     " WHERE id >= ? ORDER BY id",
		     "u", id1);
	if (!r)
		fail_msg("query: %s", db_errmsg(db));
	assert_int_equal(db_rows_count(r), 2);
	assert_int_equal(db_rows_cols(r), 7);

	assert_int_equal((uint64_t)db_cell_i64(r, 0, 0), id1);
	assert_string_equal(db_cell_str(r, 0, 1), "full");
	assert_string_equal(db_cell_str(r, 0, 2), "some text");
	assert_int_equal(db_cell_len(r, 0, 3), sizeof(blob));
	assert_memory_equal(db_cell_str(r, 0, 3), blob, sizeof(blob));
	assert_int_equal(db_cell_i64(r, 0, 4), INT_MIN);
	assert_int_equal(db_cell_i64(r, 0, 5), INT64_MIN);
	assert_string_equal(db_cell_str(r, 0, 6), "18446744073709551615");
	for (unsigned c = 0; c < 7; c++)
		assert_false(db_cell_is_null(r, 0, c));

	/* NULL pointers went in as SQL NULL and read back as "" + is_null */
	assert_true(db_cell_is_null(r, 1, 2));
	assert_true(db_cell_is_null(r, 1, 3));
	assert_string_equal(db_cell_str(r, 1, 2), "");
	assert_int_equal(db_cell_len(r, 1, 2), 0);
	assert_int_equal(db_cell_i64(r, 1, 3), 0);
	assert_int_equal(db_cell_i64(r, 1, 4), INT_MAX);
	assert_int_equal(db_cell_i64(r, 1, 5), INT64_MAX);
	assert_string_equal(db_cell_str(r, 1, 6), "0");
	assert_false(db_cell_is_null(r, 1, 6));
	db_rows_free(r);

	/* an empty string is not NULL */
	assert_int_equal(db_exec(db, SQL_INS_NOTE, "ss", "empty", ""), 1);
	r = db_query(db, SQL_GET_NOTE, "s", "empty");
	assert_non_null(r);
	assert_false(db_cell_is_null(r, 0, 0));
	assert_int_equal(db_cell_len(r, 0, 0), 0);
	db_rows_free(r);

	/* no match: a valid result with no rows */
	r = db_query(db, SQL_GET_NOTE, "s", "nobody");
	assert_non_null(r);
	assert_int_equal(db_rows_count(r), 0);
	assert_int_equal(db_rows_cols(r), 1);
	db_rows_free(r);
	assert_int_equal(db_last_error(db), 0);
}

static void test_utf8_and_injection_stored_verbatim(void **state)
{
	static const char *const names[] = {
	    "Zoë ✓ 漢字 😀",		      /* 4-byte UTF-8 needs utf8mb4 */
	    "x'); DROP TABLE store_test; --", /* classic injection */
	    "' OR '1'='1",
	    "\\'; SELECT 1; #",
	    "%_*?\"`",
	};
	struct db_rows *r;

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_int_equal(db_exec(db, SQL_INS_NOTE, "ss", names[i], names[i]), 1);
		r = db_query(db,
			     "SELECT name, note, CHAR_LENGTH(name) FROM store_test WHERE name = ?",
			     "s", names[i]);
		if (!r)
			fail_msg("query %s: %s", names[i], db_errmsg(db));
		/* exactly the one row: the string was a value, not SQL */
		assert_int_equal(db_rows_count(r), 1);
		assert_string_equal(db_cell_str(r, 0, 0), names[i]);
		assert_string_equal(db_cell_str(r, 0, 1), names[i]);
		db_rows_free(r);
	}
	/* the emoji is one character on the server: sent as utf8mb4 */
	r = db_query(db, "SELECT CHAR_LENGTH(name) FROM store_test WHERE name = ?", "s", names[0]);
	assert_non_null(r);
	assert_int_equal(db_cell_i64(r, 0, 0), 10);
	db_rows_free(r);
	/* and the table survived the "DROP TABLE" */
	assert_int_equal(count_rows(), 5);
}

static void test_long_text(void **state)
{
	const size_t sizes[] = {64 * 1024, 1024 * 1024 + 7};
	struct db_rows *r;

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		size_t len = sizes[k];
		char *text = malloc(len + 1), name[32];

		assert_non_null(text);
		for (size_t i = 0; i < len; i++)
			text[i] = (char)('a' + (i * 7 + i / 251) % 26);
		text[len] = '\0';
		snprintf(name, sizeof(name), "long-%zu", len);
		assert_int_equal(db_exec(db, SQL_INS_NOTE, "ss", name, text), 1);
		/* a short row first, so the long one is not alone in its column */
		assert_int_equal(db_exec(db, SQL_INS_NOTE, "ss", "a-short", "tiny"), 1);
		r = db_query(db, "SELECT name, note FROM store_test ORDER BY name", NULL);
		if (!r)
			fail_msg("query: %s", db_errmsg(db));
		assert_int_equal(db_rows_count(r), 2);
		assert_string_equal(db_cell_str(r, 0, 1), "tiny");
		assert_int_equal(db_cell_len(r, 1, 1), len);
		assert_memory_equal(db_cell_str(r, 1, 1), text, len + 1);
		db_rows_free(r);
		assert_true(db_exec(db, "DELETE FROM store_test", NULL) == 2);
		free(text);
	}
}

static void test_duplicate_key(void **state)
{
	(void)state;
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "alice"), 1);
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "alice"), DB_ERR_DUP);
	assert_int_equal(db_last_error(db), DB_ERR_DUP);
	assert_true(strstr(db_errmsg(db), "1062") != NULL);
	/* the connection is fine afterwards */
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "bob"), 1);
	assert_int_equal(db_last_error(db), 0);
	assert_string_equal(db_errmsg(db), "");
	assert_int_equal(count_rows(), 2);
}

static void test_bad_calls_are_other_errors(void **state)
{
	(void)state;
	assert_int_equal(db_exec(db, "SELEKT nonsense", NULL), DB_ERR_OTHER);
	assert_int_equal(db_exec(db, "SELECT * FROM no_such_table_xyz", NULL), DB_ERR_OTHER);
	/* placeholders and parameters must agree */
	assert_int_equal(db_exec(db, SQL_INS_NAME, NULL), DB_ERR_OTHER);
	assert_int_equal(db_exec(db, SQL_INS_NAME, "ss", "a", "b"), DB_ERR_OTHER);
	assert_int_equal(db_exec(db, SQL_INS_NAME, "x", 1), DB_ERR_OTHER);
	assert_null(db_query(db, "SELEKT 1", NULL));
	assert_int_equal(db_last_error(db), DB_ERR_OTHER);
	assert_true(db_errmsg(db)[0] != '\0');
	/* strict mode: a value too long for its column is refused, not cut */
	assert_int_equal(
	    db_exec(db, SQL_INS_NAME, "s",
		    "0123456789012345678901234567890123456789012345678901234567890123456789"),
	    DB_ERR_OTHER);
	assert_int_equal(count_rows(), 0);
}

static void test_exec_counts(void **state)
{
	(void)state;
	assert_int_equal(db_exec(db, SQL_INS_NOTE, "ss", "carol", "x"), 1);
	/* matched rows, even when nothing changes: 0 means "no such row" */
	assert_int_equal(
	    db_exec(db, "UPDATE store_test SET note = ? WHERE name = ?", "ss", "x", "carol"), 1);
	assert_int_equal(
	    db_exec(db, "UPDATE store_test SET note = ? WHERE name = ?", "ss", "x", "nobody"), 0);
	/* a SELECT through db_exec counts its rows */
	assert_int_equal(db_exec(db, "SELECT 1 FROM store_test WHERE name = ?", "s", "carol"), 1);
	assert_int_equal(db_exec(db, "SELECT 1 FROM store_test WHERE name = ?", "s", "dave"), 0);
	assert_int_equal(db_exec(db, "DELETE FROM store_test WHERE name = ?", "s", "carol"), 1);
}

static const struct db_multi ins_multi = {
    .prefix = "INSERT INTO store_test (name, n, data) VALUES ",
    .row = "(?, ?, ?)",
    .row_fmt = "sib",
};

/* Fills rows [0, n) of a multi insert with names "<tag>-<i>". */
static struct db_param *multi_params(size_t n, const char *tag, char (*names)[32])
{
	struct db_param *p = calloc(3 * n, sizeof(*p));

	assert_non_null(p);
	for (size_t i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "%s-%zu", tag, i);
		p[3 * i] = DB_S(names[i]);
		p[3 * i + 1] = DB_I((int)i);
		p[3 * i + 2] = DB_B(names[i], strlen(names[i]));
	}
	return p;
}

static void test_multi_insert_1000_rows(void **state)
{
	enum { N = 1000 };
	char(*names)[32] = calloc(N, sizeof(*names));
	struct db_param *p;
	struct db_rows *r;
	uint64_t first;

	(void)state;
	assert_non_null(names);
	p = multi_params(N, "m", names);
	assert_int_equal(db_exec_multi(db, &ins_multi, N, p), N);
	first = db_insert_id(db);
	assert_int_equal(count_rows(), N);
	r = db_query(db, "SELECT id, name, n, data FROM store_test ORDER BY id", NULL);
	assert_non_null(r);
	assert_int_equal(db_rows_count(r), N);
	/* rows land in parameter order, ids from the first one up */
	for (size_t i = 0; i < N; i++) {
		assert_int_equal((uint64_t)db_cell_i64(r, i, 0), first + i);
		assert_string_equal(db_cell_str(r, i, 1), names[i]);
		assert_int_equal(db_cell_i64(r, i, 2), (int64_t)i);
		assert_string_equal(db_cell_str(r, i, 3), names[i]);
	}
	db_rows_free(r);
	free(p);

	/* one statement: a duplicate in row 500 stores none of the batch */
	p = multi_params(N, "x", names);
	snprintf(names[500], sizeof(names[500]), "m-17");
	p[3 * 500] = DB_S(names[500]);
	assert_int_equal(db_exec_multi(db, &ins_multi, N, p), DB_ERR_DUP);
	assert_int_equal(count_rows(), N);

	/* row_fmt is enforced: a wrong type anywhere is refused unsent */
	snprintf(names[500], sizeof(names[500]), "x-500");
	p[3 * 999 + 1] = DB_L(1);
	assert_int_equal(db_exec_multi(db, &ins_multi, N, p), DB_ERR_OTHER);
	p[3 * 999 + 1] = DB_I(1);
	assert_int_equal(db_exec_multi(db, &ins_multi, N, p), N);
	assert_int_equal(count_rows(), 2 * N);
	assert_int_equal(db_exec_multi(db, &ins_multi, 0, p), 0);
	free(p);
	free(names);
}

static void test_multi_insert_with_suffix(void **state)
{
	static const struct db_multi upsert = {
	    .prefix = "INSERT INTO store_test (name, n) VALUES ",
	    .row = "(?, ?)",
	    .suffix = " ON DUPLICATE KEY UPDATE n = VALUES(n)",
	    .row_fmt = "si",
	};
	struct db_param p[6] = {DB_S("u1"), DB_I(1), DB_S("u2"), DB_I(2), DB_S("u3"), DB_I(3)};
	struct db_rows *r;

	(void)state;
	assert_int_equal(db_exec_multi(db, &upsert, 3, p), 3);
	p[3] = DB_I(20);
	p[5] = DB_I(30);
	/* u1 unchanged (1 with CLIENT_FOUND_ROWS), u2 and u3 updated (2 each) */
	assert_int_equal(db_exec_multi(db, &upsert, 3, p), 5);
	r = db_query(db, "SELECT SUM(n), COUNT(*) FROM store_test", NULL);
	assert_non_null(r);
	assert_int_equal(db_cell_i64(r, 0, 0), 51);
	assert_int_equal(db_cell_i64(r, 0, 1), 3);
	db_rows_free(r);
}

/*
 * Array binding: 1000 rows of every parameter type in one execution land
 * exactly (order, values, NULLs in a string and a blob column); inside a
 * transaction a duplicate fails the call and the rollback keeps none; a
 * wrong type is refused unsent.
 */
static void test_bulk_insert(void **state)
{
	static const char ins_all[] =
	    "INSERT INTO store_test (name, n, s64, u64, note, data) VALUES (?, ?, ?, ?, ?, ?)";
	static const char fmt[] = "silusb";
	enum { N = 1000, W = 6 };
	char(*names)[32] = calloc(N, sizeof(*names));
	struct db_param *p = calloc((size_t)N * W, sizeof(*p));
	struct db_rows *r;

	(void)state;
	assert_non_null(names);
	assert_non_null(p);
	assert_true(db_bulk_capable(db));
	for (size_t i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "bulk-%zu", i);
		p[W * i] = DB_S(names[i]);
		p[W * i + 1] = DB_I((int)i - 500);
		p[W * i + 2] = DB_L(-(int64_t)i * 1000000007);
		p[W * i + 3] = DB_U(UINT64_MAX - i);
		p[W * i + 4] = DB_S(i % 3 ? names[i] : NULL);
		p[W * i + 5] = i % 5 ? DB_B(names[i], i % 7) : DB_B(NULL, 0);
	}
	assert_int_equal(db_exec_bulk(db, ins_all, fmt, N, p), N);
	r = db_query(db, "SELECT name, n, s64, u64, note, data FROM store_test ORDER BY id", NULL);
	assert_non_null(r);
	assert_int_equal(db_rows_count(r), N);
	for (size_t i = 0; i < N; i++) {
		assert_string_equal(db_cell_str(r, i, 0), names[i]);
		assert_int_equal(db_cell_i64(r, i, 1), (int64_t)i - 500);
		assert_int_equal(db_cell_i64(r, i, 2), -(int64_t)i * 1000000007);
		assert_int_equal(strtoull(db_cell_str(r, i, 3), NULL, 10), UINT64_MAX - i);
		if (i % 3)
			assert_string_equal(db_cell_str(r, i, 4), names[i]);
		else
			assert_true(db_cell_is_null(r, i, 4));
		if (i % 5) {
			assert_int_equal(db_cell_len(r, i, 5), i % 7);
			assert_memory_equal(db_cell_str(r, i, 5), names[i], i % 7);
		} else {
			assert_true(db_cell_is_null(r, i, 5));
		}
	}
	db_rows_free(r);

	/* a duplicate in row 700: the call fails, the rollback keeps none */
	for (size_t i = 0; i < N; i++)
		snprintf(names[i], sizeof(names[i]), "again-%zu", i);
	snprintf(names[700], sizeof(names[700]), "bulk-3");
	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_exec_bulk(db, ins_all, fmt, N, p), DB_ERR_DUP);
	assert_int_equal(db_rollback(db), 0);
	assert_int_equal(count_rows(), N);

	/* row_fmt is enforced before anything is sent */
	snprintf(names[700], sizeof(names[700]), "again-700");
	p[W * 999 + 1] = DB_L(1);
	assert_int_equal(db_exec_bulk(db, ins_all, fmt, N, p), DB_ERR_OTHER);
	p[W * 999 + 1] = DB_I(1);
	assert_int_equal(db_exec_bulk(db, ins_all, fmt, N, p), N);
	assert_int_equal(count_rows(), 2 * N);
	assert_int_equal(db_exec_bulk(db, ins_all, fmt, 0, p), 0);
	/* one row is a bulk of one */
	snprintf(names[0], sizeof(names[0]), "single");
	assert_int_equal(db_exec_bulk(db, ins_all, fmt, 1, p), 1);
	assert_int_equal(count_rows(), 2 * N + 1);
	/* an UPDATE too: the affected rows of all sets, a set matching none */
	{
		static const char upd[] = "UPDATE store_test SET n = n + ? WHERE name = ?";
		struct db_param u[6] = {DB_I(1000), DB_S("single"),  DB_I(1000),
					DB_S("nobody"), DB_I(7),    DB_S("bulk-2")};

		assert_int_equal(db_exec_bulk(db, upd, "is", 3, u), 2);
		assert_int_equal(db_exec(db, "SELECT 1 FROM store_test WHERE name = ? AND n = ?",
					 "si", "single", 1000 - 500),
				 1);
		assert_int_equal(db_exec(db, "SELECT 1 FROM store_test WHERE name = ? AND n = ?",
					 "si", "bulk-2", 2 - 500 + 7),
				 1);
	}
	free(p);
	free(names);
}

/* More distinct statements than the cache holds: evicted ones come back
 * and every call still runs its own statement. */
static void test_statement_cache_eviction(void **state)
{
	enum { SIZES = DB_STMT_CACHE_MAX + 20 };
	char(*names)[32] = calloc(SIZES, sizeof(*names));
	int64_t total = 0;

	(void)state;
	assert_non_null(names);
	for (int round = 0; round < 2; round++) {
		for (size_t n = 1; n <= SIZES; n++) {
			char tag[16];
			struct db_param *p;

			snprintf(tag, sizeof(tag), "r%dn%zu", round, n);
			p = multi_params(n, tag, names);
			if (db_exec_multi(db, &ins_multi, n, p) != (int64_t)n)
				fail_msg("%zu rows: %s", n, db_errmsg(db));
			total += (int64_t)n;
			free(p);
		}
		assert_int_equal(count_rows(), total);
	}
	free(names);
}

static void test_transactions(void **state)
{
	(void)state;
	assert_false(db_in_transaction(db));
	assert_int_equal(db_rollback(db), 0); /* none open: a no-op */
	assert_int_equal(db_commit(db), DB_ERR_OTHER);

	assert_int_equal(db_begin(db), 0);
	assert_true(db_in_transaction(db));
	assert_int_equal(db_begin(db), DB_ERR_OTHER);
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "rolled-back"), 1);
	assert_int_equal(count_rows(), 1);
	assert_int_equal(db_rollback(db), 0);
	assert_false(db_in_transaction(db));
	assert_int_equal(count_rows(), 0);

	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "kept-1"), 1);
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "kept-2"), 1);
	/* a failed statement leaves the transaction open and intact */
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "kept-1"), DB_ERR_DUP);
	assert_true(db_in_transaction(db));
	assert_int_equal(db_commit(db), 0);
	assert_false(db_in_transaction(db));
	assert_int_equal(count_rows(), 2);

	/* autocommit is back: a later rollback cannot undo this */
	assert_int_equal(db_exec(db, SQL_INS_NAME, "s", "autocommitted"), 1);
	assert_int_equal(db_rollback(db), 0);
	assert_int_equal(count_rows(), 3);
}

static void test_reconnect_after_kill(void **state)
{
	const char *sql = "SELECT ? + 1";
	struct db_rows *r;
	int64_t before, after;

	(void)state;
	r = db_query(db, sql, "l", (int64_t)1); /* prepared on the old link */
	assert_non_null(r);
	db_rows_free(r);
	before = connection_id(db);
	kill_from_outside(db);

	r = db_query(db, sql, "l", (int64_t)41);
	if (!r)
		fail_msg("first call after KILL failed: %s", db_errmsg(db));
	assert_int_equal(db_cell_i64(r, 0, 0), 42);
	db_rows_free(r);
	after = connection_id(db);
	assert_true(after != before);

	/* the same for a write, through db_exec */
	kill_from_outside(db);
	assert_int_equal(db_exec(db, "DO ?", "l", (int64_t)1), 0);
	assert_int_equal(db_last_error(db), 0);
	assert_int_equal(db_ping(db), 0);
}

/* Over TCP a write into a killed link succeeds and only the read fails;
 * the idle check must still catch it before the statement is sent. */
static void test_reconnect_after_kill_tcp(void **state)
{
	const char *port = getenv("RINGCHAT_MYSQL_PORT");
	struct config tcp;
	struct db_rows *r;
	struct db *d;

	(void)state;
	if (!port || !port[0])
		skip();
	config_for_tests(&tcp, "");
	snprintf(tcp.mysql_host, sizeof(tcp.mysql_host), "127.0.0.1");
	tcp.mysql_port = atoi(port);
	d = db_open(&tcp);
	assert_non_null(d);
	if (db_ping(d))
		fail_msg("TCP 127.0.0.1:%s: %s", port, db_errmsg(d));
	for (int i = 0; i < 2; i++) {
		kill_from_outside_via(d, &tcp);
		r = db_query(d, "SELECT ? * 2", "l", (int64_t)21);
		if (!r)
			fail_msg("first call after KILL failed: %s", db_errmsg(d));
		assert_int_equal(db_cell_i64(r, 0, 0), 42);
		db_rows_free(r);
	}
	db_close(d);
}

static void test_kill_inside_transaction(void **state)
{
	(void)state;
	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_exec(db, "DO ?", "l", (int64_t)1), 0);
	kill_from_outside(db);
	/* not silently carried on outside the transaction */
	assert_int_equal(db_exec(db, "DO ?", "l", (int64_t)2), DB_ERR_DOWN);
	assert_null(db_query(db, "SELECT ?", "l", (int64_t)3));
	assert_int_equal(db_last_error(db), DB_ERR_DOWN);
	assert_true(db_in_transaction(db));
	assert_int_equal(db_commit(db), DB_ERR_DOWN);
	assert_false(db_in_transaction(db));
	/* and the next call is on a fresh link again */
	assert_int_equal(db_exec(db, "DO ?", "l", (int64_t)4), 0);

	assert_int_equal(db_begin(db), 0);
	kill_from_outside(db);
	assert_int_equal(db_exec(db, "DO ?", "l", (int64_t)5), DB_ERR_DOWN);
	assert_int_equal(db_rollback(db), 0);
	assert_false(db_in_transaction(db));
	assert_int_equal(db_exec(db, "DO ?", "l", (int64_t)6), 0);
}

/*
 * A "server" that accepts connections into its backlog but never answers:
 * the first call gives up after the connect timeout, and calls inside the
 * back-off window fail at once instead of hanging the worker again.
 */
static void test_unanswering_server_fails_fast(void **state)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char dir[] = "/tmp/ringchat-dbtest-XXXXXX";
	struct config dead;
	struct timespec t0;
	struct db *d;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/mute.sock", dir);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 16), 0);

	config_for_tests(&dead, addr.sun_path);
	d = db_open(&dead); /* no server is no error */
	assert_non_null(d);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(db_exec(d, "DO 1", NULL), DB_ERR_DOWN);
	assert_true(elapsed_ms(&t0) < 5000); /* connect timeout 2 s */

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(db_exec(d, "DO 1", NULL), DB_ERR_DOWN);
	assert_null(db_query(d, "SELECT 1", NULL));
	assert_int_equal(db_last_error(d), DB_ERR_DOWN);
	assert_int_equal(db_begin(d), DB_ERR_DOWN);
	assert_false(db_in_transaction(d));
	assert_true(elapsed_ms(&t0) < 40); /* inside the 50 ms window */
	db_close(d);

	close(fd);
	unlink(addr.sun_path);
	rmdir(dir);
}

static void test_missing_server_is_down(void **state)
{
	struct config missing;
	struct db *d;

	(void)state;
	config_for_tests(&missing, "/nonexistent/ringchat/mysqld.sock");
	d = db_open(&missing);
	assert_non_null(d);
	assert_int_equal(db_ping(d), DB_ERR_DOWN);
	assert_int_equal(db_exec(d, "DO 1", NULL), DB_ERR_DOWN);
	assert_true(db_errmsg(d)[0] != '\0');
	db_close(d);
}

int main(void)
{
	const char *socket = getenv("RINGCHAT_MYSQL_SOCKET");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_roundtrip_types_and_nulls, table_setup,
					    table_teardown),
	    cmocka_unit_test_setup_teardown(test_utf8_and_injection_stored_verbatim, table_setup,
					    table_teardown),
	    cmocka_unit_test_setup_teardown(test_long_text, table_setup, table_teardown),
	    cmocka_unit_test_setup_teardown(test_duplicate_key, table_setup, table_teardown),
	    cmocka_unit_test_setup_teardown(test_bad_calls_are_other_errors, table_setup,
					    table_teardown),
	    cmocka_unit_test_setup_teardown(test_exec_counts, table_setup, table_teardown),
	    cmocka_unit_test_setup_teardown(test_multi_insert_1000_rows, table_setup,
					    table_teardown),
	    cmocka_unit_test_setup_teardown(test_multi_insert_with_suffix, table_setup,
					    table_teardown),
	    cmocka_unit_test_setup_teardown(test_bulk_insert, table_setup, table_teardown),
	    cmocka_unit_test_setup_teardown(test_statement_cache_eviction, table_setup,
					    table_teardown),
	    cmocka_unit_test_setup_teardown(test_transactions, table_setup, table_teardown),
	    cmocka_unit_test(test_reconnect_after_kill),
	    cmocka_unit_test(test_reconnect_after_kill_tcp),
	    cmocka_unit_test(test_kill_inside_transaction),
	    cmocka_unit_test(test_unanswering_server_fails_fast),
	    cmocka_unit_test(test_missing_server_is_down),
	};
	int rc;

	if (!socket || !socket[0]) {
		printf("RINGCHAT_MYSQL_SOCKET not set (scripts/test.sh sets it): skipped\n");
		return SKIP;
	}
	config_for_tests(&cfg, socket);
	if (db_global_init() || db_thread_init())
		return 1;
	db = db_open(&cfg);
	if (!db)
		return 1;
	if (db_ping(db)) {
		printf("MariaDB at %s does not answer (%s): skipped\n", socket, db_errmsg(db));
		db_close(db);
		return SKIP;
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	db_close(db);
	db_thread_end();
	db_global_end();
	return rc;
}
