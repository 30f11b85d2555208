/*
 * passwd.c - yescrypt password hashes and random session tokens.
 *
 * struct crypt_data is 32 KiB and ends up holding password-derived bytes,
 * so each call takes it from the heap (worker stacks stay small) and wipes
 * it before freeing. yescrypt's own large working memory is allocated by
 * libcrypt inside the call.
 */
#include "ringchat/passwd.h"

#include <crypt.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define PASSWD_SALT_BYTES 32 /* more than yescrypt uses; it takes what it needs */

/* Fills buf from the kernel's CSPRNG. Returns 0 or -errno. */
static int passwd_random(void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len) {
		ssize_t n = getrandom(p, len, 0);

		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static struct crypt_data *passwd_data_new(void)
{
	/* zeroed, as libcrypt asks before a crypt_data's first use */
	return calloc(1, sizeof(struct crypt_data));
}

static void passwd_data_free(struct crypt_data *data)
{
	explicit_bzero(data, sizeof(*data));
	free(data);
}

int passwd_hash(const char *password, int cost, char *out, size_t outsz)
{
	char rbytes[PASSWD_SALT_BYTES];
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *data;
	const char *hash;
	size_t len;
	int rc;

	if (strnlen(password, PASSWD_MAX_BYTES + 1) > PASSWD_MAX_BYTES || cost < PASSWD_COST_MIN ||
	    cost > PASSWD_COST_MAX)
		return -EINVAL;
	rc = passwd_random(rbytes, sizeof(rbytes));
	if (rc)
		return rc;
	if (!crypt_gensalt_rn("$y$", (unsigned long)cost, rbytes, (int)sizeof(rbytes), setting,
			      (int)sizeof(setting))) {
		rc = errno == ENOMEM ? -ENOMEM : -EINVAL;
		goto out_wipe_rbytes;
	}
	data = passwd_data_new();
	if (!data) {
		rc = -ENOMEM;
		goto out_wipe_rbytes;
	}
	hash = crypt_rn(password, setting, data, (int)sizeof(*data));
	if (!hash || hash[0] == '*') {
		rc = errno == ENOMEM ? -ENOMEM : -EINVAL;
		goto out_free_data;
	}
	len = strlen(hash);
	if (len >= outsz) {
		rc = -ENOSPC;
		goto out_free_data;
	}
	memcpy(out, hash, len + 1);
	rc = 0;
out_free_data:
	passwd_data_free(data);
out_wipe_rbytes:
	explicit_bzero(rbytes, sizeof(rbytes));
	return rc;
}

/* Compares two strings in time that depends only on their lengths. */
static bool passwd_equal(const char *a, const char *b)
{
	size_t alen = strlen(a), blen = strlen(b);
	volatile unsigned char diff = alen != blen;

	for (size_t i = 0; i < alen && i < blen; i++)
		diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
	return diff == 0;
}

bool passwd_verify(const char *password, const char *hash)
{
	struct crypt_data *data;
	const char *computed;
	bool ok;

	if (strnlen(password, PASSWD_MAX_BYTES + 1) > PASSWD_MAX_BYTES || hash[0] == '\0' ||
	    hash[0] == '*')
		return false;
	data = passwd_data_new();
	if (!data)
		return false;
	computed = crypt_rn(password, hash, data, (int)sizeof(*data));
	ok = computed && computed[0] != '*' && passwd_equal(computed, hash);
	passwd_data_free(data);
	return ok;
}

int token_new(char out[TOKEN_HEX_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t raw[TOKEN_HEX_LEN / 2];
	int rc = passwd_random(raw, sizeof(raw));

	if (rc)
		return rc;
	for (size_t i = 0; i < sizeof(raw); i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 0xf];
	}
	out[TOKEN_HEX_LEN] = '\0';
	explicit_bzero(raw, sizeof(raw));
	return 0;
}
