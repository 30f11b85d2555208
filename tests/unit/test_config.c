/*
 * test_config.c - the configuration table as a user meets it: defaults,
 * config files, flags, error lines, --help, --check-config, config_dump,
 * and the shipped config/ringchatd.conf. Also the log line format, since
 * log_level is validated by the log module.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ringchat/config.h"
#include "ringchat/log.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Captures what a function prints to a FILE *. */
struct capture {
	char *text;
	size_t len;
	FILE *f;
};

static FILE *capture_open(struct capture *cap)
{
	cap->text = NULL;
	cap->len = 0;
	cap->f = open_memstream(&cap->text, &cap->len);
	assert_non_null(cap->f);
	return cap->f;
}

static const char *capture_text(struct capture *cap)
{
	fflush(cap->f);
	return cap->text ? cap->text : "";
}

static void capture_close(struct capture *cap)
{
	fclose(cap->f);
	free(cap->text);
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* Writes text to a new temporary file; path receives its name. */
static void write_tmp(char path[64], const char *text)
{
	int fd;

	strcpy(path, "/tmp/ringchat-test-config-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(close(fd), 0);
}

static char shipped_path[PATH_MAX];

/*
 * The shipped file, found from RINGCHAT_SRCDIR or else from where this
 * source lives (tests/unit/test_config.c below the repository root).
 * Resolved once at start, before any test changes directory; outside a
 * test, so failures are reported by hand.
 */
static int find_shipped_config(void)
{
	static const char tail[] = "tests/unit/test_config.c";
	const char *src = getenv("RINGCHAT_SRCDIR");
	const char *file = __FILE__;
	size_t n = strlen(file);
	char rel[PATH_MAX];

	if (src) {
		snprintf(rel, sizeof(rel), "%s/config/ringchatd.conf", src);
	} else {
		if (n < sizeof(tail) - 1 || strcmp(file + n - (sizeof(tail) - 1), tail) != 0) {
			fprintf(stderr, "test_config: unexpected source path %s\n", file);
			return -1;
		}
		snprintf(rel, sizeof(rel), "%.*sconfig/ringchatd.conf",
			 (int)(n - (sizeof(tail) - 1)), file);
	}
	if (!realpath(rel, shipped_path)) {
		fprintf(stderr, "test_config: cannot find the shipped config at %s: %s\n", rel,
			strerror(errno));
		return -1;
	}
	return 0;
}

static void check_defaults(const struct config *c)
{
	assert_string_equal(c->listen, "127.0.0.1:7700");
	assert_int_equal(c->max_connections, 100000);
	assert_int_equal(c->max_frame, 65536);
	assert_int_equal(c->idle_timeout_ms, 300000);
	assert_int_equal(c->out_limit_bytes, 8388608);
	assert_string_equal(c->admin_listen, "127.0.0.1:7780");
	assert_int_equal(c->workers, 0);
	assert_int_equal(c->queue_depth, 8192);
	assert_int_equal(c->node_id, 1);
	assert_string_equal(c->log_level, "info");
	assert_string_equal(c->mysql_host, "127.0.0.1");
	assert_int_equal(c->mysql_port, 13306);
	assert_string_equal(c->mysql_socket, "var/run/mysqld.sock");
	assert_string_equal(c->mysql_user, "ringchat");
	assert_string_equal(c->mysql_password, "ringchat");
	assert_string_equal(c->mysql_db, "ringchat");
	assert_string_equal(c->redis_host, "127.0.0.1");
	assert_int_equal(c->redis_port, 16379);
	assert_string_equal(c->redis_socket, "var/run/redis.sock");
	assert_int_equal(c->hash_cost, 5);
	assert_int_equal(c->token_ttl_s, 604800);
	assert_int_equal(c->login_concurrency, 64);
	assert_int_equal(c->login_fail_limit, 10);
	assert_int_equal(c->login_fail_window_s, 60);
	assert_int_equal(c->durability, DURABILITY_STORED);
	assert_int_equal(c->text_max, 4096);
	assert_int_equal(c->group_member_cap, 500);
	assert_int_equal(c->commit_batch_max, 1024);
	assert_int_equal(c->rate_msgs_per_s, 2000);
	assert_int_equal(c->rate_burst, 2000);
}

static void test_defaults(void **state)
{
	struct config c;

	(void)state;
	memset(&c, 0xa5, sizeof(c));
	config_defaults(&c);
	check_defaults(&c);
}

/* Runs fn with a fresh empty directory as the working directory. */
static void in_empty_dir(void (*fn)(const char *dir))
{
	char dir[] = "/tmp/ringchat-test-cwd-XXXXXX";
	int back = open(".", O_RDONLY | O_DIRECTORY);

	assert_true(back >= 0);
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chdir(dir), 0);
	fn(dir);
	assert_int_equal(fchdir(back), 0);
	close(back);
	assert_int_equal(rmdir(dir), 0);
}

static void default_file_body(const char *dir)
{
	char *argv[] = {"ringchatd"};
	struct config c, d;
	struct capture err;
	FILE *f;

	(void)dir;
	config_defaults(&d);
	/* No config/ringchatd.conf here: the defaults, and no complaint. */
	capture_open(&err);
	assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, stdout, err.f), 0);
	assert_string_equal(capture_text(&err), "");
	assert_memory_equal(&c, &d, sizeof(c));
	capture_close(&err);

	/* Once it exists it is read without being named... */
	assert_int_equal(mkdir("config", 0700), 0);
	f = fopen("config/ringchatd.conf", "w");
	assert_non_null(f);
	fputs("workers 3\n", f);
	fclose(f);
	assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, stdout, stderr), 0);
	assert_int_equal(c.workers, 3);

	/* ...and its errors count. */
	f = fopen("config/ringchatd.conf", "w");
	assert_non_null(f);
	fputs("workers many\n", f);
	fclose(f);
	capture_open(&err);
	assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, stdout, err.f), -1);
	assert_contains(capture_text(&err), "config/ringchatd.conf:1: key 'workers'");
	capture_close(&err);

	unlink("config/ringchatd.conf");
	rmdir("config");
}

static void test_default_file_when_present(void **state)
{
	(void)state;
	in_empty_dir(default_file_body);
}

/* Every key, none at its default, in each syntax the format allows. */
/* clang-format off */
static const char every_key[] =
	"# every key\n"
	"\n"
	"listen 0.0.0.0:7701\n"
	"max_connections = 5000\n"
	"  max_frame\t131072   # trailing comment\n"
	"idle_timeout_ms=60000\n"
	"out_limit_bytes 65536\n"
	"admin_listen \"\"\n"
	"workers 4\n"
	"queue_depth 16\n"
	"node_id 31\n"
	"log_level \"debug\"\n"
	"mysql_host db.internal\n"
	"mysql_port 3306\n"
	"mysql_socket \"\"\n"
	"mysql_user chat\n"
	"mysql_password \"p#ss \\\"word\\\" \\\\x\"  # quoted keeps '#'\n"
	"mysql_db chatdb\n"
	"redis_host redis.internal\n"
	"redis_port 6379\n"
	"redis_socket /run/redis.sock\r\n"
	"hash_cost 11\n"
	"token_ttl_s 60\n"
	"login_concurrency 8\n"
	"login_fail_limit 3\n"
	"login_fail_window_s 86400\n"
	"durability relay\n"
	"text_max 65536\n"
	"group_member_cap 2\n"
	"commit_batch_max 1\n"
	"rate_msgs_per_s 1000000\n"
	"rate_burst 1";
/* clang-format on */

static void check_every_key(const struct config *c)
{
	assert_string_equal(c->listen, "0.0.0.0:7701");
	assert_int_equal(c->max_connections, 5000);
	assert_int_equal(c->max_frame, 131072);
	assert_int_equal(c->idle_timeout_ms, 60000);
	assert_int_equal(c->out_limit_bytes, 65536);
	assert_string_equal(c->admin_listen, "");
	assert_int_equal(c->workers, 4);
	assert_int_equal(c->queue_depth, 16);
	assert_int_equal(c->node_id, 31);
	assert_string_equal(c->log_level, "debug");
	assert_string_equal(c->mysql_host, "db.internal");
	assert_int_equal(c->mysql_port, 3306);
	assert_string_equal(c->mysql_socket, "");
	assert_string_equal(c->mysql_user, "chat");
	assert_string_equal(c->mysql_password, "p#ss \"word\" \\x");
	assert_string_equal(c->mysql_db, "chatdb");
	assert_string_equal(c->redis_host, "redis.internal");
	assert_int_equal(c->redis_port, 6379);
	assert_string_equal(c->redis_socket, "/run/redis.sock");
	assert_int_equal(c->hash_cost, 11);
	assert_int_equal(c->token_ttl_s, 60);
	assert_int_equal(c->login_concurrency, 8);
	assert_int_equal(c->login_fail_limit, 3);
	assert_int_equal(c->login_fail_window_s, 86400);
	assert_int_equal(c->durability, DURABILITY_RELAY);
	assert_int_equal(c->text_max, 65536);
	assert_int_equal(c->group_member_cap, 2);
	assert_int_equal(c->commit_batch_max, 1);
	assert_int_equal(c->rate_msgs_per_s, 1000000);
	assert_int_equal(c->rate_burst, 1);
}

static void test_file_every_key(void **state)
{
	struct capture err;
	struct config c;
	char path[64];

	(void)state;
	write_tmp(path, every_key);
	config_defaults(&c);
	capture_open(&err);
	assert_int_equal(config_load_file(&c, path, true, err.f), 0);
	assert_string_equal(capture_text(&err), "");
	capture_close(&err);
	check_every_key(&c);
	unlink(path);
}

/* Loads text as a file; expects failure with one line holding each needle. */
static void expect_file_error(const char *text, const char *const *needles)
{
	struct capture err;
	struct config c;
	char path[64], where[256];
	const char *out;

	write_tmp(path, text);
	config_defaults(&c);
	capture_open(&err);
	assert_int_equal(config_load_file(&c, path, true, err.f), -1);
	out = capture_text(&err);
	assert_int_equal(count_lines(out), 1);
	for (; *needles; needles++) {
		/* "@" stands for the temporary path. */
		const char *at = strchr(*needles, '@');

		if (at) {
			snprintf(where, sizeof(where), "%.*s%s%s", (int)(at - *needles), *needles,
				 path, at + 1);
			assert_contains(out, where);
		} else {
			assert_contains(out, *needles);
		}
	}
	capture_close(&err);
	unlink(path);
}

static void test_file_errors(void **state)
{
	(void)state;
	expect_file_error("# comment\n\nfoo 1\nworkers 2\n",
			  (const char *const[]){"ringchatd: config: @:3: unknown key 'foo'", NULL});
	expect_file_error(
	    "workers 2\nmax_frame abc\n",
	    (const char *const[]){"ringchatd: config: @:2: key 'max_frame': value 'abc' is "
				  "not an integer (allowed 64..16777216)",
				  NULL});
	expect_file_error("text_max 0\n",
			  (const char *const[]){"@:1: key 'text_max'", "'0'", "1..65536", NULL});
	expect_file_error("durability fast\n",
			  (const char *const[]){"@:1: key 'durability'", "'fast'", NULL});
	expect_file_error("listen 127.0.0.1\n",
			  (const char *const[]){"@:1: key 'listen'", "'127.0.0.1'", NULL});
	expect_file_error("mysql_password\n", (const char *const[]){"@:1: key 'mysql_password'",
								    "missing value", NULL});
	expect_file_error("mysql_password \"abc\n",
			  (const char *const[]){"@:1: key 'mysql_password'", "unterminated", NULL});
	expect_file_error("mysql_user \"a\" b\n",
			  (const char *const[]){"@:1: key 'mysql_user'", NULL});
	expect_file_error("= 5\n", (const char *const[]){"@:1:", NULL});
}

static void test_file_missing(void **state)
{
	struct capture err;
	struct config c, d;

	(void)state;
	config_defaults(&c);
	config_defaults(&d);
	capture_open(&err);
	assert_int_equal(config_load_file(&c, "/nonexistent/ringchatd.conf", false, err.f), 0);
	assert_string_equal(capture_text(&err), "");
	assert_memory_equal(&c, &d, sizeof(c));
	assert_int_equal(config_load_file(&c, "/nonexistent/ringchatd.conf", true, err.f), -1);
	assert_contains(capture_text(&err), "/nonexistent/ringchatd.conf");
	assert_int_equal(count_lines(capture_text(&err)), 1);
	capture_close(&err);
}

static void test_long_line(void **state)
{
	char text[2100], path[64];
	struct capture err;
	struct config c;

	(void)state;
	memset(text, 'a', sizeof(text) - 2);
	memcpy(text, "mysql_db ", 9);
	text[sizeof(text) - 2] = '\n';
	text[sizeof(text) - 1] = '\0';
	write_tmp(path, text);
	config_defaults(&c);
	capture_open(&err);
	assert_int_equal(config_load_file(&c, path, true, err.f), -1);
	assert_contains(capture_text(&err), ":1:");
	assert_string_equal(c.mysql_db, "ringchat");
	capture_close(&err);
	unlink(path);
}

struct bad_value {
	const char *key, *value;
	const char *needle[3];
};

/* Each rejected by config_set: one line naming the key, c unchanged. */
/* clang-format off */
static const struct bad_value bad_values[] = {
	{"max_frame", "abc", {"key 'max_frame': value 'abc' is not an integer (allowed 64..16777216)"}},
	{"max_frame", "10", {"key 'max_frame': value '10' is out of range (allowed 64..16777216)"}},
	{"max_frame", "16777217", {"key 'max_frame'", "out of range", "64..16777216"}},
	{"max_frame", "99999999999999999999999", {"key 'max_frame'", "out of range"}},
	{"max_frame", "", {"key 'max_frame'", "not an integer"}},
	{"max_frame", " 100", {"key 'max_frame'", "not an integer"}},
	{"max_frame", "+100", {"key 'max_frame'", "not an integer"}},
	{"max_frame", "0x100", {"key 'max_frame'", "not an integer"}},
	{"max_frame", "100k", {"key 'max_frame'", "not an integer"}},
	{"max_frame", "-", {"key 'max_frame'", "not an integer"}},
	{"workers", "-1", {"key 'workers'", "'-1'", "0..256"}},
	{"node_id", "32", {"key 'node_id'", "0..31"}},
	{"mysql_port", "0", {"key 'mysql_port'", "1..65535"}},
	{"hash_cost", "12", {"key 'hash_cost'", "1..11"}},
	{"durability", "fast", {"key 'durability'", "'fast'", "stored|relay"}},
	{"durability", "STORED", {"key 'durability'", "stored|relay"}},
	{"log_level", "verbose", {"key 'log_level'", "'verbose'", "debug|info|warn|error"}},
	{"mysql_user",
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	 {"key 'mysql_user'", "too long", "63"}},
	{"mysql_password", "a\nb", {"key 'mysql_password'", "control character"}},
	{"listen", "7700", {"key 'listen'", "'7700'", "host:port"}},
	{"listen", "127.0.0.1", {"key 'listen'"}},
	{"listen", "127.0.0.1:", {"key 'listen'"}},
	{"listen", ":7700", {"key 'listen'"}},
	{"listen", "127.0.0.1:65536", {"key 'listen'"}},
	{"listen", "127.0.0.1:77a", {"key 'listen'"}},
	{"listen", "1.2.3:7700", {"key 'listen'"}},
	{"listen", "example.com:7700", {"key 'listen'"}},
	{"listen", "", {"key 'listen'"}},
	{"admin_listen", "metrics", {"key 'admin_listen'", "'metrics'"}},
	{"nope", "1", {"unknown key 'nope'"}},
};
/* clang-format on */

static void test_bad_values(void **state)
{
	struct capture err;
	struct config c, before;
	const char *out;
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		const struct bad_value *b = &bad_values[i];

		config_defaults(&c);
		before = c;
		capture_open(&err);
		if (config_set(&c, b->key, b->value, err.f) != -1)
			fail_msg("%s '%s' was accepted", b->key, b->value);
		out = capture_text(&err);
		assert_true(strncmp(out, "ringchatd: config: ", 19) == 0);
		assert_int_equal(count_lines(out), 1);
		for (j = 0; j < 3 && b->needle[j]; j++)
			assert_contains(out, b->needle[j]);
		assert_memory_equal(&c, &before, sizeof(c));
		capture_close(&err);
	}
}

static void test_good_edges(void **state)
{
	static const char *const good[][2] = {
	    {"max_frame", "64"},
	    {"max_frame", "16777216"},
	    {"max_frame", "0065536"},
	    {"listen", "localhost:0"},
	    {"listen", "0.0.0.0:65535"},
	    {"admin_listen", ""},
	    {"log_level", "error"},
	    {"durability", "stored"},
	    {"mysql_user", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
	    {"max-connections", "1"},
	};
	struct config c;
	size_t i;

	(void)state;
	config_defaults(&c);
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (config_set(&c, good[i][0], good[i][1], stderr) != 0)
			fail_msg("%s '%s' was rejected", good[i][0], good[i][1]);
	assert_int_equal(c.max_frame, 65536);
	assert_string_equal(c.listen, "0.0.0.0:65535");
	assert_int_equal(strlen(c.mysql_user), 63);
	assert_int_equal(c.max_connections, 1);
}

static void test_flags_override_file(void **state)
{
	struct config c;
	char path[64];

	(void)state;
	write_tmp(path, "workers 3\nmax_frame 1000\nnode_id 9\n");
	{
		/* A flag before --config still beats the file. */
		char *argv[] = {"ringchatd", "--workers", "7",
				"--config",  path,	  "--max-frame=2000"};

		assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, stdout, stderr), 0);
		assert_int_equal(c.workers, 7);
		assert_int_equal(c.max_frame, 2000);
		assert_int_equal(c.node_id, 9);
	}
	{
		/* The same key twice: the last flag wins. */
		char *argv[] = {"ringchatd", "--config=/dev/null", "--config", path, "--node-id",
				"4",	     "--node_id=5"};

		assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, stdout, stderr), 0);
		assert_int_equal(c.node_id, 5);
		assert_int_equal(c.workers, 3);
	}
	unlink(path);
}

static void test_flag_forms(void **state)
{
	char *argv[] = {"ringchatd",
			"--config",
			"/dev/null",
			"--max-frame=100",
			"--queue_depth",
			"32",
			"--idle-timeout_ms=5000",
			"--login_fail-limit",
			"7",
			"--mysql-password=--x=y",
			"--admin-listen",
			"",
			"--redis-socket=",
			"--durability",
			"relay",
			"--listen",
			"localhost:0",
			"--workers",
			"-1"};
	struct capture err;
	struct config c;

	(void)state;
	/* The last flag is out of range: nothing is half-applied silently. */
	capture_open(&err);
	assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, stdout, err.f), -1);
	assert_contains(capture_text(&err), "key 'workers': value '-1' is out of range");
	capture_close(&err);

	argv[ARGC(argv) - 1] = "2";
	assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, stdout, stderr), 0);
	assert_int_equal(c.max_frame, 100);
	assert_int_equal(c.queue_depth, 32);
	assert_int_equal(c.idle_timeout_ms, 5000);
	assert_int_equal(c.login_fail_limit, 7);
	assert_string_equal(c.mysql_password, "--x=y");
	assert_string_equal(c.admin_listen, "");
	assert_string_equal(c.redis_socket, "");
	assert_int_equal(c.durability, DURABILITY_RELAY);
	assert_string_equal(c.listen, "localhost:0");
	assert_int_equal(c.workers, 2);
}

struct bad_args {
	const char *argv[4];
	const char *needle;
};

static void test_flag_errors(void **state)
{
	static const struct bad_args bad[] = {
	    {{"--workers"}, "option '--workers' needs a value"},
	    {{"--workers", "--node-id", "3"}, "option '--workers' needs a value"},
	    {{"--config"}, "option '--config' needs a value"},
	    {{"serve"}, "unexpected argument 'serve'"},
	    {{"--workers", "2", "extra"}, "unexpected argument 'extra'"},
	    {{"-w", "2"}, "unexpected argument '-w'"},
	    {{"--"}, "unexpected argument '--'"},
	    {{"--nope", "1"}, "unknown option '--nope'"},
	    {{"--workers", "many"}, "key 'workers': value 'many' is not an integer"},
	    {{"--check-config=yes"}, "'--check-config' takes no value"},
	    {{"--config", "/nonexistent/x.conf"}, "/nonexistent/x.conf"},
	};
	struct capture err;
	struct config c;
	char *argv[5];
	size_t i;
	int argc;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		argv[0] = "ringchatd";
		for (argc = 1; argc < 5 && bad[i].argv[argc - 1]; argc++)
			argv[argc] = (char *)bad[i].argv[argc - 1];
		capture_open(&err);
		assert_int_equal(config_from_args(&c, argc, argv, NULL, stdout, err.f), -1);
		assert_contains(capture_text(&err), bad[i].needle);
		assert_int_equal(count_lines(capture_text(&err)), 1);
		capture_close(&err);
	}
}

static void test_check_config(void **state)
{
	char *with[] = {"ringchatd", "--config", "/dev/null", "--check-config"};
	char *without[] = {"ringchatd", "--config", "/dev/null"};
	char *underscore[] = {"ringchatd", "--check_config", "--config", "/dev/null"};
	struct config c;
	bool check;

	(void)state;
	check = false;
	assert_int_equal(config_from_args(&c, ARGC(with), with, &check, stdout, stderr), 0);
	assert_true(check);
	check = true;
	assert_int_equal(config_from_args(&c, ARGC(without), without, &check, stdout, stderr), 0);
	assert_false(check);
	check = false;
	assert_int_equal(config_from_args(&c, ARGC(underscore), underscore, &check, stdout, stderr),
			 0);
	assert_true(check);
}

/* Calls fn(key, arg) for each key config_dump writes. */
static void for_each_dumped_key(void (*fn)(const char *key, void *arg), void *arg)
{
	struct capture dump;
	struct config c;
	char *line, *save, *sp;
	int keys = 0;

	config_defaults(&c);
	capture_open(&dump);
	config_dump(&c, dump.f);
	capture_text(&dump);
	for (line = strtok_r(dump.text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#')
			continue;
		sp = strchr(line, ' ');
		assert_non_null(sp);
		*sp = '\0';
		fn(line, arg);
		keys++;
	}
	/* One key per field of struct config. */
	assert_int_equal(keys, 65);
	capture_close(&dump);
}

static void help_has_key(const char *key, void *arg)
{
	char flag[80];
	size_t i;

	snprintf(flag, sizeof(flag), "--%s ", key);
	for (i = 0; flag[i]; i++)
		if (flag[i] == '_')
			flag[i] = '-';
	assert_contains(arg, flag);
}

static void test_help(void **state)
{
	char *argv[] = {"ringchatd", "--workers", "2", "--help"};
	char *short_argv[] = {"ringchatd", "-h"};
	struct capture out, err;
	struct config c;
	const char *text;

	(void)state;
	capture_open(&out);
	capture_open(&err);
	assert_int_equal(config_from_args(&c, ARGC(argv), argv, NULL, out.f, err.f), 1);
	text = capture_text(&out);
	assert_string_equal(capture_text(&err), "");
	assert_contains(text, "usage: ringchatd");
	assert_contains(text, "--config FILE");
	assert_contains(text, "--check-config");
	assert_contains(text, "--max-frame N");
	assert_contains(text, "default 65536, allowed 64..16777216");
	assert_contains(text, "--durability stored|relay");
	assert_contains(text, "default \"127.0.0.1:7700\"");
	for_each_dumped_key(help_has_key, (void *)text);
	capture_close(&out);
	capture_close(&err);

	capture_open(&out);
	assert_int_equal(config_from_args(&c, ARGC(short_argv), short_argv, NULL, out.f, stderr),
			 1);
	assert_contains(capture_text(&out), "--rate-burst N");
	capture_close(&out);
}

/* Dumps c, loads the dump over the defaults, and expects c back exactly. */
static void round_trip(const struct config *c)
{
	struct capture dump, err;
	struct config back;
	char path[64];

	capture_open(&dump);
	config_dump(c, dump.f);
	write_tmp(path, capture_text(&dump));
	capture_close(&dump);

	config_defaults(&back);
	capture_open(&err);
	assert_int_equal(config_load_file(&back, path, true, err.f), 0);
	assert_string_equal(capture_text(&err), "");
	capture_close(&err);
	assert_memory_equal(&back, c, sizeof(back));
	unlink(path);
}

static void test_dump_round_trip(void **state)
{
	char path[64];
	struct config c;

	(void)state;
	config_defaults(&c);
	round_trip(&c);

	write_tmp(path, every_key);
	assert_int_equal(config_load_file(&c, path, true, stderr), 0);
	unlink(path);
	assert_int_equal(config_set(&c, "mysql_db", "# not a comment ", stderr), 0);
	assert_int_equal(config_set(&c, "redis_host", "\\\"\\", stderr), 0);
	round_trip(&c);
}

struct shipped {
	const char *text;
};

/* Each key has a line of its own in the shipped file, a comment above it. */
static void shipped_has_key(const char *key, void *arg)
{
	const struct shipped *s = arg;
	const char *p = s->text, *prev;
	size_t n = strlen(key);

	for (;;) {
		p = strstr(p, key);
		if (!p)
			fail_msg("key %s is missing from %s", key, shipped_path);
		if ((p == s->text || p[-1] == '\n') && p[n] == ' ')
			break;
		p += n;
	}
	assert_true(p - s->text >= 2);
	for (prev = p - 2; prev > s->text && prev[-1] != '\n'; prev--)
		;
	if (prev[0] != '#')
		fail_msg("key %s has no comment line above it in %s", key, shipped_path);
}

static void test_shipped_config(void **state)
{
	struct capture err;
	struct config c, d;
	struct shipped s;
	char text[16384];
	size_t n;
	FILE *f;

	(void)state;
	config_defaults(&c);
	config_defaults(&d);
	capture_open(&err);
	assert_int_equal(config_load_file(&c, shipped_path, true, err.f), 0);
	assert_string_equal(capture_text(&err), "");
	capture_close(&err);
	/* It documents the defaults, so loading it changes nothing, except
	 * the cluster secret: the file carries a marked development secret,
	 * while a node given none has none (cluster_route udp then refuses
	 * to start rather than run with a public key). */
	assert_true(strlen(c.cluster_secret) >= 32);
	assert_string_equal(d.cluster_secret, "");
	memcpy(d.cluster_secret, c.cluster_secret, sizeof(d.cluster_secret));
	assert_memory_equal(&c, &d, sizeof(c));

	f = fopen(shipped_path, "r");
	assert_non_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	assert_true(feof(f));
	fclose(f);
	text[n] = '\0';
	s.text = text;
	for_each_dumped_key(shipped_has_key, &s);
}

static void test_log_level_parse(void **state)
{
	(void)state;
	assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
	assert_int_equal(log_level_parse("info"), LOG_INFO);
	assert_int_equal(log_level_parse("warn"), LOG_WARN);
	assert_int_equal(log_level_parse("error"), LOG_ERROR);
	assert_int_equal(log_level_parse("warning"), -1);
	assert_int_equal(log_level_parse(""), -1);
	assert_int_equal(log_level_parse(NULL), -1);
	assert_int_equal(log_min_level, LOG_INFO);
}

/*
 * Runs fn with stderr sent into a pipe and returns what it wrote (at most
 * size - 1 bytes; the pipe holds more than one log line).
 */
static size_t capture_stderr(void (*fn)(void), char *buf, size_t size)
{
	int fds[2], saved;
	ssize_t n;
	size_t len = 0;

	assert_int_equal(pipe(fds), 0);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
	close(fds[1]);
	fn();
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	while (len < size - 1 && (n = read(fds[0], buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	close(fds[0]);
	buf[len] = '\0';
	return len;
}

static int evaluated;

static int count_evaluation(void)
{
	return ++evaluated;
}

static void log_some(void)
{
	log_warn("conn=%d event=%s", 42, "connect");
	log_debug("hidden %d", count_evaluation());
}

static void log_huge(void)
{
	static char big[10000];

	memset(big, 'x', sizeof(big) - 1);
	log_error("%s", big);
}

static void test_log_line(void **state)
{
	char buf[16384];
	regex_t re;
	size_t n;

	(void)state;
	evaluated = 0;
	n = capture_stderr(log_some, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(
	    regcomp(&re,
		    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
		    "warn conn=42 event=connect\n$",
		    REG_EXTENDED),
	    0);
	if (regexec(&re, buf, 0, NULL, 0) != 0)
		fail_msg("unexpected log output: \"%s\"", buf);
	regfree(&re);
	/* Below the level, the arguments are not even evaluated. */
	assert_int_equal(evaluated, 0);

	n = capture_stderr(log_huge, buf, sizeof(buf));
	assert_true(n <= 4096);
	assert_true(n > 4000);
	assert_int_equal(count_lines(buf), 1);
	assert_memory_equal(buf + n - 4, "...\n", 4);
	assert_non_null(strstr(buf, "Z error xxxx"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_default_file_when_present),
	    cmocka_unit_test(test_file_every_key),
	    cmocka_unit_test(test_file_errors),
	    cmocka_unit_test(test_file_missing),
	    cmocka_unit_test(test_long_line),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_good_edges),
	    cmocka_unit_test(test_flags_override_file),
	    cmocka_unit_test(test_flag_forms),
	    cmocka_unit_test(test_flag_errors),
	    cmocka_unit_test(test_check_config),
	    cmocka_unit_test(test_help),
	    cmocka_unit_test(test_dump_round_trip),
	    cmocka_unit_test(test_shipped_config),
	    cmocka_unit_test(test_log_level_parse),
	    cmocka_unit_test(test_log_line),
	};

	if (find_shipped_config() != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
