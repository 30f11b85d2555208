/*
 * request.h - validation of request fields. Each req_* helper either
 * stores the value and returns true, or sends 1 BAD_REQUEST with a reason
 * naming the field and returns false, so a handler reads:
 *
 *     int64_t to;
 *     if (!req_id(r, "to", &to))
 *             return;
 *
 * Ids are positive integers up to 2^53 - 1: every id the node hands out
 * fits, and so every JSON client (including JavaScript's doubles) reads
 * them exactly. Lengths count UTF-8 bytes, as the contract says; strings
 * must be valid UTF-8.
 */
#ifndef RINGCHAT_REQUEST_H
#define RINGCHAT_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringchat/session.h"

#define REQ_ID_MAX 9007199254740991LL /* 2^53 - 1 */

/* Required positive id. */
bool req_id(struct req *r, const char *key, int64_t *out);
/* Optional positive id: *present says whether it was given. */
bool req_opt_id(struct req *r, const char *key, int64_t *out, bool *present);
/* Required integer in [min, max]. */
bool req_int(struct req *r, const char *key, int64_t min, int64_t max, int64_t *out);
bool req_opt_int(struct req *r, const char *key, int64_t min, int64_t max, int64_t *out,
		 bool *present);
/* Required string of minb..maxb bytes. *out points into r->body. */
bool req_str(struct req *r, const char *key, size_t minb, size_t maxb, const char **out);
bool req_opt_str(struct req *r, const char *key, size_t minb, size_t maxb, const char **out,
		 bool *present);
/* Required array of 1..max ids; *out is malloc'd (caller frees). */
bool req_id_array(struct req *r, const char *key, size_t max, int64_t **out, size_t *n);

/*
 * Parses a request payload p[0, n) (n > 0): returns the JSON object (the
 * caller deletes it), or NULL when it is not exactly one object (trailing
 * bytes other than white space) or holds a NUL, raw or escaped (C strings
 * would silently cut "secret\u0000junk" short).
 */
cJSON *req_parse_body(const uint8_t *p, uint32_t n);

/* True if s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
bool utf8_valid(const char *s, size_t n);



/*
 * Adds an integer member. cJSON keeps numbers as doubles and prints them
 * with printf("%1.15g") followed by a sscanf round-trip check, which was
 * the largest cost of a PING reply in profiles; ids and timestamps are
 * integers, so they are printed here and attached as raw JSON text.
 * Returns false when out of memory.
 */
bool json_add_int(cJSON *obj, const char *key, int64_t v);
/* The same for an array element. */
bool json_array_add_int(cJSON *arr, int64_t v);
#endif
