/*
 * test_lineedit.c - the cli's line editor without a terminal: keys go in
 * as bytes, and what the editor writes is played on a small screen model
 * (rows of cells, "\r", "\n", ESC [ K, ESC [ n D, ESC [ H, ESC [ 2 J) so
 * that the tests check what a user would see: the text of each row and
 * where the cursor stands. The screen refuses to wrap: any write past the
 * last column fails the test, which is what the sideways scrolling of a
 * long line must prevent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringchat/lineedit.h"

#define SCR_ROWS 6
#define SCR_COLS_MAX 100
#define KEY_UP "\033[A"
#define KEY_DOWN "\033[B"
#define KEY_RIGHT "\033[C"
#define KEY_LEFT "\033[D"
#define KEY_DELETE "\033[3~"

/* ---------------------------------------------------------------------
 * Screen model.
 * ------------------------------------------------------------------- */

struct scr {
	char cell[SCR_ROWS][SCR_COLS_MAX][5]; /* one UTF-8 character, or "" */
	int row, col, cols;
};

struct fixture {
	struct le le;
	struct scr scr;
};

static void scr_newline(struct scr *s)
{
	/* OPOST/ONLCR: "\n" also returns the carriage. */
	s->col = 0;
	if (s->row < SCR_ROWS - 1) {
		s->row++;
		return;
	}
	memmove(s->cell[0], s->cell[1], sizeof(s->cell[0]) * (SCR_ROWS - 1));
	memset(s->cell[SCR_ROWS - 1], 0, sizeof(s->cell[0]));
}

/* Plays bytes on the screen; fails on anything the model does not know. */
static void scr_write(struct scr *s, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)p[i];

		if (c == '\r') {
			s->col = 0;
			i++;
		} else if (c == '\n') {
			scr_newline(s);
			i++;
		} else if (c == 27) {
			unsigned arg = 0;
			bool has_arg = false;

			assert_true(i + 1 < n && p[i + 1] == '[');
			i += 2;
			while (i < n && p[i] >= '0' && p[i] <= '9') {
				arg = arg * 10 + (unsigned)(p[i] - '0');
				has_arg = true;
				i++;
			}
			assert_true(i < n);
			switch (p[i]) {
			case 'K':
				for (int k = s->col; k < SCR_COLS_MAX; k++)
					s->cell[s->row][k][0] = '\0';
				break;
			case 'D':
				s->col -= (int)(has_arg ? arg : 1);
				assert_true(s->col >= 0);
				break;
			case 'H':
				s->row = s->col = 0;
				break;
			case 'J':
				assert_int_equal(arg, 2);
				memset(s->cell, 0, sizeof(s->cell));
				break;
			default:
				fail_msg("unexpected escape sequence ending in '%c'", p[i]);
			}
			i++;
		} else {
			size_t len = 1;

			assert_true(c >= 32);
			while (i + len < n && ((unsigned char)p[i + len] & 0xc0) == 0x80)
				len++;
			assert_true(len <= 4);
			if (s->col >= s->cols)
				fail_msg("write past column %d: the terminal would wrap", s->cols);
			memcpy(s->cell[s->row][s->col], p + i, len);
			s->cell[s->row][s->col][len] = '\0';
			s->col++;
			i += len;
		}
	}
}

/* The text of a row, trailing blanks dropped. */
static const char *scr_row(const struct scr *s, int row, char *buf, size_t n)
{
	size_t at = 0;

	buf[0] = '\0';
	for (int k = 0; k < SCR_COLS_MAX; k++) {
		const char *cell = s->cell[row][k][0] ? s->cell[row][k] : " ";

		assert_true(at + strlen(cell) < n);
		strcpy(buf + at, cell);
		at += strlen(cell);
	}
	while (at > 0 && buf[at - 1] == ' ')
		buf[--at] = '\0';
	return buf;
}

static void assert_row(const struct scr *s, int row, const char *want)
{
	char buf[SCR_COLS_MAX * 5];

	assert_string_equal(scr_row(s, row, buf, sizeof(buf)), want);
}

/* ---------------------------------------------------------------------
 * Helpers.
 * ------------------------------------------------------------------- */

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	le_init(&f->le);
	le_set_prompt(&f->le, "> ");
	f->scr.cols = 80;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	le_free(&f->le);
	free(f);
	return 0;
}

/* Plays the editor's output on the screen and forgets it. */
static void show(struct fixture *f)
{
	size_t n;
	const char *out = le_out(&f->le, &n);

	scr_write(&f->scr, out, n);
	le_out_clear(&f->le);
}

/* The editor's output as a string, forgotten afterwards. */
static const char *take_out(struct le *le, char *buf, size_t size)
{
	size_t n;
	const char *out = le_out(le, &n);

	assert_true(n < size);
	memcpy(buf, out, n);
	buf[n] = '\0';
	le_out_clear(le);
	return buf;
}

/* Types s; every byte must be taken without an event. */
static void type(struct le *le, const char *s)
{
	size_t used, n = strlen(s);

	assert_int_equal(le_feed(le, s, n, &used), LE_NONE);
	assert_int_equal(used, n);
}

/* Types s, which must end in Enter, and checks the finished line. */
static void type_line(struct le *le, const char *s, const char *want)
{
	size_t used, n = strlen(s);

	assert_int_equal(le_feed(le, s, n, &used), LE_LINE);
	assert_int_equal(used, n);
	assert_string_equal(le_line(le), want);
}

static void assert_buffer(const struct le *le, const char *want, size_t want_cursor)
{
	size_t cursor;

	assert_string_equal(le_buffer(le, &cursor), want);
	assert_int_equal(cursor, want_cursor);
}

/* Redraws for the screen's width and shows it. */
static void redraw(struct fixture *f)
{
	le_redraw(&f->le, f->scr.cols);
	show(f);
}

/* ---------------------------------------------------------------------
 * Tests.
 * ------------------------------------------------------------------- */

static void test_insert_and_enter(void **state)
{
	struct fixture *f = *state;
	char out[256];

	type(&f->le, "hello");
	assert_buffer(&f->le, "hello", 5);
	/* Typing inserts at the cursor, not at the end. */
	type(&f->le, KEY_LEFT KEY_LEFT "XY");
	assert_buffer(&f->le, "helXYlo", 5);
	/* Control bytes the editor does not use are ignored. */
	type(&f->le, "\x07\x1f");
	assert_buffer(&f->le, "helXYlo", 5);
	redraw(f);
	assert_row(&f->scr, 0, "> helXYlo");
	assert_int_equal(f->scr.col, 7);

	/* Enter leaves the whole line on screen and moves below it. */
	type_line(&f->le, "\r", "helXYlo");
	assert_string_equal(take_out(&f->le, out, sizeof(out)), "\r\033[K> helXYlo\n");
	assert_false(le_shown(&f->le));
	assert_buffer(&f->le, "", 0);
	/* "\n" ends a line as well. */
	type_line(&f->le, "x\n", "x");
}

static void test_keys_after_enter_wait(void **state)
{
	struct fixture *f = *state;
	size_t used;

	/* One read may hold a line and the start of the next: the editor
	 * stops at Enter so the caller runs the line before the rest. */
	assert_int_equal(le_feed(&f->le, "ab\rcd", 5, &used), LE_LINE);
	assert_int_equal(used, 3);
	assert_string_equal(le_line(&f->le), "ab");
	assert_int_equal(le_feed(&f->le, "cd", 2, &used), LE_NONE);
	assert_int_equal(used, 2);
	assert_buffer(&f->le, "cd", 2);
	/* The caller may cut up the finished line in place. */
	type_line(&f->le, "\r", "cd");
	le_line(&f->le)[1] = '\0';
	assert_buffer(&f->le, "", 0);
}

static void test_deletion(void **state)
{
	struct fixture *f = *state;

	type(&f->le, "abcdef" KEY_LEFT KEY_LEFT);
	assert_buffer(&f->le, "abcdef", 4);
	type(&f->le, "\x7f"); /* Backspace as DEL */
	assert_buffer(&f->le, "abcef", 3);
	type(&f->le, "\b"); /* Backspace as ^H */
	assert_buffer(&f->le, "abef", 2);
	type(&f->le, KEY_DELETE);
	assert_buffer(&f->le, "abf", 2);
	type(&f->le, "\x04"); /* ^D deletes under the cursor */
	assert_buffer(&f->le, "ab", 2);
	/* At the end, Delete and ^D have nothing to delete. */
	type(&f->le, "\x04" KEY_DELETE);
	assert_buffer(&f->le, "ab", 2);
	/* At the start, Backspace has nothing to delete. */
	type(&f->le, "\x01\x7f");
	assert_buffer(&f->le, "ab", 0);
}

static void test_kill_word_and_line(void **state)
{
	struct fixture *f = *state;

	type(&f->le, "/msg 42 hello world");
	type(&f->le, "\x17"); /* ^W: the word before the cursor */
	assert_buffer(&f->le, "/msg 42 hello ", 14);
	type(&f->le, "\x17"); /* blanks before the cursor go with the word */
	assert_buffer(&f->le, "/msg 42 ", 8);
	/* ^W in the middle keeps what follows the cursor. */
	type(&f->le, "tail" KEY_LEFT KEY_LEFT KEY_LEFT KEY_LEFT "\x17");
	assert_buffer(&f->le, "/msg tail", 5);
	/* ^U deletes up to the cursor, ^K from it. */
	type(&f->le, KEY_RIGHT KEY_RIGHT "\x15");
	assert_buffer(&f->le, "il", 0);
	type(&f->le, "\x05" KEY_LEFT "\x0b");
	assert_buffer(&f->le, "i", 1);
	type(&f->le, "\x01\x0b");
	assert_buffer(&f->le, "", 0);
	/* On an empty line all three do nothing. */
	type(&f->le, "\x17\x15\x0b");
	assert_buffer(&f->le, "", 0);
}

static void test_cursor_moves(void **state)
{
	struct fixture *f = *state;

	type(&f->le, "abcde");
	type(&f->le, "\x01"); /* ^A */
	assert_buffer(&f->le, "abcde", 0);
	type(&f->le, KEY_LEFT "\x02"); /* nothing left of the start */
	assert_buffer(&f->le, "abcde", 0);
	type(&f->le, KEY_RIGHT "\x06"); /* Right, ^F */
	assert_buffer(&f->le, "abcde", 2);
	type(&f->le, "\x05"); /* ^E */
	assert_buffer(&f->le, "abcde", 5);
	type(&f->le, KEY_RIGHT "\x06"); /* nothing right of the end */
	assert_buffer(&f->le, "abcde", 5);
	type(&f->le, "\x02"); /* ^B */
	assert_buffer(&f->le, "abcde", 4);

	/* Home and End in the encodings terminals send. */
	static const char *const home[] = {"\033[H", "\033OH", "\033[1~", "\033[7~"};
	static const char *const end[] = {"\033[F", "\033OF", "\033[4~", "\033[8~"};
	for (size_t i = 0; i < 4; i++) {
		type(&f->le, home[i]);
		assert_buffer(&f->le, "abcde", 0);
		type(&f->le, end[i]);
		assert_buffer(&f->le, "abcde", 5);
	}
	/* Arrows in application mode (ESC O) move too. */
	type(&f->le, "\033OD\033OD");
	assert_buffer(&f->le, "abcde", 3);

	/* The cursor on screen follows. */
	redraw(f);
	assert_row(&f->scr, 0, "> abcde");
	assert_int_equal(f->scr.col, 2 + 3);
}

static void test_history(void **state)
{
	struct fixture *f = *state;

	type_line(&f->le, "one\r", "one");
	type_line(&f->le, "two\r", "two");
	type_line(&f->le, "two\r", "two"); /* the same line again: kept once */
	type_line(&f->le, "\r", "");	   /* empty lines are not kept */
	type(&f->le, "dra");

	type(&f->le, KEY_UP);
	assert_buffer(&f->le, "two", 3);
	type(&f->le, KEY_UP);
	assert_buffer(&f->le, "one", 3);
	type(&f->le, KEY_UP); /* the oldest: stays */
	assert_buffer(&f->le, "one", 3);
	type(&f->le, KEY_DOWN);
	assert_buffer(&f->le, "two", 3);
	type(&f->le, KEY_DOWN); /* back to the line being typed */
	assert_buffer(&f->le, "dra", 3);
	type(&f->le, KEY_DOWN);
	assert_buffer(&f->le, "dra", 3);
	/* ^P and ^N do the same. */
	type(&f->le, "\x10\x10");
	assert_buffer(&f->le, "one", 3);
	type(&f->le, "\x0e");
	assert_buffer(&f->le, "two", 3);

	/* A recalled line edited and sent is a new entry; the old one stays. */
	type_line(&f->le,
		  "\x7f"
		  "o!\r",
		  "two!");
	type(&f->le, KEY_UP);
	assert_buffer(&f->le, "two!", 4);
	type(&f->le, KEY_UP);
	assert_buffer(&f->le, "two", 3);
	/* ^C drops the recalled line and leaves browsing: Up starts over. */
	type(&f->le, "\x03" KEY_UP);
	assert_buffer(&f->le, "two!", 4);
	type(&f->le, KEY_DOWN);
	assert_buffer(&f->le, "", 0);
}

static void test_history_bound(void **state)
{
	struct fixture *f = *state;
	char line[40];
	int i;

	for (i = 0; i < LE_HISTORY_MAX + 5; i++) {
		char want[32];

		snprintf(want, sizeof(want), "line %d", i);
		snprintf(line, sizeof(line), "%s\r", want);
		type_line(&f->le, line, want);
	}
	for (i = 0; i < LE_HISTORY_MAX + 10; i++)
		type(&f->le, KEY_UP);
	/* The five oldest lines were dropped. */
	assert_buffer(&f->le, "line 5", 6);
}

static void test_utf8(void **state)
{
	struct fixture *f = *state;

	/* a, é (2 bytes), € (3), 𝄞 (4), b */
	type(&f->le, "a\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e"
		     "b");
	assert_buffer(&f->le, "aé€𝄞b", 11);
	/* Left steps over whole code points. */
	type(&f->le, KEY_LEFT);
	assert_buffer(&f->le, "aé€𝄞b", 10);
	type(&f->le, KEY_LEFT);
	assert_buffer(&f->le, "aé€𝄞b", 6);
	redraw(f);
	assert_row(&f->scr, 0, "> aé€𝄞b");
	/* One column per code point: the cursor stands on 𝄞. */
	assert_int_equal(f->scr.col, 2 + 3);
	/* Backspace deletes all three bytes of €. */
	type(&f->le, "\x7f");
	assert_buffer(&f->le, "aé𝄞b", 3);
	/* Delete takes all four bytes of 𝄞. */
	type(&f->le, KEY_DELETE);
	assert_buffer(&f->le, "aéb", 3);
	type(&f->le, KEY_LEFT);
	assert_buffer(&f->le, "aéb", 1);
	type(&f->le, KEY_RIGHT);
	assert_buffer(&f->le, "aéb", 3);
	/* A character typed in the middle goes in whole. */
	type(&f->le, "\xc3\xbc");
	assert_buffer(&f->le, "aéüb", 5);
	type(&f->le, "\x17");
	assert_buffer(&f->le, "b", 0);
	redraw(f);
	assert_row(&f->scr, 0, "> b");
	assert_int_equal(f->scr.col, 2);
}

static void test_full_line(void **state)
{
	struct fixture *f = *state;
	static char fill[LE_LINE_MAX];
	size_t cursor;

	/* The line holds LE_LINE_MAX - 1 bytes; leave room for one more. */
	memset(fill, 'a', LE_LINE_MAX - 2);
	fill[LE_LINE_MAX - 2] = '\0';
	type(&f->le, fill);
	/* é (2 bytes) is dropped whole, not cut in half. */
	type(&f->le, "\xc3\xa9");
	assert_int_equal(strlen(le_buffer(&f->le, &cursor)), LE_LINE_MAX - 2);
	type(&f->le, "b");
	assert_int_equal(strlen(le_buffer(&f->le, &cursor)), LE_LINE_MAX - 1);
	/* Full: further keys are ignored, editing still works. */
	type(&f->le, "ccc");
	assert_int_equal(strlen(le_buffer(&f->le, &cursor)), LE_LINE_MAX - 1);
	assert_int_equal(cursor, LE_LINE_MAX - 1);
	assert_int_equal(le_buffer(&f->le, &cursor)[LE_LINE_MAX - 2], 'b');
	type(&f->le, "\x7f");
	assert_int_equal(strlen(le_buffer(&f->le, &cursor)), LE_LINE_MAX - 2);
}

static void test_long_line_scrolls(void **state)
{
	struct fixture *f = *state;

	f->scr.cols = 20;
	/* 20 columns, "> " takes 2, one stays free for the cursor: 17 shown. */
	type(&f->le, "abcdefghijklmnopqrstuvwxyz0123");
	redraw(f);
	assert_row(&f->scr, 0, "> opqrstuvwxyz0123");
	assert_int_equal(f->scr.col, 18);
	/* Home shows the start, with the cursor on the first character. */
	type(&f->le, "\x01");
	redraw(f);
	assert_row(&f->scr, 0, "> abcdefghijklmnopq");
	assert_int_equal(f->scr.col, 2);
	/* Moving right keeps the view until the cursor would leave it. */
	for (int i = 0; i < 17; i++)
		type(&f->le, KEY_RIGHT);
	redraw(f);
	assert_row(&f->scr, 0, "> bcdefghijklmnopqr");
	assert_int_equal(f->scr.col, 18);
	/* Short again: no scrolling at all. */
	type(&f->le, "\x05\x15xyz");
	redraw(f);
	assert_row(&f->scr, 0, "> xyz");
	assert_int_equal(f->scr.col, 5);
}

static void test_long_utf8_line_counts_columns(void **state)
{
	struct fixture *f = *state;
	char want[64] = "> ";

	f->scr.cols = 20;
	/* 30 two-byte characters: 60 bytes, 30 columns. */
	for (int i = 0; i < 30; i++)
		type(&f->le, "\xc3\xa9");
	redraw(f);
	for (int i = 0; i < 16; i++)
		strcat(want, "é");
	assert_row(&f->scr, 0, want);
	assert_int_equal(f->scr.col, 18);
}

static void test_escape_split_across_reads(void **state)
{
	struct fixture *f = *state;

	type(&f->le, "abc");
	/* ESC, '[' and 'D' in three reads: one Left, nothing inserted. */
	type(&f->le, "\033");
	type(&f->le, "[");
	type(&f->le, "D");
	assert_buffer(&f->le, "abc", 2);
	/* Delete split after its parameter. */
	type(&f->le, "\033[3");
	assert_buffer(&f->le, "abc", 2);
	type(&f->le, "~");
	assert_buffer(&f->le, "ab", 2);
	/* History up split in the middle. */
	type_line(&f->le, "\r", "ab");
	type(&f->le, "\033[");
	assert_buffer(&f->le, "", 0);
	type(&f->le, "A");
	assert_buffer(&f->le, "ab", 2);
	/* ESC and any byte but '[' or 'O' (Alt-x): both dropped. */
	type(&f->le, "\033x");
	assert_buffer(&f->le, "ab", 2);
	/* Unknown sequences (F5, Page Up) are swallowed whole. */
	type(&f->le, "\033[15~\033[5~");
	assert_buffer(&f->le, "ab", 2);
	/* Over-long parameters do not overflow; the sequence still ends. */
	type(&f->le, "\033[1234567890123;5~z");
	assert_buffer(&f->le, "abz", 3);
}

static void test_push_redraws_partial_line(void **state)
{
	struct fixture *f = *state;
	const char *push = "[12:00:00] #1 alice (2): a push while you type\n";
	char out[256];

	le_set_prompt(&f->le, "bob> ");
	type(&f->le, "/msg 2 typing this slowlx\x7fy" KEY_LEFT KEY_LEFT KEY_LEFT);
	redraw(f);
	assert_row(&f->scr, 0, "bob> /msg 2 typing this slowly");
	assert_int_equal(f->scr.col, 5 + 22);
	assert_true(le_shown(&f->le));

	/* A push arrives: the row is erased, the push printed... */
	le_hide(&f->le);
	assert_string_equal(take_out(&f->le, out, sizeof(out)), "\r\033[K");
	scr_write(&f->scr, out, strlen(out));
	assert_row(&f->scr, 0, "");
	assert_false(le_shown(&f->le));
	le_hide(&f->le); /* hidden already: nothing more to erase */
	assert_string_equal(take_out(&f->le, out, sizeof(out)), "");
	scr_write(&f->scr, push, strlen(push));
	/* ...and the prompt and the line come back below it, intact, with
	 * the cursor where it was. */
	le_redraw(&f->le, f->scr.cols);
	assert_string_equal(take_out(&f->le, out, sizeof(out)),
			    "\r\033[Kbob> /msg 2 typing this slowly\033[3D");
	scr_write(&f->scr, out, strlen(out));
	assert_row(&f->scr, 0, "[12:00:00] #1 alice (2): a push while you type");
	assert_row(&f->scr, 1, "bob> /msg 2 typing this slowly");
	assert_int_equal(f->scr.row, 1);
	assert_int_equal(f->scr.col, 5 + 22);

	/* Typing goes on where it stopped. */
	type(&f->le, "\x05 indeed");
	type_line(&f->le, "\r", "/msg 2 typing this slowly indeed");
}

static void test_quit_keys(void **state)
{
	struct fixture *f = *state;
	size_t used;
	char out[64];

	/* ^C on a line drops it and says so; the prompt is no longer shown. */
	type(&f->le, "abc");
	redraw(f);
	type(&f->le, "\x03");
	assert_string_equal(take_out(&f->le, out, sizeof(out)), "^C\n");
	assert_false(le_shown(&f->le));
	assert_buffer(&f->le, "", 0);
	/* ^C and ^D on an empty line mean leave; what follows is not taken. */
	assert_int_equal(le_feed(&f->le, "\x03xyz", 4, &used), LE_QUIT);
	assert_int_equal(used, 1);
	assert_int_equal(le_key(&f->le, '\x04'), LE_QUIT);
	assert_buffer(&f->le, "", 0);
}

static void test_clear_screen(void **state)
{
	struct fixture *f = *state;
	char out[64];

	type(&f->le, "abc");
	redraw(f);
	type(&f->le, "\x0c");
	assert_string_equal(take_out(&f->le, out, sizeof(out)), "\r\033[K\033[H\033[2J");
	assert_buffer(&f->le, "abc", 3);
}

static void test_tab_completion(void **state)
{
	struct fixture *f = *state;
	static const char *const words[] = {"/help", "/history", "/login"};
	char out[128];

	/* Without words Tab does nothing. */
	type(&f->le, "/l\t");
	assert_buffer(&f->le, "/l", 2);
	le_set_words(&f->le, words, 3);
	type(&f->le, "\t");
	assert_buffer(&f->le, "/login ", 7);
	/* Only the first word completes, and only at the end of the line. */
	type(&f->le, "\t");
	assert_buffer(&f->le, "/login ", 7);
	type(&f->le, "\x05\x15/lo" KEY_LEFT "\t");
	assert_buffer(&f->le, "/lo", 2);
	/* No match: nothing happens. */
	type(&f->le, "\x05\x15/x\t");
	assert_buffer(&f->le, "/x", 2);
	assert_string_equal(take_out(&f->le, out, sizeof(out)), "");
	/* More than one: the candidates are listed above the line. */
	type(&f->le, "\x05\x15/h");
	redraw(f);
	type(&f->le, "\t");
	assert_string_equal(take_out(&f->le, out, sizeof(out)), "\r\033[K/help  /history  \n");
	assert_buffer(&f->le, "/h", 2);
	type(&f->le, "i\t");
	assert_buffer(&f->le, "/history ", 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_insert_and_enter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keys_after_enter_wait, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deletion, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kill_word_and_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cursor_moves, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_history, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_history_bound, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_utf8, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_line_scrolls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_utf8_line_counts_columns, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_escape_split_across_reads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_push_redraws_partial_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quit_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clear_screen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tab_completion, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
