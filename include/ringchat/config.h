/*
 * config.h - the node's configuration: one table of typed entries (name,
 * type, default, bounds, help) drives the file parser, the command-line
 * flags, --check-config and the generated reference in docs.
 *
 * Sources, later ones winning: built-in defaults, the config file
 * (config/ringchatd.conf or --config FILE), then command-line flags
 * (--key value or --key=value; '-' and '_' are interchangeable in flags).
 *
 * File syntax: one "key value" or "key = value" per line; '#' starts a
 * comment; values may be double-quoted. Unknown keys and bad values are
 * errors: config_load prints one line naming the key (and file:line) and
 * the caller exits with status 2.
 */
#ifndef RINGCHAT_CONFIG_H
#define RINGCHAT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum durability { DURABILITY_STORED = 0, DURABILITY_RELAY = 1 };
enum cluster_route { CLUSTER_ROUTE_OFF = 0, CLUSTER_ROUTE_REDIS = 1, CLUSTER_ROUTE_UDP = 2 };
enum mysql_tls { MYSQL_TLS_OFF = 0, MYSQL_TLS_ON = 1, MYSQL_TLS_VERIFY = 2 };

struct config {
	/* network */
	char listen[128];            /* "host:port"; port 0 = pick a free one */
	int max_connections;         /* accepted at once; more are refused */
	int max_frame;               /* max payload a client may send, bytes */
	int idle_timeout_ms;         /* close a silent connection after this */
	int out_limit_bytes;         /* unsent output cap per connection */
	int frame_timeout_ms;        /* a started frame must be complete within this */
	int login_timeout_ms;        /* a connection must log in within this */
	int max_conns_per_addr;      /* connections per peer IPv4 address; 0 = no cap */
	int max_unauth_per_addr;     /* not-logged-in connections per address; 0 = no cap */
	int max_pending_frames;      /* frames of one connection handed on, not answered */
	int max_pending_bytes;       /* ... and their payload bytes */
	int admin_timeout_ms;        /* an admin (GET /metrics) client's whole exchange */
	int admin_max_clients;       /* admin clients served at once */
	char admin_listen[128];      /* "host:port" of GET /metrics; "" = off */
	/* threads and queues */
	int workers;                 /* 0 = number of online cores */
	int queue_depth;             /* per-worker queue capacity, items */
	/* node identity */
	int node_id;                 /* 0..31, unique in a cluster (5 bits of msg_id) */
	/* cluster (membership.h, inbox.h) */
	int cluster_route;           /* enum cluster_route */
	char link_listen[128];       /* UDP "host:port" of the node link */
	char link_advertise[128];    /* what peers send to; "" = link_listen's bound address */
	char cluster_secret[512];    /* node link key, or "@path" of a file holding it */
	int node_ttl_ms;             /* lease TTL of node_id; heartbeat every ttl/5 */
	int inbox_maxlen;            /* entries kept per node inbox stream (MAXLEN ~) */
	int cluster_queue_bytes;     /* bytes queued for other nodes, all peers together */
	/* logging */
	char log_level[16];          /* debug | info | warn | error */
	/* storage */
	char mysql_host[128];
	int mysql_port;
	char mysql_socket[256];      /* used instead of host:port when set */
	char mysql_user[64];
	char mysql_password[128];
	char mysql_db[64];
	char redis_host[128];
	int redis_port;
	char redis_socket[256];      /* used instead of host:port when set */
	char redis_password[128];    /* AUTH on every Redis connection; "" = none */
	int mysql_tls;               /* enum mysql_tls */
	char mysql_ca[256];          /* CA file for mysql_tls verify; "" = system */
	/* accounts */
	int hash_cost;               /* yescrypt cost factor (1..11) */
	int hash_threads;            /* threads that hash passwords (hasher.h) */
	int token_ttl_s;             /* session token lifetime */
	int login_concurrency;       /* logins processed at once per node */
	int login_fail_limit;        /* failed logins per window, per user/addr */
	int login_fail_window_s;
	int login_fail_addr_limit;   /* failed logins per window from one address */
	int login_fail_user_limit;   /* failures of one name before it is slowed */
	int login_fail_user_gap_ms;  /* a slowed name: one attempt per this */
	int signup_addr_limit;       /* SIGNUPs per window per address (0 = off) */
	int signup_window_s;
	/* social caps (friends.c, groups.c) */
	int friends_max;             /* friendships per user */
	int friend_requests_max;     /* pending requests to one user */
	int groups_created_max;      /* live groups a user owns */
	int groups_joined_max;       /* groups a user is a member of */
	int list_page_default;       /* FRIEND_LIST / GROUP_LIST without "limit" */
	/* presence */
	int presence_refresh_s;      /* refresh period; the TTL is 3x it */
	/* messaging */
	int durability;              /* enum durability; "stored" | "relay" */
	int text_max;                /* max text bytes of a message */
	int group_member_cap;
	int commit_batch_max;        /* rows per group-commit batch */
	int commit_interval_us;      /* least time between batch starts (0 = none) */
	int commit_bulk;             /* 1: message rows as one array-bound INSERT */
	int unread_defer_ms;         /* hold unread marks in memory this long (0 = off) */
	int rate_msgs_per_s;         /* per-connection request rate ... */
	int rate_burst;              /* ... and burst (token bucket) */
	int rate_recipients_per_s;   /* fan-out recipients per connection ... */
	int rate_recipients_burst;   /* ... and burst (second token bucket) */
};

/* Fills c with the built-in defaults. */
void config_defaults(struct config *c);

/*
 * Reads a config file into c. Returns 0, or -1 after printing one line to
 * err naming the file/line and the offending key. A missing file is an
 * error only when required is true.
 */
int config_load_file(struct config *c, const char *path, bool required, FILE *err);

/* Sets one key from text. Returns 0, or -1 after printing to err. */
int config_set(struct config *c, const char *key, const char *value, FILE *err);

/*
 * Full start-up parse of argv: defaults, then --config FILE (default
 * config/ringchatd.conf when it exists), then flags. Recognises
 * --check-config (*check_only = true) and --help (prints usage to out,
 * returns 1). Returns 0 on success, 1 after --help, -1 on error (one line
 * already printed to err; the caller exits 2).
 */
int config_from_args(struct config *c, int argc, char **argv, bool *check_only,
		     FILE *out, FILE *err);

/* Writes every key with its current value as a valid config file. */
void config_dump(const struct config *c, FILE *out);

#endif
