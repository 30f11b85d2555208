/*
 * json_text.h - JSON text written straight into a buffer, for the frames
 * every message makes (PUSH_MSG, the OK of MSG_SEND): building a cJSON
 * tree and printing it costs a dozen allocations per frame.
 *
 * A writer measures first, then writes: json_str_len tells the exact
 * bytes json_put_str writes, so a frame is allocated once at its size.
 * Strings are escaped as cJSON prints them (", \, \b \f \n \r \t, other
 * bytes below 0x20 as \u00XX; everything else, UTF-8 included, as is);
 * the caller has checked they are valid UTF-8 without NUL.
 */
#ifndef RINGCHAT_JSON_TEXT_H
#define RINGCHAT_JSON_TEXT_H

#include <stddef.h>
#include <stdint.h>

#define JSON_I64_MAX_BYTES 20 /* "-9223372036854775808" */

/* Bytes of s[0, n) as a JSON string, quotes included. */
size_t json_str_len(const char *s, size_t n);
/* Writes s[0, n) as a JSON string, quotes included; returns the end. */
char *json_put_str(char *dst, const char *s, size_t n);
/* Writes v in decimal (at most JSON_I64_MAX_BYTES); returns the end. */
char *json_put_i64(char *dst, int64_t v);
/* Writes the n bytes of lit (a key, punctuation); returns the end. */
char *json_put_raw(char *dst, const char *lit, size_t n);

#endif
