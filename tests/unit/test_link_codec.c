/*
 * test_link_codec.c - node-link datagram header and records: exact byte
 * layout, round trips, and every way a header or record can be malformed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ringchat/link_codec.h"

static struct link_hdr sample_hdr(void)
{
	struct link_hdr h = {
	    .magic = LINK_MAGIC,
	    .version = LINK_VERSION,
	    .flags = LINK_F_DATA | LINK_F_ACK,
	    .len = 7,
	    .src_node = 0x01020304,
	    .dst_node = 0x05060708,
	    .src_epoch = 0x1112131415161718ull,
	    .dst_epoch = 0x2122232425262728ull,
	    .pn = 0x3132333435363738ull,
	    .stream = 0x41424344,
	    .seq = 0x51525354,
	    .ack_stream = 0x61626364,
	    .ack = 0x71727374,
	    .sack = 0x8182838485868788ull,
	};
	for (int i = 0; i < LINK_MAC_BYTES; i++)
		h.check[i] = (uint8_t)(0xA0 + i);
	return h;
}

/* A whole datagram: header + len payload bytes (one valid record of len-6). */
static size_t build(uint8_t *buf, const struct link_hdr *h)
{
	link_hdr_encode(buf, h);
	memset(buf + LINK_HDR_BYTES, 0x5A, h->len);
	return LINK_HDR_BYTES + (size_t)h->len;
}

static void test_layout_is_big_endian_at_documented_offsets(void **state)
{
	(void)state;
	struct link_hdr h = sample_hdr();
	uint8_t b[LINK_HDR_BYTES];
	static const uint8_t want[LINK_HDR_BYTES] = {
	    'R',  'C',	'L',  '1',  1,	  0x03, 0x00, 0x07, /* magic ver flags len */
	    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* src_node dst_node */
	    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* src_epoch */
	    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, /* dst_epoch */
	    0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, /* pn */
	    0x41, 0x42, 0x43, 0x44, 0x51, 0x52, 0x53, 0x54, /* stream seq */
	    0x61, 0x62, 0x63, 0x64, 0x71, 0x72, 0x73, 0x74, /* ack_stream ack */
	    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, /* sack */
	    0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, /* check */
	    0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF,
	};
	link_hdr_encode(b, &h);
	assert_memory_equal(b, want, LINK_HDR_BYTES);
}

static void test_header_round_trip(void **state)
{
	(void)state;
	struct link_hdr h = sample_hdr(), d;
	uint8_t buf[LINK_HDR_BYTES + 16];
	size_t n = build(buf, &h);

	assert_int_equal(link_hdr_decode(buf, n, &d), 0);
	assert_int_equal(d.magic, h.magic);
	assert_int_equal(d.version, h.version);
	assert_int_equal(d.flags, h.flags);
	assert_int_equal(d.len, h.len);
	assert_int_equal(d.src_node, h.src_node);
	assert_int_equal(d.dst_node, h.dst_node);
	assert_true(d.src_epoch == h.src_epoch);
	assert_true(d.dst_epoch == h.dst_epoch);
	assert_true(d.pn == h.pn);
	assert_int_equal(d.stream, h.stream);
	assert_int_equal(d.seq, h.seq);
	assert_int_equal(d.ack_stream, h.ack_stream);
	assert_int_equal(d.ack, h.ack);
	assert_true(d.sack == h.sack);
	assert_memory_equal(d.check, h.check, LINK_MAC_BYTES);

	/* A hello: PING only, nothing known about the receiver. */
	struct link_hdr hello = {.magic = LINK_MAGIC,
				 .version = LINK_VERSION,
				 .flags = LINK_F_PING,
				 .src_node = 1,
				 .dst_node = 2,
				 .src_epoch = 9,
				 .pn = 1,
				 .stream = 1};
	n = build(buf, &hello);
	assert_int_equal(n, LINK_HDR_BYTES);
	assert_int_equal(link_hdr_decode(buf, n, &d), 0);
	assert_int_equal(d.flags, LINK_F_PING);
}

static void test_every_short_length_is_rejected(void **state)
{
	(void)state;
	struct link_hdr h = sample_hdr(), d;
	uint8_t buf[LINK_HDR_BYTES + 16];
	size_t n = build(buf, &h);

	for (size_t cut = 0; cut < n; cut++)
		assert_int_equal(link_hdr_decode(buf, cut, &d), -EBADMSG);
	/* Longer than len says (trailing garbage) is as bad as shorter. */
	buf[n] = 0;
	assert_int_equal(link_hdr_decode(buf, n + 1, &d), -EBADMSG);
}

/* Applies mutate to a valid header and expects decode to fail. */
static void expect_bad(void (*mutate)(struct link_hdr *))
{
	struct link_hdr h = sample_hdr(), d;
	uint8_t buf[LINK_HDR_BYTES + 16];

	mutate(&h);
	size_t n = build(buf, &h);
	assert_int_equal(link_hdr_decode(buf, n, &d), -EBADMSG);
}

static void m_magic(struct link_hdr *h)
{
	h->magic ^= 1;
}
static void m_version(struct link_hdr *h)
{
	h->version = 2;
}
static void m_flags(struct link_hdr *h)
{
	h->flags |= 0x80;
}
static void m_src_epoch0(struct link_hdr *h)
{
	h->src_epoch = 0;
}
static void m_pn0(struct link_hdr *h)
{
	h->pn = 0;
}
static void m_stream0(struct link_hdr *h)
{
	h->stream = 0;
}
static void m_data_no_payload(struct link_hdr *h)
{
	h->len = 0;
}
static void m_payload_no_data(struct link_hdr *h)
{
	h->flags = LINK_F_ACK;
}
static void m_seq_without_data(struct link_hdr *h)
{
	h->flags = LINK_F_ACK;
	h->len = 0;
}
static void m_ack_stream0(struct link_hdr *h)
{
	h->ack_stream = 0;
}
static void m_ack_fields_without_ack(struct link_hdr *h)
{
	h->flags = LINK_F_DATA;
}
static void m_hello_with_data(struct link_hdr *h)
{
	h->dst_epoch = 0;
}

static void test_malformed_headers(void **state)
{
	(void)state;
	void (*cases[])(struct link_hdr *) = {
	    m_magic,
	    m_version,
	    m_flags,
	    m_src_epoch0,
	    m_pn0,
	    m_stream0,
	    m_data_no_payload,
	    m_payload_no_data,
	    m_seq_without_data,
	    m_ack_stream0,
	    m_ack_fields_without_ack,
	    m_hello_with_data,
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_bad(cases[i]);
}

static void test_records_round_trip(void **state)
{
	(void)state;
	uint8_t buf[256];
	size_t used = 0;
	const char *words[] = {"a", "hello", "fragment"};
	struct link_rec r;

	for (int i = 0; i < 3; i++) {
		r = (struct link_rec){.len = (uint16_t)strlen(words[i]),
				      .frag_idx = (uint16_t)i,
				      .frag_cnt = 3,
				      .data = (const uint8_t *)words[i]};
		size_t n = link_rec_encode(buf + used, sizeof(buf) - used, &r);
		assert_int_equal(n, LINK_REC_HDR_BYTES + strlen(words[i]));
		used += n;
	}
	assert_int_equal(link_payload_check(buf, used), 3);

	size_t off = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(link_rec_next(buf, used, &off, &r), 1);
		assert_int_equal(r.len, strlen(words[i]));
		assert_int_equal(r.frag_idx, i);
		assert_int_equal(r.frag_cnt, 3);
		assert_memory_equal(r.data, words[i], r.len);
	}
	assert_int_equal(link_rec_next(buf, used, &off, &r), 0);

	/* Exact fit works, one byte short does not. */
	r = (struct link_rec){.len = 5, .frag_cnt = 1, .data = (const uint8_t *)"12345"};
	assert_int_equal(link_rec_encode(buf, LINK_REC_HDR_BYTES + 5, &r), LINK_REC_HDR_BYTES + 5);
	assert_int_equal(link_rec_encode(buf, LINK_REC_HDR_BYTES + 4, &r), 0);
}

static void test_malformed_records(void **state)
{
	(void)state;
	uint8_t buf[64];
	struct link_rec r = {
	    .len = 10, .frag_idx = 0, .frag_cnt = 1, .data = (const uint8_t *)"0123456789"};
	size_t n = link_rec_encode(buf, sizeof(buf), &r);

	/* Every cut of a record is malformed (0 bytes is an empty payload). */
	assert_int_equal(link_payload_check(buf, 0), -EBADMSG);
	for (size_t cut = 1; cut < n; cut++)
		assert_int_equal(link_payload_check(buf, cut), -EBADMSG);
	assert_int_equal(link_payload_check(buf, n), 1);

	uint8_t bad[LINK_REC_HDR_BYTES + 1];
	/* len 0 */
	memcpy(bad, (uint8_t[]){0, 0, 0, 0, 0, 1, 'x'}, sizeof(bad));
	assert_int_equal(link_payload_check(bad, LINK_REC_HDR_BYTES), -EBADMSG);
	/* frag_cnt 0 */
	memcpy(bad, (uint8_t[]){0, 1, 0, 0, 0, 0, 'x'}, sizeof(bad));
	assert_int_equal(link_payload_check(bad, sizeof(bad)), -EBADMSG);
	/* frag_idx == frag_cnt */
	memcpy(bad, (uint8_t[]){0, 1, 0, 2, 0, 2, 'x'}, sizeof(bad));
	assert_int_equal(link_payload_check(bad, sizeof(bad)), -EBADMSG);
	/* valid, then trailing bytes shorter than a record header */
	memcpy(bad, (uint8_t[]){0, 1, 0, 1, 0, 2, 'x'}, sizeof(bad));
	assert_int_equal(link_payload_check(bad, sizeof(bad)), 1);
	uint8_t tail[sizeof(bad) + 3];
	memcpy(tail, bad, sizeof(bad));
	memset(tail + sizeof(bad), 0, 3);
	assert_int_equal(link_payload_check(tail, sizeof(tail)), -EBADMSG);
}

static void test_seq_after_wraps(void **state)
{
	(void)state;
	assert_true(link_seq_after(2, 1));
	assert_false(link_seq_after(1, 1));
	assert_false(link_seq_after(1, 2));
	assert_true(link_seq_after(0, UINT32_MAX));
	assert_true(link_seq_after(5, UINT32_MAX - 5));
	assert_false(link_seq_after(UINT32_MAX - 5, 5));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_layout_is_big_endian_at_documented_offsets),
	    cmocka_unit_test(test_header_round_trip),
	    cmocka_unit_test(test_every_short_length_is_rejected),
	    cmocka_unit_test(test_malformed_headers),
	    cmocka_unit_test(test_records_round_trip),
	    cmocka_unit_test(test_malformed_records),
	    cmocka_unit_test(test_seq_after_wraps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
