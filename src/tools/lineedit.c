/*
 * lineedit.c - the line editor of ringchat-cli (see lineedit.h).
 *
 * The core keeps the line as UTF-8 bytes with the cursor on a code point
 * boundary; every edit works on whole code points. Nothing here knows the
 * terminal: drawing means appending bytes to le->out, and the width comes
 * in as an argument. Only the le_term_* functions at the end make system
 * calls.
 *
 * Key decoder:
 *
 *   0 (ground) --ESC--> 1 --'[' or 'O'--> 2 --'0'..'9' ';'--> 2 (kept)
 *                       1 --other-------> 0 (byte dropped)
 *                                         2 --final byte--> 0 (sequence run)
 */
#include "ringchat/lineedit.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define LE_ESC 27
/* Past this the output buffer stops growing and drops bytes: only a
 * caller that never drains it gets there. */
#define LE_OUT_MAX_BYTES (4u << 20)

/* ---------------------------------------------------------------------
 * Output buffer.
 * ------------------------------------------------------------------- */

static void le_emit(struct le *le, const char *s, size_t n)
{
	if (le->out_len + n > le->out_cap) {
		size_t cap = le->out_cap ? le->out_cap : 256;
		char *p;

		while (cap < le->out_len + n)
			cap *= 2;
		if (cap > LE_OUT_MAX_BYTES)
			return;
		p = realloc(le->out, cap);
		if (!p)
			return;
		le->out = p;
		le->out_cap = cap;
	}
	memcpy(le->out + le->out_len, s, n);
	le->out_len += n;
}

static void le_emits(struct le *le, const char *s)
{
	le_emit(le, s, strlen(s));
}

/* ---------------------------------------------------------------------
 * UTF-8 helpers. Bytes that are not valid UTF-8 still count as code
 * points (each lead byte starts one), so nothing gets stuck.
 * ------------------------------------------------------------------- */

static bool le_utf8_cont(char c)
{
	return ((unsigned char)c & 0xc0) == 0x80;
}

/* Bytes of the sequence a lead byte starts (1 for ASCII and strays). */
static unsigned le_utf8_len(unsigned char c)
{
	if (c >= 0xf0 && c <= 0xf7)
		return 4;
	if (c >= 0xe0)
		return c <= 0xef ? 3 : 1;
	if (c >= 0xc0)
		return 2;
	return 1;
}

/* Code points in s[0..n). */
static size_t le_cps(const char *s, size_t n)
{
	size_t i, k = 0;

	for (i = 0; i < n; i++)
		if (!le_utf8_cont(s[i]))
			k++;
	return k;
}

/* Byte offset of code point k in the line (len when past its end). */
static size_t le_cp_off(const struct le *le, size_t k)
{
	size_t i;

	for (i = 0; i < le->len; i++)
		if (!le_utf8_cont(le->line[i]) && k-- == 0)
			return i;
	return le->len;
}

static size_t le_prev_cp(const struct le *le, size_t at)
{
	while (at > 0) {
		at--;
		if (!le_utf8_cont(le->line[at]))
			break;
	}
	return at;
}

static size_t le_next_cp(const struct le *le, size_t at)
{
	if (at < le->len)
		at++;
	while (at < le->len && le_utf8_cont(le->line[at]))
		at++;
	return at;
}

/* ---------------------------------------------------------------------
 * Set-up and accessors.
 * ------------------------------------------------------------------- */

void le_init(struct le *le)
{
	memset(le, 0, sizeof(*le));
	le_set_prompt(le, "> ");
}

void le_free(struct le *le)
{
	int i;

	for (i = 0; i < le->hist_n; i++)
		free(le->hist[i]);
	le->hist_n = le->hist_pos = 0;
	free(le->hist_draft);
	le->hist_draft = NULL;
	free(le->out);
	le->out = NULL;
	le->out_len = le->out_cap = 0;
}

void le_set_prompt(struct le *le, const char *prompt)
{
	snprintf(le->prompt, sizeof(le->prompt), "%s", prompt);
}

void le_set_words(struct le *le, const char *const *words, size_t n)
{
	le->words = n ? words : NULL;
	le->nwords = n;
}

char *le_line(struct le *le)
{
	return le->done;
}

const char *le_buffer(const struct le *le, size_t *cursor)
{
	if (cursor)
		*cursor = le->cur;
	return le->line;
}

bool le_shown(const struct le *le)
{
	return le->shown;
}

const char *le_out(const struct le *le, size_t *n)
{
	*n = le->out_len;
	return le->out ? le->out : "";
}

void le_out_clear(struct le *le)
{
	le->out_len = 0;
}

/* ---------------------------------------------------------------------
 * Drawing.
 * ------------------------------------------------------------------- */

void le_hide(struct le *le)
{
	if (le->shown) {
		le_emits(le, "\r\033[K");
		le->shown = false;
	}
}

void le_redraw(struct le *le, int cols)
{
	size_t pw = strlen(le->prompt), avail, total, cur, start, end, shown;
	size_t width = cols > 0 ? (size_t)cols : 1;

	/* One column stays free: a cursor after the last one would wrap. */
	avail = width > pw + 2 ? width - pw - 1 : 1;
	total = le_cps(le->line, le->len);
	cur = le_cps(le->line, le->cur);
	if (cur < le->scroll)
		le->scroll = cur;
	if (cur >= le->scroll + avail)
		le->scroll = cur - avail + 1;
	if (total <= avail)
		le->scroll = 0;
	start = le_cp_off(le, le->scroll);
	end = le_cp_off(le, le->scroll + avail);
	shown = le_cps(le->line + start, end - start);
	le_emits(le, "\r\033[K");
	le_emits(le, le->prompt);
	le_emit(le, le->line + start, end - start);
	if (shown > cur - le->scroll) {
		char back[32];

		snprintf(back, sizeof(back), "\033[%zuD", shown - (cur - le->scroll));
		le_emits(le, back);
	}
	le->shown = true;
}

/* ---------------------------------------------------------------------
 * Editing.
 * ------------------------------------------------------------------- */

static void le_set_line(struct le *le, const char *s)
{
	size_t n = strlen(s);

	if (n >= sizeof(le->line))
		n = sizeof(le->line) - 1;
	memcpy(le->line, s, n);
	le->line[n] = '\0';
	le->len = le->cur = n;
}

static void le_clear_line(struct le *le)
{
	le->len = le->cur = le->scroll = 0;
	le->line[0] = '\0';
}

static void le_delete(struct le *le, size_t from, size_t to)
{
	memmove(le->line + from, le->line + to, le->len - to + 1);
	le->len -= to - from;
	if (le->cur > to)
		le->cur -= to - from;
	else if (le->cur > from)
		le->cur = from;
}

static void le_insert(struct le *le, char c)
{
	unsigned char u = (unsigned char)c;

	if (le_utf8_cont(c) && le->utf8_drop > 0) {
		le->utf8_drop--;
		return;
	}
	le->utf8_drop = 0;
	/* A character goes in whole or not at all: a full line must not end
	 * in half of one. */
	if (!le_utf8_cont(c) && le->len + le_utf8_len(u) >= sizeof(le->line)) {
		le->utf8_drop = le_utf8_len(u) - 1;
		return;
	}
	if (le->len + 1 >= sizeof(le->line))
		return;
	memmove(le->line + le->cur + 1, le->line + le->cur, le->len - le->cur + 1);
	le->line[le->cur++] = c;
	le->len++;
}

/* ---------------------------------------------------------------------
 * History.
 * ------------------------------------------------------------------- */

static void le_hist_add(struct le *le, const char *line)
{
	char *copy;

	if (!*line || (le->hist_n > 0 && !strcmp(le->hist[le->hist_n - 1], line)))
		return;
	copy = strdup(line);
	if (!copy)
		return;
	if (le->hist_n == LE_HISTORY_MAX) {
		free(le->hist[0]);
		memmove(le->hist, le->hist + 1, (LE_HISTORY_MAX - 1) * sizeof(le->hist[0]));
		le->hist_n--;
	}
	le->hist[le->hist_n++] = copy;
}

/* Leaves history browsing: the next Up starts from the newest line. */
static void le_hist_reset(struct le *le)
{
	le->hist_pos = le->hist_n;
	free(le->hist_draft);
	le->hist_draft = NULL;
}

/* Up (dir -1) or down (+1) through the history. */
static void le_hist_move(struct le *le, int dir)
{
	int to = le->hist_pos + dir;

	if (to < 0 || to > le->hist_n)
		return;
	if (le->hist_pos == le->hist_n) {
		free(le->hist_draft);
		le->hist_draft = strdup(le->line);
	}
	le->hist_pos = to;
	le_set_line(le, to == le->hist_n ? (le->hist_draft ? le->hist_draft : "") : le->hist[to]);
}

/* ---------------------------------------------------------------------
 * Keys.
 * ------------------------------------------------------------------- */

/* Tab: completes the first word when exactly one word starts with it. */
static void le_complete(struct le *le)
{
	const char *match = NULL;
	size_t i;

	if (le->len == 0 || memchr(le->line, ' ', le->len) || le->cur != le->len)
		return;
	for (i = 0; i < le->nwords; i++) {
		if (strncmp(le->words[i], le->line, le->len))
			continue;
		if (match) {
			/* Ambiguous: list the candidates above the line. */
			le_hide(le);
			for (i = 0; i < le->nwords; i++)
				if (!strncmp(le->words[i], le->line, le->len)) {
					le_emits(le, le->words[i]);
					le_emits(le, "  ");
				}
			le_emits(le, "\n");
			return;
		}
		match = le->words[i];
	}
	if (match) {
		char buf[LE_LINE_MAX];

		snprintf(buf, sizeof(buf), "%s ", match);
		le_set_line(le, buf);
	}
}

/* Enter: the line leaves the editor. */
static enum le_event le_enter(struct le *le)
{
	/* Leave the whole typed line on screen, as a shell does (keys and
	 * Enter may come in one read, before the line was ever drawn). */
	le_emits(le, "\r\033[K");
	le_emits(le, le->prompt);
	le_emit(le, le->line, le->len);
	le_emits(le, "\n");
	le->shown = false;
	memcpy(le->done, le->line, le->len + 1);
	le_hist_add(le, le->line);
	le_hist_reset(le);
	le_clear_line(le);
	return LE_LINE;
}

/* The end of an escape sequence: ESC [ <params> <final>. */
static void le_escape(struct le *le, char final)
{
	const char *params = le->esc_params;

	switch (final) {
	case 'A':
		le_hist_move(le, -1);
		break;
	case 'B':
		le_hist_move(le, 1);
		break;
	case 'C':
		le->cur = le_next_cp(le, le->cur);
		break;
	case 'D':
		le->cur = le_prev_cp(le, le->cur);
		break;
	case 'H':
		le->cur = 0;
		break;
	case 'F':
		le->cur = le->len;
		break;
	case '~':
		/* VT220 keys: 1/7 Home, 4/8 End, 3 Delete. */
		if (!strcmp(params, "1") || !strcmp(params, "7"))
			le->cur = 0;
		else if (!strcmp(params, "4") || !strcmp(params, "8"))
			le->cur = le->len;
		else if (!strcmp(params, "3") && le->cur < le->len)
			le_delete(le, le->cur, le_next_cp(le, le->cur));
		break;
	default:
		break;
	}
}

enum le_event le_key(struct le *le, char ch)
{
	unsigned char c = (unsigned char)ch;

	if (le->esc == 1) {
		le->esc = (c == '[' || c == 'O') ? 2 : 0;
		le->esc_len = 0;
		le->esc_params[0] = '\0';
		return LE_NONE;
	}
	if (le->esc == 2) {
		if ((c >= '0' && c <= '9') || c == ';') {
			if (le->esc_len < sizeof(le->esc_params) - 1) {
				le->esc_params[le->esc_len++] = (char)c;
				le->esc_params[le->esc_len] = '\0';
			}
			return LE_NONE;
		}
		le->esc = 0;
		le_escape(le, (char)c);
		return LE_NONE;
	}
	switch (c) {
	case LE_ESC:
		le->esc = 1;
		return LE_NONE;
	case '\r':
	case '\n':
		return le_enter(le);
	case 1: /* ^A */
		le->cur = 0;
		return LE_NONE;
	case 5: /* ^E */
		le->cur = le->len;
		return LE_NONE;
	case 2: /* ^B */
		le->cur = le_prev_cp(le, le->cur);
		return LE_NONE;
	case 6: /* ^F */
		le->cur = le_next_cp(le, le->cur);
		return LE_NONE;
	case 3: /* ^C: drop the line, or leave on an empty one */
		if (le->len == 0)
			return LE_QUIT;
		le_emits(le, "^C\n");
		le->shown = false;
		le_clear_line(le);
		le_hist_reset(le);
		return LE_NONE;
	case 4: /* ^D: delete under the cursor, or leave on an empty line */
		if (le->len == 0)
			return LE_QUIT;
		if (le->cur < le->len)
			le_delete(le, le->cur, le_next_cp(le, le->cur));
		return LE_NONE;
	case 8:
	case 127:
		if (le->cur > 0)
			le_delete(le, le_prev_cp(le, le->cur), le->cur);
		return LE_NONE;
	case 9:
		le_complete(le);
		return LE_NONE;
	case 11: /* ^K */
		le->len = le->cur;
		le->line[le->len] = '\0';
		return LE_NONE;
	case 12: /* ^L */
		le_hide(le);
		le_emits(le, "\033[H\033[2J");
		return LE_NONE;
	case 14: /* ^N */
		le_hist_move(le, 1);
		return LE_NONE;
	case 16: /* ^P */
		le_hist_move(le, -1);
		return LE_NONE;
	case 21: /* ^U */
		le_delete(le, 0, le->cur);
		return LE_NONE;
	case 23: { /* ^W: the word before the cursor, and the blanks after it */
		size_t at = le->cur;

		while (at > 0 && le->line[at - 1] == ' ')
			at--;
		while (at > 0 && le->line[at - 1] != ' ')
			at--;
		le_delete(le, at, le->cur);
		return LE_NONE;
	}
	default:
		break;
	}
	if (c >= 32)
		le_insert(le, (char)c);
	return LE_NONE;
}

enum le_event le_feed(struct le *le, const char *buf, size_t n, size_t *used)
{
	enum le_event ev = LE_NONE;
	size_t i;

	for (i = 0; i < n && ev == LE_NONE; i++)
		ev = le_key(le, buf[i]);
	*used = i;
	return ev;
}

/* ---------------------------------------------------------------------
 * Terminal layer.
 * ------------------------------------------------------------------- */

int le_term_raw(struct le_term *t, int fd)
{
	struct termios raw;

	if (tcgetattr(fd, &t->saved) == -1)
		return -errno;
	raw = t->saved;
	/* No line buffering, echo or signal keys; output processing stays on. */
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ISIG | IEXTEN);
	raw.c_iflag &= ~(tcflag_t)(IXON | ICRNL | INLCR | ISTRIP);
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	if (tcsetattr(fd, TCSAFLUSH, &raw) == -1)
		return -errno;
	t->fd = fd;
	t->raw = true;
	return 0;
}

void le_term_restore(struct le_term *t)
{
	if (t->raw) {
		tcsetattr(t->fd, TCSAFLUSH, &t->saved);
		t->raw = false;
	}
}

int le_term_cols(int fd)
{
	struct winsize ws;

	if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
		return ws.ws_col;
	return LE_DEFAULT_COLS;
}

void le_term_flush(struct le *le, FILE *f)
{
	if (le->out_len)
		fwrite(le->out, 1, le->out_len, f);
	le->out_len = 0;
	fflush(f);
}
