/*
 * test_sock.c - the host:port parser shared by config.c and the
 * listeners, and the TCP / UDP sockets it opens (loopback only).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringchat/sock.h"

static void test_parse_accepts(void **state)
{
	struct sockaddr_in sa;
	char text[SOCK_ADDR_STRLEN];

	(void)state;
	assert_int_equal(sock_parse_hostport("127.0.0.1:7700", &sa), 0);
	assert_int_equal(sa.sin_family, AF_INET);
	assert_int_equal(ntohs(sa.sin_port), 7700);
	assert_int_equal(ntohl(sa.sin_addr.s_addr), 0x7f000001);
	assert_int_equal(sock_parse_hostport("localhost:0", &sa), 0);
	assert_int_equal(ntohl(sa.sin_addr.s_addr), INADDR_LOOPBACK);
	assert_int_equal(ntohs(sa.sin_port), 0);
	assert_int_equal(sock_parse_hostport("0.0.0.0:65535", &sa), 0);
	assert_int_equal(ntohs(sa.sin_port), 65535);
	sock_format(&sa, text, sizeof(text));
	assert_string_equal(text, "0.0.0.0:65535");
}

static void test_parse_refuses(void **state)
{
	static const char *const bad[] = {
		"7700", "127.0.0.1", "127.0.0.1:", ":7700", "127.0.0.1:65536",
		"127.0.0.1:77a", "127.0.0.1: 80", "127.0.0.1:+80", "127.0.0.1:123456",
		"1.2.3:7700", "example.com:7700", "", "[::1]:7700",
	};
	struct sockaddr_in sa;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (sock_parse_hostport(bad[i], &sa) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
}

static void test_tcp_listener_reports_bound_port(void **state)
{
	char bound[SOCK_ADDR_STRLEN];
	struct sockaddr_in sa;
	int lfd, cfd, afd;

	(void)state;
	lfd = sock_listen_tcp("127.0.0.1:0", 8, bound, sizeof(bound));
	assert_true(lfd >= 0);
	assert_int_equal(sock_parse_hostport(bound, &sa), 0);
	assert_true(ntohs(sa.sin_port) != 0); /* the port the kernel chose */
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	afd = accept(lfd, NULL, NULL);
	assert_true(afd >= 0);
	close(afd);
	close(cfd);
	close(lfd);
	assert_int_equal(sock_listen_tcp("nowhere:1", 8, NULL, 0), -EINVAL);
}

static void test_udp_bind_exchanges_a_datagram(void **state)
{
	char bound_a[SOCK_ADDR_STRLEN], bound_b[SOCK_ADDR_STRLEN], buf[8];
	struct sockaddr_in sb;
	int a, b;

	(void)state;
	a = sock_bind_udp("127.0.0.1:0", bound_a, sizeof(bound_a));
	b = sock_bind_udp("127.0.0.1:0", bound_b, sizeof(bound_b));
	assert_true(a >= 0 && b >= 0);
	assert_string_not_equal(bound_a, bound_b);
	assert_int_equal(sock_parse_hostport(bound_b, &sb), 0);
	assert_int_equal(sendto(a, "ping", 4, 0, (struct sockaddr *)&sb, sizeof(sb)), 4);
	/* non-blocking socket: wait (bounded) until the datagram is there */
	struct pollfd p = { .fd = b, .events = POLLIN };
	ssize_t got;

	assert_int_equal(poll(&p, 1, 2000), 1);
	got = recv(b, buf, sizeof(buf), 0);
	assert_int_equal(got, 4);
	assert_memory_equal(buf, "ping", 4);
	close(a);
	close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_accepts),
	    cmocka_unit_test(test_parse_refuses),
	    cmocka_unit_test(test_tcp_listener_reports_bound_port),
	    cmocka_unit_test(test_udp_bind_exchanges_a_datagram),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
