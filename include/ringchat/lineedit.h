/*
 * lineedit.h - the line editor of ringchat-cli: one line of input with
 * cursor movement, history and Tab completion, drawn on one terminal row.
 *
 * The editor is split in two:
 *
 *   core (le_*)       pure state machine: bytes typed go in through
 *                     le_key()/le_feed(), the bytes to send to the terminal
 *                     collect in an output buffer (le_out()). It never
 *                     reads, writes or asks the terminal anything, so the
 *                     tests drive it with strings.
 *   terminal (le_term_*)  raw mode on and off, the width, and writing the
 *                     output buffer to a FILE: the only part that touches
 *                     a terminal.
 *
 * Screen model: the prompt and the line share one row. While it is drawn
 * (le_shown()), anything else the program prints would land in the middle
 * of it, so the program calls le_hide() first (which erases the row),
 * prints, and calls le_redraw() when done: the printed text stays above,
 * the prompt and the partial line come back below it with the cursor where
 * it was. The terminal must keep OPOST, so "\n" also returns the carriage.
 *
 * Keys (bytes as a terminal in raw mode sends them):
 *   printable bytes, UTF-8 included   insert at the cursor
 *   Enter (\r or \n)                  finish the line: LE_LINE
 *   Backspace (^H, DEL)               delete the code point before the cursor
 *   ^D                                delete under the cursor; LE_QUIT on an
 *                                     empty line
 *   ^C                                drop the line; LE_QUIT on an empty line
 *   ^A ^E, Home End                   start, end of the line
 *   ^B ^F, Left Right                 one code point back, forward
 *   ^P ^N, Up Down                    history back, forward
 *   ^K ^U ^W                          delete to the end, to the start, the
 *                                     word before the cursor
 *   ^L                                clear the screen
 *   Delete (ESC [ 3 ~)                delete under the cursor
 *   Tab                               complete the first word (le_set_words)
 * Escape sequences ("ESC [" or "ESC O", digits and ';', a final byte) may
 * arrive split across reads: the decoder keeps its state between calls.
 * ESC followed by anything else drops both bytes; unknown sequences and
 * other control bytes are ignored.
 *
 * Every code point is taken as one column wide. A line wider than the
 * terminal scrolls sideways so that the cursor stays visible.
 *
 * Thread rules: a struct le belongs to one thread; nothing locks.
 */
#ifndef RINGCHAT_LINEEDIT_H
#define RINGCHAT_LINEEDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <termios.h>

/* Longest line in bytes, its NUL included: a 4096-byte text and a command
 * fit. Keys that would make it longer are ignored. */
#define LE_LINE_MAX 8192
/* Lines kept for Up/Down; the oldest goes first. */
#define LE_HISTORY_MAX 100
/* Longest prompt in bytes, NUL included; a longer one is cut. */
#define LE_PROMPT_MAX 64
/* Bytes of an escape sequence's parameters kept; more are dropped. */
#define LE_ESC_PARAMS_MAX 8
/* Width used when the caller knows none (le_term_cols). */
#define LE_DEFAULT_COLS 80

/* What a key meant for the caller. */
enum le_event {
	LE_NONE = 0, /* taken by the editor; nothing for the caller to do */
	LE_LINE,     /* Enter: the finished line is in le_line() */
	LE_QUIT,     /* ^C or ^D on an empty line: the user wants to leave */
};

/*
 * The editor's state. Fields are private to lineedit.c; the struct is
 * public so that callers can embed it (it holds the line, about 8 KiB,
 * twice). Initialise with le_init(), release with le_free().
 */
struct le {
	char line[LE_LINE_MAX];
	size_t len, cur;    /* bytes; cur is on a UTF-8 boundary */
	size_t scroll;	    /* first code point shown when the line is too wide */
	unsigned utf8_drop; /* continuation bytes still to drop (line full) */

	int esc; /* 0; 1 after ESC; 2 inside "ESC [" or "ESC O" */
	char esc_params[LE_ESC_PARAMS_MAX];
	size_t esc_len;

	char *hist[LE_HISTORY_MAX]; /* malloc'd copies, oldest first */
	int hist_n, hist_pos;	    /* hist_pos == hist_n: the line being edited */
	char *hist_draft;	    /* that line, kept while browsing history */

	char prompt[LE_PROMPT_MAX];
	bool shown; /* the prompt and the line are on the screen */
	const char *const *words;
	size_t nwords;
	char done[LE_LINE_MAX]; /* the line Enter finished */

	char *out; /* bytes for the terminal, malloc'd, grows */
	size_t out_len, out_cap;
};

/* Sets up an empty editor with the prompt "> ". Never fails. */
void le_init(struct le *le);

/* Releases the history and the output buffer; le may be le_init()ed again. */
void le_free(struct le *le);

/*
 * Sets the prompt drawn before the line (cut to LE_PROMPT_MAX - 1 bytes).
 * It takes effect at the next le_redraw() or Enter; the screen is not
 * touched.
 */
void le_set_prompt(struct le *le, const char *prompt);

/*
 * Words Tab completes when the line holds one word and the cursor is at
 * its end: one match replaces the word with the match and a blank; more
 * than one lists the matches above the line. The array and the strings
 * are borrowed: they must outlive the editor or the next call. n == 0
 * turns completion off.
 */
void le_set_words(struct le *le, const char *const *words, size_t n);

/*
 * Takes one byte typed. Output it causes (the echoed line on Enter, "^C",
 * a completion list, a screen clear) is appended to the output buffer.
 * On LE_LINE the line is in le_line() and the screen row holds it with a
 * newline after: the prompt is not shown until le_redraw().
 */
enum le_event le_key(struct le *le, char c);

/*
 * Takes bytes from buf[0..n) up to and including the first that returns
 * an event other than LE_NONE, and stores how many it took in *used.
 * Returns that event, or LE_NONE when all n bytes were taken.
 */
enum le_event le_feed(struct le *le, const char *buf, size_t n, size_t *used);

/*
 * The line the last LE_LINE finished, NUL-terminated, as typed. The caller
 * may modify it in place (up to its length); it stays valid until the
 * next LE_LINE.
 */
char *le_line(struct le *le);

/* The line being edited (NUL-terminated, borrowed) and the cursor in bytes. */
const char *le_buffer(const struct le *le, size_t *cursor);

/* True while the prompt and the line are on the screen. */
bool le_shown(const struct le *le);

/*
 * Erases the row holding the prompt and the line, if shown, so that the
 * caller can print; the cursor is left at the start of the empty row.
 */
void le_hide(struct le *le);

/*
 * Draws the prompt and the line on the current row for a terminal cols
 * columns wide (values below 1 count as 1), scrolled sideways when the
 * line does not fit, and puts the cursor in place.
 */
void le_redraw(struct le *le, int cols);

/*
 * The bytes produced since the last le_out_clear(), *n of them (not
 * NUL-terminated); borrowed, valid until the next le_* call. When memory
 * ran out, output was dropped, never the editing itself.
 */
const char *le_out(const struct le *le, size_t *n);

/* Forgets the output collected so far (after writing it). */
void le_out_clear(struct le *le);

/* ---------------------------------------------------------------------
 * Terminal layer.
 * ------------------------------------------------------------------- */

/* A terminal in raw mode and how to put it back. */
struct le_term {
	int fd;
	bool raw;
	struct termios saved;
};

/*
 * Switches fd to raw mode: no line buffering, echo, signal keys or flow
 * control; output processing stays on. Returns 0, or -errno (fd is not a
 * terminal, ...), leaving the terminal as it was.
 */
int le_term_raw(struct le_term *t, int fd);

/*
 * Puts the terminal back as le_term_raw() found it; nothing if not raw.
 * Async-signal-safe (only tcsetattr), so a signal handler may call it.
 */
void le_term_restore(struct le_term *t);

/* Columns of the terminal on fd, or LE_DEFAULT_COLS when unknown or tiny. */
int le_term_cols(int fd);

/* Writes the editor's output to f, flushes f and clears the output. */
void le_term_flush(struct le *le, FILE *f);

#endif
