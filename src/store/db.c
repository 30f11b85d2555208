/*
 * db.c - MariaDB access: one connection and its statement cache per worker.
 *
 * The link goes through two states:
 *
 *             connect ok                        connect fails
 *   DOWN -------------------------> UP          DOWN ----------> DOWN
 *    ^                               |          (back off)
 *    +------ link lost (drop) -------+
 *      proven link: reconnect at once; fresh link: back off
 *
 * Backing off starts or doubles a window (50 ms .. 5 s) during which calls
 * fail at once with DB_ERR_DOWN. A link is "proven" once a call on it has
 * succeeded; that also resets the back-off. Losing a proven link (KILL, a
 * restart) allows one immediate reconnect, but a server that accepts
 * connections and then fails or hangs on them cannot make every call wait
 * for a timeout, because failures on unproven links back off too.
 *
 * Every call first makes the link UP (db_ensure): a DOWN handle inside its
 * back-off window fails at once with DB_ERR_DOWN; an UP handle whose socket
 * is readable or hung up is dropped first, because between calls nothing is
 * outstanding on it, so the server must have closed it (KILL, restart,
 * wait_timeout). That check costs one poll(2) and catches the common case
 * of a dead idle link before a statement is sent into it.
 *
 * Dropping the link closes the MYSQL handle first: the client library then
 * detaches every prepared statement of it, so closing them afterwards does
 * no I/O on a dead socket. All statements are prepared again on the new
 * link when next used.
 *
 * A statement is re-run once on a fresh link (outside a transaction) only
 * when it certainly did not execute: its prepare failed, or the client
 * could not send it (CR_SERVER_GONE_ERROR is set only when writing the
 * command failed). CR_SERVER_LOST means the link broke while waiting for
 * the answer, so the statement may have run: that is reported as
 * DB_ERR_DOWN, never retried.
 */
#include "ringchat/db.h"
#include "ringchat/config.h"
#include "ringchat/log.h"

#include <assert.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

/* MariaDB's client names its boolean my_bool; MySQL 8's uses bool. */
#ifdef MARIADB_PACKAGE_VERSION
typedef my_bool db_bool;
#else
typedef bool db_bool;
#endif

#define DB_CONNECT_TIMEOUT_S 2
#define DB_RW_TIMEOUT_S 10
#define DB_BACKOFF_MIN_MS 50
#define DB_BACKOFF_MAX_MS 5000
#define DB_INDEX_SLOTS (2 * DB_STMT_CACHE_MAX) /* power of two; load <= 1/2 */
#define DB_INDEX_SHIFT (64 - 8)		       /* log2(DB_INDEX_SLOTS) = 8 */
/* Result buffer floor: the text form of any integer, float or temporal
 * value fits (DECIMAL arrives as text and is covered by max_length). */
#define DB_CELL_BUF_MIN 64
/* Result scratch larger than this is released after the query instead of
 * being kept for the next one. */
#define DB_SCRATCH_KEEP_BYTES (1u << 20)
#define DB_CELL_NULL UINT32_MAX

_Static_assert(DB_INDEX_SLOTS == 1 << (64 - DB_INDEX_SHIFT), "index size and shift disagree");
_Static_assert(DB_STMT_CACHE_MAX < INT16_MAX, "index entries are int16_t");
_Static_assert(DB_RESULT_MAX_BYTES < DB_CELL_NULL, "cell offsets are uint32_t");

struct db_stmt {
	const void *key; /* the SQL text, or the struct db_multi */
	uint32_t nrows;	 /* 0 for plain SQL */
	MYSQL_STMT *stmt;
	uint64_t last_use;
};

struct db {
	MYSQL *mysql;	  /* NULL while DOWN */
	bool link_proven; /* a call on this link has succeeded */
	int64_t retry_at_ms;
	unsigned backoff_ms;
	unsigned failures; /* since the last success, for logs */
	bool in_txn;
	bool txn_broken; /* the link was lost inside the open transaction */
	bool txn_only;	 /* autocommit = 0: BEGIN is implied (db_set_txn_only) */

	unsigned nstmts;
	uint64_t use_clock;
	struct db_stmt stmts[DB_STMT_CACHE_MAX];
	int16_t index[DB_INDEX_SLOTS]; /* position in stmts[], -1 = empty */

	MYSQL_BIND *binds; /* parameter binds, grown on demand */
	size_t binds_cap;

	/* db_exec_bulk: the rows of the call in progress, and the column
	 * arrays it binds (values or pointers, lengths, NULL indicators) */
	uint32_t bulk_rows;
	unsigned char *bulk_buf;
	size_t bulk_cap;

	/* result scratch: one bind, length, null flag and buffer per column */
	MYSQL_BIND *rbinds;
	unsigned long *rlens;
	db_bool *rnulls;
	unsigned rcols_cap;
	char *rbuf;
	size_t rbuf_cap;

	uint64_t insert_id;
	int last_error;
	char errmsg[256];

	char host[128];
	char socket[256];
	char user[64];
	char password[128];
	char name[64];
	unsigned port;
	int tls;      /* enum mysql_tls */
	char ca[256]; /* CA file for MYSQL_TLS_VERIFY; "" = the library's default */
};

struct db_cell {
	uint32_t off; /* into the text area; DB_CELL_NULL for SQL NULL */
	uint32_t len;
};

/* One allocation: this header, nrows * ncols cells, then the cell text. */
struct db_rows {
	size_t nrows;
	unsigned ncols;
	size_t text_used;
	size_t text_cap;
	struct db_cell cells[];
};

static const char SQL_BEGIN[] = "START TRANSACTION";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";

static pthread_once_t db_once = PTHREAD_ONCE_INIT;
static int db_once_rc;

static void db_library_init(void)
{
	db_once_rc = mysql_library_init(0, NULL, NULL) ? DB_ERR_OTHER : 0;
}

int db_global_init(void)
{
	pthread_once(&db_once, db_library_init);
	return db_once_rc;
}

void db_global_end(void)
{
	mysql_library_end();
}

int db_thread_init(void)
{
	if (db_global_init())
		return DB_ERR_OTHER;
	return mysql_thread_init() ? DB_ERR_OTHER : 0;
}

void db_thread_end(void)
{
	mysql_thread_end();
}

static int64_t db_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((format(printf, 3, 4))) static int db_fail(struct db *db, int err, const char *fmt,
							 ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, ap);
	va_end(ap);
	db->last_error = err;
	return err;
}

static void db_clear_error(struct db *db)
{
	db->last_error = 0;
	db->errmsg[0] = '\0';
}

/* ---- statement cache ---------------------------------------------------- */

static unsigned db_slot(const void *key, uint32_t nrows)
{
	uint64_t x = (uint64_t)(uintptr_t)key ^ ((uint64_t)nrows << 32);

	x *= 0x9e3779b97f4a7c15ull; /* Fibonacci hashing: the top bits mix well */
	return (unsigned)(x >> DB_INDEX_SHIFT);
}

static void db_index_put(struct db *db, unsigned pos)
{
	unsigned i = db_slot(db->stmts[pos].key, db->stmts[pos].nrows);

	while (db->index[i] >= 0)
		i = (i + 1) & (DB_INDEX_SLOTS - 1);
	db->index[i] = (int16_t)pos;
}

static void db_index_rebuild(struct db *db)
{
	memset(db->index, 0xff, sizeof(db->index));
	for (unsigned pos = 0; pos < db->nstmts; pos++)
		db_index_put(db, pos);
}

static struct db_stmt *db_cache_find(struct db *db, const void *key, uint32_t nrows)
{
	for (unsigned i = db_slot(key, nrows);; i = (i + 1) & (DB_INDEX_SLOTS - 1)) {
		int pos = db->index[i];

		if (pos < 0)
			return NULL;
		if (db->stmts[pos].key == key && db->stmts[pos].nrows == nrows)
			return &db->stmts[pos];
	}
}

/* Removes one entry; the last entry moves into its place. */
static void db_cache_remove(struct db *db, struct db_stmt *st)
{
	mysql_stmt_close(st->stmt);
	*st = db->stmts[--db->nstmts];
	db_index_rebuild(db);
}

static void db_cache_evict_lru(struct db *db)
{
	struct db_stmt *lru = &db->stmts[0];

	for (unsigned pos = 1; pos < db->nstmts; pos++)
		if (db->stmts[pos].last_use < lru->last_use)
			lru = &db->stmts[pos];
	db_cache_remove(db, lru);
}

/* ---- link --------------------------------------------------------------- */

/* Starts or doubles the back-off window after a failure (db->errmsg). */
static void db_back_off(struct db *db)
{
	db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : DB_BACKOFF_MIN_MS;
	if (db->backoff_ms > DB_BACKOFF_MAX_MS)
		db->backoff_ms = DB_BACKOFF_MAX_MS;
	/* the window starts after the attempt, which may have taken a
	 * whole timeout */
	db->retry_at_ms = db_now_ms() + db->backoff_ms;
	/* one warning per outage; the attempts that follow are debug */
	if (db->failures++ == 0)
		log_warn("db: %s; retrying with back-off", db->errmsg);
	else
		log_debug("db: %s (failure %u, next try in %u ms)", db->errmsg, db->failures,
			  db->backoff_ms);
}

static void db_succeeded(struct db *db)
{
	if (db->failures)
		log_info("db: working again after %u failures", db->failures);
	db->failures = 0;
	db->backoff_ms = 0;
	db->link_proven = true;
}

/* Closes the link and forgets its statements; see the top comment. */
static void db_unlink(struct db *db)
{
	mysql_close(db->mysql);
	db->mysql = NULL;
	for (unsigned pos = 0; pos < db->nstmts; pos++)
		mysql_stmt_close(db->stmts[pos].stmt);
	db->nstmts = 0;
	memset(db->index, 0xff, sizeof(db->index));
}

/* Gives up a link that failed. */
static void db_drop(struct db *db)
{
	if (!db->mysql)
		return;
	db_unlink(db);
	if (db->in_txn)
		db->txn_broken = true;
	if (db->link_proven)
		db->retry_at_ms = 0;
	else
		db_back_off(db);
}

static bool db_errno_is_loss(unsigned e)
{
	switch (e) {
	case CR_CONNECTION_ERROR:
	case CR_CONN_HOST_ERROR:
	case CR_SERVER_GONE_ERROR:
	case CR_SERVER_LOST:
	/* out of sync means our view of the link is wrong: only a new one is safe */
	case CR_COMMANDS_OUT_OF_SYNC:
#ifdef CR_SERVER_LOST_EXTENDED
	case CR_SERVER_LOST_EXTENDED:
#endif
#ifdef CR_ERR_NET_READ
	case CR_ERR_NET_READ:
	case CR_ERR_NET_WRITE:
#endif
	case ER_SERVER_SHUTDOWN:
	case ER_CONNECTION_KILLED:
		return true;
	default:
		return false;
	}
}

/* True when the idle link has data or a hang-up pending: the server closed it. */
static bool db_link_dead(struct db *db)
{
#ifdef MARIADB_PACKAGE_VERSION
	struct pollfd p = {.fd = (int)mysql_get_socket(db->mysql), .events = POLLIN | POLLRDHUP};

	if (p.fd < 0)
		return true;
	return poll(&p, 1, 0) > 0;
#else
	(void)db;
	return false;
#endif
}

/*
 * TLS as mysql_tls asks. on and verify make TLS required: a server that
 * does not offer it is refused (the connect fails, the link stays DOWN
 * and backs off like a server that is away), never used in clear text;
 * db_connect checks the cipher after connecting too. The password never
 * travels in clear text either way (the auth plugins send a scramble).
 * verify also checks the certificate (mysql_ca, and the host name).
 */
static void db_set_tls(const struct db *db, MYSQL *m)
{
	db_bool on = 1, verify = db->tls == MYSQL_TLS_VERIFY;

	if (db->tls == MYSQL_TLS_OFF)
		return;
#ifdef MARIADB_PACKAGE_VERSION
	mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &on);
	mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
#else
	{
		unsigned mode = verify ? SSL_MODE_VERIFY_IDENTITY : SSL_MODE_REQUIRED;

		(void)on;
		mysql_options(m, MYSQL_OPT_SSL_MODE, &mode);
	}
#endif
	if (verify && db->ca[0])
		mysql_options(m, MYSQL_OPT_SSL_CA, db->ca);
}

static int db_connect(struct db *db)
{
	int64_t now = db_now_ms();
	unsigned conn_timeout = DB_CONNECT_TIMEOUT_S, rw_timeout = DB_RW_TIMEOUT_S;
	unsigned proto = db->socket[0] ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
	db_bool off = 0;
	MYSQL *m;

	if (now < db->retry_at_ms)
		return db_fail(db, DB_ERR_DOWN,
			       "server down; next connect attempt in %" PRId64 " ms",
			       db->retry_at_ms - now);
	m = mysql_init(NULL);
	if (!m)
		return db_fail(db, DB_ERR_OTHER, "mysql_init: out of memory");
	mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &conn_timeout);
	mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rw_timeout);
	mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &rw_timeout);
	/* the library's own reconnect would silently lose statements and
	 * transactions; db_drop/db_connect do it visibly instead */
	mysql_options(m, MYSQL_OPT_RECONNECT, &off);
	mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
	mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	/* a server configured with autocommit=0 would otherwise hold every
	 * statement in an implicit transaction */
	mysql_options(m, MYSQL_INIT_COMMAND,
		      db->txn_only ? "SET autocommit = 0" : "SET autocommit = 1");
	db_set_tls(db, m);

	if (!mysql_real_connect(m, db->socket[0] ? "localhost" : db->host, db->user, db->password,
				db->name, db->socket[0] ? 0 : db->port,
				db->socket[0] ? db->socket : NULL, CLIENT_FOUND_ROWS)) {
		db_fail(db, DB_ERR_DOWN, "connect to %s: %u %s",
			db->socket[0] ? db->socket : db->host, mysql_errno(m), mysql_error(m));
		mysql_close(m);
		db_back_off(db);
		return DB_ERR_DOWN;
	}
	/* Some client libraries let an enforced TLS pass against a server
	 * that offers none (Connector/C 3.3 does): check the outcome. */
	if (db->tls != MYSQL_TLS_OFF && !mysql_get_ssl_cipher(m)) {
		db_fail(db, DB_ERR_DOWN,
			"connect to %s: mysql_tls is %s but the server offers no TLS (SSL); "
			"refused", db->socket[0] ? db->socket : db->host,
			db->tls == MYSQL_TLS_VERIFY ? "verify" : "on");
		mysql_close(m);
		db_back_off(db);
		return DB_ERR_DOWN;
	}
	db->mysql = m;
	db->link_proven = false;
	return 0;
}

static int db_ensure(struct db *db)
{
	if (db->mysql && db_link_dead(db)) {
		log_warn("db: server closed the idle connection; reconnecting");
		db_drop(db);
	}
	if (db->txn_broken)
		return db_fail(db, DB_ERR_DOWN, "connection lost inside the transaction");
	if (!db->mysql)
		return db_connect(db);
	return 0;
}

/* ---- open / close ------------------------------------------------------- */

struct db *db_open(const struct config *c)
{
	struct db *db;

	if (db_global_init())
		return NULL;
	db = calloc(1, sizeof(*db));
	if (!db)
		return NULL;
	memset(db->index, 0xff, sizeof(db->index));
	snprintf(db->host, sizeof(db->host), "%s", c->mysql_host);
	snprintf(db->socket, sizeof(db->socket), "%s", c->mysql_socket);
	snprintf(db->user, sizeof(db->user), "%s", c->mysql_user);
	snprintf(db->password, sizeof(db->password), "%s", c->mysql_password);
	snprintf(db->name, sizeof(db->name), "%s", c->mysql_db);
	db->port = (unsigned)c->mysql_port;
	db->tls = c->mysql_tls;
	snprintf(db->ca, sizeof(db->ca), "%s", c->mysql_ca);
	return db;
}

void db_close(struct db *db)
{
	if (!db)
		return;
	if (db->mysql)
		db_unlink(db);
	free(db->binds);
	free(db->bulk_buf);
	free(db->rbinds);
	free(db->rlens);
	free(db->rnulls);
	free(db->rbuf);
	explicit_bzero(db->password, sizeof(db->password));
	free(db);
}

int db_ping(struct db *db)
{
	db_clear_error(db);
	/* a second round only when a proven link turned out dead */
	for (int attempt = 0; attempt < 2; attempt++) {
		int rc = db_ensure(db);
		unsigned e;

		if (rc)
			return rc;
		if (mysql_ping(db->mysql) == 0) {
			db_succeeded(db);
			return 0;
		}
		e = mysql_errno(db->mysql);
		if (!db_errno_is_loss(e))
			return db_fail(db, DB_ERR_OTHER, "ping: %u %s", e, mysql_error(db->mysql));
		db_fail(db, DB_ERR_DOWN, "ping: %u %s", e, mysql_error(db->mysql));
		db_drop(db);
	}
	return DB_ERR_DOWN;
}

/* ---- running statements ------------------------------------------------- */

/* The cache identity (nrows) of a statement executed with array binding
 * (its key is its SQL text, as for db_exec): never a db_exec_multi count. */
#define DB_BULK_NROWS UINT32_MAX

/* Builds "prefix row,row,...row suffix" for a multi-row statement. */
static char *db_multi_sql(const struct db_multi *m, uint32_t nrows, unsigned long *len)
{
	size_t plen = strlen(m->prefix), rlen = strlen(m->row);
	size_t slen = m->suffix ? strlen(m->suffix) : 0;
	size_t total = plen + (size_t)nrows * (rlen + 1) + slen;
	char *sql = malloc(total + 1), *p;

	if (!sql)
		return NULL;
	memcpy(sql, m->prefix, plen);
	p = sql + plen;
	for (uint32_t i = 0; i < nrows; i++) {
		if (i)
			*p++ = ',';
		memcpy(p, m->row, rlen);
		p += rlen;
	}
	if (slen)
		memcpy(p, m->suffix, slen);
	p += slen;
	*p = '\0';
	*len = (unsigned long)(p - sql);
	return sql;
}

/*
 * Returns the cached statement for key, preparing it if needed, or NULL
 * with the error set; *retry says whether re-running on a new link is safe.
 */
static struct db_stmt *db_stmt_get(struct db *db, const void *key, uint32_t nrows,
				   const struct db_multi *m, int *err, bool *retry)
{
	struct db_stmt *st = db_cache_find(db, key, nrows);
	db_bool update_max_length = 1;
	unsigned long len;
	char *built = NULL;
	const char *sql;
	MYSQL_STMT *s;

	if (st) {
		st->last_use = ++db->use_clock;
		return st;
	}
	if (m) {
		built = db_multi_sql(m, nrows, &len);
		if (!built) {
			*err = db_fail(db, DB_ERR_OTHER,
				       "out of memory building a %" PRIu32 "-row statement", nrows);
			return NULL;
		}
		sql = built;
	} else {
		sql = key;
		len = (unsigned long)strlen(sql);
	}
	s = mysql_stmt_init(db->mysql);
	if (!s) {
		*err = db_fail(db, DB_ERR_OTHER, "mysql_stmt_init: out of memory");
		goto out_free_sql;
	}
	/* lets db_query size its buffers from the longest value per column */
	mysql_stmt_attr_set(s, STMT_ATTR_UPDATE_MAX_LENGTH, &update_max_length);
	if (mysql_stmt_prepare(s, sql, len)) {
		unsigned e = mysql_stmt_errno(s);

		*err = db_fail(db, DB_ERR_OTHER, "prepare: %u %s [%.80s]", e, mysql_stmt_error(s),
			       sql);
		mysql_stmt_close(s);
		if (db_errno_is_loss(e)) {
			log_warn("db: connection lost: %s", db->errmsg);
			db_drop(db);
			*err = db->last_error = DB_ERR_DOWN;
			*retry = true; /* a prepare changes nothing */
		}
		goto out_free_sql;
	}
	free(built);
	if (db->nstmts == DB_STMT_CACHE_MAX)
		db_cache_evict_lru(db);
	st = &db->stmts[db->nstmts];
	*st = (struct db_stmt){.key = key, .nrows = nrows, .stmt = s, .last_use = ++db->use_clock};
	db_index_put(db, db->nstmts++);
	return st;

out_free_sql:
	free(built);
	return NULL;
}

/* Classifies a failure of a prepared statement; may drop the link. */
static int db_stmt_fail(struct db *db, struct db_stmt *st, const char *what, bool *retry)
{
	unsigned e = mysql_stmt_errno(st->stmt);

	db_fail(db, DB_ERR_OTHER, "%s: %u %s", what, e, mysql_stmt_error(st->stmt));
	if (db_errno_is_loss(e)) {
		log_warn("db: connection lost: %s", db->errmsg);
		db_drop(db); /* st is gone now */
		/* only a command that could not be written surely did not run */
		*retry = e == CR_SERVER_GONE_ERROR;
		return db->last_error = DB_ERR_DOWN;
	}
	if (e == ER_NEED_REPREPARE || e == ER_UNKNOWN_STMT_HANDLER) {
		/* the server dropped or invalidated it; it did not run */
		db_cache_remove(db, st);
		*retry = true;
		return DB_ERR_OTHER;
	}
	if (e == ER_DUP_ENTRY || e == ER_DUP_ENTRY_WITH_KEY_NAME)
		return db->last_error = DB_ERR_DUP;
	return DB_ERR_OTHER;
}

static int db_bind_params(struct db *db, MYSQL_STMT *s, const struct db_param *p, size_t np)
{
	unsigned want = (unsigned)mysql_stmt_param_count(s);

	if (want != np)
		return db_fail(db, DB_ERR_OTHER, "statement has %u placeholders but %zu parameters",
			       want, np);
	if (np == 0)
		return 0;
	if (np > db->binds_cap) {
		MYSQL_BIND *nb = realloc(db->binds, np * sizeof(*nb));

		if (!nb)
			return db_fail(db, DB_ERR_OTHER, "out of memory binding %zu parameters",
				       np);
		db->binds = nb;
		db->binds_cap = np;
	}
	memset(db->binds, 0, np * sizeof(*db->binds));
	for (size_t i = 0; i < np; i++) {
		MYSQL_BIND *b = &db->binds[i];

		/* the client only reads parameter buffers; the casts drop const */
		switch (p[i].type) {
		case 'l':
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			b->buffer = (void *)&p[i].l;
			break;
		case 'u':
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			b->buffer = (void *)&p[i].u;
			b->is_unsigned = 1;
			break;
		case 'i':
			b->buffer_type = MYSQL_TYPE_LONG;
			b->buffer = (void *)&p[i].i;
			break;
		case 's':
			if (!p[i].s) {
				b->buffer_type = MYSQL_TYPE_NULL;
				break;
			}
			b->buffer_type = MYSQL_TYPE_STRING;
			b->buffer = (void *)p[i].s;
			b->buffer_length = strlen(p[i].s);
			break;
		case 'b':
			if (!p[i].b.p) {
				b->buffer_type = MYSQL_TYPE_NULL;
				break;
			}
			b->buffer_type = MYSQL_TYPE_BLOB;
			b->buffer = (void *)p[i].b.p;
			b->buffer_length = p[i].b.n;
			break;
		default:
			return db_fail(db, DB_ERR_OTHER, "parameter %zu has unknown type '%c'",
				       i + 1, p[i].type);
		}
	}
	if (mysql_stmt_bind_param(s, db->binds))
		return db_fail(db, DB_ERR_OTHER, "bind: %s", mysql_stmt_error(s));
	return 0;
}

/*
 * Binds db->bulk_rows rows of np / bulk_rows parameters each (p row after
 * row) column-wise: per column one array of values (numbers) or of
 * pointers and lengths (strings, blobs), plus NULL indicators.
 */
static int db_bind_bulk(struct db *db, MYSQL_STMT *s, const struct db_param *p, size_t np)
{
#ifdef MARIADB_CLIENT_STMT_BULK_OPERATIONS
	size_t rows = db->bulk_rows, width = rows ? np / rows : 0, need;
	unsigned int array_size = (unsigned int)rows;
	unsigned char *vals, *ind;
	unsigned long *lens;

	if (!db_bulk_capable(db))
		return db_fail(db, DB_ERR_OTHER, "the server takes no bulk operations");
	if (width == 0 || (unsigned)mysql_stmt_param_count(s) != width)
		return db_fail(db, DB_ERR_OTHER, "statement has %u placeholders but rows of %zu",
			       (unsigned)mysql_stmt_param_count(s), width);
	/* 8-byte values or pointers, then lengths, then indicators */
	need = np * (sizeof(uint64_t) + sizeof(unsigned long) + 1);
	if (need > db->bulk_cap) {
		unsigned char *nb = realloc(db->bulk_buf, need);

		if (!nb)
			return db_fail(db, DB_ERR_OTHER, "out of memory binding %zu rows", rows);
		db->bulk_buf = nb;
		db->bulk_cap = need;
	}
	if (width > db->binds_cap) {
		MYSQL_BIND *nb = realloc(db->binds, width * sizeof(*nb));

		if (!nb)
			return db_fail(db, DB_ERR_OTHER, "out of memory binding %zu columns", width);
		db->binds = nb;
		db->binds_cap = width;
	}
	vals = db->bulk_buf;
	lens = (unsigned long *)(void *)(vals + np * sizeof(uint64_t));
	ind = (unsigned char *)(lens + np);
	memset(db->binds, 0, width * sizeof(*db->binds));
	for (size_t c = 0; c < width; c++) {
		MYSQL_BIND *b = &db->binds[c];
		unsigned char *col = vals + c * rows * sizeof(uint64_t);
		unsigned long *clen = lens + c * rows;
		char *cind = (char *)ind + c * rows;
		bool any_null = false;

		for (size_t r = 0; r < rows; r++) {
			const struct db_param *x = &p[r * width + c];
			const void *ptr = NULL;

			cind[r] = STMT_INDICATOR_NONE;
			switch (x->type) {
			case 'l':
				((int64_t *)(void *)col)[r] = x->l;
				break;
			case 'u':
				((uint64_t *)(void *)col)[r] = x->u;
				break;
			case 'i':
				((int *)(void *)col)[r] = x->i;
				break;
			case 's':
				ptr = x->s;
				clen[r] = x->s ? (unsigned long)strlen(x->s) : 0;
				break;
			case 'b':
				ptr = x->b.p;
				clen[r] = x->b.p ? (unsigned long)x->b.n : 0;
				break;
			default:
				return db_fail(db, DB_ERR_OTHER, "parameter %zu has unknown type '%c'",
					       r * width + c + 1, x->type);
			}
			if (x->type == 's' || x->type == 'b') {
				((const void **)(void *)col)[r] = ptr;
				if (!ptr) {
					cind[r] = STMT_INDICATOR_NULL;
					any_null = true;
				}
			}
		}
		b->buffer = col;
		switch (p[c].type) {
		case 'l':
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			break;
		case 'u':
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			b->is_unsigned = 1;
			break;
		case 'i':
			b->buffer_type = MYSQL_TYPE_LONG;
			break;
		default:
			b->buffer_type = p[c].type == 's' ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
			b->length = clen;
			break;
		}
		if (any_null)
			b->u.indicator = cind;
	}
	if (mysql_stmt_attr_set(s, STMT_ATTR_ARRAY_SIZE, &array_size))
		return db_fail(db, DB_ERR_OTHER, "array size: %s", mysql_stmt_error(s));
	if (mysql_stmt_bind_param(s, db->binds))
		return db_fail(db, DB_ERR_OTHER, "bind: %s", mysql_stmt_error(s));
	return 0;
#else
	(void)s;
	(void)p;
	(void)np;
	return db_fail(db, DB_ERR_OTHER, "built without MariaDB bulk operations");
#endif
}

static int db_scratch_reserve(struct db *db, unsigned ncols, size_t bytes)
{
	if (ncols > db->rcols_cap) {
		MYSQL_BIND *b = realloc(db->rbinds, ncols * sizeof(*b));
		unsigned long *l;
		db_bool *n;

		if (!b)
			return -1;
		db->rbinds = b;
		l = realloc(db->rlens, ncols * sizeof(*l));
		if (!l)
			return -1;
		db->rlens = l;
		n = realloc(db->rnulls, ncols * sizeof(*n));
		if (!n)
			return -1;
		db->rnulls = n;
		db->rcols_cap = ncols;
	}
	if (bytes > db->rbuf_cap) {
		char *buf = realloc(db->rbuf, bytes);

		if (!buf)
			return -1;
		db->rbuf = buf;
		db->rbuf_cap = bytes;
	}
	return 0;
}

static void db_scratch_trim(struct db *db)
{
	if (db->rbuf_cap > DB_SCRATCH_KEEP_BYTES) {
		free(db->rbuf);
		db->rbuf = NULL;
		db->rbuf_cap = 0;
	}
}

static char *db_rows_text(const struct db_rows *rows)
{
	return (char *)&rows->cells[rows->nrows * rows->ncols];
}

/* Makes room for need more text bytes; *rowsp may move. */
static int db_rows_reserve(struct db_rows **rowsp, size_t need)
{
	struct db_rows *rows = *rowsp;
	size_t cap = rows->text_cap, head;

	if (rows->text_used + need <= cap)
		return 0;
	if (rows->text_used + need > DB_RESULT_MAX_BYTES)
		return -1;
	while (cap < rows->text_used + need)
		cap = cap ? cap * 2 : 4096;
	if (cap > DB_RESULT_MAX_BYTES)
		cap = DB_RESULT_MAX_BYTES;
	head = sizeof(*rows) + rows->nrows * rows->ncols * sizeof(struct db_cell);
	rows = realloc(rows, head + cap);
	if (!rows)
		return -1;
	rows->text_cap = cap;
	*rowsp = rows;
	return 0;
}

/* Bytes that hold the longest value of a column (without the NUL). */
static size_t db_cell_buf_len(const MYSQL_FIELD *f)
{
	return f->max_length > DB_CELL_BUF_MIN ? f->max_length : DB_CELL_BUF_MIN;
}

/* Reads the executed statement's whole result into one struct db_rows. */
static int db_fetch_all(struct db *db, struct db_stmt *st, struct db_rows **out)
{
	MYSQL_STMT *s = st->stmt;
	unsigned ncols = mysql_stmt_field_count(s);
	MYSQL_FIELD *fields;
	MYSQL_RES *meta = NULL;
	struct db_rows *rows;
	size_t nrows, scratch = 0, off;
	bool retry_unused = false;
	int rc = DB_ERR_OTHER;

	if (mysql_stmt_store_result(s))
		return db_stmt_fail(db, st, "store result", &retry_unused);
	nrows = ncols ? (size_t)mysql_stmt_num_rows(s) : 0;
	if (ncols && nrows > (DB_RESULT_MAX_BYTES / sizeof(struct db_cell)) / ncols) {
		db_fail(db, DB_ERR_OTHER, "result of %zu rows exceeds %u bytes", nrows,
			DB_RESULT_MAX_BYTES);
		goto out_free_result;
	}
	rows = malloc(sizeof(*rows) + nrows * ncols * sizeof(struct db_cell));
	if (!rows) {
		db_fail(db, DB_ERR_OTHER, "out of memory for %zu rows", nrows);
		goto out_free_result;
	}
	*rows = (struct db_rows){.nrows = nrows, .ncols = ncols};
	if (ncols == 0)
		goto out_done;

	meta = mysql_stmt_result_metadata(s);
	if (!meta) {
		db_fail(db, DB_ERR_OTHER, "result metadata: %s", mysql_stmt_error(s));
		goto out_free_rows;
	}
	fields = mysql_fetch_fields(meta);
	for (unsigned c = 0; c < ncols; c++)
		scratch += db_cell_buf_len(&fields[c]) + 1;
	if (db_scratch_reserve(db, ncols, scratch)) {
		db_fail(db, DB_ERR_OTHER, "out of memory for result buffers");
		goto out_free_meta;
	}
	memset(db->rbinds, 0, ncols * sizeof(*db->rbinds));
	off = 0;
	for (unsigned c = 0; c < ncols; c++) {
		MYSQL_BIND *b = &db->rbinds[c];
		size_t len = db_cell_buf_len(&fields[c]);

		/* every column as text: the client converts numbers and dates */
		b->buffer_type = MYSQL_TYPE_STRING;
		b->buffer = db->rbuf + off;
		b->buffer_length = len + 1;
		b->length = &db->rlens[c];
		b->is_null = &db->rnulls[c];
		off += len + 1;
	}
	if (mysql_stmt_bind_result(s, db->rbinds)) {
		db_fail(db, DB_ERR_OTHER, "bind result: %s", mysql_stmt_error(s));
		goto out_free_meta;
	}

	for (size_t r = 0; r < nrows; r++) {
		int f = mysql_stmt_fetch(s);

		if (f == MYSQL_NO_DATA) {
			db_fail(db, DB_ERR_OTHER, "result ended after %zu of %zu rows", r, nrows);
			goto out_free_meta;
		}
		if (f == 1) {
			db_fail(db, DB_ERR_OTHER, "fetch: %s", mysql_stmt_error(s));
			goto out_free_meta;
		}
		/* 0 or MYSQL_DATA_TRUNCATED: long cells are fetched again below */
		for (unsigned c = 0; c < ncols; c++) {
			struct db_cell *cell = &rows->cells[r * ncols + c];
			unsigned long len = db->rlens[c];
			char *dst;

			if (db->rnulls[c]) {
				*cell = (struct db_cell){.off = DB_CELL_NULL, .len = 0};
				continue;
			}
			if (db_rows_reserve(&rows, (size_t)len + 1)) {
				db_fail(db, DB_ERR_OTHER, "result exceeds %u bytes or memory",
					DB_RESULT_MAX_BYTES);
				goto out_free_meta;
			}
			cell = &rows->cells[r * ncols + c];
			dst = db_rows_text(rows) + rows->text_used;
			if (len < db->rbinds[c].buffer_length) {
				memcpy(dst, db->rbinds[c].buffer, len);
			} else {
				MYSQL_BIND big = {.buffer_type = MYSQL_TYPE_STRING,
						  .buffer = dst,
						  .buffer_length = len + 1,
						  .length = &len};

				if (mysql_stmt_fetch_column(s, &big, c, 0)) {
					db_fail(db, DB_ERR_OTHER, "fetch column: %s",
						mysql_stmt_error(s));
					goto out_free_meta;
				}
			}
			dst[len] = '\0';
			*cell = (struct db_cell){.off = (uint32_t)rows->text_used,
						 .len = (uint32_t)len};
			rows->text_used += (size_t)len + 1;
		}
	}
	mysql_free_result(meta);
out_done:
	mysql_stmt_free_result(s);
	db_scratch_trim(db);
	*out = rows;
	return 0;

out_free_meta:
	mysql_free_result(meta);
out_free_rows:
	free(rows);
out_free_result:
	mysql_stmt_free_result(s);
	db_scratch_trim(db);
	return rc;
}

/*
 * One attempt: make the link UP, get the statement, bind, execute, then
 * either read the result (rows_out) or count affected rows. *retry is set
 * when a failure left the statement certainly not executed.
 */
static int64_t db_run_once(struct db *db, const void *key, uint32_t nrows, const struct db_multi *m,
			   const struct db_param *p, size_t np, struct db_rows **rows_out,
			   bool *retry)
{
	struct db_stmt *st;
	uint64_t affected, nrows_read;
	int rc;

	rc = db_ensure(db);
	if (rc)
		return rc;
	st = db_stmt_get(db, key, nrows, m, &rc, retry);
	if (!st)
		return rc;
	rc = nrows == DB_BULK_NROWS ? db_bind_bulk(db, st->stmt, p, np)
				    : db_bind_params(db, st->stmt, p, np);
	if (rc)
		return rc;
	if (mysql_stmt_execute(st->stmt))
		return db_stmt_fail(db, st, "execute", retry);
	if (rows_out)
		return db_fetch_all(db, st, rows_out);

	affected = mysql_stmt_affected_rows(st->stmt);
	db->insert_id = mysql_stmt_insert_id(st->stmt);
	if (mysql_stmt_field_count(st->stmt) > 0) {
		/* a result nobody asked for must still be read off the link */
		if (mysql_stmt_store_result(st->stmt)) {
			bool ignored = false;

			return db_stmt_fail(db, st, "store result", &ignored);
		}
		nrows_read = mysql_stmt_num_rows(st->stmt);
		mysql_stmt_free_result(st->stmt);
		return (int64_t)nrows_read;
	}
	return affected == UINT64_MAX ? 0 : (int64_t)affected;
}

static int64_t db_run(struct db *db, const void *key, uint32_t nrows, const struct db_multi *m,
		      const struct db_param *p, size_t np, struct db_rows **rows_out)
{
	db_clear_error(db);
	for (int attempt = 0;; attempt++) {
		bool retry = false;
		int64_t rc = db_run_once(db, key, nrows, m, p, np, rows_out, &retry);

		if (rc >= 0) {
			db_clear_error(db);
			db_succeeded(db);
			return rc;
		}
		db->last_error = (int)rc;
		if (rc != DB_ERR_DOWN && db->mysql)
			db_succeeded(db); /* the server answered, if only "no" */
		if (!retry || attempt > 0 || db->in_txn)
			return rc;
		log_debug("db: re-running on a fresh connection: %s", db->errmsg);
	}
}

/* Converts fmt + variadic arguments into params; returns the count or < 0. */
static int db_params_from_fmt(struct db *db, const char *fmt, va_list ap,
			      struct db_param p[DB_FMT_MAX_PARAMS])
{
	int n = 0;

	for (const char *f = fmt ? fmt : ""; *f; f++) {
		if (n == DB_FMT_MAX_PARAMS)
			return db_fail(db, DB_ERR_OTHER, "more than %d parameters",
				       DB_FMT_MAX_PARAMS);
		p[n].type = *f;
		switch (*f) {
		case 'l':
			p[n].l = va_arg(ap, int64_t);
			break;
		case 'u':
			p[n].u = va_arg(ap, uint64_t);
			break;
		case 'i':
			p[n].i = va_arg(ap, int);
			break;
		case 's':
			p[n].s = va_arg(ap, const char *);
			break;
		case 'b':
			p[n].b.p = va_arg(ap, const void *);
			p[n].b.n = va_arg(ap, size_t);
			break;
		default:
			return db_fail(db, DB_ERR_OTHER, "unknown parameter format '%c'", *f);
		}
		n++;
	}
	return n;
}

int64_t db_exec(struct db *db, const char *sql, const char *fmt, ...)
{
	struct db_param p[DB_FMT_MAX_PARAMS];
	va_list ap;
	int n;

	db_clear_error(db);
	va_start(ap, fmt);
	n = db_params_from_fmt(db, fmt, ap, p);
	va_end(ap);
	if (n < 0)
		return n;
	return db_run(db, sql, 0, NULL, p, (size_t)n, NULL);
}

struct db_rows *db_query(struct db *db, const char *sql, const char *fmt, ...)
{
	struct db_param p[DB_FMT_MAX_PARAMS];
	struct db_rows *rows = NULL;
	va_list ap;
	int n;

	db_clear_error(db);
	va_start(ap, fmt);
	n = db_params_from_fmt(db, fmt, ap, p);
	va_end(ap);
	if (n < 0)
		return NULL;
	if (db_run(db, sql, 0, NULL, p, (size_t)n, &rows) < 0)
		return NULL;
	return rows;
}

/* nrows rows of params against row_fmt (non-empty): 0, or the failure. */
static int db_check_rows(struct db *db, const char *row_fmt, size_t nrows,
			 const struct db_param *params)
{
	size_t width = strlen(row_fmt);

	if (nrows > DB_MULTI_MAX_PARAMS / width)
		return db_fail(db, DB_ERR_OTHER, "%zu rows of %zu parameters exceed %d", nrows,
			       width, DB_MULTI_MAX_PARAMS);
	for (size_t i = 0; i < nrows * width; i++)
		if (params[i].type != row_fmt[i % width])
			return db_fail(db, DB_ERR_OTHER,
				       "row %zu parameter %zu has type '%c', row_fmt wants '%c'",
				       i / width + 1, i % width + 1, params[i].type,
				       row_fmt[i % width]);
	return 0;
}

int64_t db_exec_multi(struct db *db, const struct db_multi *m, size_t nrows,
		      const struct db_param *params)
{
	int rc;

	db_clear_error(db);
	if (!m || !m->prefix || !m->row || !m->row_fmt || !m->row_fmt[0])
		return db_fail(db, DB_ERR_OTHER, "incomplete struct db_multi");
	if (nrows == 0)
		return 0;
	rc = db_check_rows(db, m->row_fmt, nrows, params);
	if (rc)
		return rc;
	return db_run(db, m, (uint32_t)nrows, m, params, nrows * strlen(m->row_fmt), NULL);
}

int64_t db_exec_bulk(struct db *db, const char *sql, const char *row_fmt, size_t nrows,
		     const struct db_param *params)
{
	int64_t rc;

	db_clear_error(db);
	if (!sql || !row_fmt || !row_fmt[0])
		return db_fail(db, DB_ERR_OTHER, "db_exec_bulk without a statement or row_fmt");
	if (nrows == 0)
		return 0;
	rc = db_check_rows(db, row_fmt, nrows, params);
	if (rc)
		return rc;
	db->bulk_rows = (uint32_t)nrows;
	rc = db_run(db, sql, DB_BULK_NROWS, NULL, params, nrows * strlen(row_fmt), NULL);
	db->bulk_rows = 0;
	return rc;
}

bool db_bulk_capable(const struct db *db)
{
#ifdef MARIADB_CLIENT_STMT_BULK_OPERATIONS
	unsigned long caps = 0, ext = 0;

	if (!db->mysql ||
	    mariadb_get_infov(db->mysql, MARIADB_CONNECTION_SERVER_CAPABILITIES, &caps) ||
	    mariadb_get_infov(db->mysql, MARIADB_CONNECTION_EXTENDED_SERVER_CAPABILITIES, &ext))
		return false;
	/* a MySQL server sets CLIENT_MYSQL; MariaDB clears it */
	return !(caps & CLIENT_MYSQL) && (ext & (MARIADB_CLIENT_STMT_BULK_OPERATIONS >> 32));
#else
	(void)db;
	return false;
#endif
}

uint64_t db_insert_id(const struct db *db)
{
	return db->insert_id;
}

int db_last_error(const struct db *db)
{
	return db->last_error;
}

const char *db_errmsg(const struct db *db)
{
	return db->errmsg;
}

/* ---- transactions ------------------------------------------------------- */

static void db_txn_end(struct db *db)
{
	db->in_txn = false;
	db->txn_broken = false;
}

int db_begin(struct db *db)
{
	int64_t rc;

	db_clear_error(db);
	if (db->in_txn)
		return db_fail(db, DB_ERR_OTHER, "a transaction is already open");
	if (db->txn_only) {
		/* the last COMMIT or ROLLBACK left no transaction open and the
		 * next statement starts one; a link found dead now is re-made
		 * here, before the transaction holds anything */
		rc = db_ensure(db);
		if (rc < 0)
			return (int)rc;
		db->in_txn = true;
		return 0;
	}
	rc = db_run(db, SQL_BEGIN, 0, NULL, NULL, 0, NULL);
	if (rc < 0)
		return (int)rc;
	db->in_txn = true;
	return 0;
}

void db_set_txn_only(struct db *db)
{
	db->txn_only = true;
	/* a session opened before keeps autocommit = 1: start a new one */
	if (db->mysql)
		db_drop(db);
}

int db_commit(struct db *db)
{
	int64_t rc;

	db_clear_error(db);
	if (!db->in_txn)
		return db_fail(db, DB_ERR_OTHER, "no transaction is open");
	if (db->txn_broken) {
		db_txn_end(db);
		return db_fail(db, DB_ERR_DOWN, "connection lost inside the transaction");
	}
	rc = db_run(db, SQL_COMMIT, 0, NULL, NULL, 0, NULL);
	if (rc < 0 && db->mysql) {
		/* the link is up but COMMIT failed: make sure nothing stays
		 * open, keeping the COMMIT error for the caller */
		char msg[sizeof(db->errmsg)];

		memcpy(msg, db->errmsg, sizeof(msg));
		if (db_run(db, SQL_ROLLBACK, 0, NULL, NULL, 0, NULL) < 0)
			db_drop(db);
		memcpy(db->errmsg, msg, sizeof(msg));
		db->last_error = (int)rc;
	}
	db_txn_end(db);
	return rc < 0 ? (int)rc : 0;
}

int db_rollback(struct db *db)
{
	db_clear_error(db);
	if (!db->in_txn)
		return 0;
	if (!db->txn_broken && db_run(db, SQL_ROLLBACK, 0, NULL, NULL, 0, NULL) < 0) {
		log_warn("db: rollback failed, dropping the connection: %s", db->errmsg);
		db_drop(db);
	}
	db_txn_end(db);
	db->last_error = 0;
	return 0;
}

bool db_in_transaction(const struct db *db)
{
	return db->in_txn;
}

/* ---- results ------------------------------------------------------------ */

size_t db_rows_count(const struct db_rows *rows)
{
	return rows->nrows;
}

unsigned db_rows_cols(const struct db_rows *rows)
{
	return rows->ncols;
}

static const struct db_cell *db_cell(const struct db_rows *rows, size_t r, unsigned c)
{
	assert(r < rows->nrows && c < rows->ncols);
	return &rows->cells[r * rows->ncols + c];
}

const char *db_cell_str(const struct db_rows *rows, size_t r, unsigned c)
{
	const struct db_cell *cell = db_cell(rows, r, c);

	if (cell->off == DB_CELL_NULL)
		return "";
	return db_rows_text(rows) + cell->off;
}

size_t db_cell_len(const struct db_rows *rows, size_t r, unsigned c)
{
	return db_cell(rows, r, c)->len;
}

bool db_cell_is_null(const struct db_rows *rows, size_t r, unsigned c)
{
	return db_cell(rows, r, c)->off == DB_CELL_NULL;
}

int64_t db_cell_i64(const struct db_rows *rows, size_t r, unsigned c)
{
	const struct db_cell *cell = db_cell(rows, r, c);

	if (cell->off == DB_CELL_NULL)
		return 0;
	return strtoll(db_rows_text(rows) + cell->off, NULL, 10);
}

void db_rows_free(struct db_rows *rows)
{
	free(rows);
}
