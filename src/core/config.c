/*
 * config.c - the configuration table and everything it drives.
 *
 * Every key is one row of config_table[]: its name (the same as the field
 * of struct config it fills), its type, where the field sits, its default
 * as text, its bounds and a help line. config_defaults, the file parser,
 * the command-line flags, config_dump and the --help text all walk this
 * table; nothing else lists the keys, so a key added here is at once
 * settable, checked, dumped and documented.
 *
 * Defaults go through the same setter as user input, so a default that
 * breaks its own bounds cannot ship unnoticed (config_defaults aborts and
 * the unit tests run it).
 *
 * A key is parsed and checked in full before the struct is touched: a
 * rejected value leaves the previous one in place. Every rejection prints
 * exactly one line to err:
 *
 *   ringchatd: config: [path:line: ]key 'max_frame': value 'abc' is not an
 *   integer (allowed 64..16777216)
 */
#include "ringchat/config.h"
#include "ringchat/log.h"
#include "ringchat/sock.h"

#include <netinet/in.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_DEFAULT_PATH "config/ringchatd.conf"
/*
 * Longest line of a config file, newline excluded; the longest value (a
 * 255-byte socket path, quoted and escaped) fits with room to spare.
 */
#define CONFIG_LINE_MAX 1024
/* How much of a rejected value an error line repeats. */
#define CONFIG_SHOWN_MAX 64
/* Room for an ENUM's words joined with '|'. */
#define CONFIG_WORDS_MAX 128

enum config_type { CONFIG_INT, CONFIG_STR, CONFIG_ENUM };

struct config_entry {
	const char *name;
	enum config_type type;
	size_t offset;
	size_t size;			  /* bytes of the field; STR: NUL included */
	const char *dflt;		  /* default, as it would be written in a file */
	long long min, max;		  /* INT: inclusive bounds */
	const char *const *words;	  /* ENUM: word i stores the value i */
	bool (*valid)(const char *value); /* STR: extra check, NULL = any text */
	const char *expect;		  /* STR: what valid() accepts, for errors */
	const char *help;
};

/*
 * The entry macros check at compile time that the field has the type the
 * row claims: a char array declared INT would otherwise be written as an
 * int, and an int declared STR would be overrun by a long string. A
 * mismatch makes the array size -1, which does not compile.
 */
#define CONFIG_FIELD(f) (((struct config *)0)->f)
#define CONFIG_IS(f, T) (0 * sizeof(char[_Generic(CONFIG_FIELD(f), T : 1, default : -1)]))

#define INT_KEY(f, def, lo, hi, h)                                                                 \
	{                                                                                          \
		.name = #f, .type = CONFIG_INT, .offset = offsetof(struct config, f),              \
		.size = sizeof(CONFIG_FIELD(f)) + CONFIG_IS(f, int), .dflt = def, .min = lo,       \
		.max = hi, .help = h                                                               \
	}
#define STR_KEY(f, def, check, what, h)                                                            \
	{                                                                                          \
		.name = #f, .type = CONFIG_STR, .offset = offsetof(struct config, f),              \
		.size = sizeof(CONFIG_FIELD(f)) + CONFIG_IS(f, char *), .dflt = def,               \
		.valid = check, .expect = what, .help = h                                          \
	}
#define ENUM_KEY(f, def, list, h)                                                                  \
	{                                                                                          \
		.name = #f, .type = CONFIG_ENUM, .offset = offsetof(struct config, f),             \
		.size = sizeof(CONFIG_FIELD(f)) + CONFIG_IS(f, int), .dflt = def, .words = list,   \
		.help = h                                                                          \
	}

static bool config_valid_listen(const char *s);
static bool config_valid_listen_or_off(const char *s);
static bool config_valid_log_level(const char *s);

#define HOST_PORT "host:port (IPv4 address or localhost, port 0..65535)"

/* Indexed by enum durability. */
static const char *const durability_words[] = {"stored", "relay", NULL};
/* Indexed by enum cluster_route. */
static const char *const cluster_route_words[] = {"off", "redis", "udp", NULL};
static const char *const off_on_words[] = {"off", "on", NULL};
/* Indexed by enum mysql_tls. */
static const char *const mysql_tls_words[] = {"off", "on", "verify", NULL};

/* One row per key, aligned by hand: the formatter would indent it oddly. */
/* clang-format off */
static const struct config_entry config_table[] = {
	/* network */
	STR_KEY(listen, "127.0.0.1:7700", config_valid_listen, HOST_PORT,
		"address clients connect to; port 0 picks a free one"),
	INT_KEY(max_connections, "100000", 1, 1000000,
		"client connections accepted at once; more are refused"),
	INT_KEY(max_frame, "65536", 64, 16777216, "largest payload a client may send, bytes"),
	INT_KEY(idle_timeout_ms, "300000", 1000, 86400000,
		"close a connection silent for this long, ms"),
	INT_KEY(out_limit_bytes, "8388608", 65536, 1073741824,
		"unsent output allowed per connection, bytes"),
	INT_KEY(frame_timeout_ms, "15000", 10, 3600000,
		"a frame whose first byte arrived must be complete within this, ms, else the "
		"connection is closed"),
	INT_KEY(login_timeout_ms, "30000", 10, 86400000,
		"a connection that has not logged in (LOGIN or RESUME) this long after connecting "
		"is closed, ms"),
	INT_KEY(max_conns_per_addr, "1000", 0, 1000000,
		"client connections from one IPv4 address at once; 0 = no cap"),
	INT_KEY(max_unauth_per_addr, "100", 0, 1000000,
		"connections from one IPv4 address not logged in yet; 0 = no cap"),
	INT_KEY(max_pending_frames, "256", 1, 1000000,
		"frames of one connection handed to its worker and not answered yet; past it "
		"the node stops reading that connection until replies go out"),
	INT_KEY(max_pending_bytes, "1048576", 65536, 1073741824,
		"payload bytes of those frames; past it reading pauses the same way"),
	INT_KEY(admin_timeout_ms, "5000", 10, 600000,
		"an admin client (GET /metrics) must complete its request and read the answer "
		"within this, ms"),
	INT_KEY(admin_max_clients, "16", 1, 1024, "admin clients served at once; more wait in "
		"the listen backlog"),
	STR_KEY(admin_listen, "127.0.0.1:7780", config_valid_listen_or_off,
		"\"\" or " HOST_PORT, "address of GET /metrics; \"\" turns it off"),
	/* threads and queues */
	INT_KEY(workers, "0", 0, 256, "worker threads; 0 = one per online core"),
	INT_KEY(queue_depth, "8192", 16, 1048576, "capacity of each worker queue, items"),
	/* node identity */
	INT_KEY(node_id, "1", 0, 31, "this node's id (0..31), unique in the cluster; part of every msg_id"),
	/* cluster */
	ENUM_KEY(cluster_route, "udp", cluster_route_words,
		 "how messages reach users on other nodes: redis (each node's inbox stream), "
		 "udp (the node link, directly between nodes) or off (a single node: no lease, "
		 "users of other nodes are unreachable)"),
	STR_KEY(link_listen, "127.0.0.1:0", config_valid_listen, HOST_PORT,
		"UDP address of the node link (cluster_route udp); port 0 picks a free one"),
	STR_KEY(link_advertise, "", config_valid_listen_or_off, "\"\" or " HOST_PORT,
		"address other nodes send link datagrams to (a proxy or NAT in front of the "
		"node); \"\" = the address link_listen bound"),
	STR_KEY(cluster_secret, "", NULL, NULL,
		"key that authenticates node link datagrams (HMAC-SHA256), the same on every "
		"node: the value itself, or @path of a file holding it; at least 32 bytes in "
		"cluster_route udp"),
	INT_KEY(node_ttl_ms, "5000", 300, 600000,
		"lease on node_id in Redis, ms: a crashed node's id is free (and the node seen down) "
		"this long after its last heartbeat; heartbeats go every node_ttl_ms / 5"),
	INT_KEY(inbox_maxlen, "100000", 100, 100000000,
		"entries kept in each node's inbox stream (approximate cap); older unread entries "
		"are trimmed"),
	INT_KEY(cluster_queue_bytes, "67108864", 65536, 1073741824,
		"bytes of messages this node may hold for other nodes while Redis is slow or "
		"down, all peers together; beyond it sends fail and are counted"),
	/* logging */
	STR_KEY(log_level, "info", config_valid_log_level, "one of debug|info|warn|error",
		"least severe level written to stderr"),
	/* storage */
	STR_KEY(mysql_host, "127.0.0.1", NULL, NULL, "MariaDB host"),
	INT_KEY(mysql_port, "13306", 1, 65535, "MariaDB TCP port"),
	STR_KEY(mysql_socket, "var/run/mysqld.sock", NULL, NULL,
		"MariaDB unix socket, used instead of host:port; \"\" = use TCP"),
	STR_KEY(mysql_user, "ringchat", NULL, NULL, "MariaDB user"),
	STR_KEY(mysql_password, "ringchat", NULL, NULL, "MariaDB password"),
	STR_KEY(mysql_db, "ringchat", NULL, NULL, "MariaDB database"),
	STR_KEY(redis_host, "127.0.0.1", NULL, NULL, "Redis host"),
	INT_KEY(redis_port, "16379", 1, 65535, "Redis TCP port"),
	STR_KEY(redis_socket, "var/run/redis.sock", NULL, NULL,
		"Redis unix socket, used instead of host:port; \"\" = use TCP"),
	STR_KEY(redis_password, "", NULL, NULL,
		"password sent with AUTH on every Redis connection; \"\" = none"),
	ENUM_KEY(mysql_tls, "off", mysql_tls_words,
		 "TLS to MariaDB over TCP: off; on (encrypted, the server's certificate not "
		 "checked); verify (checked against mysql_ca and the host name); a server "
		 "without TLS is refused by on and verify"),
	STR_KEY(mysql_ca, "", NULL, NULL,
		"CA certificate file (PEM) for mysql_tls verify; \"\" = the system's"),
	/* accounts */
	INT_KEY(hash_cost, "5", 1, 11, "yescrypt cost factor of new password hashes"),
	INT_KEY(hash_threads, "1", 1, 64,
		"threads that hash passwords, so that logins never stall request workers"),
	INT_KEY(token_ttl_s, "604800", 60, 31536000, "session token lifetime, seconds"),
	INT_KEY(login_concurrency, "64", 1, 100000, "logins processed at once per node"),
	INT_KEY(login_fail_limit, "10", 1, 100000,
		"failed logins allowed per window for one username from one address"),
	INT_KEY(login_fail_window_s, "60", 1, 86400, "length of the failed-login window, seconds"),
	INT_KEY(login_fail_addr_limit, "30", 1, 1000000,
		"failed logins allowed per window from one address, all usernames together"),
	INT_KEY(login_fail_user_limit, "100", 1, 1000000,
		"failed logins of one username per window (from anywhere) before its logins are "
		"slowed to one per login_fail_user_gap_ms; it is never locked"),
	INT_KEY(login_fail_user_gap_ms, "1000", 1, 60000,
		"a slowed username takes one login attempt per this many ms"),
	INT_KEY(signup_addr_limit, "1000", 0, 1000000,
		"SIGNUPs allowed per signup_window_s from one address; 0 = no limit"),
	INT_KEY(signup_window_s, "60", 1, 86400, "length of the SIGNUP window, seconds"),
	/* social */
	INT_KEY(friends_max, "5000", 1, 1000000, "friends one user may have"),
	INT_KEY(friend_requests_max, "1000", 1, 1000000,
		"pending friend requests one user may have received"),
	INT_KEY(groups_created_max, "100", 1, 1000000, "live groups one user may own"),
	INT_KEY(groups_joined_max, "1000", 1, 1000000, "groups one user may be a member of"),
	INT_KEY(list_page_default, "5000", 1, 1000000,
		"entries of a FRIEND_LIST or GROUP_LIST page when the request gives no limit "
		"(and the most it may ask for)"),
	/* presence */
	INT_KEY(presence_refresh_s, "30", 1, 3600,
		"how often a worker refreshes its users' presence in Redis, seconds; an entry "
		"lives 3 times as long"),
	/* messaging */
	ENUM_KEY(durability, "stored", durability_words,
		 "stored: a send is answered once committed; relay: once forwarded"),
	INT_KEY(text_max, "4096", 1, 65536, "largest text of one message, bytes"),
	INT_KEY(group_member_cap, "500", 2, 100000, "most members a group may have"),
	INT_KEY(commit_batch_max, "1024", 1, 65536, "most rows in one group-commit batch"),
	INT_KEY(commit_interval_us, "2000", 0, 100000,
		"least time between the starts of two group commits while less than a full batch "
		"waits: a few more rows per commit instead of a commit for each few; 0 = at once"),
	ENUM_KEY(commit_bulk, "on", off_on_words,
		 "on: a batch's message rows go as one array-bound INSERT where the server has "
		 "bulk operations; off: as multi-row INSERTs (for proxies without them)"),
	INT_KEY(unread_defer_ms, "1000", 0, 60000,
		"stored mode: hold a 1:1 message's unread mark in memory this long, so that an ack "
		"within it writes nothing; 0 = write it with the message"),
	INT_KEY(rate_msgs_per_s, "2000", 1, 1000000,
		"requests per second one connection may sustain"),
	INT_KEY(rate_burst, "2000", 1, 1000000,
		"requests one connection may send at once above the rate"),
	INT_KEY(rate_recipients_per_s, "100000", 1, 100000000,
		"recipients per second one connection may reach with GROUP_SEND (each send "
		"costs one per other member)"),
	INT_KEY(rate_recipients_burst, "100000", 1, 100000000,
		"recipients one connection may reach at once above that rate"),
};
/* clang-format on */

#define CONFIG_KEYS (sizeof(config_table) / sizeof(config_table[0]))

static void config_error(FILE *err, const char *path, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Prints one error line: the program, the module, file:line when the
 * value came from a file, then the message.
 */
static void config_error(FILE *err, const char *path, unsigned line, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	fputs("ringchatd: config: ", err);
	if (path)
		fprintf(err, "%s:%u: ", path, line);
	va_start(ap, fmt);
	vfprintf(err, fmt, ap);
	va_end(ap);
	fputc('\n', err);
}

/*
 * Copies at most CONFIG_SHOWN_MAX bytes of s into buf for an error line,
 * control characters shown as '?' so the error stays one line.
 */
static const char *config_shown(char buf[static CONFIG_SHOWN_MAX + 4], const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n && i < CONFIG_SHOWN_MAX; i++)
		buf[i] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
	if (i < n) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

/* '-' and '_' are the same character in a key name, so --max-frame works. */
static bool config_name_eq(const char *name, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char b = s[i] == '-' ? '_' : s[i];

		if (name[i] == '\0' || name[i] != b)
			return false;
	}
	return name[n] == '\0';
}

/* Returns the entry named by the n bytes at s, or NULL. */
static const struct config_entry *config_find(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < CONFIG_KEYS; i++)
		if (config_name_eq(config_table[i].name, s, n))
			return &config_table[i];
	return NULL;
}

/* Decimal only, the whole string: "12", "-3"; not "", " 1", "+1", "0x10". */
static int config_parse_int(const char *s, long long *out)
{
	const char *p = s[0] == '-' ? s + 1 : s;
	long long v;

	if (*p == '\0')
		return -EINVAL;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	errno = 0;
	v = strtoll(s, NULL, 10);
	if (errno == ERANGE)
		return -ERANGE;
	*out = v;
	return 0;
}

/* The listeners parse their address with the same function. */
static bool config_valid_listen(const char *s)
{
	struct sockaddr_in sa;

	return sock_parse_hostport(s, &sa) == 0;
}

static bool config_valid_listen_or_off(const char *s)
{
	return s[0] == '\0' || config_valid_listen(s);
}

static bool config_valid_log_level(const char *s)
{
	return log_level_parse(s) >= 0;
}

/* Writes the words of an ENUM as "a|b|c" into buf, truncated to fit. */
static const char *config_join_words(char *buf, size_t size, const char *const *words)
{
	size_t used = 0, i;
	int n;

	buf[0] = '\0';
	for (i = 0; words[i] && used < size; i++) {
		n = snprintf(buf + used, size - used, "%s%s", i ? "|" : "", words[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	return buf;
}

/*
 * Parses value for entry e and stores it in c. path/line locate the value
 * in a file for the error line (path NULL: not from a file). Returns 0, or
 * -1 after printing one line, with c unchanged.
 */
static int config_apply(struct config *c, const struct config_entry *e, const char *value,
			const char *path, unsigned line, FILE *err)
{
	char shown[CONFIG_SHOWN_MAX + 4];
	char words[CONFIG_WORDS_MAX];
	char *field = (char *)c + e->offset;
	size_t len = strlen(value);
	long long v;
	int iv, rc;
	size_t i;

	config_shown(shown, value, len);
	switch (e->type) {
	case CONFIG_INT:
		rc = config_parse_int(value, &v);
		if (rc == -EINVAL) {
			config_error(err, path, line,
				     "key '%s': value '%s' is not an integer (allowed %lld..%lld)",
				     e->name, shown, e->min, e->max);
			return -1;
		}
		if (rc == -ERANGE || v < e->min || v > e->max) {
			config_error(err, path, line,
				     "key '%s': value '%s' is out of range (allowed %lld..%lld)",
				     e->name, shown, e->min, e->max);
			return -1;
		}
		iv = (int)v;
		memcpy(field, &iv, sizeof(iv));
		return 0;
	case CONFIG_ENUM:
		for (i = 0; e->words[i]; i++) {
			if (strcmp(value, e->words[i]) == 0) {
				iv = (int)i;
				memcpy(field, &iv, sizeof(iv));
				return 0;
			}
		}
		config_error(err, path, line, "key '%s': value '%s' is not one of %s", e->name,
			     shown, config_join_words(words, sizeof(words), e->words));
		return -1;
	case CONFIG_STR:
		if (len >= e->size) {
			config_error(err, path, line,
				     "key '%s': value is too long (%zu bytes, at most %zu allowed)",
				     e->name, len, e->size - 1);
			return -1;
		}
		for (i = 0; i < len; i++) {
			if (iscntrl((unsigned char)value[i])) {
				config_error(err, path, line,
					     "key '%s': value '%s' contains a control character",
					     e->name, shown);
				return -1;
			}
		}
		if (e->valid && !e->valid(value)) {
			config_error(err, path, line, "key '%s': value '%s' is not %s", e->name,
				     shown, e->expect);
			return -1;
		}
		/*
		 * Zero the tail too: two configs holding the same values
		 * then compare equal byte for byte.
		 */
		memset(field, 0, e->size);
		memcpy(field, value, len);
		return 0;
	}
	return -1;
}

void config_defaults(struct config *c)
{
	size_t i;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < CONFIG_KEYS; i++) {
		/* A default that fails its own checks is a bug in the table. */
		if (config_apply(c, &config_table[i], config_table[i].dflt, NULL, 0, stderr) != 0)
			abort();
	}
}

int config_set(struct config *c, const char *key, const char *value, FILE *err)
{
	const struct config_entry *e = config_find(key, strlen(key));
	char shown[CONFIG_SHOWN_MAX + 4];

	if (!e) {
		config_error(err, NULL, 0, "unknown key '%s'",
			     config_shown(shown, key, strlen(key)));
		return -1;
	}
	return config_apply(c, e, value, NULL, 0, err);
}

enum config_line_status { CONFIG_LINE_EOF = -1, CONFIG_LINE_LONG = -2, CONFIG_LINE_NUL = -3 };

/*
 * Reads one line of f into buf (CONFIG_LINE_MAX + 1 bytes) without its
 * newline or a trailing '\r'. Returns the length, or a config_line_status.
 * getc rather than fgets: a NUL byte inside a line must be an error, not a
 * silently shortened value.
 */
static int config_read_line(FILE *f, char *buf)
{
	int ch, n = 0;

	for (;;) {
		ch = getc(f);
		if (ch == EOF) {
			if (n == 0)
				return CONFIG_LINE_EOF;
			break;
		}
		if (ch == '\n')
			break;
		if (ch == '\0')
			return CONFIG_LINE_NUL;
		if (n == CONFIG_LINE_MAX)
			return CONFIG_LINE_LONG;
		buf[n++] = (char)ch;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return n;
}

static bool config_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

/*
 * Applies one line of a config file: blank, a comment, or
 * `key value` / `key = value`, the value optionally double-quoted (inside
 * quotes \" and \\ stand for " and \, and '#' is plain text). The value of
 * a quoted string is unescaped in place in line.
 */
static int config_parse_line(struct config *c, char *line, const char *path, unsigned lineno,
			     FILE *err)
{
	char shown[CONFIG_SHOWN_MAX + 4];
	const struct config_entry *e;
	char *p = line, *key, *value, *w;
	size_t klen;

	while (config_blank(*p))
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	key = p;
	while (*p && !config_blank(*p) && *p != '=' && *p != '#')
		p++;
	klen = (size_t)(p - key);
	if (klen == 0) {
		config_error(err, path, lineno, "expected 'key value', found '%s'",
			     config_shown(shown, line, strlen(line)));
		return -1;
	}
	e = config_find(key, klen);
	if (!e) {
		config_error(err, path, lineno, "unknown key '%s'", config_shown(shown, key, klen));
		return -1;
	}
	while (config_blank(*p))
		p++;
	if (*p == '=') {
		p++;
		while (config_blank(*p))
			p++;
	}
	if (*p == '"') {
		value = w = p++;
		for (;;) {
			if (*p == '\0') {
				config_error(err, path, lineno,
					     "key '%s': unterminated quoted value", e->name);
				return -1;
			}
			if (*p == '"')
				break;
			if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
				p++;
			*w++ = *p++;
		}
		*w = '\0';
		p++;
		while (config_blank(*p))
			p++;
		if (*p != '\0' && *p != '#') {
			config_error(err, path, lineno, "key '%s': text after the quoted value",
				     e->name);
			return -1;
		}
	} else {
		value = p;
		while (*p && *p != '#')
			p++;
		while (p > value && config_blank(p[-1]))
			p--;
		*p = '\0';
		if (*value == '\0') {
			config_error(err, path, lineno,
				     "key '%s': missing value (write \"\" for empty)", e->name);
			return -1;
		}
	}
	return config_apply(c, e, value, path, lineno, err);
}

int config_load_file(struct config *c, const char *path, bool required, FILE *err)
{
	char line[CONFIG_LINE_MAX + 1];
	unsigned lineno = 0;
	int rc = 0, n;
	FILE *f;

	f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT && !required)
			return 0;
		config_error(err, NULL, 0, "cannot open '%s': %s", path, strerror(errno));
		return -1;
	}
	for (;;) {
		n = config_read_line(f, line);
		if (n == CONFIG_LINE_EOF)
			break;
		lineno++;
		if (n == CONFIG_LINE_LONG) {
			config_error(err, path, lineno, "line longer than %d bytes",
				     CONFIG_LINE_MAX);
			rc = -1;
			break;
		}
		if (n == CONFIG_LINE_NUL) {
			config_error(err, path, lineno, "NUL byte in line");
			rc = -1;
			break;
		}
		if (config_parse_line(c, line, path, lineno, err) != 0) {
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		config_error(err, NULL, 0, "cannot read '%s'", path);
		rc = -1;
	}
	fclose(f);
	return rc;
}

enum config_arg_kind { CONFIG_ARG_KEY, CONFIG_ARG_CONFIG, CONFIG_ARG_CHECK, CONFIG_ARG_HELP };

struct config_arg {
	enum config_arg_kind kind;
	const struct config_entry *e; /* CONFIG_ARG_KEY */
	const char *value;	      /* CONFIG_ARG_KEY, CONFIG_ARG_CONFIG */
	const char *flag;	      /* the argument as given, for errors */
};

/*
 * Takes the option at argv[*i] (and its value, when separate) and moves
 * *i past them. A separate value may not start with "--", so a forgotten
 * value ("--listen --workers 4") is reported instead of swallowing the
 * next option; such a value can still be given as --key=--value.
 * Returns 0, or -1 after printing one line.
 */
static int config_next_arg(int argc, char **argv, int *i, struct config_arg *a, FILE *err)
{
	char shown[CONFIG_SHOWN_MAX + 4];
	const char *arg = argv[*i], *name, *eq;
	size_t nlen;
	bool help;

	(*i)++;
	a->flag = arg;
	a->e = NULL;
	a->value = NULL;
	if (strcmp(arg, "-h") == 0) {
		a->kind = CONFIG_ARG_HELP;
		return 0;
	}
	if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
		config_error(err, NULL, 0, "unexpected argument '%s'",
			     config_shown(shown, arg, strlen(arg)));
		return -1;
	}
	name = arg + 2;
	eq = strchr(name, '=');
	nlen = eq ? (size_t)(eq - name) : strlen(name);
	config_shown(shown, name, nlen);
	help = config_name_eq("help", name, nlen);
	if (help || config_name_eq("check_config", name, nlen)) {
		if (eq) {
			config_error(err, NULL, 0, "option '--%s' takes no value", shown);
			return -1;
		}
		a->kind = help ? CONFIG_ARG_HELP : CONFIG_ARG_CHECK;
		return 0;
	}
	if (config_name_eq("config", name, nlen)) {
		a->kind = CONFIG_ARG_CONFIG;
	} else {
		a->kind = CONFIG_ARG_KEY;
		a->e = config_find(name, nlen);
		if (!a->e) {
			config_error(err, NULL, 0, "unknown option '--%s'", shown);
			return -1;
		}
	}
	if (eq) {
		a->value = eq + 1;
	} else if (*i < argc && strncmp(argv[*i], "--", 2) != 0) {
		a->value = argv[*i];
		(*i)++;
	} else {
		config_error(err, NULL, 0, "option '--%s' needs a value", shown);
		return -1;
	}
	return 0;
}

/* Writes a flag name: the key with '-' for '_', as people type flags. */
static void config_put_flag(FILE *out, const char *name)
{
	for (; *name; name++)
		fputc(*name == '_' ? '-' : *name, out);
}

/*
 * Writes a STR field quoted, escaping what the file parser unescapes. The
 * length is bounded by the field: a caller may have filled it by hand.
 */
static void config_put_quoted(FILE *out, const char *s, size_t size)
{
	size_t i, n = strnlen(s, size - 1);

	fputc('"', out);
	for (i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			fputc('\\', out);
		fputc(s[i], out);
	}
	fputc('"', out);
}

/* Returns word v of an ENUM entry, or NULL when v names none. */
static const char *config_word(const struct config_entry *e, int v)
{
	int i;

	for (i = 0; e->words[i]; i++)
		if (i == v)
			return e->words[i];
	return NULL;
}

static void config_usage(FILE *out)
{
	char words[CONFIG_WORDS_MAX];
	const struct config_entry *e;
	size_t i;

	fputs("usage: ringchatd [--config FILE] [--check-config] [--KEY VALUE | --KEY=VALUE]...\n"
	      "\n"
	      "  --config FILE    read FILE, which must exist (default: " CONFIG_DEFAULT_PATH ",\n"
	      "                   read only when it exists)\n"
	      "  --check-config   load and check the configuration, then exit\n"
	      "  -h, --help       print this help and exit\n"
	      "\n"
	      "Keys, as flags (in a config file: 'key value', '_' for '-'); flags win over\n"
	      "the file:\n",
	      out);
	for (i = 0; i < CONFIG_KEYS; i++) {
		e = &config_table[i];
		fputs("  --", out);
		config_put_flag(out, e->name);
		switch (e->type) {
		case CONFIG_INT:
			fprintf(out, " N\n        %s\n        default %s, allowed %lld..%lld\n",
				e->help, e->dflt, e->min, e->max);
			break;
		case CONFIG_ENUM:
			fprintf(out, " %s\n        %s\n        default %s\n",
				config_join_words(words, sizeof(words), e->words), e->help,
				e->dflt);
			break;
		case CONFIG_STR:
			fprintf(out, " TEXT\n        %s\n        default \"%s\", ", e->help,
				e->dflt);
			if (e->expect)
				fprintf(out, "%s\n", e->expect);
			else
				fprintf(out, "at most %zu bytes\n", e->size - 1);
			break;
		}
	}
}

int config_from_args(struct config *c, int argc, char **argv, bool *check_only, FILE *out,
		     FILE *err)
{
	struct config_arg a;
	const char *path = NULL;
	bool check = false;
	int i, rc;

	if (check_only)
		*check_only = false;
	config_defaults(c);
	/*
	 * First pass: check the shape of argv and find --config (the last
	 * one wins), so flags override the file wherever they stand.
	 */
	for (i = 1; i < argc;) {
		if (config_next_arg(argc, argv, &i, &a, err) != 0)
			return -1;
		if (a.kind == CONFIG_ARG_HELP) {
			config_usage(out);
			return 1;
		}
		if (a.kind == CONFIG_ARG_CONFIG)
			path = a.value;
		else if (a.kind == CONFIG_ARG_CHECK)
			check = true;
	}
	if (path)
		rc = config_load_file(c, path, true, err);
	else
		rc = config_load_file(c, CONFIG_DEFAULT_PATH, false, err);
	if (rc != 0)
		return -1;
	/* Second pass: the flags themselves; argv is known to be well formed. */
	for (i = 1; i < argc;) {
		if (config_next_arg(argc, argv, &i, &a, err) != 0)
			return -1;
		if (a.kind == CONFIG_ARG_KEY && config_apply(c, a.e, a.value, NULL, 0, err) != 0)
			return -1;
	}
	if (check_only)
		*check_only = check;
	return 0;
}

void config_dump(const struct config *c, FILE *out)
{
	const char *field, *word;
	const struct config_entry *e;
	size_t i;
	int v;

	fputs("# ringchatd configuration: every key with its current value.\n", out);
	for (i = 0; i < CONFIG_KEYS; i++) {
		e = &config_table[i];
		field = (const char *)c + e->offset;
		fprintf(out, "\n# %s\n%s ", e->help, e->name);
		switch (e->type) {
		case CONFIG_INT:
			memcpy(&v, field, sizeof(v));
			fprintf(out, "%d\n", v);
			break;
		case CONFIG_ENUM:
			memcpy(&v, field, sizeof(v));
			/*
			 * A value set by hand to no word dumps as one that
			 * fails to load, rather than as a silent default.
			 */
			word = config_word(e, v);
			fprintf(out, "%s\n", word ? word : "?");
			break;
		case CONFIG_STR:
			config_put_quoted(out, field, e->size);
			fputc('\n', out);
			break;
		}
	}
}
