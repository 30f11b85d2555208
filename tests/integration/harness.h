/*
 * harness.h - helpers for cmocka integration tests that run a real
 * ringchatd.
 *
 * Environment:
 *   RINGCHATD               path of the node binary (tests skip, exit 77,
 *                           when it is not set)
 *   RINGCHAT_SRCDIR         source tree, for scripts/services.sh
 *   RINGCHAT_MYSQL_SOCKET   passed as --mysql-socket when set
 *   RINGCHAT_REDIS_SOCKET   passed as --redis-socket when set
 *   RINGCHAT_TEST_LOGDIR    where node logs go (default /tmp)
 *   RINGCHAT_KEEP_LOGS      keep node logs even when every test passed
 *   RINGCHAT_NODE_WRAPPER   words put before the node binary by node_start
 *                           (split on blanks; the first an absolute
 *                           path), e.g. "/usr/bin/valgrind -q
 *                           --error-exitcode=99" (scripts/valgrind.sh);
 *                           node_run does not use it
 *
 * A test program looks like:
 *
 *   int main(void)
 *   {
 *           harness_init();
 *           return harness_done(cmocka_run_group_tests(tests, setup, teardown));
 *   }
 *
 * Nodes write their stderr (and stdout) into a log file drained by a
 * background thread, so a chatty node never blocks on a full pipe.
 * harness_done() prints the tail of every node's log when a test failed,
 * and kills nodes still running. Every node also dies with the test
 * process (PR_SET_PDEATHSIG), so a crashed test leaves no orphans.
 *
 * Thread rules: node_* and tc_* are meant for the test's main thread;
 * rc_client objects are single-threaded (see client.h).
 */
#ifndef RINGCHAT_HARNESS_H
#define RINGCHAT_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "ringchat/client.h"
#include "ringchat/protocol.h"

/* Timeout of one request in tc_* helpers. */
#define TC_CALL_TIMEOUT_MS 10000
/* How long node_start waits for the "listening on" line. */
#define NODE_START_TIMEOUT_MS 10000
/* How long node_stop waits after SIGTERM before it uses SIGKILL. */
#define NODE_STOP_TIMEOUT_MS 15000
/* Password of every user made by tc_signup_login*. */
#define TC_PASSWORD "correct-horse-battery"
/* Size of a username buffer (32 bytes + NUL). */
#define TC_NAME_MAX 33

struct node;

/*
 * Call first in main(): exits 77 (skip) when RINGCHATD is not set, and
 * ignores SIGPIPE so a write to a closed socket is an error, not a death.
 */
void harness_init(void);

/*
 * Call last with the number of failed tests: kills nodes still running,
 * prints the tail of every node log when failures > 0 (keeping the files)
 * or removes the logs otherwise. Returns the exit status for main().
 */
int harness_done(int failures);

/*
 * Starts [$RINGCHAT_NODE_WRAPPER] $RINGCHATD --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
 * --workers 2 [--mysql-socket S] [--redis-socket S] --hash-cost 1, then
 * the extra arguments (printf format, NULL or "" for none; split on
 * blanks, no quoting; later flags win over the defaults above). Waits
 * up to NODE_START_TIMEOUT_MS for the log line "listening on
 * 127.0.0.1:PORT" (lines naming "admin" or "metrics" are the admin
 * listener). Returns the node, or NULL after printing its output when it
 * exited or did not come up in time. The node stays in the harness's list
 * until harness_done(), so the struct lives until then.
 */
struct node *node_start(const char *extra_args_fmt, ...) __attribute__((format(printf, 1, 2)));

uint16_t node_port(const struct node *n);
/* UDP port of the node link ("link listening on" line), 0 if none. */
uint16_t node_link_port(const struct node *n);
pid_t node_pid(const struct node *n);
/* Port of the admin (/metrics) listener; waits up to 2 s; 0 if never seen. */
uint16_t node_admin_port(struct node *n);
/* Path of the node's log file. */
const char *node_log_path(const struct node *n);

/*
 * SIGTERM, then waits up to NODE_STOP_TIMEOUT_MS (then SIGKILL). Returns
 * the exit status (0..255), 128 + signal when a signal ended it, or -1
 * when it had to be killed or was already stopped. A status other than 0
 * prints the tail of the log. The log stays readable afterwards.
 */
int node_stop(struct node *n);

/* SIGKILL and reap. Returns as node_stop (normally 128 + SIGKILL). */
int node_kill(struct node *n);

/* True when the node's log (so far) contains text. */
bool node_log_contains(struct node *n, const char *text);
/* Waits up to timeout_ms for text to appear in the log. */
bool node_log_wait(struct node *n, const char *text, int timeout_ms);
/* Prints the last max_lines lines of the log to out. */
void node_dump_log(struct node *n, FILE *out, int max_lines);

/*
 * Runs $RINGCHATD with only the given arguments (printf format, split on
 * blanks), e.g. "--check-config --bogus 1", and returns its exit status
 * (as node_stop), with stdout and stderr together in out (NUL-terminated,
 * truncated to out_size). Kills it after timeout_ms.
 */
int node_run(char *out, size_t out_size, int timeout_ms, const char *args_fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Connects to the node; fails the test when it cannot. */
struct rc_client *tc_connect(struct node *n);
/*
 * The same from the loopback address src_ip ("127.0.0.2": any 127/8
 * address is local), so the node sees another client address. The client
 * library has no source-address option: this connects one more socket
 * bound to src_ip and puts it in place of the client's own (dup2); the
 * node sees the first connection close.
 */
struct rc_client *tc_connect_from(struct node *n, const char *src_ip);

/*
 * Runs redis-cli against the test Redis ($RINGCHAT_REDIS_SOCKET when set)
 * with args (printf format, passed through the shell as written) and puts
 * its output, trailing newlines cut, in out (may be NULL). Returns its
 * exit status, -1 when it could not run.
 */
int tc_redis_cli(char *out, size_t out_size, const char *args_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Sends cmd with the JSON built from json_fmt (printf format; NULL = empty
 * payload) and asserts a response with code OK. Returns its parsed
 * payload; the caller frees it with cJSON_Delete.
 */
cJSON *tc_call_ok(struct rc_client *c, uint16_t cmd, const char *json_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Sends cmd with json (NULL = empty) and returns the status code of the
 * response. Asserts that a response came and, when the code is not OK,
 * that it carries a non-empty "error" string (as the contract says).
 */
uint32_t tc_call_code(struct rc_client *c, uint16_t cmd, const char *json);

/* As tc_call_code, but also returns the parsed payload (caller frees). */
cJSON *tc_call(struct rc_client *c, uint16_t cmd, const char *json, uint32_t *code);

/*
 * Sends cmd with a printf-built payload (fmt NULL = empty) and fails the
 * test, naming the request, the expected and the received status and the
 * response, unless the status is want. Returns the response payload
 * (caller frees); tc_expect frees it.
 */
cJSON *tc_call_expect(struct rc_client *c, uint16_t cmd, uint32_t want, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define tc_expect(c, cmd, want, ...) cJSON_Delete(tc_call_expect(c, cmd, want, __VA_ARGS__))

/*
 * Fills name (TC_NAME_MAX bytes) with a username never used before:
 * prefix (cut to 12 bytes) + a per-run tag + a counter.
 */
void tc_unique_name(const char *prefix, char name[TC_NAME_MAX]);

/*
 * Signs up a new user (tc_unique_name(prefix), password TC_PASSWORD),
 * logs in on a new connection and returns it; *user_id (may be NULL)
 * receives the id. Fails the test on any error.
 */
struct rc_client *tc_signup_login(struct node *n, const char *prefix, int64_t *user_id);
/* Same, and the username is written to name (TC_NAME_MAX bytes). */
struct rc_client *tc_signup_login_as(struct node *n, const char *prefix, char name[TC_NAME_MAX],
				     int64_t *user_id);

/*
 * Waits up to timeout_ms for a push of cmd (other pushes stay queued in
 * the client) and returns its payload (caller frees); fails the test when
 * none comes.
 */
cJSON *tc_expect_push(struct rc_client *c, uint16_t cmd, int timeout_ms);
/* Fails the test when a push of cmd arrives within wait_ms. */
void tc_expect_no_push(struct rc_client *c, uint16_t cmd, int wait_ms);

/* Reads an integer field of a JSON object; fails the test if absent. */
int64_t tc_json_int(const cJSON *obj, const char *key);

/*
 * Pipelines n MSG_SENDs to user `to` (GROUP_SENDs to group `to` when group
 * is set) from c, texts "<prefix><i>", at most TC_SEND_WINDOW in flight,
 * and reads every response: all must be OK and come in request order
 * within TC_SEND_MS. ids (may be NULL) receives the msg_ids in order.
 * Pushes read meanwhile are dropped.
 */
#define TC_SEND_WINDOW 1000
#define TC_SEND_MS 60000
void tc_send_many(struct rc_client *c, int64_t to, bool group, int n, const char *prefix,
		  int64_t *ids);

/*
 * $RINGCHAT_SRCDIR/scripts/services.sh stop|start mysql|redis. Returns the
 * script's exit status, or -1 when it could not be run.
 */
int services_stop(const char *name);
int services_start(const char *name);

/*
 * Sends request (verbatim) to the node's admin port and reads until the
 * node closes. Returns the malloc'd NUL-terminated response; fails the
 * test on any socket error or after TC_ADMIN_TIMEOUT_MS.
 */
#define TC_ADMIN_TIMEOUT_MS 5000
#define TC_ADMIN_RESP_MAX (1u << 20)
char *tc_admin_http(struct node *n, const char *request);
/* The value of the unlabelled sample `name` in GET /metrics, or -1. */
int64_t tc_metric(struct node *n, const char *name);

/* Monotonic milliseconds, for timing assertions. */
int64_t tc_now_ms(void);
/* Sleeps ms milliseconds. */
void tc_sleep_ms(int ms);

#endif
