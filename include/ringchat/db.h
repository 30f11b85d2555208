/*
 * db.h - MariaDB access for worker threads, prepared statements only.
 *
 * Each worker thread owns one struct db: a connection plus its cache of
 * prepared statements. A struct db is never shared, so there are no locks
 * on the hot path. SQL text is always a constant with '?' placeholders;
 * values travel as bound parameters, never inside the SQL.
 *
 * Statement cache. Statements are keyed by the address of the SQL text,
 * so pass string literals (or other storage that outlives the struct db
 * and never changes): the same text at two addresses is two entries. A
 * statement is prepared on first use and kept until the connection is
 * lost or it is the least recently used of DB_STMT_CACHE_MAX entries.
 *
 * Connection loss. db_open does not connect; the first call does, and a
 * lost connection is dropped together with its statements and re-made by
 * the next call. After a failure that is not the loss of a working
 * connection (connect refused or timed out, a new connection that breaks
 * before any call on it succeeded), calls fail at once with DB_ERR_DOWN
 * for a back-off window (50 ms doubling to 5 s), so a dead or hung server
 * cannot stall every call for a timeout; a success resets it. Outside a
 * transaction a statement is re-run
 * once on a fresh connection when it certainly did not execute: the link
 * was found dead before sending it (a connection the server closed while
 * idle, e.g. after KILL or a restart, is detected before use). When the
 * link breaks after the statement was sent, its effect is unknown and the
 * call returns DB_ERR_DOWN without retrying, so a write never runs twice.
 * Connect timeout 2 s, read/write timeouts 10 s.
 *
 * Session: utf8mb4, autocommit on, and the connection is opened with
 * CLIENT_FOUND_ROWS: the affected-row count of an UPDATE is the number of
 * rows its WHERE matched, even those whose values did not change (so 0
 * means "no such row"). INSERT ... ON DUPLICATE KEY UPDATE counts 1 per
 * inserted row and 2 per updated one.
 *
 * Threads: call db_global_init() once before starting workers (db_open
 * also does it, once), db_thread_init() at the start of every thread that
 * uses a struct db and db_thread_end() before it exits.
 */
#ifndef RINGCHAT_DB_H
#define RINGCHAT_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct db;
struct db_rows;

/*
 * Negative results of the db_* calls. They lie below -DB_ERR_BASE, outside
 * the errno range (MAX_ERRNO 4095), so one int can carry either a storage
 * outcome or a -errno (-ENOMEM from the caller's own allocation) without
 * the two being confused.
 */
#define DB_ERR_BASE 10000
enum db_error {
	DB_ERR_DUP = -(DB_ERR_BASE + 1),   /* duplicate key (ER_DUP_ENTRY) */
	DB_ERR_DOWN = -(DB_ERR_BASE + 2),  /* server unreachable or connection lost */
	DB_ERR_OTHER = -(DB_ERR_BASE + 3), /* anything else: bad SQL, bad params, no memory */
};

#define DB_STMT_CACHE_MAX 128		/* prepared statements per connection */
#define DB_FMT_MAX_PARAMS 64		/* params of one db_exec/db_query */
#define DB_MULTI_MAX_PARAMS 65535	/* params of one db_exec_multi (protocol limit) */
#define DB_RESULT_MAX_BYTES (64u << 20) /* cell bytes of one db_query result */

/* Initialises the client library for the process. Idempotent and
 * thread-safe. Returns 0 or DB_ERR_OTHER. */
int db_global_init(void);
/* Releases the library at process exit, after every db_close. */
void db_global_end(void);
/* Per-thread set-up/tear-down of the client library; see the top comment.
 * db_thread_init returns 0 or DB_ERR_OTHER. */
int db_thread_init(void);
void db_thread_end(void);

/*
 * Creates a handle for the server named in c (mysql_socket when not empty,
 * else mysql_host:mysql_port; mysql_user, mysql_password, mysql_db). The
 * strings are copied; c may go away. Does not connect, so a server that is
 * down is no error. Returns NULL only when out of memory.
 */
struct db *db_open(const struct config *c);
/* Closes the connection and frees every statement. NULL is a no-op. Any
 * open transaction is discarded by the server. */
void db_close(struct db *db);

/*
 * Makes sure the connection is up (connecting if needed, subject to the
 * back-off window). Returns 0 or DB_ERR_DOWN. For readiness checks and
 * tests; other calls connect by themselves.
 */
int db_ping(struct db *db);

/*
 * Parameter formats: one character per '?' of the SQL, in order, each
 * consuming variadic arguments of exactly these types (cast literals:
 * (int64_t)1, the compiler cannot check this):
 *   'l' int64_t     'u' uint64_t     'i' int
 *   's' const char * - NUL-terminated text; NULL binds SQL NULL
 *   'b' const void *, size_t - bytes; a NULL pointer binds SQL NULL
 * fmt may be "" or NULL for no parameters; at most DB_FMT_MAX_PARAMS. The
 * argument memory is only read during the call.
 */

/*
 * Runs one statement. Returns the affected-row count (>= 0; see the top
 * comment for UPDATE) or a negative enum db_error. A statement producing
 * rows (SELECT) returns how many, and the rows are discarded: handy for
 * existence checks.
 */
int64_t db_exec(struct db *db, const char *sql, const char *fmt, ...);

/* AUTO_INCREMENT id made by the last successful db_exec/db_exec_multi
 * (the first row's id for a multi-row INSERT); 0 if none. */
uint64_t db_insert_id(const struct db *db);

/*
 * Runs a statement and reads its whole result into memory. Returns the
 * rows (caller frees with db_rows_free), or NULL on error: see
 * db_last_error(). An empty result is a valid struct with 0 rows. Fails
 * with DB_ERR_OTHER if the cells add up to more than DB_RESULT_MAX_BYTES.
 */
struct db_rows *db_query(struct db *db, const char *sql, const char *fmt, ...);

size_t db_rows_count(const struct db_rows *rows);
unsigned db_rows_cols(const struct db_rows *rows);
/*
 * Cell accessors; r < db_rows_count, c < db_rows_cols (checked by assert).
 * Every cell is the column's text form (integers in decimal, DATETIME as
 * "YYYY-MM-DD hh:mm:ss", BLOB bytes as stored), NUL-terminated; it may
 * contain NUL bytes itself, so use db_cell_len for binary data. A SQL
 * NULL cell reads as "" with length 0 and db_cell_is_null true. The
 * strings live until db_rows_free.
 */
const char *db_cell_str(const struct db_rows *rows, size_t r, unsigned c);
size_t db_cell_len(const struct db_rows *rows, size_t r, unsigned c);
bool db_cell_is_null(const struct db_rows *rows, size_t r, unsigned c);
/* The cell parsed as a decimal integer; 0 for NULL or non-numeric text. */
int64_t db_cell_i64(const struct db_rows *rows, size_t r, unsigned c);
/* NULL is a no-op. */
void db_rows_free(struct db_rows *rows);

/*
 * Transactions. db_begin starts one (DB_ERR_OTHER if one is open already).
 * Inside it no statement is retried: if the connection is lost, every
 * call until db_commit/db_rollback fails with DB_ERR_DOWN, so the rest of
 * the work never lands outside the transaction.
 *
 * db_commit returns 0, or a negative error after which the transaction is
 * over and its changes are NOT known to be stored (DB_ERR_DOWN when the
 * link broke: the commit may or may not have happened).
 *
 * db_rollback ends the transaction and returns 0; if the ROLLBACK cannot
 * be sent, the connection is dropped, which makes the server discard the
 * transaction too. It is also 0 (a no-op) with no transaction open, so it
 * fits any error path.
 */
int db_begin(struct db *db);
int db_commit(struct db *db);
/*
 * Marks db as a connection that runs every statement inside
 * db_begin/db_commit (a writer's own connection). Its server session then
 * runs with autocommit = 0, re-applied on every reconnect, so a
 * transaction starts with its first statement and db_begin sends nothing:
 * one round trip less per transaction. A statement run outside db_begin
 * on such a connection is NOT committed until the next db_commit. Call it
 * right after db_open.
 */
void db_set_txn_only(struct db *db);
int db_rollback(struct db *db);
bool db_in_transaction(const struct db *db);

/*
 * Multi-row statements for batch writers, e.g.
 *
 *   static const struct db_multi ins = {
 *           .prefix = "INSERT INTO t (a, b) VALUES ",
 *           .row = "(?, ?)",
 *           .row_fmt = "ls",
 *   };
 *   struct db_param p[2 * n];   // row i: p[2i] = DB_L(a), p[2i+1] = DB_S(b)
 *   db_exec_multi(db, &ins, n, p);
 *
 * runs "INSERT INTO t (a, b) VALUES (?, ?),(?, ?),..." with n rows as ONE
 * statement (atomic even in autocommit mode). Only placeholders are
 * repeated, never values. suffix (may be NULL) is appended after the rows,
 * e.g. " ON DUPLICATE KEY UPDATE a = a"; it must hold no placeholders.
 *
 * The struct db_multi must outlive the struct db (use a static const): its
 * address and nrows key the statement cache, so each distinct row count
 * is prepared once and then reused like any cached statement. A writer
 * whose batch sizes vary widely can round them to a few sizes to keep the
 * cache warm.
 *
 * params holds nrows * strlen(row_fmt) values, row after row; each one's
 * type must match row_fmt ('l','u','i','s','b'), and at most
 * DB_MULTI_MAX_PARAMS in all. Returns as db_exec.
 */
struct db_multi {
	const char *prefix;
	const char *row;
	const char *suffix;
	const char *row_fmt;
};

struct db_param {
	char type; /* 'l', 'u', 'i', 's' or 'b', as in the formats above */
	union {
		int64_t l;
		uint64_t u;
		int i;
		const char *s;
		struct {
			const void *p;
			size_t n;
		} b;
	};
};

#define DB_L(v) ((struct db_param){.type = 'l', .l = (v)})
#define DB_U(v) ((struct db_param){.type = 'u', .u = (v)})
#define DB_I(v) ((struct db_param){.type = 'i', .i = (v)})
#define DB_S(v) ((struct db_param){.type = 's', .s = (v)})
#define DB_B(ptr, len) ((struct db_param){.type = 'b', .b = {.p = (ptr), .n = (len)}})

int64_t db_exec_multi(struct db *db, const struct db_multi *m, size_t nrows,
		      const struct db_param *params);

/*
 * Runs the one-row statement sql (its placeholders typed by row_fmt, as
 * in db_multi) for nrows parameter sets in one round trip, by MariaDB's
 * array binding (COM_STMT_BULK_EXECUTE): prepared once, one cache entry
 * whatever nrows, so sql must outlive db like a db_multi (a static
 * string). MariaDB runs the rows one by one inside but parses and plans
 * once: measured here at 37-row batches, a quarter less server CPU per
 * row than power-of-two multi-row INSERTs. Works for INSERT, UPDATE and
 * DELETE. params as db_exec_multi, at most DB_MULTI_MAX_PARAMS; returns
 * the rows affected in all, or a negative enum db_error. Rows before a
 * failing one may stay written: use it inside a transaction. Needs
 * db_bulk_capable(); without it, fails with DB_ERR_OTHER.
 */
int64_t db_exec_bulk(struct db *db, const char *sql, const char *row_fmt, size_t nrows,
		     const struct db_param *params);

/* True when the server of the current link runs array-bound statements
 * (MariaDB 10.2 and later); false while DOWN or with a MySQL server. */
bool db_bulk_capable(const struct db *db);

/* 0 after a successful call, else the enum db_error of the last failed one. */
int db_last_error(const struct db *db);
/* Human-readable reason of the last failure, for logs; "" after success.
 * Valid until the next call on db. */
const char *db_errmsg(const struct db *db);

#endif
