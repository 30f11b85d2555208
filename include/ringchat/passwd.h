/*
 * passwd.h - password hashing (yescrypt via libcrypt) and session tokens.
 *
 * Hashes are crypt(3) strings ("$y$j9T$<salt>$<hash>"): they carry their
 * algorithm, cost and salt, so passwd_verify needs nothing else and hashes
 * made with an older cost keep verifying after hash_cost changes.
 *
 * Hashing is deliberately slow (tens of milliseconds at the default cost)
 * and uses memory that grows with the cost; the node runs it only on the
 * hasher threads (hash_threads), never on a request worker. All functions are thread-safe: their 32 KiB
 * working area is allocated per call, never on the caller's stack.
 */
#ifndef RINGCHAT_PASSWD_H
#define RINGCHAT_PASSWD_H

#include <stdbool.h>
#include <stddef.h>

#define PASSWD_MAX_BYTES 128 /* longest password accepted, bytes */
#define PASSWD_HASH_SIZE 128 /* buffer that holds any hash passwd_hash makes */
#define PASSWD_COST_MIN 1
#define PASSWD_COST_MAX 11
#define TOKEN_HEX_LEN 32 /* token_new writes this many chars plus NUL */

/*
 * Hashes password (any bytes but NUL, at most PASSWD_MAX_BYTES) with
 * yescrypt at the given cost (PASSWD_COST_MIN..PASSWD_COST_MAX) and a fresh
 * random salt, writing the NUL-terminated hash to out. Returns 0, -EINVAL
 * (password too long, bad cost), -ENOSPC (outsz too small; use
 * PASSWD_HASH_SIZE), -ENOMEM, or the -errno of getrandom(2).
 */
int passwd_hash(const char *password, int cost, char *out, size_t outsz);

/*
 * True when password matches hash (as made by passwd_hash or any crypt(3)
 * method libcrypt supports). The final comparison takes time independent
 * of where the strings differ. False for a malformed hash, a password over
 * PASSWD_MAX_BYTES, or when memory runs out.
 */
bool passwd_verify(const char *password, const char *hash);

/*
 * Writes a fresh 128-bit random token as TOKEN_HEX_LEN lowercase hex chars
 * plus NUL. Returns 0 or the -errno of getrandom(2).
 */
int token_new(char out[TOKEN_HEX_LEN + 1]);

#endif
